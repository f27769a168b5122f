//! The RBAC audit of a test run against the real kube-apiserver: every request the agents' ServiceAccount made
//! (recorded per server from its audit log when `HERALD_RBAC_AUDIT_DIR` is set; `scripts/test.sh` does so for its
//! kube-apiserver pass) against what the manifest grants. Fails when a request was refused or is not granted, or when
//! a grant was never used: least privilege, kept by every run.
//!
//! ```text
//! cargo run -p herald-netns-tests --bin rbac-audit -- --audit-dir DIR [--manifest deploy/herald.yaml]
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use herald_netns_tests::rbac::{Request, audit, granted, requests};

/// Compare what the agents used with what the manifest grants (prints a Markdown table; exit status 1 on a finding).
#[derive(clap::Parser, Debug)]
struct Args {
    /// The directory the test run wrote its records into (`HERALD_RBAC_AUDIT_DIR`).
    #[arg(long)]
    audit_dir: PathBuf,
    /// The manifest with the ServiceAccount's Roles and bindings.
    #[arg(long, default_value = "deploy/herald.yaml")]
    manifest: PathBuf,
    /// The ServiceAccount the agents ran as.
    #[arg(long, default_value = "herald-system/herald")]
    service_account: String,
}

fn main() -> Result<()> {
    let args: Args = clap::Parser::parse();
    let (sa_ns, sa_name) = args
        .service_account
        .split_once('/')
        .context("--service-account NAMESPACE/NAME")?;
    let text = std::fs::read_to_string(&args.manifest).with_context(|| format!("read {}", args.manifest.display()))?;
    let manifest: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).with_context(|| format!("parse {}", args.manifest.display()))?;
    let grants = granted(&manifest, sa_ns, sa_name)?;
    if grants.is_empty() {
        bail!("{} grants nothing to {}", args.manifest.display(), args.service_account);
    }

    let mut used: BTreeMap<Request, u64> = BTreeMap::new();
    let mut servers = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&args.audit_dir)
        .with_context(|| format!("read {}", args.audit_dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parse {}", path.display()))?;
        servers += 1;
        for (req, n) in requests(&record) {
            *used.entry(req).or_default() += n;
        }
    }
    if used.is_empty() {
        bail!(
            "no request of {} recorded in {} ({servers} server record(s)): did the kube-apiserver pass run with \
             HERALD_RBAC_AUDIT_DIR set?",
            args.service_account,
            args.audit_dir.display()
        );
    }

    let report = audit(&grants, &used);
    println!(
        "RBAC audit: {} requests of {} on {servers} kube-apiserver(s), against {}\n",
        used.values().sum::<u64>(),
        args.service_account,
        args.manifest.display()
    );
    println!("| granted | requests |\n|---|---:|");
    for (p, n) in &report.used {
        println!("| {p} | {n} |");
    }
    for (req, n) in &report.missing {
        println!(
            "MISSING: {req}: {n} request(s), decision {:?}: grant it in {} or stop making it",
            req.decision,
            args.manifest.display()
        );
    }
    for (req, n) in &report.refused_granted {
        println!(
            "note: {req}: {n} request(s) granted but refused by the authorizer (a kube-apiserver that just restarted \
             serves before its RBAC caches hold the roles; the agent retries)"
        );
    }
    for p in &report.unused {
        println!(
            "UNUSED: {p}: granted but never used in this run: drop it from {}, or add a test that uses it",
            args.manifest.display()
        );
    }
    if !report.is_clean() {
        bail!(
            "RBAC audit failed: {} missing, {} unused",
            report.missing.len(),
            report.unused.len()
        );
    }
    println!("\nRBAC audit: every request granted, every grant used");
    Ok(())
}
