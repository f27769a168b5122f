//! Which IPs a decision round visits.
//!
//! A round decides only the IPs whose inputs changed since the last one (their lease, their desire, a result of an
//! operation on them, a wire conflict) and those whose own timer came due (a stagger, a retry, a yield). Inputs that
//! every IP depends on (this agent's health and epoch, which nodes are live, a takeover check's answer, the watch
//! re-listing) mark every IP. So a round costs what changed, not the number of IPs: a thousand new Services cost a
//! thousand decisions, not a thousand rounds over every IP the agent knows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tokio::time::Instant;

/// The IPs due for a decision.
#[derive(Debug)]
pub(super) struct Schedule {
    /// Every IP is due (a global input changed).
    all: bool,
    /// IPs whose inputs changed.
    touched: BTreeSet<IpAddr>,
    /// Per-IP timers, by time.
    timers: BTreeSet<(Instant, IpAddr)>,
    /// The timer of each IP that has one.
    timer_of: BTreeMap<IpAddr, Instant>,
}

impl Default for Schedule {
    /// Everything is due at first.
    fn default() -> Self {
        Self {
            all: true,
            touched: BTreeSet::new(),
            timers: BTreeSet::new(),
            timer_of: BTreeMap::new(),
        }
    }
}

impl Schedule {
    /// An input of `ip` changed.
    pub(super) fn touch(&mut self, ip: IpAddr) {
        if !self.all {
            self.touched.insert(ip);
        }
    }

    /// An input of every IP changed.
    pub(super) fn touch_all(&mut self) {
        self.all = true;
        self.touched.clear();
    }

    /// Decide `ip` again at `at` (replacing its timer).
    pub(super) fn set_timer(&mut self, ip: IpAddr, at: Instant) {
        if let Some(old) = self.timer_of.insert(ip, at) {
            self.timers.remove(&(old, ip));
        }
        self.timers.insert((at, ip));
    }

    /// Forgets everything about `ip`.
    pub(super) fn forget(&mut self, ip: IpAddr) {
        self.touched.remove(&ip);
        if let Some(old) = self.timer_of.remove(&ip) {
            self.timers.remove(&(old, ip));
        }
    }

    /// The earliest timer.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Takes the IPs due at `now` (`known`: every IP, for when all are due), in address order, and clears their
    /// timers: deciding an IP sets its next timer, if it needs one.
    pub(super) fn take_due(&mut self, now: Instant, known: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
        let mut due = std::mem::take(&mut self.touched);
        if std::mem::take(&mut self.all) {
            due.extend(known);
        }
        while let Some(&(at, ip)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.timer_of.remove(&ip);
            due.insert(ip);
        }
        for ip in &due {
            if let Some(old) = self.timer_of.remove(ip) {
                self.timers.remove(&(old, *ip));
            }
        }
        due.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn everything_is_due_first_then_only_what_changed_or_came_due() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        assert_eq!(s.take_due(t0, [ip(1), ip(2), ip(3)].into_iter()), [ip(1), ip(2), ip(3)]);
        assert!(s.take_due(t0, [ip(1), ip(2), ip(3)].into_iter()).is_empty());
        s.touch(ip(2));
        s.set_timer(ip(3), t0 + Duration::from_secs(1));
        assert_eq!(s.take_due(t0, [ip(1), ip(2), ip(3)].into_iter()), [ip(2)]);
        assert_eq!(s.next_timer(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            s.take_due(t0 + Duration::from_secs(1), [ip(1), ip(2), ip(3)].into_iter()),
            [ip(3)]
        );
        assert_eq!(s.next_timer(), None);
    }

    #[test]
    fn a_timer_is_replaced_and_cleared_when_its_ip_is_decided_early() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.take_due(t0, std::iter::empty());
        s.set_timer(ip(1), t0 + Duration::from_secs(5));
        s.set_timer(ip(1), t0 + Duration::from_secs(2));
        assert_eq!(s.next_timer(), Some(t0 + Duration::from_secs(2)));
        s.touch(ip(1));
        assert_eq!(s.take_due(t0, std::iter::empty()), [ip(1)]);
        assert_eq!(s.next_timer(), None, "deciding an IP clears its timer");
        s.set_timer(ip(2), t0);
        s.forget(ip(2));
        assert_eq!(s.next_timer(), None);
        s.touch_all();
        assert_eq!(s.take_due(t0, [ip(7)].into_iter()), [ip(7)]);
    }
}
