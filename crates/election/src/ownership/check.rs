//! Takeover checks: one fresh read of a node's lease decides the takeover of every IP its dead holder held.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tokio::time::Instant;

use super::{CHECK_FRESHNESS_STEPS, OpId};
use crate::lease::{LeaseRecord, StoreError};
use crate::timing::ElectionTiming;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Expect {
    /// The holder's node lease must still carry this resourceVersion.
    SameRv(String),
    /// The holder's node lease must be absent or name someone else.
    NotHeldBy(String),
}

impl Expect {
    /// Whether a fresh read of the node lease confirms that the holder is dead.
    pub(super) fn confirmed_by(&self, read: &Result<LeaseRecord, StoreError>) -> bool {
        match (self, read) {
            (Self::SameRv(rv), Ok(rec)) => rec.rv() == rv,
            (Self::NotHeldBy(_), Err(StoreError::NotFound { .. })) => true,
            (Self::NotHeldBy(h), Ok(rec)) => rec.holder() != Some(h.as_str()),
            _ => false,
        }
    }
}

/// One takeover check of a node: a fresh GET of its node lease, shared by every IP whose takeover depends on that
/// node being dead. At most one per node is in flight.
///
/// Why sharing is as safe as one GET per IP: the per-IP rule needs, for IP X held by `h`, (1) a linearizable read of
/// `h`'s node lease, sent no earlier than `h`'s death point `o + T` (`o` = when the observed resourceVersion first
/// appeared in this agent's watch), that still shows what was observed at `o`; and (2) a CAS of X's lease against the
/// resourceVersion seen *before* that read was sent. Neither names X: (1) is a fact about `h` at the moment the
/// read was served, and every IP held by `h` has the same death point, because it depends only on `h`'s node view.
/// So a check is sent only once `h` is dead (`holder_dead_from(h) ≤ sent_at`), covers exactly the IPs whose lease
/// named `h` when it was sent, with their lease resourceVersion of that moment (2), and a covered IP uses the answer
/// only if its lease is still at that resourceVersion. The stagger (`k × step`) and the IP's own change time only
/// order candidates; they are not part of the safety argument, so an answer that arrived before an IP's decision
/// point proves the same as one that arrived after it. What protects against the holder coming back after the read
/// is, as before, the CAS: a holder back from a liveness gap must re-assert X with a CAS before it announces X again,
/// and exactly one of the two CAS on the same resourceVersion wins. The answer still serves decisions only for
/// [`CHECK_FRESHNESS_STEPS`](super::CHECK_FRESHNESS_STEPS) stagger steps after it arrived, so a later round reads again rather than acting on an old
/// read, and a refuted or failed check is repeated only after `R` (one GET per node per `R`, not per IP).
#[derive(Debug)]
pub(super) struct NodeCheck {
    /// The GET in flight, if any.
    pub(super) op: Option<OpId>,
    /// The IPs the check answers for: IP → (its lease resourceVersion, its holder) when the GET was sent.
    pub(super) covered: BTreeMap<IpAddr, (String, String)>,
    /// What the node lease must show for each holder in `covered` to be dead.
    pub(super) expect: BTreeMap<String, Expect>,
    /// When the answer arrived.
    pub(super) answered_at: Option<Instant>,
    /// The holders the answer confirmed dead.
    pub(super) confirmed: BTreeSet<String>,
}

/// What a node's takeover check allows for one IP (see [`NodeCheck::verdict`]).
pub(super) enum CheckVerdict {
    /// A fresh answer covering the IP confirmed its holder dead: CAS the IP lease now.
    Takeover,
    /// A check is in flight, or was refuted less than `R` ago: wait (until the given time, if known).
    Wait(Option<Instant>),
    /// No usable answer: send a new check.
    Read,
}

impl NodeCheck {
    /// A check sent now, covering `covered` with the expectations `expect`.
    pub(super) fn sent(
        op: OpId,
        covered: BTreeMap<IpAddr, (String, String)>,
        expect: BTreeMap<String, Expect>,
    ) -> Self {
        Self {
            op: Some(op),
            covered,
            expect,
            answered_at: None,
            confirmed: BTreeSet::new(),
        }
    }

    /// The answer to the check's read arrived at `now`.
    pub(super) fn answered(&mut self, now: Instant, read: &Result<LeaseRecord, StoreError>) {
        self.op = None;
        self.answered_at = Some(now);
        self.confirmed = self
            .expect
            .iter()
            .filter(|(_, expect)| expect.confirmed_by(read))
            .map(|(holder, _)| holder.clone())
            .collect();
    }

    /// Whether the check still serves decisions at `now` (in flight, or answered less than `keep` ago).
    pub(super) fn alive(&self, now: Instant, keep: std::time::Duration) -> bool {
        self.op.is_some() || self.answered_at.is_some_and(|t| now < t + keep)
    }

    /// What the check allows for `ip`, whose lease (at `ip_rv`) names the dead holder `holder`.
    pub(super) fn verdict(
        &self,
        ip: IpAddr,
        holder: &str,
        ip_rv: &str,
        now: Instant,
        timing: &ElectionTiming,
    ) -> CheckVerdict {
        // One read of a node lease at a time: wait for it, whether or not it covers this IP.
        let Some(answered_at) = self.answered_at.filter(|_| self.op.is_none()) else {
            return CheckVerdict::Wait(None);
        };
        if !self.confirmed.contains(holder) {
            // The holder renewed after all (our watch is behind), or the read failed: read again after R.
            let again = answered_at + timing.node_renew_period;
            return if now < again {
                CheckVerdict::Wait(Some(again))
            } else {
                CheckVerdict::Read
            };
        }
        let fresh = now <= answered_at + timing.stagger_step * CHECK_FRESHNESS_STEPS;
        let covers = self.covered.get(&ip).is_some_and(|(rv, h)| rv == ip_rv && h == holder);
        if fresh && covers {
            CheckVerdict::Takeover
        } else {
            CheckVerdict::Read
        }
    }
}
