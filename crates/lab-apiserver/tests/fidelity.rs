//! API fidelity: one scripted conversation (raw HTTP through kube's client, kube-rs' typed API and watcher, and
//! the real `kubectl`) run against lab-apiserver and against a real kube-apiserver + etcd
//! (`scripts/kube-apiserver.sh`), compared case by case. Every difference must be one of `DOCUMENTED` (each
//! written down in docs/lab-apiserver.md with why it cannot matter); a new one fails the test.
//!
//! The real server runs in its own network namespace, so its half of the conversation runs there too: this test
//! re-runs its own binary under `ip netns exec` for the ignored test `real_server_conversation`, which writes its
//! cases to a file. Needs root, the script and its binaries (`scripts/kube-apiserver.sh build`); without them the
//! test runs only lab-apiserver's half and says why it skipped the comparison, unless `HERALD_REQUIRE_KUBE=1`
//! (then it fails). kubectl is required when `CI` is set, as in `tests/kubectl.rs`.

#[path = "fidelity/conversation.rs"]
mod conversation;
#[path = "fidelity/target.rs"]
mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use conversation::Case;
use herald_lab_apiserver::{Config, start};
use target::Target;

/// Cases allowed to differ, each with why it cannot matter to Herald or to a user's kubectl in the lab (the
/// long form is in docs/lab-apiserver.md, "Differences from kube-apiserver").
const DOCUMENTED: &[(&str, &str)] = &[
    (
        "create: YAML body",
        "YAML request bodies are refused (415): neither kube-rs nor kubectl sends them",
    ),
    (
        "eip: schema validation",
        "custom resources are pruned and defaulted, not validated: the lab accepts more; tier 3 runs on the real server",
    ),
    (
        "patch: server-side apply",
        "no server-side apply (415): Herald uses merge and JSON patches, kubectl applies client-side by default",
    ),
    (
        "table: services (column descriptions)",
        "built-in table columns other than Name have no description; kubectl never prints them",
    ),
    (
        "table: namespaces (column descriptions)",
        "built-in table columns other than Name have no description; kubectl never prints them",
    ),
    (
        "table: v1 events (column descriptions)",
        "built-in table columns other than Name have no description; kubectl never prints them",
    ),
    (
        "service: RequireDualStack",
        "lab-apiserver is a dual-stack cluster, the script's kube-apiserver an IPv4 single-stack one",
    ),
    (
        "node: create (spec)",
        "no TaintNodesByCondition not-ready taint, which a cluster's node controller removes once the node is Ready",
    ),
    (
        "namespace: after delete",
        "no namespace controller: deleting a Namespace removes it at once instead of leaving it Terminating",
    ),
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubectl_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("kubectl"))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is required in CI (Debian package kubernetes-client)"
        );
        eprintln!("skipping: kubectl not found on PATH");
    }
    found
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lab-fidelity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real kube-apiserver started by `scripts/kube-apiserver.sh up`; `down` on drop (also on panic).
struct RealServer {
    id: String,
    netns: String,
    kubeconfig: PathBuf,
}

impl RealServer {
    /// Starts one, or says why it cannot.
    fn up() -> Result<Self, String> {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
        if uid != 0 {
            return Err(format!(
                "not root (uid {uid}): the real server runs in a network namespace"
            ));
        }
        let script = repo_root().join("scripts/kube-apiserver.sh");
        if !script.is_file() {
            return Err(format!("{} is missing", script.display()));
        }
        let output = std::process::Command::new(&script)
            .arg("up")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let vars: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
        let server = match (vars.get("HRDK_ID"), vars.get("HRDK_NETNS"), vars.get("KUBECONFIG")) {
            (Some(id), Some(netns), Some(kubeconfig)) => Self {
                id: id.to_string(),
                netns: netns.to_string(),
                kubeconfig: PathBuf::from(kubeconfig),
            },
            _ => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
                return Err(format!(
                    "scripts/kube-apiserver.sh up failed ({}): {}",
                    output.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ));
            }
        };
        if !output.status.success() {
            return Err(format!("scripts/kube-apiserver.sh up failed ({})", output.status));
        }
        Ok(server)
    }

    /// Runs `real_server_conversation` of this binary inside the server's namespace; returns its cases.
    async fn converse(&self, scratch: &Path) -> Result<Vec<Case>, String> {
        let out = scratch.join("real-cases.json");
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(exe)
            .args([
                "real_server_conversation",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HERALD_FIDELITY_KUBECONFIG", &self.kubeconfig)
            .env("HERALD_FIDELITY_OUT", &out)
            .env("HERALD_FIDELITY_HOME", scratch.join("real-home"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("ip netns exec: {e}"))?;
        let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .map_err(|_| "the real server's conversation took over 5 minutes".to_string())?
            .map_err(|e| format!("waiting for the real server's conversation: {e}"))?;
        let text = std::fs::read_to_string(&out).map_err(|e| {
            format!(
                "no cases from the real server's conversation ({}; {e}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        serde_json::from_str(&text).map_err(|e| format!("cases file: {e}"))
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let status = std::process::Command::new(repo_root().join("scripts/kube-apiserver.sh"))
            .args(["down", &self.id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("scripts/kube-apiserver.sh down {} failed: {status:?}", self.id);
        }
    }
}

fn compact(value: &serde_json::Value) -> String {
    value.to_string()
}

/// Prints the table of cases; returns the names of the differing ones.
fn compare(lab: &[Case], real: &[Case]) -> Vec<String> {
    let real_by_name: BTreeMap<&str, &Case> = real.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut names: Vec<&str> = lab.iter().map(|c| c.name.as_str()).collect();
    names.extend(
        real.iter()
            .map(|c| c.name.as_str())
            .filter(|n| !lab.iter().any(|c| c.name == *n)),
    );
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut different = Vec::new();
    println!("\n{:>3}  {:width$}  result", "#", "case");
    for (i, name) in names.iter().enumerate() {
        let lab_case = lab.iter().find(|c| c.name == *name).map(|c| &c.outcome);
        let real_case = real_by_name.get(name).map(|c| &c.outcome);
        let documented = DOCUMENTED.iter().find(|(n, _)| n == name);
        if lab_case == real_case {
            let note = if documented.is_some() {
                "   (documented as different: remove it from DOCUMENTED)"
            } else {
                ""
            };
            println!("{:>3}  {name:width$}  same{note}", i + 1);
            continue;
        }
        different.push(name.to_string());
        let label = match documented {
            Some((_, why)) => format!("different (documented: {why})"),
            None => "DIFFERENT".to_string(),
        };
        println!("{:>3}  {name:width$}  {label}", i + 1);
        let show = |o: Option<&serde_json::Value>| o.map_or("(no such case)".to_string(), compact);
        println!("       lab:  {}", show(lab_case));
        println!("       real: {}", show(real_case));
    }
    different
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_apiserver_answers_like_kube_apiserver() {
    let Some(kubectl) = kubectl_binary() else {
        return;
    };
    let started = Instant::now();
    let scratch = Scratch::new("main");
    let server = start(Config::default()).await.expect("start lab-apiserver");
    let kubeconfig = scratch.0.join("lab.kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let lab = Target::new(&kubeconfig, &scratch.0.join("lab-home"), &kubectl).await;
    let repo = repo_root();

    let real = RealServer::up();
    let up_took = started.elapsed();
    let lab_half = async {
        let t0 = Instant::now();
        let cases = conversation::run(&lab, &repo).await;
        (cases, t0.elapsed())
    };
    let real_half = async {
        let t0 = Instant::now();
        match &real {
            Ok(real) => (real.converse(&scratch.0).await, t0.elapsed()),
            Err(why) => (Err(why.clone()), t0.elapsed()),
        }
    };
    let ((lab_cases, lab_took), (real_cases, real_took)) = tokio::join!(lab_half, real_half);
    drop(real);
    server.shutdown().await;

    let real_cases = match real_cases {
        Ok(cases) => cases,
        Err(why) => {
            assert!(
                std::env::var("HERALD_REQUIRE_KUBE").as_deref() != Ok("1"),
                "HERALD_REQUIRE_KUBE=1 but no real kube-apiserver: {why}"
            );
            println!(
                "lab-apiserver's half ran ({} cases, {lab_took:.1?}); skipping the comparison: {why}",
                lab_cases.len()
            );
            return;
        }
    };
    let stale: Vec<&str> = DOCUMENTED
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !lab_cases.iter().any(|c| c.name == *name))
        .collect();
    assert!(
        stale.is_empty(),
        "DOCUMENTED names cases the conversation does not have: {stale:?}"
    );
    let different = compare(&lab_cases, &real_cases);
    println!(
        "\n{} cases, {} different ({} documented); real server up in {up_took:.1?}, lab conversation {lab_took:.1?}, \
         real conversation {real_took:.1?}, total {:.1?}",
        lab_cases.len().max(real_cases.len()),
        different.len(),
        different
            .iter()
            .filter(|d| DOCUMENTED.iter().any(|(n, _)| n == d))
            .count(),
        started.elapsed()
    );
    let undocumented: Vec<&String> = different
        .iter()
        .filter(|d| !DOCUMENTED.iter().any(|(n, _)| n == d))
        .collect();
    assert!(
        undocumented.is_empty(),
        "lab-apiserver differs from kube-apiserver in {} undocumented case(s): {undocumented:?} (fix lab-apiserver, or \
         add the case to DOCUMENTED and docs/lab-apiserver.md with why it cannot matter)",
        undocumented.len()
    );
}

/// The real server's half of `lab_apiserver_answers_like_kube_apiserver`, run by it inside the server's network
/// namespace. Also usable by hand against any throwaway server:
/// `HERALD_FIDELITY_KUBECONFIG=... HERALD_FIDELITY_OUT=cases.json cargo test --test fidelity -- --ignored
/// real_server_conversation`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by lab_apiserver_answers_like_kube_apiserver inside the real server's network namespace"]
async fn real_server_conversation() {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{name} is not set"))
    };
    let kubeconfig = var("HERALD_FIDELITY_KUBECONFIG");
    let out = var("HERALD_FIDELITY_OUT");
    let home = std::env::var_os("HERALD_FIDELITY_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("lab-fidelity-home-{}", std::process::id())));
    let kubectl = kubectl_binary().expect("kubectl on PATH");
    let target = Target::new(&kubeconfig, &home, &kubectl).await;
    let cases = conversation::run(&target, &repo_root()).await;
    std::fs::write(&out, serde_json::to_string_pretty(&cases).expect("cases as JSON")).expect("write cases");
}
