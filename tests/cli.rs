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
    assert!(String::from_utf8_lossy(&out.stderr).contains("`soon` is not a duration"));
    // One grammar for every duration flag: a decimal number of seconds is fine everywhere.
    let out = herald(&[
        "announce",
        "l2",
        "-i",
        "eth-none",
        "--refresh-interval",
        "1.5s",
        "--help",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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

/// Logs that go to a file or a pipe (a container runtime's log) carry no terminal colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let dir = std::env::temp_dir().join(format!("herald-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    // An API server that is not there: the agent logs that it waits for it (and keeps waiting).
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n\
         current-context: x\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["agent", "--node-name", "n", "--metrics-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INFO") || err.contains("WARN"),
        "the agent logged something: {err}"
    );
    assert!(!err.contains('\x1b'), "no escape codes in a pipe: {err:?}");
}

#[test]
fn migrate_refuses_bad_input_clearly() {
    let out = herald(&["migrate", "--from", "metallb"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("give files of metallb's objects") && !err.contains("panicked"),
        "{err}"
    );
    let out = herald(&["migrate", "--from", "openelb", "/nonexistent/openelb.yaml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("reading /nonexistent/openelb.yaml"),
        "{err}"
    );
    let out = herald(&["migrate", "--from", "kube-vip", "-"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("invalid value 'kube-vip'"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("herald-cli-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "a: [").unwrap();
    let out = herald(&["migrate", "--from", "metallb", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.yaml: not YAML or JSON"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
