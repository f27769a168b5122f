//! Where the election's announce/withdraw decisions land: the ARP/NDP engine, on the interface that carries the IP.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use herald_election::AnnouncementSink;
use herald_l2::{AnnounceMode, CountersSnapshot, InterfaceHandle, L2Engine};
use tracing::{error, info};

#[derive(Default)]
struct State {
    /// The interface each desired IP belongs on (`None`: no interface of this node carries it).
    routes: HashMap<IpAddr, Option<String>>,
    /// Attached interfaces.
    handles: HashMap<String, InterfaceHandle>,
    /// IPs answered now, and where.
    announced: HashMap<IpAddr, String>,
    /// IPs some Herald node has announced before (recorded on their Services). Their takeovers announce at once; any
    /// other IP is probed first, so Herald never steals an address another host already uses.
    held_before: HashSet<IpAddr>,
}

/// The election's sink. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct L2Sink {
    engine: Arc<L2Engine>,
    state: Arc<Mutex<State>>,
}

impl L2Sink {
    pub fn new(engine: Arc<L2Engine>) -> Self {
        Self {
            engine,
            state: Arc::default(),
        }
    }

    /// Records which interface carries `ip` (the announcer recomputes it on every change).
    pub fn route(&self, ip: IpAddr, interface: Option<String>) {
        self.lock().routes.insert(ip, interface);
    }

    /// Replaces the set of IPs a Herald node has announced before.
    pub fn set_held_before(&self, ips: HashSet<IpAddr>) {
        self.lock().held_before = ips;
    }

    /// Has a Herald node announced `ip` before?
    pub fn held_before(&self, ip: IpAddr) -> bool {
        self.lock().held_before.contains(&ip)
    }

    /// The interface `ip` is (or would be) answered on.
    pub fn interface_of(&self, ip: IpAddr) -> Option<String> {
        let state = self.lock();
        state
            .announced
            .get(&ip)
            .cloned()
            .or_else(|| state.routes.get(&ip).cloned().flatten())
    }

    /// Counters of every attached interface.
    pub fn counters(&self) -> Vec<(String, CountersSnapshot)> {
        self.lock()
            .handles
            .iter()
            .map(|(name, h)| (name.clone(), h.counters()))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent (plain map inserts); keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, interface: &str) -> Option<InterfaceHandle> {
        if let Some(h) = self.lock().handles.get(interface) {
            return Some(h.clone());
        }
        match self.engine.attach(interface) {
            Ok(h) => {
                self.lock().handles.insert(interface.to_string(), h.clone());
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
    async fn announce(&mut self, ip: IpAddr) {
        let Some(interface) = self.lock().routes.get(&ip).cloned().flatten() else {
            error!(%ip, "elected, but no interface of this node carries the IP; set the Eip's spec.interface");
            return;
        };
        let Some(handle) = self.handle(&interface) else { return };
        // A takeover from another Herald node announces at once: the previous holder may still answer for a moment
        // (the election and the on-wire conflict watch cover that), and the gratuitous burst must go out now. An IP
        // no Herald node ever announced is probed first (RFC 5227 / DAD-style NS); if another host answers, the
        // engine refuses it and the announcer reports the conflict.
        let mode = if self.held_before(ip) {
            AnnounceMode::Immediately
        } else {
            AnnounceMode::Probe
        };
        match handle.announce(ip, mode).await {
            Ok(()) => {
                info!(%ip, interface, "answering ARP/NDP");
                self.lock().announced.insert(ip, interface);
            }
            Err(e) => error!(%ip, interface, error = %e, "cannot announce"),
        }
    }

    async fn withdraw(&mut self, ip: IpAddr) {
        let Some(interface) = self.lock().announced.remove(&ip) else {
            return;
        };
        let handle = self.lock().handles.get(&interface).cloned();
        if let Some(h) = handle
            && let Err(e) = h.withdraw(ip).await
        {
            error!(%ip, interface, error = %e, "cannot withdraw");
        }
        info!(%ip, interface, "stopped answering");
    }
}
