//! Kubernetes-style conditions (`type`/`status`/`reason`/`message`/`observedGeneration`/`lastTransitionTime`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{Schema, SchemaGenerator};

/// Condition type: the object is usable.
pub const READY: &str = "Ready";
/// Condition type (Eip): some addresses also belong to another pool.
pub const OVERLAPPING: &str = "Overlapping";
/// Condition type (Eip): no free address left (in some family).
pub const EXHAUSTED: &str = "Exhausted";
/// Condition type (Eip): an address is answered for by a host that is not Herald.
pub const CONFLICT: &str = "AddressConflict";
/// Condition type (BgpPeer, passive): every node with a session accepts the router's connections.
pub const LISTENING: &str = "Listening";

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime` when the status does not change.
/// Returns `true` when anything changed, so callers write status only on change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> bool {
    let status = if status { "True" } else { "False" };
    let message = message.into();
    let message = match crate::text::truncate_bytes(&message, crate::text::CONDITION_MESSAGE_BYTES) {
        std::borrow::Cow::Borrowed(_) => message,
        std::borrow::Cow::Owned(cut) => cut,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let changed_status = c.status != status;
            let changed = changed_status
                || c.reason != reason
                || c.message != message
                || c.observed_generation != observed_generation;
            if changed_status {
                c.last_transition_time = now;
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message,
                observed_generation,
                last_transition_time: now,
            });
            true
        }
    }
}

/// Is condition `type_` present with status `True`?
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// Schema for a `conditions` list: a list-map keyed by `type`, as Kubernetes conventions require.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    let obj = schema.ensure_object();
    obj.insert("x-kubernetes-list-type".into(), "map".into());
    obj.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut conds = Vec::new();
        assert!(set_condition(&mut conds, READY, true, "Valid", "ok", Some(1), at(10)));
        assert!(!set_condition(&mut conds, READY, true, "Valid", "ok", Some(1), at(20)));
        assert_eq!(conds[0].last_transition_time, at(10));
        assert!(set_condition(
            &mut conds,
            READY,
            true,
            "Valid",
            "still ok",
            Some(2),
            at(30)
        ));
        assert_eq!(
            conds[0].last_transition_time,
            at(10),
            "message change is not a transition"
        );
        assert!(set_condition(
            &mut conds,
            READY,
            false,
            "Invalid",
            "bad",
            Some(2),
            at(40)
        ));
        assert_eq!(conds[0].last_transition_time, at(40));
        assert!(!is_true(&conds, READY));
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn long_messages_are_cut_and_a_repeat_is_no_change() {
        let mut conds = Vec::new();
        let long = "x".repeat(100_000);
        assert!(set_condition(
            &mut conds,
            READY,
            false,
            "Invalid",
            long.clone(),
            None,
            at(1)
        ));
        assert!(conds[0].message.len() <= crate::text::CONDITION_MESSAGE_BYTES);
        assert!(!set_condition(&mut conds, READY, false, "Invalid", long, None, at(2)));
    }
}
