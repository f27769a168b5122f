//! The async shell of single-hop BFD (RFC 5881): UDP sockets and timers around [`Session`]s.
//!
//! ```text
//!   router ──UDP :3784, TTL 255──▶ receive task (one per family) ──ControlPacket (mpsc, by source address)──▶ session task
//!   router ◀──UDP from :49152-65535, TTL 255────────────────────────────────────────────────────────────────── session task
//!                                                                                  SessionStatus (watch) ──▶ the BGP peer
//! ```
//! [`Bfd`] owns the receive sockets and the table of sessions; [`Bfd::add`] starts a session to one peer and
//! returns its [`SessionHandle`]. Packets are matched to sessions by their source address (one session per peer
//! address on this system), and the session checks the discriminators. Packets that arrive with a TTL other than 255
//! were routed, so they come from no direct neighbor: they are dropped (RFC 5881 §5, the GTSM rule).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::packet::{ControlPacket, Diag, State};
use crate::session::{Action, Session, Timers};

/// RFC 5881 §4: control packets go to UDP port 3784.
pub const PORT: u16 = 3784;
/// RFC 5881 §4: the source port of a session's packets is in 49152–65535.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// RFC 5881 §5: single-hop packets are sent with TTL (hop limit) 255 and accepted only with 255.
pub const TTL: u8 = 255;

/// What one session reports to its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    /// Why the session last left Up (or None).
    pub diag: Diag,
    /// The state the peer last reported: a peer that went AdminDown took the session down on purpose, and its
    /// client (the BGP session) must not be taken down for it (RFC 5882 §3.2).
    pub remote_state: State,
    /// The diagnostic the peer last sent.
    pub remote_diag: Diag,
}

impl SessionStatus {
    /// Whether a change from `self` to `next` is a failure the client acts on: the session was Up and is Down,
    /// and not because the peer said AdminDown (RFC 5882 §3.2).
    pub fn failed(&self, next: &SessionStatus) -> bool {
        self.state == State::Up && next.state == State::Down && next.remote_state != State::AdminDown
    }
}

/// Sessions by peer address, each with where its received packets go.
type Sessions = Arc<Mutex<HashMap<IpAddr, mpsc::Sender<(ControlPacket, Instant)>>>>;

/// The BFD service of one node: receive sockets (opened per family on the first session of that family) and the
/// sessions. Create it inside a tokio runtime; dropping it ends the receive tasks.
pub struct Bfd {
    sessions: Sessions,
    receivers: Mutex<[Option<JoinHandle<()>>; 2]>,
    next_discriminator: AtomicU32,
    /// The port it receives on.
    port: u16,
    /// The port its sessions send to.
    peer_port: u16,
}

impl Drop for Bfd {
    fn drop(&mut self) {
        for task in self
            .receivers
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
        {
            task.abort();
        }
    }
}

/// One running session; dropping it takes the session administratively down (the peer is told, so it does not
/// count this as a failure) and ends it.
pub struct SessionHandle {
    peer: IpAddr,
    sessions: Sessions,
    status: watch::Receiver<SessionStatus>,
    timers: watch::Sender<Timers>,
    /// How the session ends: `true` tells the peer (AdminDown), `false` goes silent.
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl SessionHandle {
    /// Sees every state change.
    pub fn status(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// Changes the session's timers; the session stays up (a Poll sequence tells the peer).
    pub fn set_timers(&self, timers: Timers) {
        self.timers.send_if_modified(|t| std::mem::replace(t, timers) != timers);
    }

    /// Ends the session without a word, as if this node had died: for a graceful restart of the BGP speaker. An
    /// AdminDown could reach the router before it has handled the closed BGP connection, and routers (FRR 8.4,
    /// BIRD 2) then stop the session instead of keeping its routes; a BFD session that times out later finds the
    /// BGP session already in graceful restart.
    pub fn abandon(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(false);
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.peer);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot receive BFD packets on UDP port {port} ({family}): {source}{hint}",
        hint = if source.kind() == io::ErrorKind::AddrInUse {
            "; is another BFD daemon (FRR bfdd, BIRD) running on this node?"
        } else {
            ""
        }
    )]
    Listen {
        port: u16,
        family: &'static str,
        source: io::Error,
    },
    #[error("cannot open the BFD socket to {peer}: {source}")]
    Socket { peer: IpAddr, source: io::Error },
    #[error("a BFD session to {0} exists already")]
    Exists(IpAddr),
}

impl Bfd {
    /// A BFD service receiving on [`PORT`].
    pub fn new() -> Bfd {
        Bfd::with_ports(PORT, PORT)
    }

    /// A BFD service receiving on `port` and sending to `peer_port` (tests run two in one namespace).
    pub fn with_ports(port: u16, peer_port: u16) -> Bfd {
        Bfd {
            sessions: Sessions::default(),
            receivers: Mutex::new([None, None]),
            next_discriminator: AtomicU32::new(rand::random::<u32>() >> 1 | 1),
            port,
            peer_port,
        }
    }

    /// Starts a session to `peer` (a direct neighbor), from `local` if given (else the address the kernel routes
    /// from), with `timers`.
    pub fn add(&self, peer: IpAddr, local: Option<IpAddr>, timers: Timers) -> Result<SessionHandle, Error> {
        let peer = peer.to_canonical();
        if self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&peer)
        {
            return Err(Error::Exists(peer));
        }
        self.listen(peer.is_ipv4())?;
        let socket = send_socket(peer, local).map_err(|source| Error::Socket { peer, source })?;
        let (packets_tx, packets) = mpsc::channel(16);
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer, packets_tx);
        let discriminator = self.next_discriminator.fetch_add(1, Ordering::Relaxed).max(1);
        let session = Session::new(timers, discriminator, rand::random());
        let (status_tx, status) = watch::channel(SessionStatus {
            state: State::Down,
            diag: Diag::None,
            remote_state: State::Down,
            remote_diag: Diag::None,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (timers_tx, timers_rx) = watch::channel(timers);
        info!(%peer, ?local, tx = ?timers.desired_min_tx, rx = ?timers.required_min_rx, multiplier = timers.detect_mult, "starting BFD session");
        tokio::spawn(
            SessionTask {
                peer,
                session,
                socket,
                packets,
                to: SocketAddr::new(peer, self.peer_port),
                status: status_tx,
                timers: timers_rx,
                send_failing: false,
            }
            .run(stopped),
        );
        Ok(SessionHandle {
            peer,
            sessions: Arc::clone(&self.sessions),
            status,
            timers: timers_tx,
            stop: Some(stop),
        })
    }

    /// Opens the receive socket of the family if it is not open yet.
    fn listen(&self, v4: bool) -> Result<(), Error> {
        let mut receivers = self.receivers.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut receivers[usize::from(!v4)];
        if slot.as_ref().is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let socket = receive_socket(v4, self.port).map_err(|source| Error::Listen {
            port: self.port,
            family: if v4 { "IPv4" } else { "IPv6" },
            source,
        })?;
        *slot = Some(tokio::spawn(receive(socket, Arc::clone(&self.sessions))));
        Ok(())
    }
}

impl Default for Bfd {
    fn default() -> Self {
        Bfd::new()
    }
}

/// An unbound UDP socket of the family, and the family's unspecified address.
fn udp_socket(v4: bool) -> io::Result<(socket2::Socket, IpAddr)> {
    let (domain, any) = if v4 {
        (socket2::Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    } else {
        (socket2::Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    Ok((socket, any))
}

/// A bound socket, for tokio.
fn into_tokio(socket: socket2::Socket) -> io::Result<UdpSocket> {
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(StdUdpSocket::from(socket))
}

/// The socket every session of a family receives on: any address, port [`PORT`], with the TTL of each datagram.
fn receive_socket(v4: bool, port: u16) -> io::Result<UdpSocket> {
    let (socket, any) = udp_socket(v4)?;
    if !v4 {
        socket.set_only_v6(true)?;
    }
    herald_sys::udp::receive_ttl(&socket, v4)?;
    socket.bind(&SocketAddr::new(any, port).into())?;
    into_tokio(socket)
}

/// A session's sending socket: from a port in [`SOURCE_PORTS`], TTL 255. Not connected: a peer that cannot be
/// reached yet (its route missing while a link is down) is no error, only packets that do not leave.
fn send_socket(peer: IpAddr, local: Option<IpAddr>) -> io::Result<UdpSocket> {
    let v4 = peer.is_ipv4();
    let (socket, any) = udp_socket(v4)?;
    if v4 {
        socket.set_ttl_v4(u32::from(TTL))?;
    } else {
        socket.set_unicast_hops_v6(u32::from(TTL))?;
    }
    let local = local.unwrap_or(any);
    // A random port of the range, then the next ones, up to 256 tries: the first free one wins.
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let first = rand::random::<u32>() % span;
    let mut in_use = None;
    for i in 0..256 {
        let port = SOURCE_PORTS.start() + ((first + i) % span) as u16;
        match socket.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => return into_tokio(socket),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => in_use = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(in_use.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
}

/// Reads the family's datagrams and hands each valid one to the session of its source address.
async fn receive(socket: UdpSocket, sessions: Sessions) {
    let mut buf = [0u8; 128];
    let mut dropped_ttl = 0u64;
    loop {
        let got = socket
            .async_io(Interest::READABLE, || herald_sys::udp::recv_with_ttl(&socket, &mut buf))
            .await;
        let datagram = match got {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "receiving a BFD packet failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let at = Instant::now();
        let from = datagram.from.ip().to_canonical();
        if datagram.ttl != Some(TTL) {
            dropped_ttl += 1;
            // Logged at the first and then every thousandth: a routed sender cannot flood the log.
            if dropped_ttl % 1000 == 1 {
                warn!(%from, ttl = ?datagram.ttl, dropped = dropped_ttl, "BFD packet with a TTL other than 255 (not from a direct neighbor): dropped");
            }
            continue;
        }
        let packet = match ControlPacket::decode(&buf[..datagram.len]) {
            Ok(p) => p,
            Err(e) => {
                debug!(%from, error = %e, "invalid BFD packet: dropped");
                continue;
            }
        };
        let session = sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&from)
            .cloned();
        match session {
            // A full queue: the session is behind by 16 packets; this one is dropped like a lost one.
            Some(session) => {
                let _ = session.try_send((packet, at));
            }
            None => debug!(%from, "BFD packet from an address without a session: dropped"),
        }
    }
}

struct SessionTask {
    peer: IpAddr,
    session: Session,
    socket: UdpSocket,
    packets: mpsc::Receiver<(ControlPacket, Instant)>,
    /// The peer's address and BFD port.
    to: SocketAddr,
    status: watch::Sender<SessionStatus>,
    timers: watch::Receiver<Timers>,
    /// The last send failed.
    send_failing: bool,
}

impl SessionTask {
    async fn run(mut self, mut stopped: tokio::sync::oneshot::Receiver<bool>) {
        let actions = self.session.poll(Instant::now().into_std());
        self.perform(actions).await;
        loop {
            let wake = self.session.next_wakeup().map(Instant::from_std);
            tokio::select! {
                // The handle was dropped (tell the peer) or abandoned (go silent). Its drop also closes the packet
                // queue, which disables the branch below: this one says how to end.
                tell = &mut stopped => {
                    if tell.unwrap_or(true) {
                        break;
                    }
                    return;
                }
                Some((packet, at)) = self.packets.recv() => {
                    match self.session.received(at.into_std(), &packet) {
                        Ok(actions) => self.perform(actions).await,
                        Err(why) => debug!(peer = %self.peer, %why, "BFD packet ignored"),
                    }
                }
                Ok(()) = self.timers.changed() => {
                    let timers = *self.timers.borrow_and_update();
                    info!(peer = %self.peer, tx = ?timers.desired_min_tx, rx = ?timers.required_min_rx, multiplier = timers.detect_mult, "BFD timers changed");
                    let actions = self.session.set_timers(Instant::now().into_std(), timers);
                    self.perform(actions).await;
                }
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                    let actions = self.session.poll(Instant::now().into_std());
                    self.perform(actions).await;
                }
            }
        }
        let actions = self.session.admin_down(Instant::now().into_std());
        self.perform(actions).await;
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(packet) => {
                    // No route to the peer (a link down): said when it starts and when it ends, never per packet;
                    // the detection time does the rest.
                    match self.socket.send_to(&packet.encode(), self.to).await {
                        Err(e) if !self.send_failing => {
                            self.send_failing = true;
                            info!(peer = %self.peer, error = %e, "cannot send BFD packets to the peer");
                        }
                        Ok(_) if self.send_failing => {
                            self.send_failing = false;
                            info!(peer = %self.peer, "sending BFD packets to the peer again");
                        }
                        _ => {}
                    }
                }
                Action::StateChanged { from, to, diag } => {
                    let (remote_state, remote_diag) = (self.session.remote_state(), self.session.remote_diag());
                    if to == State::Up || from == State::Up {
                        info!(peer = %self.peer, %from, %to, %diag, remote = %remote_state, %remote_diag, "BFD session state changed");
                    } else {
                        debug!(peer = %self.peer, %from, %to, %diag, remote = %remote_state, %remote_diag, "BFD session state changed");
                    }
                    self.status.send_replace(SessionStatus {
                        state: to,
                        diag: self.session.diag(),
                        remote_state,
                        remote_diag,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
