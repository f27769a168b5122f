//! Where the election's announce/withdraw decisions land: the ARP/NDP engine, on the interface the decision names.
//! Everything it needs comes with the decision ([`Announce`]: the interface, whether it is a takeover); it reads
//! nothing from the API and reports nothing back: the engine's own events say when an address is answered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use herald_election::{Announce, AnnouncementSink};
use herald_l2::{AnnounceMode, CountersSnapshot, InterfaceHandle, L2Engine};
use tracing::{error, info};

/// The election's sink. The election task owns it.
pub struct L2Sink {
    interfaces: Interfaces,
    /// Whether an IP is proven free now (the Eips' `status.probes`): it is then announced without a probe.
    proven_free: Box<dyn Fn(IpAddr) -> bool + Send>,
    /// IPs answered now, and where.
    announced: HashMap<IpAddr, String>,
}

/// The interfaces the engine answers on, each attached once on first use and shared by the sink, the address
/// prober and the metrics. Cheap to clone.
#[derive(Clone)]
pub struct Interfaces {
    engine: Arc<L2Engine>,
    handles: Arc<Mutex<HashMap<String, InterfaceHandle>>>,
}

impl Interfaces {
    pub fn new(engine: Arc<L2Engine>) -> Self {
        Self {
            engine,
            handles: Arc::default(),
        }
    }

    /// Counters of every attached interface.
    pub fn counters(&self) -> Vec<(String, CountersSnapshot)> {
        lock(&self.handles)
            .iter()
            .map(|(name, h)| (name.clone(), h.counters()))
            .collect()
    }

    /// The handle of `interface`, attached now if it was not yet (a failure is logged).
    pub fn handle(&self, interface: &str) -> Option<InterfaceHandle> {
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

    /// The handle of `interface` if it is attached.
    fn attached(&self, interface: &str) -> Option<InterfaceHandle> {
        lock(&self.handles).get(interface).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent (plain inserts); keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How to start answering: a takeover (some Herald agent held the IP before) goes out at once, since the previous
/// holder is gone and the gratuitous burst must go out now (the election and the on-wire conflict watch cover a
/// holder that still answers for a moment). So does an IP a node of the cluster proved free moments ago (the Eip's
/// `status.probes`, see `crate::prober`). Any other IP no agent ever held is probed first (RFC 5227 / DAD-style
/// NS), so Herald never takes an address another host already uses.
pub fn mode(announce: &Announce, proven_free: bool) -> AnnounceMode {
    if announce.held_before || proven_free {
        AnnounceMode::Immediately
    } else {
        AnnounceMode::Probe
    }
}

impl L2Sink {
    /// A sink answering on `interfaces`; `proven_free` says whether an IP may skip its probe.
    pub fn new(interfaces: Interfaces, proven_free: impl Fn(IpAddr) -> bool + Send + 'static) -> Self {
        Self {
            interfaces,
            proven_free: Box::new(proven_free),
            announced: HashMap::new(),
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
        let Some(handle) = self.interfaces.handle(&interface) else {
            return;
        };
        let mode = mode(&announce, !announce.held_before && (self.proven_free)(ip));
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
        if let Some(h) = self.interfaces.attached(&interface)
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
    fn only_an_ip_nobody_held_nor_proved_free_is_probed() {
        let announce = |held_before| Announce {
            ip: "192.0.2.1".parse().unwrap(),
            interface: Some("eth0".into()),
            held_before,
        };
        assert_eq!(mode(&announce(false), false), AnnounceMode::Probe);
        assert_eq!(mode(&announce(true), false), AnnounceMode::Immediately);
        assert_eq!(
            mode(&announce(false), true),
            AnnounceMode::Immediately,
            "proven free moments ago"
        );
    }
}
