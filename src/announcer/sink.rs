//! Where the election's announce/withdraw decisions land: the ARP/NDP engine, on the interface that carries the IP.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use herald_election::AnnouncementSink;
use herald_l2::{AnnounceMode, CountersSnapshot, InterfaceChoice, InterfaceHandle, L2Engine, Unusable};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

#[derive(Default)]
struct State {
    /// The interface each desired IP belongs on, and whether the engine can answer there.
    routes: HashMap<IpAddr, InterfaceChoice>,
    /// Attached interfaces.
    handles: HashMap<String, InterfaceHandle>,
    /// IPs answered now, and where.
    announced: HashMap<IpAddr, String>,
    /// IPs some Herald node has announced before (recorded on their Services).
    held_before: HashSet<IpAddr>,
    /// IPs this process has answered for at some point.
    answered_before: HashSet<IpAddr>,
}

/// The election's sink. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct L2Sink {
    engine: Arc<L2Engine>,
    state: Arc<Mutex<State>>,
    /// The IP Leases, to tell a brand-new IP (probe it) from a takeover (announce at once).
    leases: Api<Lease>,
    /// Tells the announcer "now answering `ip` on this interface" for IPs announced at once (a probed IP is
    /// reported by the engine when its probe passes).
    answering: mpsc::Sender<(IpAddr, String)>,
}

impl L2Sink {
    pub fn new(engine: Arc<L2Engine>, leases: Api<Lease>, answering: mpsc::Sender<(IpAddr, String)>) -> Self {
        Self {
            engine,
            state: Arc::default(),
            leases,
            answering,
        }
    }

    /// How to start answering for `ip`. A takeover (some Herald node held the IP before) goes out at once: the
    /// previous holder may still answer for a moment (the election and the on-wire conflict watch cover that), and
    /// the gratuitous burst must go out now. Only an IP no Herald node ever held is probed first (RFC 5227 /
    /// DAD-style NS), so Herald never takes an address another host already uses. "Held before": this process
    /// answered it, or a Service records an announcer for it, or its Lease had an earlier holder (the election
    /// counts `leaseTransitions` from 1 for the first holder). If the Lease cannot be read, announce at once.
    async fn mode(&self, ip: IpAddr) -> AnnounceMode {
        {
            let state = self.lock();
            if state.answered_before.contains(&ip) || state.held_before.contains(&ip) {
                return AnnounceMode::Immediately;
            }
        }
        let Ok(name) = herald_election::naming::ip_lease_name(ip) else {
            return AnnounceMode::Immediately;
        };
        match self.leases.get_opt(&name).await {
            Ok(Some(lease)) if lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0) <= 1 => {
                AnnounceMode::Probe
            }
            _ => AnnounceMode::Immediately,
        }
    }

    /// Records which interface carries `ip` (the announcer recomputes it on every change), and says once per change
    /// why this node cannot answer for it (it then leaves itself out of the IP's election). No interface holding the
    /// IP's subnet is not worth a line: nodes on other networks see that for every IP of every other network.
    pub fn route(&self, ip: IpAddr, choice: InterfaceChoice) {
        let before = self.lock().routes.insert(ip, choice.clone());
        if let Err(why) = &choice.usable
            && !matches!(why, Unusable::NoSubnet(_))
            && before.is_none_or(|b| b.usable.as_ref().err() != Some(why))
        {
            info!(%ip, "this node cannot answer for this IP and is not a candidate for it: {why}");
        }
    }

    /// Replaces the set of IPs a Herald node has announced before.
    pub fn set_held_before(&self, ips: HashSet<IpAddr>) {
        self.lock().held_before = ips;
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
        let Some(interface) = self.lock().routes.get(&ip).and_then(|c| c.interface.clone()) else {
            error!(%ip, "elected, but no interface of this node carries the IP; set the Eip's spec.interface");
            return;
        };
        let Some(handle) = self.handle(&interface) else { return };
        let mode = self.mode(ip).await;
        match handle.announce(ip, mode).await {
            Ok(()) => {
                info!(%ip, interface, ?mode, "answering ARP/NDP");
                if mode == AnnounceMode::Immediately && self.answering.try_send((ip, interface.clone())).is_err() {
                    // Only the Service annotation and Event are lost; answering is unaffected.
                    warn!(%ip, "announcer busy: not recording this announcement");
                }
                let mut state = self.lock();
                state.announced.insert(ip, interface);
                state.answered_before.insert(ip);
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
