//! The BGP session state machine (RFC 4271 §8), sans-IO: [`SessionFsm::handle`] takes an [`Event`] and returns the
//! [`Action`]s the owner performs (send, arm timer, connect, close). It has no socket and no clock, so every
//! transition is tested by event scripts.
//!
//! Herald connects out; a passive peer also accepts the router's connection. A session then briefly has two TCP
//! connections (ours, [`Direction::Outgoing`], and the router's, [`Direction::Incoming`]), and RFC 4271 §6.8
//! connection collision detection keeps one: the FSM tracks the session's connection plus at most one "second"
//! connection that is always in OpenSent (sent our OPEN, waiting for the router's). Active is "waiting to retry the
//! connect" (and, when passive, listening).
//!
//! The OPEN exchange is in `fsm/open.rs`, collision handling in `fsm/collision.rs`: both add methods to
//! [`SessionFsm`] and import this module, never the other way.

use std::net::Ipv4Addr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::packet::{Afi, CeaseSubcode, DecodeError, ErrorKind, FsmSubcode, Malformed, Message, Notification, Safi};

/// RFC 4271 §8.2.2: session states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Which TCP connection an event or action concerns: the one we opened or the one the peer opened (passive mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Outgoing,
    Incoming,
}

impl Direction {
    fn describe(self) -> &'static str {
        match self {
            Direction::Outgoing => "our connection",
            Direction::Incoming => "the connection from the peer",
        }
    }
}

/// The FSM's timers (RFC 4271 §8.1.3). ConnectRetry also bounds one connect attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

/// Inputs (RFC 4271 §8.1 event numbers in comments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Event 1 (ManualStart).
    Start,
    /// Event 2 (ManualStop): send this Cease (if a session is up) and stay down.
    Stop(Notification),
    /// Event 16 (Tcp_CR_Acked): our connection is up.
    TcpConnected,
    /// Event 17 (TcpConnectionConfirms): the peer connected to us (passive mode). The owner feeds it only while it
    /// holds no other connection from the peer (it closes a second one itself).
    TcpAccepted,
    /// Event 18 before the connection was up: the attempt failed (refused, unreachable...).
    TcpConnectFailed(String),
    /// Event 18 on an open connection: the peer closed it or it broke.
    TcpClosed(Direction, String),
    /// Events 19-27: a message arrived (already framed and validated by [`crate::packet`]).
    Message(Direction, Message),
    /// Events 21/22/28: a message could not be decoded.
    DecodeFailed(Direction, DecodeError),
    /// Events 9-11.
    TimerExpired(Timer),
    /// The peer's BFD session went down from Up (RFC 5882 §4.3): the path is gone, so is the session. The text says
    /// why (BFD's diagnostic).
    BfdDown(String),
}

/// Outputs, to be carried out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a TCP connection to the peer (dropping any attempt in flight).
    Connect,
    Send(Direction, Message),
    ArmTimer(Timer, Duration),
    CancelTimer(Timer),
    /// Close the connection (for [`Direction::Outgoing`] also: abort a connect attempt in flight).
    CloseTcp(Direction),
    StateChanged {
        from: State,
        to: State,
        reason: String,
    },
    /// The session is up: send the whole Adj-RIB-Out, then End-of-RIB.
    Established(Negotiated),
    /// RFC 2918: the peer asked for every route of this family again.
    ResendRoutes(Afi),
    /// The session went down: forget what was sent.
    SessionDown {
        reason: String,
    },
    /// A malformed UPDATE was handled without resetting the session (RFC 7606 treat-as-withdraw, attribute discard
    /// or AFI/SAFI disable): to be logged and counted.
    MalformedUpdate(Malformed),
}

/// RFC 4724 graceful restart, as the restarting speaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Seconds a helper keeps our routes after the session drops (12 bits, at most 4095).
    pub restart_time: u16,
    /// The R bit: set when this speaker has restarted.
    pub restarting: bool,
}

/// What the FSM needs to know about the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    pub peer_asn: u32,
    /// Proposed hold time in seconds: 0 or at least 3.
    pub hold_time: u16,
    /// Keepalive interval in seconds; `None`: a third of the negotiated hold time, which also caps it.
    pub keepalive_time: Option<u16>,
    /// The longest pause between connection attempts (they back off from [`RETRY_MIN`]).
    pub connect_retry_max: Duration,
    pub graceful_restart: Option<GracefulRestart>,
    /// Families we offer (multiprotocol capabilities, RFC 4760) and announce: [`Afi::IPV4`] and/or [`Afi::IPV6`].
    pub families: Vec<Afi>,
    /// TCP MD5 is configured: a silent peer is then most likely a key mismatch.
    pub md5: bool,
    /// How long one connect attempt may take.
    pub connect_timeout: Duration,
    /// Seed for the connect-retry jitter (tests fix it; the speaker uses a random one).
    pub jitter_seed: u64,
}

/// The outcome of OPEN negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_asn: u32,
    pub peer_id: Ipv4Addr,
    /// Seconds; 0 means no keepalives and no hold timer.
    pub hold_time: u16,
    /// The configured keepalive interval in seconds, if any.
    pub keepalive_time: Option<u16>,
    /// RFC 6793: both sides speak 4-octet ASNs.
    pub four_octet_as: bool,
    /// Families both sides advertised (IPv4 unicast is implied without MP capabilities, RFC 4760 §8), limited to
    /// [`SessionConfig::families`].
    pub families: Vec<Afi>,
    pub route_refresh: bool,
    /// The peer advertised graceful restart (it can act as our helper).
    pub peer_graceful_restart: bool,
}

impl Negotiated {
    /// A third of the negotiated hold time (RFC 4271 §10), or the configured interval when that is shorter: a
    /// longer one would let the peer's hold timer expire. `None` with a hold time of 0 (no keepalives at all).
    pub fn keepalive_interval(&self) -> Option<Duration> {
        let third = Duration::from_secs(u64::from(self.hold_time)) / 3;
        let configured = self
            .keepalive_time
            .filter(|k| *k > 0)
            .map(|k| Duration::from_secs(u64::from(k)));
        (self.hold_time > 0).then(|| configured.map_or(third, |k| k.min(third)))
    }
}

/// RFC 4271 §8: 4 minutes while waiting for the peer's OPEN.
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// Connect-retry backoff bounds (design: 1 s → 60 s).
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// The default longest pause (`BgpPeer.spec.connectRetryTime`).
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Exponential connect-retry backoff with RFC 4271 §10 jitter (each delay is scaled by a random 0.75..1.0).
#[derive(Debug)]
pub struct RetryBackoff {
    attempt: u32,
    max: Duration,
    rng: StdRng,
}

impl RetryBackoff {
    /// Delays from [`RETRY_MIN`] doubling up to `max` (at least [`RETRY_MIN`]).
    pub fn new(seed: u64, max: Duration) -> Self {
        RetryBackoff {
            attempt: 0,
            max: max.max(RETRY_MIN),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = RETRY_MIN.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        base.mul_f64(self.rng.random_range(0.75..=1.0))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// One peer's session state machine.
#[derive(Debug)]
pub struct SessionFsm {
    config: SessionConfig,
    state: State,
    started: bool,
    /// The session's connection (OpenSent, OpenConfirm, Established).
    connection: Option<Direction>,
    /// A second connection during a collision (RFC 4271 §6.8): OPEN sent on it, the peer's not received yet.
    second: Option<Direction>,
    negotiated: Option<Negotiated>,
    backoff: RetryBackoff,
    last_error: Option<String>,
}

impl SessionFsm {
    pub fn new(config: SessionConfig) -> Self {
        let backoff = RetryBackoff::new(config.jitter_seed, config.connect_retry_max);
        SessionFsm {
            config,
            state: State::Idle,
            started: false,
            connection: None,
            second: None,
            negotiated: None,
            backoff,
            last_error: None,
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The connection the session runs on (None while no connection is up).
    pub fn connection(&self) -> Option<Direction> {
        self.connection
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Why the session last went down (or why it cannot come up).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        // Events of the second connection of a collision never touch the session.
        match &event {
            Event::TcpClosed(dir, _) | Event::Message(dir, _) | Event::DecodeFailed(dir, _)
                if self.second == Some(*dir) =>
            {
                self.second_connection_event(&mut out, event);
                return out;
            }
            // A stale event of a connection that is gone (closed after a collision): nothing to do.
            Event::TcpClosed(dir, _) | Event::Message(dir, _) | Event::DecodeFailed(dir, _)
                if self.connection != Some(*dir) =>
            {
                return out;
            }
            _ => {}
        }
        match (self.state, event) {
            (_, Event::Start) if self.started => {}
            (_, Event::Start) => {
                self.started = true;
                self.backoff.reset();
                self.connect(&mut out, "start");
            }
            (State::Idle | State::Connect | State::Active, Event::Stop(_)) => {
                self.started = false;
                if self.state == State::Connect {
                    out.push(Action::CloseTcp(Direction::Outgoing));
                }
                out.push(Action::CancelTimer(Timer::ConnectRetry));
                self.transition(&mut out, State::Idle, "stopped".to_string());
            }
            (_, Event::Stop(cease)) => {
                self.started = false;
                let reason = format!("stopped: sent {}", cease.describe());
                if let Some(second) = self.second.take() {
                    out.push(Action::Send(second, Message::Notification(cease.clone())));
                    out.push(Action::CloseTcp(second));
                }
                self.send(&mut out, Message::Notification(cease));
                self.down(&mut out, reason, false);
            }
            (State::Idle, Event::TimerExpired(Timer::ConnectRetry)) if self.started => {
                self.connect(&mut out, "retry");
            }
            (State::Active, Event::TimerExpired(Timer::ConnectRetry)) => self.connect(&mut out, "retry"),
            (State::Connect, Event::TimerExpired(Timer::ConnectRetry)) => {
                let reason = if self.config.md5 {
                    "no answer: TCP MD5 key mismatch or peer not configured for MD5?".to_string()
                } else {
                    format!("no answer: connect timed out after {:?}", self.config.connect_timeout)
                };
                out.push(Action::CloseTcp(Direction::Outgoing));
                self.retry_later(&mut out, State::Active, reason);
            }
            (State::Connect, Event::TcpConnectFailed(why)) => {
                out.push(Action::CancelTimer(Timer::ConnectRetry));
                self.retry_later(&mut out, State::Active, format!("connect failed: {why}"));
            }
            (State::Connect, Event::TcpConnected) => {
                self.open_connection(&mut out, Direction::Outgoing, "connected, OPEN sent");
            }
            (_, Event::TcpAccepted) => self.accept(&mut out),
            (State::OpenSent | State::OpenConfirm | State::Established, Event::BfdDown(why)) => {
                // Cease / BFD Down (RFC 9384); it may never arrive, the path being gone.
                let cease = Notification::new(CeaseSubcode::BfdDown);
                let reason = format!("BFD went down ({why}); sent {}", cease.describe());
                self.send(&mut out, Message::Notification(cease));
                self.down(&mut out, reason, true);
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Event::TcpClosed(_, why)) => {
                self.down(&mut out, format!("connection closed: {why}"), true);
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Event::DecodeFailed(_, e)) => {
                let reason = format!(
                    "malformed message from peer: {}; sent {}",
                    e.reason,
                    e.notification.describe()
                );
                self.send(&mut out, Message::Notification(e.notification));
                self.down(&mut out, reason, true);
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Event::TimerExpired(Timer::Hold)) => {
                // RFC 4271 §6.5.
                self.send(
                    &mut out,
                    Message::Notification(Notification::new(ErrorKind::HoldTimerExpired(0))),
                );
                self.down(
                    &mut out,
                    "hold timer expired: no message from the peer within the hold time".into(),
                    true,
                );
            }
            (State::OpenConfirm | State::Established, Event::TimerExpired(Timer::Keepalive)) => {
                self.send(&mut out, Message::Keepalive);
                self.arm_keepalive(&mut out);
            }
            (state, Event::Message(_, Message::Notification(n))) if state != State::Idle => {
                // RFC 4271 §8.2.2: a NOTIFICATION closes the connection; no answer is sent.
                self.down(&mut out, format!("peer sent NOTIFICATION {}", n.describe()), true);
            }
            (State::OpenSent, Event::Message(_, Message::Open(open))) => match self.check_open(&open) {
                Ok(negotiated) => self.open_confirm(&mut out, negotiated),
                Err((n, why)) => {
                    let reason = format!("{why}; sent {}", n.describe());
                    self.send(&mut out, Message::Notification(n));
                    self.down(&mut out, reason, true);
                }
            },
            (State::OpenSent, Event::Message(_, msg)) => {
                self.fsm_error(&mut out, FsmSubcode::UnexpectedInOpenSent, &msg);
            }
            (State::OpenConfirm, Event::Message(_, Message::Keepalive)) => {
                self.arm_hold(&mut out);
                self.backoff.reset();
                self.last_error = None;
                // RFC 4271 §6.8: an Established session wins over any other connection.
                if let Some(second) = self.second.take() {
                    Self::close_as_collision(&mut out, second);
                }
                self.transition(&mut out, State::Established, "session established".to_string());
                if let Some(n) = &self.negotiated {
                    out.push(Action::Established(n.clone()));
                }
            }
            (State::OpenConfirm, Event::Message(_, msg)) => {
                self.fsm_error(&mut out, FsmSubcode::UnexpectedInOpenConfirm, &msg);
            }
            (State::Established, Event::Message(_, Message::Open(open))) => {
                self.fsm_error(&mut out, FsmSubcode::UnexpectedInEstablished, &Message::Open(open));
            }
            (State::Established, Event::Message(_, msg)) => {
                self.arm_hold(&mut out);
                match msg {
                    Message::RouteRefresh(rr) => {
                        let known = self.negotiated.as_ref().is_some_and(|n| n.families.contains(&rr.afi));
                        // RFC 2918 §4: a request for a family not negotiated is ignored.
                        if known && rr.safi == Safi::UNICAST {
                            out.push(Action::ResendRoutes(rr.afi));
                        }
                    }
                    // Announce-only: received routes are never installed, so every RFC 7606 approach short of a
                    // session reset leaves nothing to undo.
                    Message::Update(u) => {
                        if let Some(malformed) = u.malformed {
                            out.push(Action::MalformedUpdate(malformed));
                        }
                    }
                    _ => {}
                }
            }
            // Anything else cannot happen in that state (no connection) or needs no action.
            _ => {}
        }
        out
    }

    /// Sends on the session's connection.
    fn send(&self, out: &mut Vec<Action>, msg: Message) {
        if let Some(dir) = self.connection {
            out.push(Action::Send(dir, msg));
        }
    }

    /// The session's connection is up (ours in Connect, or the peer's): OPEN, 4-minute hold timer, OpenSent.
    fn open_connection(&mut self, out: &mut Vec<Action>, dir: Direction, reason: &str) {
        self.connection = Some(dir);
        out.push(Action::CancelTimer(Timer::ConnectRetry));
        out.push(Action::Send(dir, Message::Open(self.open_message())));
        out.push(Action::ArmTimer(Timer::Hold, OPEN_HOLD_TIME));
        self.transition(out, State::OpenSent, reason.to_string());
    }

    fn connect(&mut self, out: &mut Vec<Action>, why: &str) {
        out.push(Action::Connect);
        out.push(Action::ArmTimer(Timer::ConnectRetry, self.config.connect_timeout));
        self.transition(out, State::Connect, format!("connecting ({why})"));
    }

    fn retry_later(&mut self, out: &mut Vec<Action>, to: State, reason: String) {
        let delay = self.backoff.next_delay();
        out.push(Action::ArmTimer(Timer::ConnectRetry, delay));
        self.last_error = Some(reason.clone());
        self.transition(out, to, format!("{reason}; retrying in {:.1}s", delay.as_secs_f64()));
    }

    /// Tears the session's connection down (NOTIFICATION, if any, already queued) and, if `retry`, schedules a new
    /// connect. A second connection of a collision (never past OpenSent here) carries on as the session's.
    fn down(&mut self, out: &mut Vec<Action>, reason: String, retry: bool) {
        if let Some(dir) = self.connection.take() {
            out.push(Action::CloseTcp(dir));
        }
        out.push(Action::CancelTimer(Timer::Hold));
        out.push(Action::CancelTimer(Timer::Keepalive));
        out.push(Action::CancelTimer(Timer::ConnectRetry));
        let was_established = self.state == State::Established;
        if self.negotiated.take().is_some() || was_established {
            out.push(Action::SessionDown { reason: reason.clone() });
        }
        if let Some(second) = self.second.take() {
            self.last_error = Some(reason.clone());
            self.connection = Some(second);
            out.push(Action::ArmTimer(Timer::Hold, OPEN_HOLD_TIME));
            let reason = format!("{reason}; continuing on {}", second.describe());
            self.transition(out, State::OpenSent, reason);
            return;
        }
        if retry && self.started {
            self.retry_later(out, State::Idle, reason);
        } else {
            self.last_error = Some(reason.clone());
            self.transition(out, State::Idle, reason);
        }
    }

    fn fsm_error(&mut self, out: &mut Vec<Action>, sub: FsmSubcode, msg: &Message) {
        // RFC 6608 §3: the subcode names the state; the data is the message type.
        let n = Notification::with_data(sub, vec![msg.type_code()]);
        let reason = format!(
            "unexpected message type {} in {}; sent {}",
            msg.type_code(),
            self.state,
            n.describe()
        );
        self.send(out, Message::Notification(n));
        self.down(out, reason, true);
    }

    /// A valid OPEN on the session's connection: KEEPALIVE, negotiated timers, OpenConfirm.
    fn open_confirm(&mut self, out: &mut Vec<Action>, negotiated: Negotiated) {
        let hold = negotiated.hold_time;
        let asn = negotiated.peer_asn;
        self.negotiated = Some(negotiated);
        self.send(out, Message::Keepalive);
        if hold == 0 {
            out.push(Action::CancelTimer(Timer::Hold));
        } else {
            self.arm_hold(out);
        }
        self.arm_keepalive(out);
        self.transition(
            out,
            State::OpenConfirm,
            format!("OPEN received from AS {asn}, hold time {hold}s"),
        );
    }

    fn arm_hold(&self, out: &mut Vec<Action>) {
        if let Some(n) = &self.negotiated
            && n.hold_time > 0
        {
            out.push(Action::ArmTimer(
                Timer::Hold,
                Duration::from_secs(u64::from(n.hold_time)),
            ));
        }
    }

    fn arm_keepalive(&self, out: &mut Vec<Action>) {
        if let Some(every) = self.negotiated.as_ref().and_then(Negotiated::keepalive_interval) {
            out.push(Action::ArmTimer(Timer::Keepalive, every));
        }
    }

    fn transition(&mut self, out: &mut Vec<Action>, to: State, reason: String) {
        let from = std::mem::replace(&mut self.state, to);
        out.push(Action::StateChanged { from, to, reason });
    }
}

mod collision;
mod open;
#[cfg(test)]
mod tests;
