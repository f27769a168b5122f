//! Stamps the commit into `herald --version` (and the agent's start line): `HERALD_REVISION` when set (the
//! Dockerfile passes its `REVISION` build argument), else `git rev-parse`, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=HERALD_REVISION");
    let revision = std::env::var("HERALD_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HERALD_REVISION={revision}");
}

fn git_revision() -> Option<String> {
    let git_dir = Command::new("git").args(["rev-parse", "--git-dir"]).output().ok()?;
    let git_dir = String::from_utf8(git_dir.stdout).ok()?.trim().to_string();
    if git_dir.is_empty() {
        return None;
    }
    // A new commit or checkout changes HEAD or the ref it points to.
    println!("cargo:rerun-if-changed={git_dir}/HEAD");
    println!("cargo:rerun-if-changed={git_dir}/refs/heads");
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!rev.is_empty()).then_some(rev)
}
