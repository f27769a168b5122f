//! Decision rounds: which IPs are due, what each one's lease and candidates say, and the lease writes, node checks
//! and announcements that follow.

use super::*;

impl OwnershipCore {
    pub(super) fn next_op(&mut self) -> OpId {
        let op = self.next_op;
        self.next_op += 1;
        op
    }

    pub(super) fn wake_at(&mut self, at: Instant) {
        if self.wake.is_none_or(|w| at < w) {
            self.wake = Some(at);
        }
    }

    fn node_live(&self, node: &str, now: Instant) -> bool {
        if node == self.me.node() {
            return self.is_healthy(now) && !self.stopping;
        }
        self.nodes
            .get(node)
            .is_some_and(|v| v.holder.is_some() && now < v.rv_changed_at + self.timing.takeover_after)
    }

    /// From when the holder counts as dead, by local observation. `None` before the first watch sync.
    fn holder_dead_from(&self, holder: &str) -> Option<Instant> {
        let node = holder_node(holder);
        let t = self.timing.takeover_after;
        match self.nodes.get(node) {
            Some(v) if v.holder.as_deref() == Some(holder) => Some(v.rv_changed_at + t),
            Some(v) => Some(v.holder_changed_at + t),
            None => Some(self.node_absent_since.get(node).copied().or(self.synced_at)? + t),
        }
    }

    fn expectation(&self, holder: &str) -> Expect {
        match self.nodes.get(holder_node(holder)) {
            Some(v) if v.holder.as_deref() == Some(holder) => Expect::SameRv(v.rv.clone()),
            _ => Expect::NotHeldBy(holder.to_owned()),
        }
    }

    /// This node's rank among the live eligible candidates for `ip`, if it is one.
    fn my_rank(&self, ip: IpAddr, desire: &IpDesire, now: Instant) -> Option<u32> {
        let live = desire
            .eligible_nodes
            .iter()
            .map(String::as_str)
            .filter(|n| self.node_live(n, now));
        let ranked = rank_nodes(ip, live);
        ranked
            .iter()
            .position(|n| *n == self.me.node())
            .and_then(|k| u32::try_from(k).ok())
    }

    /// The interface of a desired IP.
    fn interface_of(&self, ip: IpAddr) -> Option<String> {
        self.ips.get(&ip)?.desire.as_ref()?.interface.clone()
    }

    /// Starts announcing `ip` (which this agent holds): where, and whether it is a takeover. The lease counts
    /// holders from 1 (ours, if we were the first): more means another agent, or this one before a release, held it.
    fn announce(&mut self, ip: IpAddr) -> Announce {
        let interface = self.interface_of(ip);
        let transitions = self
            .ips
            .get(&ip)
            .and_then(|s| self.leases.get(&s.name))
            .and_then(|l| l.lease_transitions)
            .unwrap_or(0);
        let held_before = transitions > 1 || self.answered_before.contains(&ip);
        self.answered_before.insert(ip);
        self.announced_on.insert(ip, interface.clone());
        Announce {
            ip,
            interface,
            held_before,
        }
    }

    fn ip_record(&self, ip: IpAddr, desire: &IpDesire, prev: Option<&LeaseRecord>) -> crate::Result<LeaseRecord> {
        let name = naming::ip_lease_name(ip)?;
        let prev_holder = prev.and_then(|p| p.holder());
        let same_holder = prev_holder == Some(self.holder.as_str());
        let transitions = prev.and_then(|p| p.lease_transitions).unwrap_or(0);
        Ok(LeaseRecord {
            name,
            resource_version: prev.and_then(|p| p.resource_version.clone()),
            labels: naming::ip_lease_labels(ip, &desire.eip)?.into(),
            holder: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration_seconds()),
            lease_transitions: Some(if same_holder { transitions } else { transitions + 1 }),
            acquire_time: if same_holder {
                prev.and_then(|p| p.acquire_time)
            } else {
                None
            },
            renew_time: None,
        })
    }

    fn release_record(prev: &LeaseRecord) -> LeaseRecord {
        LeaseRecord {
            holder: None,
            acquire_time: None,
            renew_time: None,
            ..prev.clone()
        }
    }

    fn issue_ip_write(&mut self, out: &mut Vec<Action>, record: LeaseRecord, purpose: Purpose, create: bool) {
        let op = self.next_op();
        self.busy.insert(record.name.clone());
        self.ops.insert(
            op,
            Pending::IpWrite(IpWrite {
                name: record.name.clone(),
                sent_epoch: self.epoch,
                purpose,
                base_rv: record.resource_version.clone(),
            }),
        );
        out.push(if create {
            Action::Create { op, record }
        } else {
            Action::Replace { op, record }
        });
    }

    pub(super) fn ip_write_done(&mut self, now: Instant, write: IpWrite, result: Result<LeaseRecord, StoreError>) {
        let IpWrite {
            name,
            sent_epoch,
            purpose,
            base_rv,
        } = write;
        let healthy = self.is_healthy(now);
        let epoch = self.epoch;
        let ip = self.names.get(&name).copied();
        match result {
            Ok(rec) => {
                if let Some(ip) = ip
                    && let Some(state) = self.ips.get_mut(&ip)
                {
                    state.retry_at = None;
                    if purpose == Purpose::Release {
                        state.asserted_epoch = None;
                    } else if sent_epoch == epoch && healthy {
                        state.asserted_epoch = Some(epoch);
                        state.yielded_until = None;
                        self.hold_set.remove(&ip);
                    }
                }
                self.apply(now, rec, false);
            }
            Err(e) => {
                let lost = e.is_lost_race() || matches!(e, StoreError::NotFound { .. });
                if let Some(ip) = ip
                    && let Some(state) = self.ips.get_mut(&ip)
                {
                    if lost && purpose == Purpose::Reassert {
                        // The lease moved while we could not renew: whoever wrote it owns it now.
                        state.asserted_epoch = None;
                        self.hold_set.remove(&ip);
                    }
                    let view = self.leases.get(&name).map(|l| l.rv().to_owned());
                    if lost && view != base_rv {
                        // The watch already showed what we lost to: decide on that at once.
                        state.retry_at = None;
                    } else if lost {
                        // The winner's write is on its way in the watch; if it is not there by the retry, read.
                        state.lost_at_view = Some(view);
                        state.retry_at = Some(now + self.timing.node_renew_period);
                    } else {
                        state.retry_at = Some(
                            now + match e {
                                StoreError::Rejected { .. } => self.timing.takeover_after,
                                _ => self.timing.renew_retry(),
                            },
                        );
                    }
                }
            }
        }
    }

    /// Computes decisions. Call after every input and when [`next_wakeup`](Self::next_wakeup) is reached.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.wake = None;
        if self.stopped {
            return out;
        }
        if let Some(by) = self.superseded.clone() {
            out.extend(self.announced.iter().map(|ip| Action::Withdraw(*ip)));
            self.announced.clear();
            self.announced_on.clear();
            self.stopped = true;
            out.push(Action::Superseded { by });
            out.push(Action::Stopped);
            return out;
        }

        // Liveness gap of this instance (its deadline passed without a successful renew).
        if let Some(last) = self.own.last_ok_sent {
            let deadline = last + self.timing.renew_deadline;
            if now >= deadline {
                if self.gap_counted_for != Some(last) {
                    self.start_gap(last);
                }
            } else {
                self.wake_at(deadline);
            }
        }
        let healthy = self.is_healthy(now);
        if self.last_healthy != Some(healthy) {
            self.last_healthy = Some(healthy);
            self.schedule.touch_all();
        }
        if self.decide_all {
            self.schedule.touch_all();
        }
        let synced = self.synced_at.is_some();
        // Answers older than both the freshness window and the retry delay serve nothing any more.
        let keep = (self.timing.node_renew_period).max(self.timing.stagger_step * CHECK_FRESHNESS_STEPS);
        let checks = self.checks.len();
        self.checks.retain(|_, c| c.alive(now, keep));
        // A node became dead (or its holder's death point passed) since the last round: candidate lists and
        // takeovers may change for every IP.
        if self.checks.len() != checks
            || self
                .last_poll
                .is_some_and(|last| self.node_expiries().any(|at| last < at && at <= now))
        {
            self.schedule.touch_all();
        }

        let mut withdraw = Vec::new();
        let mut announce = Vec::new();
        let mut writes = Vec::new();
        for ip in self.schedule.take_due(now, self.ips.keys().copied()) {
            if !self.ips.contains_key(&ip) {
                continue;
            }
            let want = self.decide(ip, now, healthy, synced, &mut writes);
            if let Some(change) = self.owner_change(ip) {
                out.push(change);
            }
            // An announced IP whose interface changed moves: withdrawn, then announced on the new one.
            let was = self.announced.contains(&ip);
            let moved = want && was && self.announced_on.get(&ip) != Some(&self.interface_of(ip));
            if was && (!want || moved) {
                withdraw.push(ip);
            }
            if want && (!was || moved) {
                announce.push(ip);
            }
            self.forget_if_done(ip);
        }
        // Withdrawals strictly before announcements and writes.
        for ip in withdraw {
            self.announced.remove(&ip);
            self.announced_on.remove(&ip);
            self.hold_set.remove(&ip);
            out.push(Action::Withdraw(ip));
        }
        for ip in announce {
            let announce = self.announce(ip);
            self.announced.insert(ip);
            out.push(Action::Announce(announce));
        }
        out.extend(writes);

        if self.stopping {
            self.poll_shutdown(now, &mut out);
        } else {
            self.poll_node_lease(now, &mut out, false);
        }
        // Liveness of other nodes expires on its own: wake up when a candidate list or a dead holder changes.
        let expiries: Vec<Instant> = self.node_expiries().filter(|at| *at > now).collect();
        for at in expiries {
            self.wake_at(at);
        }
        if let Some(at) = self.schedule.next_timer() {
            self.wake_at(at);
        }
        self.last_poll = Some(now);
        out
    }

    /// The moments at which a node's liveness, or the death of a holder on it, changes by itself (with no input).
    fn node_expiries(&self) -> impl Iterator<Item = Instant> + '_ {
        let t = self.timing.takeover_after;
        self.nodes
            .values()
            .flat_map(move |v| [v.rv_changed_at + t, v.holder_changed_at + t])
            .chain(self.node_absent_since.values().map(move |s| *s + t))
            .chain(self.synced_at.map(|s| s + t))
    }

    /// The ownership notification for `ip`, if its holder changed since the last one.
    fn owner_change(&mut self, ip: IpAddr) -> Option<Action> {
        let state = self.ips.get_mut(&ip)?;
        let holder = self.leases.get(&state.name).and_then(|l| l.holder());
        if state.notified_holder.as_ref().map(Option::as_deref) == Some(holder) {
            return None;
        }
        let holder = holder.map(str::to_owned);
        let was_self = matches!(&state.notified_holder, Some(Some(h)) if *h == self.holder);
        let is_self = holder.as_deref() == Some(self.holder.as_str());
        let notify = state.notified_holder.is_some() || holder.is_some();
        state.notified_holder = Some(holder.clone());
        notify.then_some(Action::OwnerChanged {
            ip,
            holder,
            is_self,
            was_self,
        })
    }

    /// Forgets `ip` once it is neither desired nor held by this instance, and no operation on it is in flight.
    fn forget_if_done(&mut self, ip: IpAddr) {
        let Some(state) = self.ips.get(&ip) else {
            return;
        };
        if state.desire.is_some()
            || self.busy.contains(&state.name)
            || self.leases.get(&state.name).and_then(|l| l.holder()) == Some(self.holder.as_str())
        {
            return;
        }
        self.names.remove(&state.name);
        self.ips.remove(&ip);
        self.answered_before.remove(&ip);
        self.schedule.forget(ip);
    }

    /// Decides one IP: sets its timer, pushes at most one lease operation, and returns whether it should be announced.
    fn decide(&mut self, ip: IpAddr, now: Instant, healthy: bool, synced: bool, writes: &mut Vec<Action>) -> bool {
        let verdict = self.judge(ip, now, healthy, synced);
        if let Some(at) = verdict.wake {
            self.schedule.set_timer(ip, at);
        }
        let (Some(step), Some(state)) = (verdict.step, self.ips.get(&ip)) else {
            return verdict.announce;
        };
        let name = state.name.clone();
        let lease = self.leases.get(&name).map(|l| &**l);
        let stale = state
            .lost_at_view
            .as_ref()
            .is_some_and(|seen| seen.as_deref() == lease.map(LeaseRecord::rv));
        match step {
            // A race was lost and the watch still shows what we based the write on: read before writing again.
            Step::Release | Step::Write { .. } if stale => {
                let op = self.next_op();
                self.busy.insert(name.clone());
                self.ops.insert(op, Pending::IpRefresh { name: name.clone() });
                writes.push(Action::Get { op, name });
            }
            Step::Release => {
                if let Some(lease) = lease {
                    let record = Self::release_record(lease);
                    self.issue_ip_write(writes, record, Purpose::Release, false);
                }
            }
            Step::Write { purpose, create } => {
                let Some(Ok(record)) = state.desire.as_ref().map(|d| self.ip_record(ip, d, lease)) else {
                    return verdict.announce;
                };
                if purpose == Purpose::Takeover
                    && let Some(h) = lease.and_then(|l| l.holder())
                    && let Some(check) = self.checks.get_mut(holder_node(h))
                {
                    check.covered.remove(&ip);
                }
                self.issue_ip_write(writes, record, purpose, create);
            }
            Step::Check { node } => self.issue_node_check(now, &node, writes),
        }
        verdict.announce
    }

    /// What `ip` needs now (see the module docs for the rules).
    fn judge(&self, ip: IpAddr, now: Instant, healthy: bool, synced: bool) -> Verdict {
        let mut verdict = Verdict::default();
        let Some(state) = self.ips.get(&ip) else {
            return verdict;
        };
        let lease = self.leases.get(&state.name).map(|l| &**l);
        let holder = lease.and_then(|l| l.holder());
        let desire = state.desire.as_ref();
        let eligible = !self.stopping && desire.is_some_and(|d| d.eligible_nodes.contains(self.me.node()));
        let busy = self.busy.contains(&state.name);
        let retry_ok = state.retry_at.is_none_or(|t| now >= t);
        if let Some(t) = state.retry_at.filter(|t| *t > now) {
            verdict.wake_at(t);
        }

        if holder == Some(self.holder.as_str()) {
            if !eligible {
                // Withdraw first (the verdict does not announce), then release in the same batch.
                if !busy && retry_ok {
                    verdict.step = Some(Step::Release);
                }
                return verdict;
            }
            if let Some(t) = state.yielded_until.filter(|t| now < *t) {
                verdict.wake_at(t);
                return verdict;
            }
            let asserted = state.asserted_epoch == Some(self.epoch);
            let held = self.policy == OutagePolicy::Hold && self.hold_set.contains(&ip) && self.announced.contains(&ip);
            if !healthy {
                verdict.announce = held;
                return verdict;
            }
            if !asserted && !busy && retry_ok {
                verdict.step = Some(Step::Write {
                    purpose: Purpose::Reassert,
                    create: false,
                });
            }
            verdict.announce = asserted || held;
            return verdict;
        }

        // Not ours: never announce. Maybe acquire or take over.
        let Some(desire) = desire else {
            return verdict;
        };
        if !eligible || !healthy || !synced || busy || !retry_ok {
            return verdict;
        }
        let Some(k) = self.my_rank(ip, desire, now) else {
            return verdict;
        };
        match (holder, lease) {
            (None, lease) => {
                // Warm-up: act on free IPs only once every live node had a renew period to show up in our watch,
                // so a cold start of the whole cluster ranks against the full candidate list, not first-come.
                let warm = self.synced_at.map_or(now, |s| s + self.timing.node_renew_period);
                let create = lease.is_none();
                // A lease nobody created yet is a new IP, which no holder is handing over: the lower ranks give the
                // first a renew period each, time for its create to reach their watch even under load, instead of
                // racing it (a lost create costs two requests). A released lease is a handover, taken at once.
                let step = if create {
                    self.timing.stagger_step.max(self.timing.node_renew_period)
                } else {
                    self.timing.stagger_step
                };
                let at = state.changed_at.max(warm) + step * k;
                if now < at {
                    verdict.wake_at(at);
                } else {
                    verdict.step = Some(Step::Write {
                        purpose: Purpose::Acquire,
                        create,
                    });
                }
            }
            (Some(h), Some(lease)) => {
                let Some(dead_from) = self.holder_dead_from(h) else {
                    return verdict;
                };
                // A live holder is left alone, with no timer: its death point is a node expiry, at which every IP
                // is decided again.
                if now < dead_from {
                    return verdict;
                }
                let at = dead_from.max(state.changed_at) + self.timing.stagger_step * k;
                if now < at {
                    verdict.wake_at(at);
                    return verdict;
                }
                let node = holder_node(h);
                let check = self.checks.get(node);
                match check.map_or(CheckVerdict::Read, |c| c.verdict(ip, h, lease.rv(), now, &self.timing)) {
                    CheckVerdict::Takeover => {
                        verdict.step = Some(Step::Write {
                            purpose: Purpose::Takeover,
                            create: false,
                        });
                    }
                    CheckVerdict::Wait(until) => {
                        if let Some(t) = until {
                            verdict.wake_at(t);
                        }
                    }
                    CheckVerdict::Read => verdict.step = Some(Step::Check { node: node.to_owned() }),
                }
            }
            (Some(_), None) => {}
        }
        verdict
    }

    /// Sends the one takeover check of `node`: a GET of its node lease covering every desired IP whose lease names a
    /// holder on `node` that is dead by now (see [`NodeCheck`]).
    fn issue_node_check(&mut self, now: Instant, node: &str, out: &mut Vec<Action>) {
        let mut covered = BTreeMap::new();
        let mut expect = BTreeMap::new();
        for (ip, state) in &self.ips {
            let Some(lease) = self.leases.get(&state.name) else {
                continue;
            };
            let Some(h) = lease.holder().filter(|h| holder_node(h) == node) else {
                continue;
            };
            if h == self.holder || self.holder_dead_from(h).is_none_or(|dead| now < dead) {
                continue;
            }
            if !expect.contains_key(h) {
                expect.insert(h.to_owned(), self.expectation(h));
            }
            covered.insert(*ip, (lease.rv().to_owned(), h.to_owned()));
        }
        let op = self.next_op();
        self.ops.insert(op, Pending::TakeoverCheck { node: node.to_owned() });
        self.checks
            .insert(node.to_owned(), NodeCheck::sent(op, covered, expect));
        out.push(Action::Get {
            op,
            name: naming::node_lease_name(node),
        });
    }

    fn poll_shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        // Leases naming this instance without local state (never desired in this process) are released too.
        let orphans: Vec<LeaseRecord> = self
            .leases
            .values()
            .filter(|l| l.holder() == Some(self.holder.as_str()))
            .filter(|l| !self.busy.contains(&l.name) && !self.names.contains_key(&l.name))
            .map(|l| LeaseRecord::clone(l))
            .collect();
        for lease in orphans {
            self.issue_ip_write(out, Self::release_record(&lease), Purpose::Release, false);
        }
        let ip_work_left = self
            .ops
            .values()
            .any(|p| !matches!(p, Pending::NodeGet | Pending::NodeWrite { .. }))
            || self.leases.values().any(|l| l.holder() == Some(self.holder.as_str()));
        if ip_work_left {
            // Keep the node lease fresh while releasing so nobody treats our IPs as held by a dead node.
            self.poll_node_lease(now, out, false);
            return;
        }
        if !self.own.released {
            self.poll_node_lease(now, out, true);
        }
        if self.own.released && !self.busy.contains(&self.own_lease) {
            self.stopped = true;
            out.push(Action::Stopped);
        }
    }
}
