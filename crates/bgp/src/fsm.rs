//! The BGP session state machine (RFC 4271 §8), sans-IO: [`SessionFsm::handle`] takes an [`Event`] and returns the
//! [`Action`]s the owner performs (send, arm timer, connect, close). It has no socket and no clock, so every
//! transition is tested by event scripts.
//!
//! Herald connects out and never listens (design: no clash with other BGP daemons on port 179), so the FSM has no
//! passive path and no connection collisions (RFC 4271 §6.8) can happen. Active is "waiting to retry the connect".

use std::net::Ipv4Addr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::packet::error::{code, subcode};
use crate::packet::message::AS_TRANS;
use crate::packet::{Afi, Capability, DecodeError, Message, Notification, Open, Safi};

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
    /// Events 16/17: the outgoing connection is up.
    TcpConnected,
    /// Event 18 before the connection was up: the attempt failed (refused, unreachable...).
    TcpConnectFailed(String),
    /// Event 18 on an open connection: the peer closed it or it broke.
    TcpClosed(String),
    /// Events 19-27: a message arrived (already framed and validated by [`crate::packet`]).
    Message(Message),
    /// Events 21/22/28: a message could not be decoded.
    DecodeFailed(DecodeError),
    /// Events 9-11.
    TimerExpired(Timer),
}

/// Outputs, to be carried out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a TCP connection to the peer (dropping any attempt in flight).
    Connect,
    Send(Message),
    ArmTimer(Timer, Duration),
    CancelTimer(Timer),
    /// Close (or abort) the connection.
    CloseTcp,
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
    /// A message was dropped without resetting the session (RFC 7606 treat-as-withdraw).
    Discarded {
        reason: String,
    },
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
    pub graceful_restart: Option<GracefulRestart>,
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
    /// RFC 6793: both sides speak 4-octet ASNs.
    pub four_octet_as: bool,
    /// Families both sides advertised (IPv4 unicast is implied without MP capabilities, RFC 4760 §8).
    pub families: Vec<Afi>,
    pub route_refresh: bool,
    /// The peer advertised graceful restart (it can act as our helper).
    pub peer_graceful_restart: bool,
}

impl Negotiated {
    pub fn keepalive_interval(&self) -> Option<Duration> {
        (self.hold_time > 0).then(|| Duration::from_secs(u64::from(self.hold_time)) / 3)
    }
}

/// RFC 4271 §8: 4 minutes while waiting for the peer's OPEN.
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// Connect-retry backoff bounds (design: 1 s → 60 s).
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Exponential connect-retry backoff with RFC 4271 §10 jitter (each delay is scaled by a random 0.75..1.0).
#[derive(Debug)]
pub struct RetryBackoff {
    attempt: u32,
    rng: StdRng,
}

impl RetryBackoff {
    pub fn new(seed: u64) -> Self {
        RetryBackoff {
            attempt: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = RETRY_MIN.saturating_mul(1u32 << self.attempt.min(16)).min(RETRY_MAX);
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
    negotiated: Option<Negotiated>,
    backoff: RetryBackoff,
    last_error: Option<String>,
}

impl SessionFsm {
    pub fn new(config: SessionConfig) -> Self {
        let backoff = RetryBackoff::new(config.jitter_seed);
        SessionFsm {
            config,
            state: State::Idle,
            started: false,
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

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Why the session last went down (or why it cannot come up).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The OPEN we send (RFC 4271 §4.2, capabilities per RFC 5492).
    pub fn open_message(&self) -> Open {
        let c = &self.config;
        let mut capabilities = vec![
            Capability::Multiprotocol {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
            },
            Capability::Multiprotocol {
                afi: Afi::IPV6,
                safi: Safi::UNICAST,
            },
            Capability::RouteRefresh,
        ];
        if let Some(gr) = c.graceful_restart {
            capabilities.push(Capability::GracefulRestart {
                restarting: gr.restarting,
                restart_time: gr.restart_time.min(0x0fff),
                // F bit set: our "forwarding state" is the node's kernel, which a speaker restart does not touch.
                families: vec![(Afi::IPV4, Safi::UNICAST, true), (Afi::IPV6, Safi::UNICAST, true)],
            });
        }
        capabilities.push(Capability::FourOctetAs(c.local_asn));
        Open {
            version: 4,
            my_as: u16::try_from(c.local_asn).unwrap_or(AS_TRANS),
            hold_time: c.hold_time,
            bgp_id: c.router_id,
            capabilities,
        }
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
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
                    out.push(Action::CloseTcp);
                }
                out.push(Action::CancelTimer(Timer::ConnectRetry));
                self.transition(&mut out, State::Idle, "stopped".to_string());
            }
            (_, Event::Stop(cease)) => {
                self.started = false;
                let reason = format!("stopped: sent {}", cease.describe());
                out.push(Action::Send(Message::Notification(cease)));
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
                out.push(Action::CloseTcp);
                self.retry_later(&mut out, State::Active, reason);
            }
            (State::Connect, Event::TcpConnectFailed(why)) => {
                out.push(Action::CancelTimer(Timer::ConnectRetry));
                self.retry_later(&mut out, State::Active, format!("connect failed: {why}"));
            }
            (State::Connect, Event::TcpConnected) => {
                out.push(Action::CancelTimer(Timer::ConnectRetry));
                out.push(Action::Send(Message::Open(self.open_message())));
                out.push(Action::ArmTimer(Timer::Hold, OPEN_HOLD_TIME));
                self.transition(&mut out, State::OpenSent, "connected, OPEN sent".to_string());
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Event::TcpClosed(why)) => {
                self.down(&mut out, format!("connection closed: {why}"), true);
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Event::DecodeFailed(e)) => {
                let reason = format!(
                    "malformed message from peer: {}; sent {}",
                    e.reason,
                    e.notification.describe()
                );
                out.push(Action::Send(Message::Notification(e.notification)));
                self.down(&mut out, reason, true);
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Event::TimerExpired(Timer::Hold)) => {
                // RFC 4271 §6.5.
                out.push(Action::Send(Message::Notification(Notification::new(
                    code::HOLD_TIMER_EXPIRED,
                    0,
                ))));
                self.down(
                    &mut out,
                    "hold timer expired: no message from the peer within the hold time".into(),
                    true,
                );
            }
            (State::OpenConfirm | State::Established, Event::TimerExpired(Timer::Keepalive)) => {
                out.push(Action::Send(Message::Keepalive));
                self.arm_keepalive(&mut out);
            }
            (state, Event::Message(Message::Notification(n))) if state != State::Idle => {
                // RFC 4271 §8.2.2: a NOTIFICATION closes the connection; no answer is sent.
                self.down(&mut out, format!("peer sent NOTIFICATION {}", n.describe()), true);
            }
            (State::OpenSent, Event::Message(Message::Open(open))) => self.receive_open(&mut out, &open),
            (State::OpenSent, Event::Message(msg)) => {
                self.fsm_error(&mut out, subcode::UNEXPECTED_IN_OPEN_SENT, &msg);
            }
            (State::OpenConfirm, Event::Message(Message::Keepalive)) => {
                self.arm_hold(&mut out);
                self.backoff.reset();
                self.last_error = None;
                self.transition(&mut out, State::Established, "session established".to_string());
                if let Some(n) = &self.negotiated {
                    out.push(Action::Established(n.clone()));
                }
            }
            (State::OpenConfirm, Event::Message(msg)) => {
                self.fsm_error(&mut out, subcode::UNEXPECTED_IN_OPEN_CONFIRM, &msg);
            }
            (State::Established, Event::Message(Message::Open(open))) => {
                self.fsm_error(&mut out, subcode::UNEXPECTED_IN_ESTABLISHED, &Message::Open(open));
            }
            (State::Established, Event::Message(msg)) => {
                self.arm_hold(&mut out);
                match msg {
                    Message::RouteRefresh(rr) => {
                        let known = self.negotiated.as_ref().is_some_and(|n| n.families.contains(&rr.afi));
                        // RFC 2918 §4: a request for a family not negotiated is ignored.
                        if known && rr.safi == Safi::UNICAST {
                            out.push(Action::ResendRoutes(rr.afi));
                        }
                    }
                    Message::Update(u) => {
                        if let Some(reason) = u.treat_as_withdraw {
                            out.push(Action::Discarded { reason });
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

    /// Tears the session down (NOTIFICATION, if any, already queued) and, if `retry`, schedules a new connect.
    fn down(&mut self, out: &mut Vec<Action>, reason: String, retry: bool) {
        out.push(Action::CloseTcp);
        out.push(Action::CancelTimer(Timer::Hold));
        out.push(Action::CancelTimer(Timer::Keepalive));
        out.push(Action::CancelTimer(Timer::ConnectRetry));
        if self.negotiated.take().is_some() || self.state == State::Established {
            out.push(Action::SessionDown { reason: reason.clone() });
        }
        if retry && self.started {
            self.retry_later(out, State::Idle, reason);
        } else {
            self.last_error = Some(reason.clone());
            self.transition(out, State::Idle, reason);
        }
    }

    fn fsm_error(&mut self, out: &mut Vec<Action>, sub: u8, msg: &Message) {
        // RFC 6608 §3: the subcode names the state; the data is the message type.
        let n = Notification {
            code: code::FSM,
            subcode: sub,
            data: vec![msg.type_code()],
        };
        let reason = format!(
            "unexpected message type {} in {}; sent {}",
            msg.type_code(),
            self.state,
            n.describe()
        );
        out.push(Action::Send(Message::Notification(n)));
        self.down(out, reason, true);
    }

    fn reject_open(&mut self, out: &mut Vec<Action>, sub: u8, data: Vec<u8>, why: String) {
        let n = Notification {
            code: code::OPEN_MESSAGE,
            subcode: sub,
            data,
        };
        let reason = format!("{why}; sent {}", n.describe());
        out.push(Action::Send(Message::Notification(n)));
        self.down(out, reason, true);
    }

    /// RFC 4271 §6.2 checks that need the configuration, then negotiation.
    fn receive_open(&mut self, out: &mut Vec<Action>, open: &Open) {
        let c = &self.config;
        if open.hold_time == 1 || open.hold_time == 2 {
            let why = format!("peer proposed hold time {}s (must be 0 or at least 3)", open.hold_time);
            return self.reject_open(out, subcode::UNACCEPTABLE_HOLD_TIME, Vec::new(), why);
        }
        if open.my_as == AS_TRANS && open.four_octet_as().is_none() && c.peer_asn > u32::from(u16::MAX) {
            // RFC 5492 §3: we need the 4-octet ASN capability to know who the peer is.
            let mut data = Vec::new();
            Capability::FourOctetAs(c.peer_asn).encode(&mut data);
            let why = format!(
                "peer sent AS_TRANS without the 4-octet ASN capability, expected AS {}",
                c.peer_asn
            );
            return self.reject_open(out, subcode::UNSUPPORTED_CAPABILITY, data, why);
        }
        if open.asn() != c.peer_asn {
            let why = format!("peer is AS {}, configured peer ASN is {}", open.asn(), c.peer_asn);
            return self.reject_open(out, subcode::BAD_PEER_AS, open.my_as.to_be_bytes().to_vec(), why);
        }
        let id = open.bgp_id;
        // RFC 6286 §2.2: the identifier is a non-zero value; equal identifiers are only an error within one AS.
        if id.is_unspecified()
            || id.is_multicast()
            || id.is_broadcast()
            || (c.peer_asn == c.local_asn && id == c.router_id)
        {
            let why = format!("peer BGP identifier {id} is invalid or equals ours");
            return self.reject_open(out, subcode::BAD_BGP_IDENTIFIER, id.octets().to_vec(), why);
        }
        let mut families = Vec::new();
        let mut any_mp = false;
        for cap in &open.capabilities {
            if let Capability::Multiprotocol { afi, safi } = cap {
                any_mp = true;
                if *safi == Safi::UNICAST && matches!(*afi, Afi::IPV4 | Afi::IPV6) && !families.contains(afi) {
                    families.push(*afi);
                }
            }
        }
        if !any_mp {
            families.push(Afi::IPV4);
        }
        families.sort();
        let negotiated = Negotiated {
            peer_asn: open.asn(),
            peer_id: id,
            hold_time: c.hold_time.min(open.hold_time),
            four_octet_as: open.four_octet_as().is_some(),
            families,
            route_refresh: open.capabilities.contains(&Capability::RouteRefresh),
            peer_graceful_restart: open
                .capabilities
                .iter()
                .any(|c| matches!(c, Capability::GracefulRestart { .. })),
        };
        let hold = negotiated.hold_time;
        self.negotiated = Some(negotiated);
        out.push(Action::Send(Message::Keepalive));
        if hold == 0 {
            out.push(Action::CancelTimer(Timer::Hold));
        } else {
            self.arm_hold(out);
        }
        self.arm_keepalive(out);
        self.transition(
            out,
            State::OpenConfirm,
            format!("OPEN received from AS {}, hold time {hold}s", open.asn()),
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

#[cfg(test)]
mod tests;
