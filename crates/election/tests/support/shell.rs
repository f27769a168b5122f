//! Helpers for tests of the async shells.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use herald_election::{Announce, AnnouncementSink};
use tokio::time::Instant;

/// One announce (`true`) or withdraw (`false`) with the time it was applied.
pub type Entry = (Instant, String, IpAddr, bool);

/// An [`AnnouncementSink`] that records decisions in a log shared by several agents.
#[derive(Clone)]
pub struct RecordingSink {
    pub node: String,
    pub log: Arc<Mutex<Vec<Entry>>>,
}

impl RecordingSink {
    pub fn new(node: &str, log: &Arc<Mutex<Vec<Entry>>>) -> Self {
        Self {
            node: node.to_owned(),
            log: Arc::clone(log),
        }
    }
}

impl AnnouncementSink for RecordingSink {
    async fn announce(&mut self, announce: Announce) {
        let ip = announce.ip;
        self.log
            .lock()
            .expect("log")
            .push((Instant::now(), self.node.clone(), ip, true));
    }

    async fn withdraw(&mut self, ip: IpAddr) {
        self.log
            .lock()
            .expect("log")
            .push((Instant::now(), self.node.clone(), ip, false));
    }
}

/// Replays a shared log and panics if two nodes ever announced the same IP at once; returns who announces what at
/// the end.
pub fn check_single_owner(log: &[Entry]) -> std::collections::BTreeMap<IpAddr, String> {
    let mut owner: std::collections::BTreeMap<IpAddr, String> = std::collections::BTreeMap::new();
    for (at, node, ip, announce) in log {
        if *announce {
            if let Some(other) = owner.get(ip) {
                assert_eq!(
                    other, node,
                    "{ip} announced by {node} while {other} still announced it (at {at:?})"
                );
            }
            owner.insert(*ip, node.clone());
        } else if owner.get(ip) == Some(node) {
            owner.remove(ip);
        }
    }
    owner
}
