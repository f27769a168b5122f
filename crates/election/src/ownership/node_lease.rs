//! This agent's own node lease: renewals, liveness gaps and what a gap means for the IPs it announced.

use super::*;

impl OwnershipCore {
    pub(super) fn node_get_done(&mut self, now: Instant, result: Result<LeaseRecord, StoreError>) {
        match result {
            Ok(rec) => {
                match rec.holder() {
                    Some(h) if h != self.holder && self.own.ever_held => {
                        self.superseded = Some(h.to_owned());
                    }
                    _ => {}
                }
                self.own.record = Some(rec);
                self.own.absent = false;
                self.own.next_at = Some(now);
            }
            Err(StoreError::NotFound { .. }) => {
                self.own.record = None;
                self.own.absent = true;
                self.own.next_at = Some(now);
            }
            Err(_) => self.own.next_at = Some(now + self.timing.renew_retry()),
        }
    }

    pub(super) fn node_write_done(
        &mut self,
        now: Instant,
        sent_at: Instant,
        release: bool,
        result: Result<LeaseRecord, StoreError>,
    ) {
        match result {
            Ok(rec) => {
                self.own.record = Some(rec);
                self.own.absent = false;
                if release {
                    self.own.released = true;
                    return;
                }
                self.own.ever_held = true;
                let last = self.own.last_ok_sent;
                let gap_ended = last.is_none_or(|t| sent_at >= t + self.timing.renew_deadline);
                self.note_gap(sent_at);
                // An answer that arrives after the previous renew's deadline ends a gap too, even if no decision
                // round ran at the deadline itself (a busy task, or the answer and the timer ready at once).
                self.note_gap(now);
                // The gap ends here. Unless this renew took effect before anyone could have confirmed this node dead,
                // every IP must be re-asserted (a new epoch): one may have been taken over meanwhile.
                if let Some(last) = last
                    && now >= last + self.timing.renew_deadline
                {
                    if self.timing.gap_is_harmless(now - last) {
                        self.harmless_gaps += 1;
                    } else {
                        self.epoch += 1;
                        self.schedule.touch_all();
                    }
                }
                if gap_ended && self.own.last_ok_sent.is_some() {
                    self.restart_observation(now);
                }
                if self.own.last_ok_sent.is_none_or(|t| t < sent_at) {
                    self.own.last_ok_sent = Some(sent_at);
                }
                self.own.next_at = Some(sent_at + self.timing.node_renew_period);
            }
            Err(e) if e.is_lost_race() => {
                // Someone wrote our node lease: read it to learn whether that was us (a lost response) or another
                // instance of this node (then we are superseded).
                self.own.record = None;
                self.own.absent = false;
                self.own.next_at = Some(now);
                if release {
                    self.own.released = true;
                }
            }
            Err(_) => {
                if release {
                    // Best effort: a node lease we cannot release expires by observation anyway.
                    self.own.released = true;
                }
                self.own.next_at = Some(now + self.timing.renew_retry());
            }
        }
    }

    /// Counts a liveness gap that ended before `upto` (a renew sent later than `D` after the last successful one).
    fn note_gap(&mut self, upto: Instant) {
        if let Some(last) = self.own.last_ok_sent
            && upto >= last + self.timing.renew_deadline
            && self.gap_counted_for != Some(last)
        {
            self.start_gap(last);
        }
    }

    /// A gap begins: no IP counts as asserted while it lasts (the agent is not healthy); whether they must be
    /// asserted again after it is decided when it ends (`node_write_done`).
    pub(super) fn start_gap(&mut self, last_ok: Instant) {
        self.gap_counted_for = Some(last_ok);
        self.schedule.touch_all();
        if self.policy == OutagePolicy::Hold {
            self.hold_set.clone_from(&self.announced);
        }
    }

    fn node_record(&self, release: bool) -> LeaseRecord {
        let prev = self.own.record.clone().unwrap_or_default();
        let mut record = LeaseRecord {
            name: self.own_lease.clone(),
            resource_version: prev.resource_version.clone(),
            labels: naming::node_lease_labels(self.me.node()).into(),
            holder: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration_seconds()),
            lease_transitions: prev.lease_transitions,
            acquire_time: prev.acquire_time,
            renew_time: None,
        };
        if prev.holder() != Some(self.holder.as_str()) {
            record.lease_transitions = Some(prev.lease_transitions.unwrap_or(0) + i32::from(prev.holder().is_some()));
            record.acquire_time = None;
        }
        if release {
            record.holder = None;
            record.lease_duration_seconds = Some(1);
        }
        record
    }

    pub(super) fn poll_node_lease(&mut self, now: Instant, out: &mut Vec<Action>, release: bool) {
        if self.busy.contains(&self.own_lease) || self.own.released {
            return;
        }
        let due = self.own.next_at.unwrap_or(now);
        if now < due && !release {
            self.wake_at(due);
            return;
        }
        let op = self.next_op();
        if release {
            if self
                .own
                .record
                .as_ref()
                .is_none_or(|r| r.holder() != Some(self.holder.as_str()))
            {
                self.own.released = true;
                return;
            }
            let record = self.node_record(true);
            self.ops.insert(
                op,
                Pending::NodeWrite {
                    sent_at: now,
                    release: true,
                },
            );
            self.busy.insert(self.own_lease.clone());
            out.push(Action::Replace { op, record });
        } else if self.own.record.is_none() && !self.own.absent {
            self.ops.insert(op, Pending::NodeGet);
            self.busy.insert(self.own_lease.clone());
            out.push(Action::Get {
                op,
                name: self.own_lease.clone(),
            });
        } else {
            let record = self.node_record(false);
            self.ops.insert(
                op,
                Pending::NodeWrite {
                    sent_at: now,
                    release: false,
                },
            );
            self.busy.insert(self.own_lease.clone());
            if self.own.absent {
                out.push(Action::Create { op, record });
            } else {
                out.push(Action::Replace { op, record });
            }
        }
    }
}
