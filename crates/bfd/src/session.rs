//! One BFD session in asynchronous mode (RFC 5880 §6), sans-IO: the owner feeds it received packets
//! ([`Session::received`]) and the time ([`Session::poll`]), sends what it returns and sleeps until
//! [`Session::next_wakeup`]. No socket, no clock: every rule is tested with made-up times.
//!
//! Herald takes the Active role (it sends from the start), never uses Demand mode or the Echo function, and has no
//! authentication. While the session is not Up it sends once a second (§6.8.3); once Up it switches to the
//! configured interval with a Poll sequence (§6.5).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::packet::{ControlPacket, Diag, State};

/// The slowest a session sends while it is not Up (RFC 5880 §6.8.3: at least one second).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// A session's timers, as configured (e.g. on a BgpPeer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// How often this side wants to send once Up.
    pub desired_min_tx: Duration,
    /// The fastest this side accepts packets.
    pub required_min_rx: Duration,
    /// Packets missed before the session goes down.
    pub detect_mult: u8,
}

impl Default for Timers {
    /// 300 ms × 3: a dead neighbor is noticed within 900 ms (FRR's and BIRD's defaults).
    fn default() -> Self {
        Timers {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
        }
    }
}

/// What the owner does for the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this packet to the peer.
    Send(ControlPacket),
    /// The session changed state (the BGP session follows: RFC 5882 §4.3 takes it down when BFD goes Down from Up).
    StateChanged { from: State, to: State, diag: Diag },
}

/// Why a received packet was ignored by the session (after it decoded).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("your discriminator {got} is not this session's ({ours})")]
    Discriminator { got: u32, ours: u32 },
    #[error("your discriminator 0 from a peer in state {0}: only a Down or AdminDown peer may not know ours")]
    NoDiscriminator(State),
    #[error("the session is administratively down")]
    AdminDown,
}

/// One session's state (RFC 5880 §6.8.1).
#[derive(Debug)]
pub struct Session {
    timers: Timers,
    state: State,
    remote_state: State,
    remote_diag: Diag,
    local_discr: u32,
    remote_discr: u32,
    diag: Diag,
    /// The peer's Required Min RX Interval (before its first packet: 1 µs, §6.8.1).
    remote_min_rx: Duration,
    /// The peer's Desired Min TX Interval, from its last packet.
    remote_min_tx: Duration,
    remote_detect_mult: u8,
    /// The Desired Min TX Interval this side advertises now (one second until Up).
    tx_interval: Duration,
    /// The interval it sends at: a slower one takes effect only when the Poll sequence announcing it is over
    /// (§6.8.3), a faster one at once.
    sending: Duration,
    /// A Poll sequence is running: every packet carries P until a packet with F arrives.
    polling: bool,
    /// A packet with F is owed (the peer polled).
    final_owed: bool,
    /// The Required Min RX Interval the detection time is computed with: a lowered one counts only once the Poll
    /// sequence announcing it is over (§6.8.3), as the peer may still send at the old rate until then.
    detect_rx: Duration,
    next_tx: Option<Instant>,
    /// When the last periodic packet went out.
    last_tx: Option<Instant>,
    last_rx: Option<Instant>,
    rng: StdRng,
}

impl Session {
    /// A session in state Down with local discriminator `local_discr` (non-zero, unique per session on this system).
    /// `seed` drives the transmit jitter (§6.8.7).
    pub fn new(timers: Timers, local_discr: u32, seed: u64) -> Session {
        Session {
            timers,
            state: State::Down,
            remote_state: State::Down,
            remote_diag: Diag::None,
            local_discr: local_discr.max(1),
            remote_discr: 0,
            diag: Diag::None,
            remote_min_rx: Duration::from_micros(1),
            remote_min_tx: Duration::ZERO,
            remote_detect_mult: 0,
            tx_interval: SLOW_TX.max(timers.desired_min_tx),
            sending: SLOW_TX.max(timers.desired_min_tx),
            polling: false,
            final_owed: false,
            detect_rx: timers.required_min_rx,
            next_tx: None,
            last_tx: None,
            last_rx: None,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The state the peer last reported (Down before its first packet).
    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    /// The diagnostic the peer last sent (why it last left Up).
    pub fn remote_diag(&self) -> Diag {
        self.remote_diag
    }

    pub fn diag(&self) -> Diag {
        self.diag
    }

    /// The time after which a silent peer counts as down (§6.8.4, asynchronous mode): its detect multiplier times
    /// the slower of our Required Min RX and its Desired Min TX.
    pub fn detection_time(&self) -> Duration {
        self.detect_rx.max(self.remote_min_tx) * u32::from(self.remote_detect_mult)
    }

    /// Takes a decoded packet from the peer (RFC 5880 §6.8.6).
    pub fn received(&mut self, now: Instant, p: &ControlPacket) -> Result<Vec<Action>, Ignored> {
        if p.your_discriminator != 0 && p.your_discriminator != self.local_discr {
            return Err(Ignored::Discriminator {
                got: p.your_discriminator,
                ours: self.local_discr,
            });
        }
        if p.your_discriminator == 0 && !matches!(p.state, State::Down | State::AdminDown) {
            return Err(Ignored::NoDiscriminator(p.state));
        }
        self.remote_discr = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_diag = p.diag;
        self.remote_min_rx = p.required_min_rx;
        self.remote_min_tx = p.desired_min_tx;
        self.remote_detect_mult = p.detect_mult;
        if p.final_ && self.polling {
            self.polling = false;
            self.sending = self.tx_interval;
            self.detect_rx = self.timers.required_min_rx;
        }
        // §6.8.7: the interval is the larger of ours and the peer's Required Min RX. When the peer now accepts
        // packets faster, the next one is not held back by the old, slower interval: the peer times us out by the
        // new one.
        if let (Some(last), Some(next)) = (self.last_tx, self.next_tx) {
            let due = (last + self.sending.max(self.remote_min_rx)).max(now);
            if due < next {
                self.next_tx = Some(due);
            }
        }
        self.last_rx = Some(now);
        if self.state == State::AdminDown {
            return Err(Ignored::AdminDown);
        }
        let mut out = Vec::new();
        let next = match (p.state, self.state) {
            (State::AdminDown, State::Down) => None,
            (State::AdminDown, _) => Some((State::Down, Diag::NeighborSignaledSessionDown)),
            (State::Down, State::Down) => Some((State::Init, Diag::None)),
            (State::Init, State::Down) => Some((State::Up, Diag::None)),
            (State::Init | State::Up, State::Init) => Some((State::Up, Diag::None)),
            (State::Down, State::Up) => Some((State::Down, Diag::NeighborSignaledSessionDown)),
            _ => None,
        };
        if let Some((to, diag)) = next {
            self.change(now, to, diag, &mut out);
        }
        if p.poll {
            // §6.8.6: a Poll is answered with a Final at once, not at the next periodic packet.
            self.final_owed = true;
        }
        out.extend(self.poll(now));
        Ok(out)
    }

    /// Sends what is due and notices a silent peer; call it when [`Self::next_wakeup`] comes, and after anything else.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.state, State::Init | State::Up)
            && self.last_rx.is_some_and(|t| now >= t + self.detection_time())
        {
            // §6.8.1: a session that timed out forgets the peer's discriminator.
            self.remote_discr = 0;
            self.change(now, State::Down, Diag::ControlDetectionTimeExpired, &mut out);
        }
        if self.final_owed {
            self.final_owed = false;
            out.push(Action::Send(self.packet(false, true)));
        }
        // §6.8.7: nothing is sent while the peer asks for no packets at all.
        if self.remote_min_rx.is_zero() {
            self.next_tx = None;
        } else if self.next_tx.is_none_or(|t| now >= t) {
            let polling = self.polling;
            out.push(Action::Send(self.packet(polling, false)));
            self.last_tx = Some(now);
            let interval = self.sending.max(self.remote_min_rx);
            // §6.8.7: 75–100 % of the interval (75–90 % with a detect multiplier of 1).
            let top = if self.timers.detect_mult == 1 { 0.9 } else { 1.0 };
            self.next_tx = Some(now + interval.mul_f64(self.rng.random_range(0.75..top)));
        }
        out
    }

    /// When [`Self::poll`] has something to do next (send, or find the peer silent).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let detect = matches!(self.state, State::Init | State::Up)
            .then(|| self.last_rx.map(|t| t + self.detection_time()))
            .flatten();
        match (self.next_tx, detect) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Changes the timers of a running session, without taking it down: a Poll sequence announces them (§6.8.3). A
    /// faster transmit rate applies at once, a slower one and a lower receive interval once the peer answered.
    pub fn set_timers(&mut self, now: Instant, timers: Timers) -> Vec<Action> {
        if timers == self.timers {
            return Vec::new();
        }
        let old = self.timers;
        self.timers = timers;
        self.detect_rx = old.required_min_rx.max(timers.required_min_rx);
        let wanted = if self.state == State::Up {
            timers.desired_min_tx
        } else {
            SLOW_TX.max(timers.desired_min_tx)
        };
        self.tx_interval = wanted;
        self.sending = self.sending.min(wanted);
        if self.state != State::AdminDown {
            self.polling = true;
            self.next_tx = Some(now);
        }
        self.poll(now)
    }

    /// Takes the session administratively down (the BGP session is being closed on purpose): the peer is told
    /// (state AdminDown), so it does not treat this as a failure (RFC 5882 §3.2).
    pub fn admin_down(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.state != State::AdminDown {
            self.change(now, State::AdminDown, Diag::AdministrativelyDown, &mut out);
        }
        self.next_tx = None;
        out.extend(self.poll(now));
        out
    }

    fn change(&mut self, now: Instant, to: State, diag: Diag, out: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        if to != State::Up {
            self.diag = diag;
        }
        // §6.8.3: at most one packet a second while not Up; the configured rate once Up, announced by a Poll
        // sequence (the peer may then send as fast, and times us out by the new interval).
        let wanted = if to == State::Up {
            self.timers.desired_min_tx
        } else {
            SLOW_TX.max(self.timers.desired_min_tx)
        };
        if wanted != self.tx_interval {
            self.tx_interval = wanted;
            self.sending = self.sending.min(wanted);
            self.polling = true;
        }
        // A state change goes out at once (the peer's state machine waits for it).
        self.next_tx = Some(now);
        out.push(Action::StateChanged { from, to, diag });
    }

    fn packet(&self, poll: bool, final_: bool) -> ControlPacket {
        ControlPacket {
            diag: self.diag,
            state: self.state,
            poll,
            final_,
            control_plane_independent: false,
            demand: false,
            multipoint: false,
            detect_mult: self.timers.detect_mult,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx: self.tx_interval,
            required_min_rx: self.timers.required_min_rx,
            required_min_echo_rx: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests;
