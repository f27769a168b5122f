//! `deploy/grafana/herald.json` is a Grafana dashboard whose every query names metrics the agent exposes: a renamed
//! metric fails here, not silently in an operator's Grafana.

use std::collections::BTreeSet;

#[test]
fn dashboard_queries_name_metrics_the_agent_exposes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/herald.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(dash["uid"], "herald");
    let sources = [include_str!("../src/metrics.rs"), include_str!("../src/credentials.rs")].concat();
    let mut named = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("herald_") || word.starts_with("process_") {
                    named.insert(word.to_string());
                }
            }
        }
    }
    assert!(named.len() >= 10, "{named:?}");
    for metric in &named {
        // Registered without the `herald_` prefix (and the allocator's under its own), counters without `_total`.
        let base = metric.strip_suffix("_total").unwrap_or(metric);
        let short = base.strip_prefix("herald_").unwrap_or(base);
        let candidates = [
            short.to_string(),
            short.strip_prefix("allocator_").unwrap_or(short).to_string(),
            short.strip_prefix("api_").unwrap_or(short).to_string(),
        ];
        assert!(
            candidates.iter().any(|c| sources.contains(&format!("\"{c}\""))),
            "{metric}: no metric of that name in src/metrics.rs"
        );
    }
}
