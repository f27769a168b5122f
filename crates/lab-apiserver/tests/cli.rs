//! The `lab-apiserver` binary: prints its address, writes a kubeconfig kube-rs reads, keeps state across a
//! SIGTERM restart.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts the binary and returns it with the address it printed.
async fn spawn(args: &[&std::ffi::OsStr]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab-apiserver"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn lab-apiserver");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("address printed in time")
        .unwrap()
        .expect("first line");
    (child, addr)
}

async fn client_from(kubeconfig: &std::path::Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn terminate(mut child: Child) {
    let pid = child.id().expect("running") as i32;
    // SIGTERM through kill(1): the crate forbids unsafe code, so no libc::kill here.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn binary_serves_writes_kubeconfig_and_keeps_state() {
    let dir = std::env::temp_dir().join(format!("lab-apiserver-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let state = dir.join("state.json");
    let args = [
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--kubeconfig-out".as_ref(),
        kubeconfig.as_os_str(),
        "--state-file".as_ref(),
        state.as_os_str(),
    ];
    let (child, addr) = spawn(&args).await;
    let addr: std::net::SocketAddr = addr.parse().expect("first line is the bound address");
    assert_ne!(addr.port(), 0);
    // The address is printed after the kubeconfig is written.
    let client = client_from(&kubeconfig).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "kept"}, "data": {"a": "b"}})).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    terminate(child).await;
    assert!(state.exists(), "state file written at shutdown");

    let (child, _) = spawn(&args).await;
    let client = client_from(&kubeconfig).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let kept = cms.get("kept").await.unwrap();
    assert_eq!(kept.metadata.uid, created.metadata.uid);
    terminate(child).await;
    let _ = std::fs::remove_dir_all(&dir);
}
