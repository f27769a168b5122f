//! Where the election's announce/withdraw decisions land: the ARP/NDP engine, on the interface the decision names.
//! Everything it needs comes with the decision ([`Announce`]: the interface, whether it is a takeover); it reads
//! nothing from the API and reports nothing back: the engine's own events say when an address is answered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use herald_election::{Announce, AnnouncementSink};
use herald_l2::{AnnounceMode, CountersSnapshot, InterfaceHandle, L2Engine};
use tracing::{error, info};

/// The election's sink. The election task owns it; [`InterfaceCounters`] reads its interfaces' counters.
pub struct L2Sink {
    engine: Arc<L2Engine>,
    /// Attached interfaces (written here only; shared with the metrics).
    handles: Arc<Mutex<HashMap<String, InterfaceHandle>>>,
    /// IPs answered now, and where.
    announced: HashMap<IpAddr, String>,
}

/// The counters of every interface the sink attached, for the metrics.
#[derive(Clone)]
pub struct InterfaceCounters(Arc<Mutex<HashMap<String, InterfaceHandle>>>);

impl InterfaceCounters {
    /// Counters of every attached interface.
    pub fn read(&self) -> Vec<(String, CountersSnapshot)> {
        lock(&self.0)
            .iter()
            .map(|(name, h)| (name.clone(), h.counters()))
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent (plain inserts); keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How to start answering: a takeover (some Herald agent held the IP before) goes out at once, since the previous
/// holder is gone and the gratuitous burst must go out now (the election and the on-wire conflict watch cover a
/// holder that still answers for a moment). An IP no agent ever held is probed first (RFC 5227 / DAD-style NS), so
/// Herald never takes an address another host already uses.
pub fn mode(announce: &Announce) -> AnnounceMode {
    if announce.held_before {
        AnnounceMode::Immediately
    } else {
        AnnounceMode::Probe
    }
}

impl L2Sink {
    pub fn new(engine: Arc<L2Engine>) -> Self {
        Self {
            engine,
            handles: Arc::default(),
            announced: HashMap::new(),
        }
    }

    /// A reader of the interfaces' counters.
    pub fn counters(&self) -> InterfaceCounters {
        InterfaceCounters(self.handles.clone())
    }

    fn handle(&self, interface: &str) -> Option<InterfaceHandle> {
        if let Some(h) = lock(&self.handles).get(interface) {
            return Some(h.clone());
        }
        match self.engine.attach(interface) {
            Ok(h) => {
                lock(&self.handles).insert(interface.to_string(), h.clone());
                Some(h)
            }
            Err(e) => {
                error!(interface, error = %e, "cannot answer ARP/NDP on this interface");
                None
            }
        }
    }
}

impl AnnouncementSink for L2Sink {
    async fn announce(&mut self, announce: Announce) {
        let ip = announce.ip;
        let Some(interface) = announce.interface.clone() else {
            error!(%ip, "elected, but no interface of this node carries the IP; set the Eip's spec.interface");
            return;
        };
        let Some(handle) = self.handle(&interface) else { return };
        let mode = mode(&announce);
        match handle.announce(ip, mode).await {
            Ok(()) => {
                info!(%ip, interface, ?mode, "answering ARP/NDP");
                self.announced.insert(ip, interface);
            }
            Err(e) => error!(%ip, interface, error = %e, "cannot announce"),
        }
    }

    async fn withdraw(&mut self, ip: IpAddr) {
        let Some(interface) = self.announced.remove(&ip) else {
            return;
        };
        let handle = lock(&self.handles).get(&interface).cloned();
        if let Some(h) = handle
            && let Err(e) = h.withdraw(ip).await
        {
            error!(%ip, interface, error = %e, "cannot withdraw");
        }
        info!(%ip, interface, "stopped answering");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_ip_nobody_held_is_probed() {
        let announce = |held_before| Announce {
            ip: "192.0.2.1".parse().unwrap(),
            interface: Some("eth0".into()),
            held_before,
        };
        assert_eq!(mode(&announce(false)), AnnounceMode::Probe);
        assert_eq!(mode(&announce(true)), AnnounceMode::Immediately);
    }
}
