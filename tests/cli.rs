//! The `herald` binary's own promises: `herald crds` is exactly `deploy/crds/`, and bad input is a clear error with a
//! non-zero exit, never a panic.

use std::process::Command;

fn herald(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

#[test]
fn crds_command_prints_deploy_crds() {
    let out = herald(&["crds"]);
    assert!(out.status.success());
    let deployed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds/herald.dev.yaml")).unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == deployed,
        "run `cargo run -- crds > deploy/crds/herald.dev.yaml`"
    );
}

#[test]
fn bad_flags_are_refused_clearly() {
    let out = herald(&[
        "agent",
        "--node-name",
        "n",
        "--takeover-after",
        "1s",
        "--renew-deadline",
        "2s",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--takeover-after") && !err.contains("panicked"), "{err}");

    let out = herald(&["agent", "--node-name", "n", "--node-renew-period", "soon"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("'soon' is not a duration"));
}

#[test]
fn agent_without_a_cluster_says_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["agent", "--node-name", "n"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Kubernetes") && !err.contains("panicked"), "{err}");
}

#[test]
fn version_names_the_commit() {
    let out = herald(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rest = text
        .trim()
        .strip_prefix(concat!("herald ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`herald VERSION (COMMIT)`: {text}"));
    assert!(
        rest == "unknown" || ((7..=40).contains(&rest.len()) && rest.chars().all(|c| c.is_ascii_hexdigit())),
        "a commit (or `unknown` outside git): {text}"
    );
}
