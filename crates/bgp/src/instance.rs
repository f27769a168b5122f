//! [`Speaker`]: the handle that owns every peer task and the table of routes to announce.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::fsm::SessionConfig;
use crate::neighbor::{PeerConfig, PeerStatus};
use crate::network;
use crate::packet::{CeaseSubcode, Notification};
use crate::rib::{RoutePolicy, RouteTable, Routes};
use crate::tasks::{ListenerTask, PassivePeers, PeerCommand, PeerTask};

/// Identity of the local speaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerConfig {
    pub local_asn: u32,
    /// BGP identifier (RFC 6286): unique per speaker, usually the node's IPv4 address.
    pub router_id: Ipv4Addr,
}

/// How [`Speaker::shutdown`] leaves the routers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Cease / Administrative Shutdown (RFC 4486): routers drop our routes at once.
    Withdraw,
    /// Close the connections without a NOTIFICATION: routers that negotiated graceful restart keep our routes for
    /// the restart time (RFC 4724), until the restarted speaker sends End-of-RIB.
    GracefulRestart,
}

/// The BFD session in `bfd`, taken out to go on with `wanted` timers (a Poll sequence, no new session), when there
/// is one and BFD stays on; else `None`, and `bfd` is left as it was.
fn keep_bfd(
    bfd: &mut Option<herald_bfd::SessionHandle>,
    wanted: Option<herald_bfd::Timers>,
) -> Option<herald_bfd::SessionHandle> {
    let timers = wanted?;
    let kept = bfd.take()?;
    kept.set_timers(timers);
    Some(kept)
}

/// How long a stopping peer may take to send its NOTIFICATION.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

struct PeerHandle {
    config: PeerConfig,
    commands: mpsc::Sender<PeerCommand>,
    status: watch::Receiver<PeerStatus>,
    task: JoinHandle<()>,
    /// The peer's BFD session (dropped after the task: the BGP session closes first, then BFD says AdminDown).
    bfd: Option<herald_bfd::SessionHandle>,
}

impl PeerHandle {
    async fn stop(mut self, command: PeerCommand) {
        let graceful = matches!(command, PeerCommand::Abandon);
        // The channel has room: stop is the last command, and the others are awaited as they are sent.
        let _ = self.commands.try_send(command);
        if tokio::time::timeout(STOP_TIMEOUT, &mut self.task).await.is_err() {
            warn!(peer = %self.config.address, "peer task did not stop in time, aborting it");
            self.task.abort();
        }
        // After the BGP session: BFD says AdminDown (dropped), or nothing for a graceful restart (see
        // `SessionHandle::abandon`).
        if let Some(bfd) = self.bfd.take()
            && graceful
        {
            bfd.abandon();
        }
    }
}

impl Drop for PeerHandle {
    fn drop(&mut self) {
        // Tasks never outlive their handle.
        self.task.abort();
    }
}

/// A listening socket shared by the passive peers with the same local address and port (one socket per address and
/// port: the kernel would spread connections over several sockets on one port at random). It holds each peer's TCP
/// MD5 key and lives while a passive peer uses it.
struct PassiveListener {
    listener: Arc<TcpListener>,
    peers: PassivePeers,
    task: JoinHandle<()>,
}

impl Drop for PassiveListener {
    fn drop(&mut self) {
        // Stop listening now: the aborted task drops its reference to the socket only later, and until then a new
        // listener on the same address and port (a changed peer, a restarted speaker) could not bind.
        let _ = socket2::SockRef::from(&*self.listener).shutdown(std::net::Shutdown::Both);
        self.task.abort();
    }
}

/// An announce-only BGP speaker: a set of peers, each with its own session task, and one table of routes that
/// every peer announces.
///
/// Route changes are diffs: each session sends only what changed since its last UPDATEs. Changing one peer never
/// touches another's session.
pub struct Speaker {
    config: SpeakerConfig,
    routes: watch::Sender<Routes>,
    peers: BTreeMap<IpAddr, PeerHandle>,
    listeners: BTreeMap<SocketAddr, PassiveListener>,
    /// BFD for the peers that want it, started with the first of them.
    bfd: Option<herald_bfd::Bfd>,
}

impl Speaker {
    /// A speaker without peers or routes. Call from within a tokio runtime.
    pub fn new(config: SpeakerConfig) -> Self {
        let (routes, _) = watch::channel(Routes::default());
        Speaker {
            config,
            routes,
            peers: BTreeMap::new(),
            listeners: BTreeMap::new(),
            bfd: None,
        }
    }

    pub fn config(&self) -> &SpeakerConfig {
        &self.config
    }

    /// Starts a session to a new peer; a passive peer's connections are accepted too (its listening socket, shared
    /// with other passive peers on the same address and port, is opened now: an error says why it cannot be).
    pub fn add_peer(&mut self, peer: PeerConfig) -> Result<()> {
        self.add_peer_with(peer, None)
    }

    /// [`Speaker::add_peer`], keeping `bfd` (the BFD session of the peer's previous configuration) if given.
    fn add_peer_with(&mut self, peer: PeerConfig, bfd: Option<herald_bfd::SessionHandle>) -> Result<()> {
        peer.validate()?;
        if self.peers.contains_key(&peer.address) {
            return Err(Error::PeerExists(peer.address));
        }
        let bfd = match bfd {
            Some(bfd) => Some(bfd),
            None => self.start_bfd(&peer)?,
        };
        let incoming = if peer.passive {
            Some(self.listen_for(&peer)?)
        } else {
            None
        };
        let session = SessionConfig {
            local_asn: peer.local_asn.unwrap_or(self.config.local_asn),
            router_id: self.config.router_id,
            peer_asn: peer.asn,
            hold_time: peer.hold_time,
            keepalive_time: peer.keepalive_time,
            connect_retry_max: peer.connect_retry_max,
            graceful_restart: peer.graceful_restart,
            families: peer.families.clone(),
            md5: peer.password.is_some(),
            connect_timeout: peer.connect_timeout,
            jitter_seed: rand::random(),
        };
        let (commands, commands_rx) = mpsc::channel(4);
        let (status_tx, status) = watch::channel(PeerStatus::new(peer.address, peer.asn));
        let task = PeerTask {
            config: peer.clone(),
            session,
            routes: self.routes.subscribe(),
            status: status_tx,
            commands: commands_rx,
            incoming,
            bfd: bfd.as_ref().map(herald_bfd::SessionHandle::status),
        };
        info!(peer = %peer.address, asn = peer.asn, port = peer.port, passive = peer.passive, "adding BGP peer");
        let task = tokio::spawn(task.run());
        self.peers.insert(
            peer.address,
            PeerHandle {
                config: peer,
                commands,
                status,
                task,
                bfd,
            },
        );
        Ok(())
    }

    /// Starts the peer's BFD session when it wants one.
    fn start_bfd(&mut self, peer: &PeerConfig) -> Result<Option<herald_bfd::SessionHandle>> {
        let Some(timers) = peer.bfd else { return Ok(None) };
        self.bfd
            .get_or_insert_with(herald_bfd::Bfd::new)
            .add(peer.address, peer.local_address, timers)
            .map(Some)
            .map_err(|source| Error::Bfd {
                peer: peer.address,
                source,
            })
    }

    /// Applies a peer's new configuration: nothing happens when it is unchanged; otherwise only this peer's
    /// session restarts (Cease / Other Configuration Change). Unknown peers are added.
    pub async fn set_peer(&mut self, peer: PeerConfig) -> Result<()> {
        peer.validate()?;
        if let Some(existing) = self.peers.get_mut(&peer.address) {
            if existing.config == peer {
                return Ok(());
            }
            if existing.config.same_session(&peer) {
                // Only BFD changed, and the BGP session stays up. New timers: the BFD session stays up too.
                if let Some(kept) = keep_bfd(&mut existing.bfd, peer.bfd) {
                    existing.bfd = Some(kept);
                    existing.config = peer;
                    return Ok(());
                }
                // BFD turned on or off: the old BFD session (if any) ends with AdminDown, which is no failure at
                // the router (RFC 5882 §3.2); a new one (if any) starts.
                existing.bfd = None;
                let started = self.start_bfd(&peer);
                let (bfd, config, result) = match started {
                    Ok(bfd) => (bfd, peer, Ok(())),
                    // The BGP session goes on without BFD; the next change tries again.
                    Err(e) => (None, PeerConfig { bfd: None, ..peer }, Err(e)),
                };
                if let Some(existing) = self.peers.get_mut(&config.address) {
                    let status = bfd.as_ref().map(herald_bfd::SessionHandle::status);
                    let _ = existing.commands.send(PeerCommand::Bfd(status)).await;
                    existing.bfd = bfd;
                    existing.config = config;
                }
                return result;
            }
            if let Some(mut old) = self.peers.remove(&peer.address) {
                self.stop_listening_for(&old.config);
                // The BFD session goes on (with new timers, if they changed): the path did not change.
                let bfd = keep_bfd(&mut old.bfd, peer.bfd);
                let cease = Notification::new(CeaseSubcode::OtherConfigurationChange);
                old.stop(PeerCommand::Stop(cease)).await;
                return self.add_peer_with(peer, bfd);
            }
        }
        self.add_peer(peer)
    }

    /// Ends a peer's session (Cease / Peer De-configured, RFC 4486) and forgets it.
    pub async fn remove_peer(&mut self, address: IpAddr) -> Result<()> {
        let peer = self.peers.remove(&address).ok_or(Error::UnknownPeer(address))?;
        self.stop_listening_for(&peer.config);
        let cease = Notification::new(CeaseSubcode::PeerDeconfigured);
        peer.stop(PeerCommand::Stop(cease)).await;
        Ok(())
    }

    /// Registers a passive peer with the listener of its address and port (opening it if needed, installing the
    /// peer's TCP MD5 key) and returns where its connections arrive.
    fn listen_for(&mut self, peer: &PeerConfig) -> Result<mpsc::Receiver<tokio::net::TcpStream>> {
        let local = network::listen_address(peer);
        let error = |source| Error::Listen {
            peer: peer.address,
            local,
            source,
        };
        if let Some(other) = self.listeners.keys().find(|other| {
            other.port() == local.port()
                && other.is_ipv4() == local.is_ipv4()
                && other.ip().is_unspecified() != local.ip().is_unspecified()
        }) {
            return Err(Error::ListenConflict {
                peer: peer.address,
                local,
                other: *other,
            });
        }
        let listener = match self.listeners.entry(local) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let listener = Arc::new(network::listen(local).map_err(error)?);
                let peers = PassivePeers::default();
                let task = tokio::spawn(
                    ListenerTask {
                        listener: Arc::clone(&listener),
                        peers: Arc::clone(&peers),
                    }
                    .run(),
                );
                info!(%local, "listening for BGP connections of passive peers");
                entry.insert(PassiveListener { listener, peers, task })
            }
        };
        if let Some(key) = &peer.password
            && let Err(e) = network::set_listener_key(&listener.listener, peer.address, Some(key))
        {
            let unused = listener.peers.lock().unwrap_or_else(PoisonError::into_inner).is_empty();
            if unused {
                self.listeners.remove(&local);
            }
            return Err(error(e));
        }
        let (tx, rx) = mpsc::channel(1);
        listener
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer.address, tx);
        Ok(rx)
    }

    /// Undoes [`Speaker::listen_for`]; the listener closes with its last peer.
    fn stop_listening_for(&mut self, peer: &PeerConfig) {
        if !peer.passive {
            return;
        }
        let local = network::listen_address(peer);
        let Some(listener) = self.listeners.get(&local) else {
            return;
        };
        let empty = {
            let mut peers = listener.peers.lock().unwrap_or_else(PoisonError::into_inner);
            peers.remove(&peer.address);
            peers.is_empty()
        };
        if peer.password.is_some() {
            // Best effort: the key goes with the socket anyway when it closes.
            let _ = network::set_listener_key(&listener.listener, peer.address, None);
        }
        if empty {
            info!(%local, "no passive BGP peer left: closing the listening socket");
            self.listeners.remove(&local);
        }
    }

    /// Announces `prefixes` (host bits are cleared) with `policy`, replacing the policy of any already announced.
    pub fn announce(&self, prefixes: impl IntoIterator<Item = IpNet>, policy: RoutePolicy) {
        let prefixes: Vec<IpNet> = prefixes.into_iter().map(|p| p.trunc()).collect();
        self.routes.send_if_modified(|routes| {
            let mut changed = false;
            for p in prefixes {
                changed |= routes.insert(p, policy.clone());
            }
            changed
        });
    }

    /// Withdraws `prefixes`; unknown ones are ignored.
    pub fn withdraw(&self, prefixes: impl IntoIterator<Item = IpNet>) {
        let prefixes: Vec<IpNet> = prefixes.into_iter().map(|p| p.trunc()).collect();
        self.routes.send_if_modified(|routes| {
            let mut changed = false;
            for p in &prefixes {
                changed |= routes.remove(p);
            }
            changed
        });
    }

    /// Replaces the whole table (what a reconciler computes); peers receive only the difference, each in time
    /// proportional to it. Returns whether anything changed.
    pub fn set_routes(&self, table: RouteTable) -> bool {
        self.routes.send_if_modified(|routes| routes.replace(table))
    }

    /// The routes currently announced (to every peer whose session is up).
    pub fn routes(&self) -> RouteTable {
        self.routes.borrow().table().clone()
    }

    /// The prefixes currently announced.
    pub fn prefixes(&self) -> Vec<IpNet> {
        self.routes.borrow().table().keys().copied().collect()
    }

    /// A snapshot of every peer's status, ordered by address.
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers.values().map(|p| p.status.borrow().clone()).collect()
    }

    /// A receiver that sees every status change of one peer (for waiting on a state).
    pub fn watch_peer(&self, address: IpAddr) -> Option<watch::Receiver<PeerStatus>> {
        self.peers.get(&address).map(|p| p.status.clone())
    }

    /// Stops every session; see [`ShutdownMode`].
    pub async fn shutdown(mut self, mode: ShutdownMode) {
        // No new connections while the sessions close.
        self.listeners.clear();
        let mut stopping = tokio::task::JoinSet::new();
        for peer in std::mem::take(&mut self.peers).into_values() {
            let command = match mode {
                ShutdownMode::Withdraw => PeerCommand::Stop(Notification::cease(
                    CeaseSubcode::AdministrativeShutdown,
                    "herald shutting down",
                )),
                ShutdownMode::GracefulRestart => PeerCommand::Abandon,
            };
            // All peers stop at once; each waits for its own NOTIFICATION to go out.
            stopping.spawn(peer.stop(command));
        }
        while stopping.join_next().await.is_some() {}
    }
}
