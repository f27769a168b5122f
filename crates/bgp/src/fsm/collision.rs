//! RFC 4271 §6.8 connection collision: the peer's connection while ours is up, the second connection's OPEN, and
//! which of the two stays.

use super::{Action, Direction, Event, Negotiated, SessionFsm, State, Timer};
use crate::packet::{CeaseSubcode, FsmSubcode, Message, Notification};

impl SessionFsm {
    /// Event 17: the peer connected to us.
    pub(super) fn accept(&mut self, out: &mut Vec<Action>) {
        let incoming = Direction::Incoming;
        match self.state {
            State::Idle if !self.started => out.push(Action::CloseTcp(incoming)),
            // RFC 4271 §8.2.2 (Connect, Active): take the peer's connection, drop our attempt in flight.
            State::Idle | State::Connect | State::Active => {
                if self.state == State::Connect {
                    out.push(Action::CloseTcp(Direction::Outgoing));
                }
                self.open_connection(out, incoming, "connection from the peer accepted, OPEN sent");
            }
            // RFC 4271 §6.8: a possible collision; which connection stays is decided once the peer's OPEN on the
            // new one tells its BGP identifier, so it gets our OPEN too.
            State::OpenSent | State::OpenConfirm if self.connection != Some(incoming) && self.second.is_none() => {
                self.second = Some(incoming);
                out.push(Action::Send(incoming, Message::Open(self.open_message())));
            }
            // The shell hands over a connection from the peer only while it holds none: nothing to do.
            State::OpenSent | State::OpenConfirm => {}
            // RFC 4271 §6.8: an Established session is preserved, the new connection closed.
            State::Established => Self::close_as_collision(out, incoming),
        }
    }

    pub(super) fn close_as_collision(out: &mut Vec<Action>, dir: Direction) {
        let cease = Notification::new(CeaseSubcode::ConnectionCollisionResolution);
        out.push(Action::Send(dir, Message::Notification(cease)));
        out.push(Action::CloseTcp(dir));
    }

    /// Events on the second connection of a collision (always in OpenSent: waiting for the peer's OPEN).
    pub(super) fn second_connection_event(&mut self, out: &mut Vec<Action>, event: Event) {
        let Some(second) = self.second else { return };
        let close = |out: &mut Vec<Action>, n: Option<Notification>| {
            if let Some(n) = n {
                out.push(Action::Send(second, Message::Notification(n)));
            }
            out.push(Action::CloseTcp(second));
        };
        match event {
            Event::Message(_, Message::Open(open)) => match self.check_open(&open) {
                Ok(negotiated) => {
                    self.second = None;
                    self.resolve_collision(out, second, negotiated);
                }
                Err((n, _)) => {
                    self.second = None;
                    close(out, Some(n));
                }
            },
            Event::Message(_, Message::Notification(_)) | Event::TcpClosed(..) => {
                self.second = None;
                close(out, None);
            }
            Event::Message(_, msg) => {
                self.second = None;
                close(
                    out,
                    Some(Notification::with_data(
                        FsmSubcode::UnexpectedInOpenSent,
                        vec![msg.type_code()],
                    )),
                );
            }
            Event::DecodeFailed(_, e) => {
                self.second = None;
                close(out, Some(e.notification));
            }
            _ => {}
        }
    }

    /// The peer's OPEN arrived on the second connection (`new`), which has passed the OPEN checks.
    pub(super) fn resolve_collision(&mut self, out: &mut Vec<Action>, new: Direction, negotiated: Negotiated) {
        let Some(existing) = self.connection else { return };
        if self.state == State::OpenSent {
            // No OPEN on the session's connection yet, so nothing to compare (RFC 4271 §6.8 compares against
            // connections in OpenConfirm): the new connection is further along and carries the session; the old one
            // becomes the second connection, still waiting for its OPEN.
            self.connection = Some(new);
            self.second = Some(existing);
            self.open_confirm(out, negotiated);
            return;
        }
        // RFC 4271 §6.8: the connection opened by the side with the higher BGP identifier stays; with equal
        // identifiers (allowed between ASes, RFC 6286 §2.3) the side with the higher AS number wins.
        let ours = self.config.router_id;
        let theirs = negotiated.peer_id;
        let we_win = match u32::from(ours).cmp(&u32::from(theirs)) {
            std::cmp::Ordering::Equal => self.config.local_asn > negotiated.peer_asn,
            order => order == std::cmp::Ordering::Greater,
        };
        let keep = if we_win {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        let reason = format!(
            "connection collision (RFC 4271 §6.8): our BGP identifier {ours}, the peer's {theirs}: keeping {}",
            keep.describe()
        );
        if keep == existing {
            Self::close_as_collision(out, new);
            // The session's state does not change; the transition records why a connection was closed.
            self.transition(out, self.state, reason);
        } else {
            Self::close_as_collision(out, existing);
            self.connection = Some(new);
            self.negotiated = None;
            out.push(Action::CancelTimer(Timer::Keepalive));
            self.open_confirm(out, negotiated);
            if let Some(Action::StateChanged { reason: r, .. }) = out.last_mut() {
                *r = reason;
            }
        }
    }
}
