//! The real `kubectl` against lab-apiserver: apply (client-side), get with server-side printing, get -w, patch,
//! delete. Skips when kubectl is missing, unless `CI` is set (then it fails).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use herald_lab_apiserver::{Config, Running, start};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

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

/// A server plus a kubeconfig file for kubectl.
struct Lab {
    server: Running,
    kubectl: PathBuf,
    dir: PathBuf,
}

impl Lab {
    async fn start(name: &str) -> Option<Self> {
        let kubectl = kubectl_binary()?;
        let server = start(Config::default()).await.expect("start lab-apiserver");
        let dir = std::env::temp_dir().join(format!("lab-apiserver-kubectl-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        server.write_kubeconfig(dir.join("kubeconfig")).unwrap();
        Some(Self { server, kubectl, dir })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.kubectl);
        command
            .args(args)
            .env("KUBECONFIG", self.dir.join("kubeconfig"))
            // Keep kubectl's discovery cache inside the test directory.
            .env("HOME", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    async fn run_with_input(&self, args: &[&str], input: &str) -> (bool, String, String) {
        let mut child = self.command(args).spawn().expect("spawn kubectl");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).await.unwrap();
        drop(stdin);
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finished in time")
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (output.status.success(), text(&output.stdout), text(&output.stderr))
    }

    /// Runs kubectl and expects success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        self.ok_with_input(args, "").await
    }

    async fn ok_with_input(&self, args: &[&str], input: &str) -> String {
        let (success, stdout, stderr) = self.run_with_input(args, input).await;
        assert!(success, "kubectl {args:?} failed:\n{stdout}\n{stderr}");
        stdout
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn crd_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds/herald.dev.yaml")
}

/// Reads lines until one satisfies `want`, failing after a generous timeout.
async fn wait_for_line(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) {
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let hit = want(&line);
            seen.push(line);
            if hit {
                return;
            }
        }
        panic!("kubectl get -w ended; saw {seen:?}");
    })
    .await;
    assert!(found.is_ok(), "line not seen in time; saw {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_crds_and_manages_an_eip() {
    let Some(lab) = Lab::start("eip").await else {
        return;
    };
    let crds = crd_file();
    let crds = crds.to_str().unwrap();
    let out = lab.ok(&["apply", "-f", crds]).await;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/eips.herald.dev created"),
        "{out}"
    );
    lab.ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/eips.herald.dev",
        "--timeout=20s",
    ])
    .await;
    let version = lab
        .ok(&[
            "get",
            "crd",
            "eips.herald.dev",
            "-o",
            "jsonpath={.spec.versions[0].name}",
        ])
        .await;

    let eip = format!(
        "apiVersion: herald.dev/{version}\nkind: Eip\nmetadata:\n  name: lan\nspec:\n  addresses:\n  - 192.0.2.100-192.0.2.120\n  protocol: layer2\n"
    );
    let out = lab.ok_with_input(&["apply", "-f", "-"], &eip).await;
    assert!(out.contains("eip.herald.dev/lan created"), "{out}");
    let out = lab.ok_with_input(&["apply", "-f", "-"], &eip).await;
    assert!(out.contains("eip.herald.dev/lan unchanged"), "{out}");

    let table = lab.ok(&["get", "eip"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "ADDRESSES",
            "PROTOCOL",
            "IPV4",
            "USED",
            "IPV6",
            "USED",
            "READY",
            "AGE"
        ],
        "{table}"
    );
    assert!(table.lines().nth(1).unwrap().starts_with("lan "), "{table}");
    assert!(table.contains("layer2"), "{table}");

    // `kubectl get -w` sees a change made by another client.
    let mut watch = lab.command(&["get", "eip", "-w"]).spawn().unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    wait_for_line(&mut lines, &mut seen, |l| l.starts_with("lan ")).await;
    lab.ok(&[
        "patch",
        "eip",
        "lan",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"protocol":"bgp"}}"#,
    ])
    .await;
    wait_for_line(&mut lines, &mut seen, |l| l.starts_with("lan ") && l.contains("bgp")).await;
    let status = r#"{"status":{"addresses":"192.0.2.100-192.0.2.120","used":1,"free":"20","total":"21","ipv4":{"total":"21","used":1,"free":"20","summary":"1/21"},"conditions":[{"type":"Ready","status":"True","reason":"Ok","message":"","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    lab.ok(&[
        "patch",
        "eip",
        "lan",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        status,
    ])
    .await;
    wait_for_line(&mut lines, &mut seen, |l| l.contains("True")).await;
    let _ = watch.kill().await;

    let row = lab.ok(&["get", "eip", "lan", "--no-headers"]).await;
    let cells: Vec<&str> = row.split_whitespace().collect();
    // No IPv6 in the pool: that cell is empty (as the real server leaves it).
    assert_eq!(
        &cells[..5],
        ["lan", "192.0.2.100-192.0.2.120", "bgp", "1/21", "True"],
        "{row}"
    );
    let wide = lab.ok(&["get", "eip", "lan", "--no-headers", "-o", "wide"]).await;
    let cells: Vec<&str> = wide.split_whitespace().collect();
    assert_eq!(&cells[4..8], ["True", "1", "20", "21"], "{wide}");

    // Apply a changed manifest: client-side apply falls back to a merge patch for custom resources.
    let changed = eip.replace("192.0.2.120", "192.0.2.130");
    let out = lab.ok_with_input(&["apply", "-f", "-"], &changed).await;
    assert!(out.contains("eip.herald.dev/lan configured"), "{out}");
    let addresses = lab
        .ok(&["get", "eip", "lan", "-o", "jsonpath={.spec.addresses[0]}"])
        .await;
    assert_eq!(addresses, "192.0.2.100-192.0.2.130");

    let out = lab.ok(&["delete", "eip", "lan"]).await;
    assert!(out.contains("eip.herald.dev \"lan\" deleted"), "{out}");
    let (success, _, stderr) = lab.run_with_input(&["get", "eip", "lan"], "").await;
    assert!(!success && stderr.contains("NotFound"), "{stderr}");

    let out = lab.ok(&["delete", "-f", crds]).await;
    assert!(out.contains("deleted"), "{out}");
    let resources = lab.ok(&["api-resources", "--api-group", "herald.dev"]).await;
    assert!(!resources.contains("eips"), "{resources}");
    assert!(lab.server.metrics().requests("patch", "eips") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_and_prints_builtin_kinds() {
    let Some(lab) = Lab::start("svc").await else {
        return;
    };
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  ports:\n  - port: 80\n    name: http\n";
    let out = lab.ok_with_input(&["apply", "-f", "-"], svc).await;
    assert!(out.contains("service/web created"), "{out}");
    let out = lab
        .ok_with_input(
            &["apply", "-f", "-"],
            &svc.replace("app: web}\nspec", "app: web, tier: front}\nspec"),
        )
        .await;
    assert!(out.contains("service/web configured"), "{out}");
    let labels = lab
        .ok(&["get", "svc", "web", "-o", "jsonpath={.metadata.labels.tier}"])
        .await;
    assert_eq!(labels, "front");

    let table = lab.ok(&["get", "svc"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        "{table}"
    );
    assert!(table.contains("<pending>"), "{table}");
    let ingress = r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.7"}]}}}"#;
    lab.ok(&[
        "patch",
        "svc",
        "web",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        ingress,
    ])
    .await;
    assert!(lab.ok(&["get", "svc", "web"]).await.contains("192.0.2.7"));

    let nodes = lab.ok(&["get", "namespaces"]).await;
    assert!(nodes.contains("kube-system") && nodes.contains("Active"), "{nodes}");
    // kubectl's typed generators send protobuf bodies; manifests go through the JSON path.
    let out = lab.ok(&["create", "configmap", "gen", "--from-literal=a=b"]).await;
    assert!(out.contains("configmap/gen created"), "{out}");
    let data = lab.ok(&["get", "configmap", "gen", "-o", "jsonpath={.data.a}"]).await;
    assert_eq!(data, "b");
    let out = lab.ok(&["create", "namespace", "made-by-kubectl"]).await;
    assert!(out.contains("namespace/made-by-kubectl created"), "{out}");
    let out = lab
        .ok(&["create", "service", "loadbalancer", "typed", "--tcp=80:8080"])
        .await;
    assert!(out.contains("service/typed created"), "{out}");
    let ports = lab
        .ok(&[
            "get",
            "svc",
            "typed",
            "-o",
            "jsonpath={.spec.ports[0].targetPort} {.spec.type}",
        ])
        .await;
    assert_eq!(ports, "8080 LoadBalancer");
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n";
    lab.ok_with_input(&["create", "-f", "-"], cm).await;
    let out = lab.ok(&["label", "configmap", "settings", "team=net"]).await;
    assert!(out.contains("labeled"), "{out}");
    let selected = lab.ok(&["get", "cm", "-l", "team=net", "-o", "name"]).await;
    assert_eq!(selected.trim(), "configmap/settings");
    let out = lab.ok(&["delete", "svc", "web"]).await;
    assert!(out.contains("service \"web\" deleted"), "{out}");
}
