//! The task that owns one peer: its sockets, its timers and its [`SessionFsm`]; and the task that accepts the
//! connections of passive peers.
//!
//! ```text
//!  Speaker ──PeerCommand (mpsc, bounded)──▶ peer task ──TCP──▶ router
//!     │                                      │  ▲   ▲
//!     └──Routes (watch)─────────────────────▶│  │   └─ TcpStream (mpsc, 1) ── listener task ◀──TCP── router
//!                                            │  └─ timers (deadlines), connect future
//!                                            └──PeerStatus (watch)──▶ Speaker::peers()
//! ```
//! The route table is a `watch` channel: bursts of changes coalesce, and each task turns the changes since its last
//! sync (the table's change log) into a diff against its own Adj-RIB-Out.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::fsm::{Action, Direction, Event, Negotiated, SessionConfig, SessionFsm, State, Timer};
use crate::neighbor::{PeerConfig, PeerStatus};
use crate::network;
use crate::packet::{DecodeContext, Message, Notification, Update, decode_frame};
use crate::rib::{AdjRibOut, Routes, SessionRouting};

/// Messages from the [`crate::Speaker`] to a peer task.
#[derive(Debug)]
pub enum PeerCommand {
    /// Send this Cease if a session is up, close, and end the task.
    Stop(Notification),
    /// Close the connection without a NOTIFICATION and end the task, so a graceful-restart helper keeps our
    /// routes (RFC 4724 §4.2: only a TCP failure, not a NOTIFICATION, starts the helper's restart timer).
    Abandon,
    /// Follow this BFD session from now on (its timers changed, or BFD was turned on), or none: the BGP session
    /// itself is not touched.
    Bfd(Option<watch::Receiver<herald_bfd::SessionStatus>>),
}

/// Everything the peer task needs to start.
pub struct PeerTask {
    pub config: PeerConfig,
    pub session: SessionConfig,
    pub routes: watch::Receiver<Routes>,
    pub status: watch::Sender<PeerStatus>,
    pub commands: mpsc::Receiver<PeerCommand>,
    /// Connections from the peer (passive peers only).
    pub incoming: Option<mpsc::Receiver<TcpStream>>,
    /// The peer's BFD session, when BFD is on: its going down takes the BGP session down (RFC 5882).
    pub bfd: Option<watch::Receiver<herald_bfd::SessionStatus>>,
}

/// Passive peers of one listening socket: where to hand each peer address's connections.
pub type PassivePeers = Arc<Mutex<BTreeMap<IpAddr, mpsc::Sender<TcpStream>>>>;

/// Accepts connections on a listening socket shared by the passive peers with the same local address and port, and
/// hands each to the task of the peer it comes from. Connections from other addresses are closed at once.
pub struct ListenerTask {
    pub listener: Arc<TcpListener>,
    pub peers: PassivePeers,
}

impl ListenerTask {
    pub async fn run(self) {
        let local = self.listener.local_addr().ok();
        loop {
            let (stream, remote) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    warn!(?local, error = %e, "accepting a BGP connection failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let address = remote.ip().to_canonical();
            let peer = self
                .peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&address)
                .cloned();
            match peer {
                // A full channel: the peer task has not taken the previous connection yet; this one is dropped.
                Some(peer) => {
                    if peer.try_send(stream).is_err() {
                        debug!(peer = %address, "peer busy with another connection: closed the new one");
                    }
                }
                None => info!(%remote, ?local, "connection from an address that is not a passive BGP peer: closed"),
            }
        }
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

struct Connection {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    local: IpAddr,
    rbuf: Vec<u8>,
}

/// Longest a single write may stall before the connection counts as broken (a frozen peer whose window is full).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

struct PeerLoop {
    config: PeerConfig,
    fsm: SessionFsm,
    routes: watch::Receiver<Routes>,
    status: watch::Sender<PeerStatus>,
    /// The connection we opened.
    outgoing: Option<Connection>,
    /// The connection the peer opened (passive mode).
    incoming: Option<Connection>,
    accepted: Option<mpsc::Receiver<TcpStream>>,
    connecting: Option<ConnectFuture>,
    deadlines: [Option<Instant>; 3],
    adj_rib_out: AdjRibOut,
    session: Option<(Negotiated, SessionRouting)>,
    events: VecDeque<Event>,
    /// Per RFC 7606 approach ([`crate::packet::ErrorHandling::strength`]): a malformed UPDATE handled that way was
    /// logged at warn level this session. Later ones go to debug, so a peer cannot flood the log.
    malformed_logged: [bool; 3],
    bfd: Option<watch::Receiver<herald_bfd::SessionStatus>>,
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
    }
}

const TIMERS: [Timer; 3] = [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive];

impl PeerTask {
    /// Runs the peer until stopped (or the speaker is dropped).
    pub async fn run(self) {
        let PeerTask {
            config,
            session,
            routes,
            status,
            mut commands,
            incoming,
            bfd,
        } = self;
        let mut peer = PeerLoop {
            fsm: SessionFsm::new(session),
            config,
            routes,
            status,
            outgoing: None,
            incoming: None,
            accepted: incoming,
            connecting: None,
            deadlines: [None; 3],
            adj_rib_out: AdjRibOut::default(),
            session: None,
            events: VecDeque::new(),
            malformed_logged: [false; 3],
            bfd: None,
        };
        peer.follow_bfd(bfd);
        peer.feed(Event::Start).await;
        loop {
            peer.process_events().await;
            let next = peer
                .deadlines
                .iter()
                .enumerate()
                .filter_map(|(i, d)| d.map(|d| (d, i)))
                .min();
            let established = peer.session.is_some();
            tokio::select! {
                cmd = commands.recv() => {
                    match cmd {
                        Some(PeerCommand::Stop(cease)) => {
                            // Withdraw first, then close: the router moves the traffic while this node still
                            // forwards it, instead of finding out from the NOTIFICATION.
                            peer.withdraw_all().await;
                            peer.feed(Event::Stop(cease)).await;
                        }
                        Some(PeerCommand::Bfd(bfd)) => {
                            peer.follow_bfd(bfd);
                            continue;
                        }
                        Some(PeerCommand::Abandon) | None => {
                            info!(peer = %peer.config.address, "closing without NOTIFICATION (graceful restart)");
                        }
                    }
                    peer.close_all().await;
                    return;
                }
                res = async {
                    match peer.connecting.as_mut() {
                        Some(connect) => connect.await,
                        None => std::future::pending().await,
                    }
                }, if peer.connecting.is_some() => {
                    peer.connecting = None;
                    match res {
                        Ok(stream) => {
                            let local = stream.local_addr().map(|a| a.ip());
                            match local {
                                Ok(local) => {
                                    peer.outgoing = Some(Connection::new(stream, local));
                                    peer.feed(Event::TcpConnected).await;
                                }
                                Err(e) => peer.feed(Event::TcpConnectFailed(e.to_string())).await,
                            }
                        }
                        Err(e) => peer.feed(Event::TcpConnectFailed(e.to_string())).await,
                    }
                }
                stream = async {
                    match peer.accepted.as_mut() {
                        Some(accepted) => accepted.recv().await,
                        None => std::future::pending().await,
                    }
                }, if peer.accepted.is_some() => {
                    match stream {
                        Some(stream) => peer.accept(stream).await,
                        // The speaker stopped listening for this peer.
                        None => peer.accepted = None,
                    }
                }
                res = async {
                    match peer.outgoing.as_mut() {
                        Some(conn) => conn.reader.read_buf(&mut conn.rbuf).await,
                        None => std::future::pending().await,
                    }
                }, if peer.outgoing.is_some() => peer.received(Direction::Outgoing, res).await,
                res = async {
                    match peer.incoming.as_mut() {
                        Some(conn) => conn.reader.read_buf(&mut conn.rbuf).await,
                        None => std::future::pending().await,
                    }
                }, if peer.incoming.is_some() => peer.received(Direction::Incoming, res).await,
                () = tokio::time::sleep_until(next.map_or_else(Instant::now, |(d, _)| d)), if next.is_some() => {
                    if let Some((_, i)) = next {
                        peer.deadlines[i] = None;
                        peer.feed(Event::TimerExpired(TIMERS[i])).await;
                    }
                }
                changed = async {
                    match peer.bfd.as_mut() {
                        Some(bfd) => bfd.changed().await,
                        None => std::future::pending().await,
                    }
                }, if peer.bfd.is_some() => {
                    match changed {
                        Ok(()) => peer.bfd_changed().await,
                        // The BFD session ended (the speaker replaced or dropped it).
                        Err(_) => peer.follow_bfd(None),
                    }
                }
                changed = peer.routes.changed(), if established => {
                    if changed.is_err() {
                        // The speaker is gone: end like a dropped speaker (no NOTIFICATION).
                        peer.close_all().await;
                        return;
                    }
                    peer.sync_routes().await;
                }
            }
        }
    }
}

impl Connection {
    fn new(stream: TcpStream, local: IpAddr) -> Self {
        let (reader, writer) = stream.into_split();
        Connection {
            reader,
            writer,
            local,
            rbuf: Vec::with_capacity(8192),
        }
    }
}

impl PeerLoop {
    fn conn_mut(&mut self, dir: Direction) -> &mut Option<Connection> {
        match dir {
            Direction::Outgoing => &mut self.outgoing,
            Direction::Incoming => &mut self.incoming,
        }
    }

    /// Follows `bfd` (or no BFD session) from now on.
    fn follow_bfd(&mut self, bfd: Option<watch::Receiver<herald_bfd::SessionStatus>>) {
        let now = bfd.as_ref().map(|b| *b.borrow());
        self.bfd = bfd;
        self.status.send_modify(|s| s.bfd = now);
    }

    /// The BFD session changed state: a failure (Up to Down, not by the peer's AdminDown) takes the BGP session
    /// down (RFC 5882 §4.3), which then reconnects as after any failure.
    async fn bfd_changed(&mut self) {
        let Some(bfd) = self.bfd.as_mut() else { return };
        let next = *bfd.borrow_and_update();
        let mut failed = false;
        self.status.send_modify(|s| {
            failed = s.bfd.is_some_and(|prev| prev.failed(&next));
            s.bfd = Some(next);
            if failed {
                s.bfd_downs += 1;
            }
        });
        if failed {
            warn!(peer = %self.config.address, diag = %next.diag, state = %self.fsm.state(), "BFD session down: taking the BGP session down");
            self.feed(Event::BfdDown(next.diag.to_string())).await;
        }
    }

    /// A connection from the peer, handed over by the listener task.
    async fn accept(&mut self, stream: TcpStream) {
        let peer = self.config.address;
        if self.incoming.is_some() {
            debug!(%peer, "already have a connection from the peer: closed the new one");
            return;
        }
        let local = match network::accepted(&stream, &self.config).and_then(|()| stream.local_addr()) {
            Ok(local) => local.ip().to_canonical(),
            Err(e) => {
                warn!(%peer, error = %e, "cannot set up the connection from the peer: closed it");
                return;
            }
        };
        if let Some(want) = self.config.local_address
            && want != local
        {
            info!(%peer, %local, source = %want, "connection from the peer to another local address than the session's source address: closed");
            return;
        }
        debug!(%peer, %local, "connection from the peer accepted");
        self.incoming = Some(Connection::new(stream, local));
        self.feed(Event::TcpAccepted).await;
    }

    async fn received(&mut self, dir: Direction, res: io::Result<usize>) {
        match res {
            Ok(0) => {
                self.feed(Event::TcpClosed(dir, "the peer closed the connection".into()))
                    .await
            }
            Ok(_) => self.decode_received(dir).await,
            Err(e) => self.feed(Event::TcpClosed(dir, e.to_string())).await,
        }
    }

    /// Runs an event through the FSM, and the events its actions cause, until quiet.
    async fn feed(&mut self, event: Event) {
        self.events.push_back(event);
        self.process_events().await;
    }

    /// Handles queued events (a failed write queues a TcpClosed).
    async fn process_events(&mut self) {
        while let Some(event) = self.events.pop_front() {
            for action in self.fsm.handle(event) {
                self.perform(action).await;
            }
        }
    }

    async fn perform(&mut self, action: Action) {
        let peer = self.config.address;
        match action {
            Action::Connect => {
                self.close(Direction::Outgoing).await;
                let config = self.config.clone();
                self.connecting = Some(Box::pin(async move { network::connect(&config).await }));
            }
            Action::Send(dir, msg) => {
                if let Message::Notification(n) = &msg {
                    warn!(%peer, notification = %n.describe(), connection = ?dir, "sending NOTIFICATION");
                    self.status.send_modify(|s| s.notifications_sent += 1);
                }
                let four = self.four_octet_as(dir);
                self.write(dir, msg.encode(four)).await;
            }
            Action::ArmTimer(t, d) => self.deadlines[timer_index(t)] = Some(Instant::now() + d),
            Action::CancelTimer(t) => self.deadlines[timer_index(t)] = None,
            Action::CloseTcp(dir) => self.close(dir).await,
            Action::StateChanged { from, to, reason } => {
                if to == State::Established || from == State::Established || self.fsm.last_error().is_some() {
                    info!(%peer, asn = self.config.asn, %from, %to, reason, "BGP session state");
                } else {
                    debug!(%peer, asn = self.config.asn, %from, %to, reason, "BGP session state");
                }
                let last_error = self.fsm.last_error().map(str::to_owned);
                self.status.send_modify(|s| {
                    s.state = to;
                    s.last_error = last_error;
                    if to == State::Established {
                        s.established_at = Some(Instant::now());
                        s.established_count += 1;
                    } else {
                        s.established_at = None;
                    }
                });
            }
            Action::Established(negotiated) => self.established(negotiated).await,
            Action::ResendRoutes(afi) => {
                if let Some((n, _)) = &self.session {
                    info!(%peer, afi = afi.0, "route refresh: sending every route again");
                    let four = n.four_octet_as;
                    let updates = self.adj_rib_out.resend(afi, four);
                    self.send_updates(updates, four).await;
                }
            }
            Action::SessionDown { reason } => {
                debug!(%peer, reason, "session down, Adj-RIB-Out cleared");
                self.session = None;
                self.malformed_logged = [false; 3];
                self.adj_rib_out.clear();
                self.status.send_modify(|s| {
                    s.prefixes_sent = 0;
                    s.hold_time = None;
                });
            }
            Action::MalformedUpdate(m) => {
                let handling = m.handling;
                let logged = &mut self.malformed_logged[usize::from(handling.strength())];
                if std::mem::replace(logged, true) {
                    debug!(%peer, %handling, reason = m.reason, "malformed UPDATE handled without a session reset");
                } else {
                    warn!(
                        %peer, %handling, reason = m.reason,
                        "malformed UPDATE handled without a session reset (RFC 7606); further ones handled this way \
                         on this session are counted and logged at debug level"
                    );
                }
                self.status.send_modify(|s| {
                    s.malformed_updates.count(handling);
                    s.last_malformed_update = Some(format!("{handling}: {}", m.reason));
                });
            }
        }
    }

    /// Whether messages on `dir` use 4-octet AS numbers: only an established session's connection has negotiated.
    fn four_octet_as(&self, dir: Direction) -> bool {
        self.decode_context(dir).four_octet_as
    }

    /// How to decode what arrives on `dir`: only an established session's connection has negotiated anything.
    fn decode_context(&self, dir: Direction) -> DecodeContext {
        match &self.session {
            Some((n, routing)) if self.fsm.connection() == Some(dir) => DecodeContext {
                four_octet_as: n.four_octet_as,
                internal: routing.ibgp(),
            },
            _ => DecodeContext::default(),
        }
    }

    async fn established(&mut self, negotiated: Negotiated) {
        let Some(dir) = self.fsm.connection() else { return };
        let Some(local) = self.conn_mut(dir).as_ref().map(|c| c.local) else {
            return;
        };
        let routing = SessionRouting {
            local_asn: self.fsm.config().local_asn,
            peer_asn: negotiated.peer_asn,
            next_hop_v4: self.config.next_hop_v4.or(match local {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }),
            next_hop_v6: self.config.next_hop_v6.or(match local {
                IpAddr::V6(a) if !a.is_unicast_link_local() => Some(a),
                _ => None,
            }),
            families: negotiated.families.clone(),
            configured_families: self.fsm.config().families.clone(),
        };
        self.status.send_modify(|s| s.hold_time = Some(negotiated.hold_time));
        let families = negotiated.families.clone();
        self.session = Some((negotiated, routing));
        self.sync_routes().await;
        // RFC 4724 §2: End-of-RIB after the initial table, per family.
        let four = self.session.as_ref().is_some_and(|(n, _)| n.four_octet_as);
        let eor: Vec<Update> = families.into_iter().map(Update::end_of_rib).collect();
        self.send_updates(eor, four).await;
    }

    /// Withdraws every route announced on an established session.
    async fn withdraw_all(&mut self) {
        let Some((negotiated, _)) = &self.session else {
            return;
        };
        let four = negotiated.four_octet_as;
        let withdrawn = self.adj_rib_out.len();
        let updates = self.adj_rib_out.withdraw_all();
        if withdrawn > 0 {
            info!(peer = %self.config.address, withdrawn, "withdrawing every route before closing the session");
        }
        self.status.send_modify(|s| s.prefixes_sent = 0);
        self.send_updates(updates, four).await;
    }

    async fn sync_routes(&mut self) {
        let Some((negotiated, routing)) = &self.session else {
            return;
        };
        let four = negotiated.four_octet_as;
        // Computed under the channel's read lock (no await while it is held): a change costs in proportion to itself.
        let diff = self.adj_rib_out.sync(&self.routes.borrow_and_update(), routing, four);
        let peer = self.config.address;
        if let Some((prefix, why)) = diff.skipped.first() {
            warn!(%peer, skipped = diff.skipped.len(), example = %prefix, why, "not announcing some prefixes to this peer");
        }
        if diff.announced + diff.withdrawn > 0 {
            info!(%peer, announced = diff.announced, withdrawn = diff.withdrawn, updates = diff.updates.len(), "sending route changes");
        }
        let prefixes = self.adj_rib_out.len();
        self.status.send_modify(|s| s.prefixes_sent = prefixes);
        self.send_updates(diff.updates, four).await;
    }

    /// Encodes the UPDATEs into one buffer and writes it at once on the session's connection.
    async fn send_updates(&mut self, updates: Vec<Update>, four_octet_as: bool) {
        let Some(dir) = self.fsm.connection() else { return };
        if updates.is_empty() {
            return;
        }
        let n = updates.len() as u64;
        let mut buf = Vec::new();
        for u in updates {
            buf.extend(Message::Update(u).encode(four_octet_as));
        }
        self.status.send_modify(|s| s.updates_sent += n);
        self.write(dir, buf).await;
    }

    async fn write(&mut self, dir: Direction, bytes: Vec<u8>) {
        let Some(conn) = self.conn_mut(dir).as_mut() else {
            return;
        };
        let result = tokio::time::timeout(WRITE_TIMEOUT, conn.writer.write_all(&bytes)).await;
        let err = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("write stalled for {WRITE_TIMEOUT:?}"),
        };
        *self.conn_mut(dir) = None;
        self.events.push_back(Event::TcpClosed(dir, err));
    }

    /// Handles every complete message in the connection's buffer, each decoded with the context in force when it is
    /// reached (the KEEPALIVE that establishes the session changes it). The buffer is compacted once at the end, so a
    /// read full of small messages costs linear work; it never holds more than one partial message (at most 4096
    /// bytes) between reads.
    async fn decode_received(&mut self, dir: Direction) {
        let mut used = 0;
        loop {
            let ctx = self.decode_context(dir);
            let Some(conn) = self.conn_mut(dir).as_mut() else {
                return;
            };
            let unread = conn.rbuf.get(used..).unwrap_or_default();
            match decode_frame(unread, ctx) {
                Ok(Some((msg, n))) => {
                    used += n;
                    self.status.send_modify(|s| match &msg {
                        Message::Update(_) => s.updates_received += 1,
                        Message::Notification(_) => s.notifications_received += 1,
                        _ => {}
                    });
                    self.feed(Event::Message(dir, msg)).await;
                }
                Ok(None) => {
                    let used = used.min(conn.rbuf.len());
                    conn.rbuf.drain(..used);
                    return;
                }
                Err(e) => {
                    conn.rbuf.clear();
                    self.feed(Event::DecodeFailed(dir, e)).await;
                    return;
                }
            }
        }
    }

    /// Closes a connection after flushing what was written (so a NOTIFICATION reaches the peer); for ours, also
    /// drops a connect attempt in flight.
    async fn close(&mut self, dir: Direction) {
        if dir == Direction::Outgoing {
            self.connecting = None;
        }
        if let Some(mut conn) = self.conn_mut(dir).take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.writer.shutdown()).await;
        }
    }

    async fn close_all(&mut self) {
        self.close(Direction::Outgoing).await;
        self.close(Direction::Incoming).await;
    }
}
