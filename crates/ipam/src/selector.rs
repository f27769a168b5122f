//! A label selector with Kubernetes semantics, independent of the Kubernetes crates; the controller converts
//! `metav1.LabelSelector` into it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Labels of a namespace or a Service.
pub type Labels = BTreeMap<String, String>;

/// `matchLabels` and `matchExpressions`; every entry must hold (logical AND). The empty selector matches
/// every label set, as in Kubernetes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// `key: value` pairs that must be present.
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements.
    pub match_expressions: Vec<LabelRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// What the key's value must satisfy.
    pub operator: LabelOperator,
}

/// The operators of `matchExpressions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOperator {
    /// The key is present and its value is one of these. An empty set matches nothing.
    In(BTreeSet<String>),
    /// The key is absent, or its value is none of these.
    NotIn(BTreeSet<String>),
    /// The key is present (any value).
    Exists,
    /// The key is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.mismatch(labels).is_none()
    }

    /// The first requirement `labels` fail, described for a user (`label 'team' is 'b', not one of [a]`),
    /// or `None` when the selector matches.
    pub fn mismatch(&self, labels: &Labels) -> Option<String> {
        for (key, want) in &self.match_labels {
            match labels.get(key) {
                Some(have) if have == want => {}
                Some(have) => return Some(format!("label '{key}' is '{have}', not '{want}'")),
                None => return Some(format!("label '{key}' is missing (want '{want}')")),
            }
        }
        for req in &self.match_expressions {
            let have = labels.get(&req.key);
            let key = &req.key;
            let failed = match (&req.operator, have) {
                (LabelOperator::In(values), Some(v)) if values.contains(v) => None,
                (LabelOperator::In(values), Some(v)) => {
                    Some(format!("label '{key}' is '{v}', not one of [{}]", join(values)))
                }
                (LabelOperator::In(values), None) => {
                    Some(format!("label '{key}' is missing (want one of [{}])", join(values)))
                }
                (LabelOperator::NotIn(values), Some(v)) if values.contains(v) => Some(format!(
                    "label '{key}' is '{v}', which is excluded by [{}]",
                    join(values)
                )),
                (LabelOperator::NotIn(_), _) => None,
                (LabelOperator::Exists, Some(_)) => None,
                (LabelOperator::Exists, None) => Some(format!("label '{key}' is missing")),
                (LabelOperator::DoesNotExist, None) => None,
                (LabelOperator::DoesNotExist, Some(v)) => {
                    Some(format!("label '{key}' is set ('{v}') but must be absent"))
                }
            };
            if failed.is_some() {
                return failed;
            }
        }
        None
    }
}

fn join(values: &BTreeSet<String>) -> String {
    values.iter().map(String::as_str).collect::<Vec<_>>().join(",")
}

/// kubectl's selector syntax: `team=a,env in (x,y),env notin (z),zone,!legacy`.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.extend(self.match_expressions.iter().map(|r| match &r.operator {
            LabelOperator::In(v) => format!("{} in ({})", r.key, join(v)),
            LabelOperator::NotIn(v) => format!("{} notin ({})", r.key, join(v)),
            LabelOperator::Exists => r.key.clone(),
            LabelOperator::DoesNotExist => format!("!{}", r.key),
        }));
        if parts.is_empty() {
            f.write_str("<everything>")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn set(values: &[&str]) -> BTreeSet<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    fn expr(key: &str, operator: LabelOperator) -> LabelSelector {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![LabelRequirement {
                key: key.into(),
                operator,
            }],
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::default().matches(&Labels::new()));
        assert!(LabelSelector::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_reports_wrong_and_missing_values() {
        let sel = LabelSelector {
            match_labels: labels(&[("team", "a")]),
            match_expressions: vec![],
        };
        assert!(sel.matches(&labels(&[("team", "a"), ("x", "y")])));
        assert_eq!(
            sel.mismatch(&labels(&[("team", "b")])).unwrap(),
            "label 'team' is 'b', not 'a'"
        );
        assert_eq!(
            sel.mismatch(&Labels::new()).unwrap(),
            "label 'team' is missing (want 'a')"
        );
    }

    #[test]
    fn operators_follow_kubernetes_semantics() {
        let in_ = expr("env", LabelOperator::In(set(&["prod", "stage"])));
        assert!(in_.matches(&labels(&[("env", "prod")])));
        assert_eq!(
            in_.mismatch(&labels(&[("env", "dev")])).unwrap(),
            "label 'env' is 'dev', not one of [prod,stage]"
        );
        assert!(!in_.matches(&Labels::new()));
        assert!(!expr("env", LabelOperator::In(BTreeSet::new())).matches(&labels(&[("env", "x")])));

        let not_in = expr("env", LabelOperator::NotIn(set(&["dev"])));
        assert!(not_in.matches(&Labels::new()), "NotIn matches an absent key");
        assert!(not_in.matches(&labels(&[("env", "prod")])));
        assert_eq!(
            not_in.mismatch(&labels(&[("env", "dev")])).unwrap(),
            "label 'env' is 'dev', which is excluded by [dev]"
        );

        let exists = expr("zone", LabelOperator::Exists);
        assert!(exists.matches(&labels(&[("zone", "")])));
        assert_eq!(exists.mismatch(&Labels::new()).unwrap(), "label 'zone' is missing");

        let absent = expr("legacy", LabelOperator::DoesNotExist);
        assert!(absent.matches(&Labels::new()));
        assert_eq!(
            absent.mismatch(&labels(&[("legacy", "1")])).unwrap(),
            "label 'legacy' is set ('1') but must be absent"
        );
    }

    #[test]
    fn displays_like_kubectl() {
        let sel = LabelSelector {
            match_labels: labels(&[("team", "a")]),
            match_expressions: vec![
                LabelRequirement {
                    key: "env".into(),
                    operator: LabelOperator::In(set(&["x", "y"])),
                },
                LabelRequirement {
                    key: "legacy".into(),
                    operator: LabelOperator::DoesNotExist,
                },
            ],
        };
        assert_eq!(sel.to_string(), "team=a,env in (x,y),!legacy");
    }
}
