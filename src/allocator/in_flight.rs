//! The allocator's record of writes the watch has not shown yet, so that a pass that runs before the watch catches up
//! does not make the same write again. Pure: the controller says what it wrote and what the watch shows.

use std::collections::HashMap;

use herald_ipam::ServiceKey;

use super::Write;

/// The object (and part of it) a write goes to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WriteTarget {
    /// A Service's `status.loadBalancer.ingress`.
    Ingress(ServiceKey),
    /// A Service's `herald.dev/allocated-from` annotation.
    AllocatedFrom(ServiceKey),
    /// An Eip's status.
    EipStatus(String),
}

/// Above this many slots, a table at most a quarter full gives its memory back.
const SHRINK_ABOVE: usize = 64;

/// The last write made to each target, with the resourceVersion the object had when the write started.
#[derive(Debug, Default)]
pub struct InFlight {
    writes: HashMap<WriteTarget, (Write, Option<String>)>,
}

impl InFlight {
    /// Whether `write` to `target` was made from the resourceVersion `rv` the object still shows: the watch has not
    /// shown its result yet, so making it again would only repeat it.
    pub fn already_made(&self, target: &WriteTarget, write: &Write, rv: &Option<String>) -> bool {
        self.writes.get(target).is_some_and(|(w, at)| w == write && at == rv)
    }

    /// `write` to `target`, started at `rv`, succeeded.
    pub fn made(&mut self, target: WriteTarget, write: Write, rv: Option<String>) {
        self.writes.insert(target, (write, rv));
    }

    /// A write to `target` failed: the next pass makes it again.
    pub fn failed(&mut self, target: &WriteTarget) {
        self.writes.remove(target);
    }

    /// The targets with a write the watch has not shown yet.
    pub fn targets(&self) -> impl Iterator<Item = &WriteTarget> + '_ {
        self.writes.keys()
    }

    /// Forgets every write whose object no longer shows the resourceVersion the write started from (`shown` gives
    /// the version the watch shows now, `None` when the object is gone): the watch showed the write's result or a
    /// later change, so the record has served. The table then holds only the writes not shown yet, and after a
    /// burst (20,000 first writes at 10,000 Services) gives back the room it took.
    pub fn forget_shown(&mut self, shown: impl Fn(&WriteTarget) -> Option<Option<String>>) {
        self.writes.retain(|target, (_, rv)| shown(target).as_ref() == Some(rv));
        if self.writes.capacity() > SHRINK_ABOVE && self.writes.len() < self.writes.capacity() / 4 {
            self.writes.shrink_to_fit();
        }
    }

    /// Writes not shown yet.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.writes.len()
    }

    /// Slots the table holds memory for.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.writes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn key(name: &str) -> ServiceKey {
        ServiceKey::new("default", name)
    }

    fn ingress(name: &str, ip: &str) -> (WriteTarget, Write) {
        let ips: Vec<IpAddr> = vec![ip.parse().unwrap()];
        (
            WriteTarget::Ingress(key(name)),
            Write::ServiceIngress {
                service: key(name),
                ips,
            },
        )
    }

    fn rv(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn a_write_is_not_repeated_until_the_watch_shows_a_new_version() {
        let mut f = InFlight::default();
        let (target, write) = ingress("web", "192.0.2.1");
        assert!(!f.already_made(&target, &write, &rv("5")));
        f.made(target.clone(), write.clone(), rv("5"));
        assert!(f.already_made(&target, &write, &rv("5")), "the watch still shows 5");
        let (_, other) = ingress("web", "192.0.2.2");
        assert!(
            !f.already_made(&target, &other, &rv("5")),
            "another write to the same target is made"
        );
        assert!(
            !f.already_made(&target, &write, &rv("6")),
            "the object changed since: write again"
        );
        // Still at 5: kept. At 6 (the write's result): forgotten.
        f.forget_shown(|_| Some(rv("5")));
        assert_eq!(f.len(), 1);
        f.forget_shown(|_| Some(rv("6")));
        assert_eq!(f.len(), 0);
        assert!(!f.already_made(&target, &write, &rv("5")));
    }

    #[test]
    fn a_failed_write_is_made_again_and_a_deleted_object_is_forgotten() {
        let mut f = InFlight::default();
        let (a, wa) = ingress("a", "192.0.2.1");
        let (b, wb) = ingress("b", "192.0.2.2");
        f.made(a.clone(), wa.clone(), rv("1"));
        f.made(b.clone(), wb.clone(), rv("1"));
        f.failed(&a);
        assert!(!f.already_made(&a, &wa, &rv("1")));
        assert_eq!(f.targets().collect::<Vec<_>>(), [&b]);
        f.forget_shown(|_| None);
        assert_eq!(f.len(), 0, "the object is gone");
    }

    #[test]
    fn the_table_gives_its_room_back_after_a_burst() {
        let mut f = InFlight::default();
        for i in 0..20_000 {
            let (t, w) = ingress(&format!("s{i}"), "2001:db8::1");
            f.made(t, w, rv("1"));
        }
        assert!(f.capacity() >= 20_000);
        // The watch shows all but three.
        f.forget_shown(|t| match t {
            WriteTarget::Ingress(k) if ["s1", "s2", "s3"].contains(&k.name.as_str()) => Some(rv("1")),
            _ => Some(rv("2")),
        });
        assert_eq!(f.len(), 3);
        assert!(f.capacity() <= SHRINK_ABOVE, "{} slots kept for 3 writes", f.capacity());
    }
}
