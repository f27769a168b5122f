//! What the watch shows: lease records applied to the view of nodes and IPs, and what they make due.

use super::*;

impl OwnershipCore {
    pub(super) fn apply(&mut self, now: Instant, record: LeaseRecord, from_list: bool) {
        if let Some(node) = naming::node_of_lease(&record.name) {
            let node = node.to_owned();
            self.node_absent_since.remove(&node);
            let holder = record.holder().map(str::to_owned);
            let rv = record.rv().to_owned();
            if record.name == self.own_lease
                && holder.as_deref() == Some(self.holder.as_str())
                && self.own.record.as_ref().is_none_or(|r| is_newer(r.rv(), &rv))
            {
                self.own.record = Some(record.clone());
                self.own.absent = false;
            }
            let t = self.timing.takeover_after;
            match self.nodes.get_mut(&node) {
                Some(view) => {
                    if view.rv == rv || (!from_list && !is_newer(&view.rv, &rv)) {
                        return;
                    }
                    // A node renewing as before changes no decision; one coming back, or changing hands, may
                    // change every IP's candidates or takeover.
                    let was_live = view.holder.is_some() && now < view.rv_changed_at + t;
                    view.rv = rv;
                    view.rv_changed_at = now;
                    if view.holder != holder {
                        view.holder = holder;
                        view.holder_changed_at = now;
                        self.schedule.touch_all();
                    } else if !was_live {
                        self.schedule.touch_all();
                    }
                }
                None => {
                    self.schedule.touch_all();
                    self.nodes.insert(
                        node,
                        NodeView {
                            holder,
                            rv,
                            rv_changed_at: now,
                            holder_changed_at: now,
                        },
                    );
                }
            }
        } else if record.name.starts_with(naming::IP_LEASE_PREFIX) {
            let old_holder = match self.leases.get(&record.name) {
                Some(old) if old.rv() == record.rv() => return,
                Some(old) if !from_list && !is_newer(old.rv(), record.rv()) => return,
                Some(old) => old.holder().map(str::to_owned),
                None => None,
            };
            if old_holder.as_deref() != record.holder() {
                self.touch_ip(now, &record.name);
            }
            if let Some(state) = self.names.get(&record.name).and_then(|ip| self.ips.get_mut(ip))
                && state.lost_at_view.take().is_some()
            {
                // The watch showed what the lost race was about: decide on it now.
                state.retry_at = None;
            }
            self.touch_name(&record.name);
            self.leases.insert(record.name.clone(), Box::new(record));
        }
    }

    pub(super) fn forget(&mut self, now: Instant, name: &str) {
        if let Some(node) = naming::node_of_lease(name) {
            if self.nodes.remove(node).is_some() {
                self.node_absent_since.insert(node.to_owned(), now);
                self.schedule.touch_all();
            }
            if name == self.own_lease {
                self.own.record = None;
                self.own.absent = true;
            }
        } else if self.leases.remove(name).is_some() {
            self.touch_ip(now, name);
            if let Some(state) = self.names.get(name).and_then(|ip| self.ips.get_mut(ip))
                && state.lost_at_view.take().is_some()
            {
                state.retry_at = None;
            }
        }
    }

    /// Starts every node's observation window afresh. Called when this agent's watch re-lists and when its own
    /// liveness gap ends: a node lease that did not change while *we* could not watch or write was not observed to
    /// be stale, and the cause (an API outage) may have hit its holder too. Without this, the node that reconnects
    /// first would take over from every node that simply has not renewed yet. Delays takeovers by at most `T` after
    /// such an event.
    pub(super) fn restart_observation(&mut self, now: Instant) {
        for view in self.nodes.values_mut() {
            view.rv_changed_at = view.rv_changed_at.max(now);
            view.holder_changed_at = view.holder_changed_at.max(now);
        }
        for since in self.node_absent_since.values_mut() {
            *since = (*since).max(now);
        }
        if let Some(synced) = &mut self.synced_at {
            *synced = (*synced).max(now);
        }
        // Checks answered (or sent) before the restart must not serve decisions after it.
        self.checks.clear();
        self.schedule.touch_all();
    }

    /// The holder of the lease `name` changed: its IP's candidates start their stagger afresh.
    fn touch_ip(&mut self, now: Instant, name: &str) {
        if let Some(&ip) = self.names.get(name)
            && let Some(state) = self.ips.get_mut(&ip)
        {
            state.changed_at = now;
            self.schedule.touch(ip);
        }
    }

    /// Something about the lease `name` changed: its IP is decided again.
    pub(super) fn touch_name(&mut self, name: &str) {
        if let Some(&ip) = self.names.get(name) {
            self.schedule.touch(ip);
        }
    }
}
