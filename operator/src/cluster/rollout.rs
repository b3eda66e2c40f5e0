//! The decisions of a StrataCluster reconcile over what is live, all pure: how many
//! replicas to ask for, which template changes may go ahead, what Kubernetes will not
//! change, the status conditions, and the broker autoscaler.
//!
//! Order of changes: the metadata store, then the bookies, then the brokers. A tier takes a
//! new pod template only once the tier before it is rolled out (every pod updated and
//! ready); until then it keeps its live template, while replica changes still go through.
//! The StatefulSet controller rolls bookies one at a time, each ready before the next; the
//! broker Deployment surges one new broker before stopping an old one.

use super::render::{CONFIG_HASH, hash};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use std::collections::VecDeque;
use std::time::Duration;

/// The annotation on a workload (not its pods) holding the hash of the template the
/// operator rendered for it, to tell "not yet updated" from "updated, with defaults".
pub const TEMPLATE_HASH: &str = "strata.io/template-hash";

/// The hash of a rendered pod template.
pub fn template_digest(t: &k8s_openapi::api::core::v1::PodTemplateSpec) -> String {
    hash(&serde_json::to_string(t).expect("a template serialises"))
}

fn annotation(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

/// Marks a rendered StatefulSet with its template's digest.
pub fn stamp_sts(sts: &mut StatefulSet) {
    let digest = template_digest(&sts.spec.as_ref().expect("spec").template);
    sts.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH.into(), digest);
}

/// Marks a rendered Deployment with its template's digest.
pub fn stamp_deployment(d: &mut Deployment) {
    let digest = template_digest(&d.spec.as_ref().expect("spec").template);
    d.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH.into(), digest);
}

/// Replica figures of a live workload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub desired: i32,
    pub replicas: i32,
    pub ready: i32,
    pub updated: i32,
    /// The controller has seen the latest spec.
    pub observed: bool,
    /// For StatefulSets: the current and update revisions agree.
    pub revisions_agree: bool,
}

impl Counts {
    pub fn of_sts(s: &StatefulSet) -> Self {
        let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = s.status.clone().unwrap_or_default();
        Counts {
            desired,
            replicas: st.replicas,
            ready: st.ready_replicas.unwrap_or(0),
            updated: st.updated_replicas.unwrap_or(0),
            observed: st.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0),
            revisions_agree: match (&st.current_revision, &st.update_revision) {
                (Some(a), Some(b)) => a == b,
                _ => st.updated_replicas.unwrap_or(0) == desired,
            },
        }
    }

    pub fn of_deployment(d: &Deployment) -> Self {
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        Counts {
            desired,
            replicas: st.replicas.unwrap_or(0),
            ready: st.available_replicas.unwrap_or(0).min(st.ready_replicas.unwrap_or(0)),
            updated: st.updated_replicas.unwrap_or(0),
            observed: st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0),
            revisions_agree: true,
        }
    }

    /// Every pod runs the latest template, is ready, and no other pod is left.
    pub fn rolled_out(&self) -> bool {
        self.observed
            && self.revisions_agree
            && self.updated == self.desired
            && self.ready == self.desired
            && self.replicas == self.desired
    }

    pub fn status(&self, selector: Option<String>) -> super::ComponentStatus {
        super::ComponentStatus {
            desired_replicas: self.desired,
            replicas: self.replicas,
            ready_replicas: self.ready,
            updated_replicas: self.updated,
            selector,
        }
    }
}

/// Whether a live workload runs the template last rendered (`want`) completely.
pub fn at_template(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, want: &str) -> bool {
    annotation(meta, TEMPLATE_HASH).as_deref() == Some(want)
}

/// Keeps a live StatefulSet's template (and its digest) in the rendered one: a tier whose
/// turn has not come. Returns whether that held anything back.
pub fn hold_sts(rendered: &mut StatefulSet, live: &StatefulSet) -> bool {
    let want = annotation(&rendered.metadata, TEMPLATE_HASH);
    let have = annotation(&live.metadata, TEMPLATE_HASH);
    if want == have {
        return false;
    }
    if let (Some(r), Some(l)) = (rendered.spec.as_mut(), live.spec.as_ref()) {
        r.template = l.template.clone();
    }
    let a = rendered.metadata.annotations.get_or_insert_with(Default::default);
    match have {
        Some(h) => a.insert(TEMPLATE_HASH.into(), h),
        None => a.remove(TEMPLATE_HASH),
    };
    true
}

/// [`hold_sts`] for the broker Deployment.
pub fn hold_deployment(rendered: &mut Deployment, live: &Deployment) -> bool {
    let want = annotation(&rendered.metadata, TEMPLATE_HASH);
    let have = annotation(&live.metadata, TEMPLATE_HASH);
    if want == have {
        return false;
    }
    if let (Some(r), Some(l)) = (rendered.spec.as_mut(), live.spec.as_ref()) {
        r.template = l.template.clone();
    }
    let a = rendered.metadata.annotations.get_or_insert_with(Default::default);
    match have {
        Some(h) => a.insert(TEMPLATE_HASH.into(), h),
        None => a.remove(TEMPLATE_HASH),
    };
    true
}

/// What Kubernetes will not change on a live StatefulSet (volume claim templates): the
/// live ones are kept in `rendered`, and the message says what was not applied and how to
/// get there.
pub fn keep_immutable(rendered: &mut StatefulSet, live: &StatefulSet, field: &str) -> Option<String> {
    let (Some(r), Some(l)) = (rendered.spec.as_mut(), live.spec.as_ref()) else {
        return None;
    };
    let storage = |s: &k8s_openapi::api::apps::v1::StatefulSetSpec| {
        s.volume_claim_templates
            .as_ref()
            .and_then(|v| v.first())
            .and_then(|c| c.spec.clone())
            .map(|c| {
                (
                    c.resources
                        .and_then(|r| r.requests)
                        .and_then(|r| r.get("storage").map(|q| q.0.clone())),
                    c.storage_class_name,
                )
            })
    };
    let (want, have) = (storage(r), storage(l));
    r.volume_claim_templates = l.volume_claim_templates.clone();
    if want == have {
        return None;
    }
    let show = |s: &Option<(Option<String>, Option<String>)>| match s {
        Some((size, class)) => format!(
            "size {}, storage class {}",
            size.as_deref().unwrap_or("?"),
            class.as_deref().unwrap_or("(default)")
        ),
        None => "none".into(),
    };
    Some(format!(
        "{field}: the StatefulSet {} has {} and Kubernetes cannot change a StatefulSet's volumes (asked: {}); existing volumes are kept. To grow them, expand each PVC (if the storage class allows), then `kubectl delete statefulset {} --cascade=orphan`: the operator recreates it with the new size for new pods",
        live.metadata.name.as_deref().unwrap_or("?"),
        show(&have),
        show(&want),
        live.metadata.name.as_deref().unwrap_or("?"),
    ))
}

/// Members of a managed etcd cannot be added or removed by changing the StatefulSet (each
/// member is listed in the others' initial cluster): the live count is kept.
pub fn metadata_replicas(spec: i32, live: Option<i32>) -> (i32, Option<String>) {
    match live {
        Some(current) if current != spec => (
            current,
            Some(format!(
                "spec.metadataStore.managed.replicas is {spec} but the etcd cluster has {current} members, and members are not added or removed by the operator; it stays {current}. Set it back to {current}, or move to an external etcd (see docs/kubernetes.md)"
            )),
        ),
        _ => (spec, None),
    }
}

/// The broker autoscaler's pure part.
pub mod autoscale {
    use super::*;

    /// Brokers for `load` messages/s at `target` each, within `[min, max]`; within 10 % of
    /// the current count's capacity the count stays (no flapping on noise).
    pub fn recommend(load: f64, target: u64, current: i32, min: i32, max: i32) -> i32 {
        let target = target.max(1) as f64;
        let load = if load.is_finite() { load.max(0.0) } else { 0.0 };
        if current >= 1 {
            let ratio = load / (target * f64::from(current));
            if (ratio - 1.0).abs() <= 0.1 {
                return current.clamp(min, max);
            }
        }
        let raw = (load / target).ceil();
        let raw = if raw > f64::from(max) { max } else { raw as i32 };
        raw.clamp(min, max)
    }

    /// The recommendations of one cluster over time.
    #[derive(Debug, Clone, Default)]
    pub struct History {
        /// (time since an arbitrary start, recommendation).
        samples: VecDeque<(Duration, i32)>,
        /// When the first sample was taken.
        since: Option<Duration>,
    }

    impl History {
        /// Adds `recommendation` at `now` and returns the replicas to run: up at once,
        /// down only to the highest recommendation of the last `window`, and only once a
        /// whole window has been watched (after an operator restart, too).
        pub fn decide(&mut self, now: Duration, window: Duration, recommendation: i32, current: i32) -> i32 {
            let since = *self.since.get_or_insert(now);
            self.samples.push_back((now, recommendation));
            while let Some(&(t, _)) = self.samples.front() {
                if now.saturating_sub(t) > window {
                    self.samples.pop_front();
                } else {
                    break;
                }
            }
            if recommendation >= current {
                return recommendation;
            }
            if now.saturating_sub(since) < window {
                return current;
            }
            let highest = self.samples.iter().map(|&(_, r)| r).max().unwrap_or(recommendation);
            highest.min(current)
        }
    }
}

/// Whether a live pod template carries `hash` as its config hash.
pub fn runs_config(template: &k8s_openapi::api::core::v1::PodTemplateSpec, hash: &str) -> bool {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_HASH))
        .is_some_and(|h| h == hash)
}

#[cfg(test)]
mod tests {
    use super::autoscale::{History, recommend};
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};

    fn sts(replicas: i32, generation: i64, status: StatefulSetStatus) -> StatefulSet {
        StatefulSet {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(status),
        }
    }

    #[test]
    fn rolled_out_needs_every_pod_updated_ready_and_the_spec_observed() {
        let done = StatefulSetStatus {
            replicas: 3,
            ready_replicas: Some(3),
            updated_replicas: Some(3),
            observed_generation: Some(2),
            current_revision: Some("r2".into()),
            update_revision: Some("r2".into()),
            ..Default::default()
        };
        assert!(Counts::of_sts(&sts(3, 2, done.clone())).rolled_out());
        // The controller has not seen generation 3 yet.
        assert!(!Counts::of_sts(&sts(3, 3, done.clone())).rolled_out());
        // One pod still on the old revision.
        let rolling = StatefulSetStatus {
            updated_replicas: Some(2),
            update_revision: Some("r3".into()),
            ..done.clone()
        };
        assert!(!Counts::of_sts(&sts(3, 2, rolling)).rolled_out());
        let unready = StatefulSetStatus {
            ready_replicas: Some(2),
            ..done
        };
        assert!(!Counts::of_sts(&sts(3, 2, unready)).rolled_out());
    }

    #[test]
    fn etcd_members_stay() {
        assert_eq!(metadata_replicas(3, Some(3)), (3, None));
        let (n, why) = metadata_replicas(5, Some(3));
        assert_eq!(n, 3);
        assert!(why.is_some());
    }

    #[test]
    fn a_tier_whose_turn_has_not_come_keeps_its_template() {
        let mut live = sts(3, 1, StatefulSetStatus::default());
        live.spec.as_mut().unwrap().template.metadata = Some(Default::default());
        live.spec
            .as_mut()
            .unwrap()
            .template
            .metadata
            .as_mut()
            .unwrap()
            .annotations = Some([(CONFIG_HASH.to_string(), "old".to_string())].into());
        stamp_sts(&mut live);
        let mut rendered = sts(4, 1, StatefulSetStatus::default());
        rendered.spec.as_mut().unwrap().template.metadata = Some(Default::default());
        rendered
            .spec
            .as_mut()
            .unwrap()
            .template
            .metadata
            .as_mut()
            .unwrap()
            .annotations = Some([(CONFIG_HASH.to_string(), "new".to_string())].into());
        stamp_sts(&mut rendered);
        assert!(hold_sts(&mut rendered, &live));
        let s = rendered.spec.as_ref().unwrap();
        assert!(runs_config(&s.template, "old"));
        assert_eq!(s.replicas, Some(4), "replica changes still go through");
        assert!(at_template(
            &rendered.metadata,
            &template_digest(&live.spec.as_ref().unwrap().template)
        ));
        // Nothing to hold when the templates agree.
        let mut same = live.clone();
        assert!(!hold_sts(&mut same, &live));
    }

    #[test]
    fn volume_templates_are_kept_and_a_change_is_explained() {
        let claim = |size: &str| {
            serde_json::from_value::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(serde_json::json!({
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
            }))
            .unwrap()
        };
        let mut live = sts(3, 1, StatefulSetStatus::default());
        live.metadata.name = Some("demo-bookie".into());
        live.spec.as_mut().unwrap().volume_claim_templates = Some(vec![claim("10Gi")]);
        let mut rendered = live.clone();
        assert_eq!(keep_immutable(&mut rendered, &live, "spec.bookies.storage"), None);
        rendered.spec.as_mut().unwrap().volume_claim_templates = Some(vec![claim("20Gi")]);
        let why = keep_immutable(&mut rendered, &live, "spec.bookies.storage").unwrap();
        assert!(
            why.contains("size 10Gi") && why.contains("size 20Gi") && why.contains("--cascade=orphan"),
            "{why}"
        );
        assert_eq!(
            rendered.spec.unwrap().volume_claim_templates,
            live.spec.unwrap().volume_claim_templates
        );
    }

    #[test]
    fn the_autoscaler_recommends_within_bounds_and_ignores_noise() {
        assert_eq!(recommend(1000.0, 100, 2, 1, 5), 5);
        assert_eq!(recommend(350.0, 100, 2, 1, 5), 4);
        assert_eq!(recommend(0.0, 100, 3, 1, 5), 1);
        assert_eq!(recommend(0.0, 100, 3, 2, 5), 2);
        // Within 10 % of what 2 brokers carry: stay.
        assert_eq!(recommend(205.0, 100, 2, 1, 5), 2);
        assert_eq!(recommend(f64::NAN, 100, 3, 1, 5), 1);
        assert_eq!(recommend(1e300, 1, 3, 1, 5), 5);
    }

    #[test]
    fn scale_down_waits_for_a_whole_window_of_low_load() {
        let w = Duration::from_secs(60);
        let s = Duration::from_secs;
        let mut h = History::default();
        // Up at once.
        assert_eq!(h.decide(s(0), w, 4, 2), 4);
        // Down is held while any recommendation in the window was higher.
        assert_eq!(h.decide(s(30), w, 1, 4), 4);
        assert_eq!(h.decide(s(59), w, 1, 4), 4);
        assert_eq!(h.decide(s(70), w, 1, 4), 1);
        // After a restart (fresh history) nothing goes down before a full window.
        let mut fresh = History::default();
        assert_eq!(fresh.decide(s(100), w, 1, 3), 3);
        assert_eq!(fresh.decide(s(161), w, 1, 3), 1);
        // A window of 0 follows the load.
        let mut now = History::default();
        assert_eq!(now.decide(s(0), Duration::ZERO, 1, 3), 1);
    }
}
