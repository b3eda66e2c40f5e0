//! The `Topic` custom resource: a topic that should exist in a Strata cluster, with its
//! partitions and policies, kept that way.
//!
//! [`sync`] is the whole decision — what to create, grow, correct, report or refuse —
//! against any [`StrataAdmin`], so it is unit-tested against an in-memory cluster; the
//! reconciler around it ([`reconcile`]) only reads the object, writes its status and
//! publishes the Events [`sync`] asks for.
//!
//! Invariants:
//! - The Strata topic a Topic manages never changes: once created or adopted, its name is
//!   recorded in `status.topicName` and a different `spec.name` is refused.
//! - Partitions only grow. Policies are the spec's, whole: a policy the spec leaves out is
//!   the broker's default, and a manual change is drift.
//! - Deleting the resource deletes the topic only with `deletionPolicy: Delete`, and then
//!   only when no subscription has a backlog and no client is connected — unless the
//!   `strata.io/force-delete: "true"` annotation says otherwise.

use crate::common::{self, ClusterRef, DeletionPolicy, DriftPolicy, Note, SpecError, SubscriptionSummary};
use crate::conditions::{self, DELETION_BLOCKED, DRIFTED, READY, SYNCED};
use crate::strata::{AdminError, LiveTopic, StrataAdmin};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use strata_client::{ErrorCode, TopicPolicies};

/// Finalizer guarding the Strata topic when the resource is deleted.
pub const FINALIZER: &str = "strata.io/topic-protection";

/// A topic in a Strata cluster, kept as declared.
// clippy reads the repeated `type_` of separate printcolumn(...) entries as one
// attribute given twice.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "strata.io",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    shortname = "stopic",
    category = "strata",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Topic", type_ = "string", json_path = ".status.topicName"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".status.partitions"),
    printcolumn(name = "Backlog", type_ = "integer", json_path = ".status.backlog"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "A topic of a Strata cluster: its partitions and policies, kept as declared."
)]
#[serde(rename_all = "camelCase")]
pub struct TopicSpec {
    /// The Strata cluster's service URL, like `http://strata-broker.strata:6650`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub service_url: Option<String>,
    /// A StrataCluster in this namespace, instead of `serviceUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<ClusterRef>,
    /// The token the operator sends to the `serviceUrl` cluster when it has authentication
    /// on (its role needs `admin` on the topic). A StrataCluster's own operator token is
    /// used without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<crate::common::TokenSecretRef>,
    /// The topic, `tenant/namespace/topic` or `persistent://tenant/namespace/topic`;
    /// default `public/default/<metadata.name>`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(persistent://)?[A-Za-z0-9_.=:-]+/[A-Za-z0-9_.=:-]+/[A-Za-z0-9_.=:-]+$"))]
    pub name: Option<String>,
    /// Partitions; 0 (the default) is a non-partitioned topic. Can only grow.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub partitions: u32,
    /// How long and how much acknowledged data is kept; unset: the broker's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// What deleting this resource does to the topic: `Retain` (the default) keeps it,
    /// `Delete` deletes it once nothing is left unacknowledged and no client is connected.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// What a manual change of the topic leads to at the next resync: `Correct` (the
    /// default) sets it back, `Report` only reports it. Both emit an Event and set the
    /// `Drifted` condition.
    #[serde(default)]
    pub drift_policy: DriftPolicy,
}

/// Retention of acknowledged messages.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// How long: a number with a unit `s`, `m`, `h`, `d` or `w` (`90m`, `7d`); `-1` keeps
    /// them forever, `0` not at all. Unset: the broker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(-1|[0-9]+[smhdw]?)$"))]
    pub time: Option<String>,
    /// How much: bytes, or a quantity like `512Mi`, `10Gi`, `1T`; `-1` no limit, `0` none.
    /// Unset: the broker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(-1|[0-9]+([KMGTP]i?)?)$"))]
    pub size: Option<String>,
}

/// What the operator last saw of the topic.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// The generation of the spec last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Synced`, `Drifted`, `DeletionBlocked`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The Strata topic this resource manages (fixed once created or adopted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// Partitions as they are (0: not partitioned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// Unacknowledged entries summed over the subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Each subscription's backlog and connected consumers (the first 100 by name).
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionSummary>,
    /// Producers connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producers: Option<u32>,
    /// Consumers connected, over all subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<u32>,
    /// When the topic was last compared with the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

/// What the spec asks for, checked and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// `persistent://tenant/namespace/topic`.
    pub name: String,
    pub partitions: u32,
    pub policies: TopicPolicies,
}

/// The topic name a spec resolves to (default `public/default/<metadata.name>`),
/// normalized to `persistent://tenant/namespace/topic`.
pub fn topic_name(spec_name: Option<&str>, metadata_name: &str) -> Result<String, SpecError> {
    let raw = match spec_name {
        Some(n) => n.to_string(),
        None => format!("public/default/{metadata_name}"),
    };
    strata_common::TopicName::parse(&raw)
        .map(|t| t.to_string())
        .map_err(|e| SpecError::new("spec.name", e.to_string()))
}

/// `90m`, `7d`, `-1` → seconds (`-1` stays -1).
pub fn parse_duration(field: &str, s: &str) -> Result<i64, SpecError> {
    if s == "-1" {
        return Ok(-1);
    }
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let scale: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(SpecError::new(
                field,
                format!("{s:?}: use a number with s, m, h, d or w, or -1"),
            ));
        }
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| SpecError::new(field, format!("{s:?} is not a duration this operator can hold")))
}

/// `512Mi`, `10G`, `1024`, `-1` → bytes (`-1` stays -1).
pub fn parse_size(field: &str, s: &str) -> Result<i64, SpecError> {
    if s == "-1" {
        return Ok(-1);
    }
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let scale: i64 = match unit {
        "" => 1,
        "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => {
            return Err(SpecError::new(
                field,
                format!("{s:?}: use bytes with K, M, G, T, Ki, Mi, Gi or Ti, or -1"),
            ));
        }
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| SpecError::new(field, format!("{s:?} is not a size this operator can hold")))
}

/// Checks the spec and resolves what it asks for.
pub fn desired(spec: &TopicSpec, metadata_name: &str) -> Result<Desired, SpecError> {
    let r = spec.retention.clone().unwrap_or_default();
    Ok(Desired {
        name: topic_name(spec.name.as_deref(), metadata_name)?,
        partitions: spec.partitions,
        policies: TopicPolicies {
            retention_time_secs: r
                .time
                .as_deref()
                .map(|s| parse_duration("spec.retention.time", s))
                .transpose()?,
            retention_bytes: r
                .size
                .as_deref()
                .map(|s| parse_size("spec.retention.size", s))
                .transpose()?,
            ..Default::default()
        },
    })
}

fn show(v: Option<i64>) -> String {
    match v {
        None => "unset (broker default)".into(),
        Some(-1) => "-1 (unlimited)".into(),
        Some(v) => v.to_string(),
    }
}

/// What differs between the live policies and the wanted ones, for people.
pub fn policy_differences(live: &TopicPolicies, want: &TopicPolicies) -> Vec<String> {
    let mut d = Vec::new();
    if live.retention_time_secs != want.retention_time_secs {
        d.push(format!(
            "retention time (seconds) is {}, spec says {}",
            show(live.retention_time_secs),
            show(want.retention_time_secs)
        ));
    }
    if live.retention_bytes != want.retention_bytes {
        d.push(format!(
            "retention size (bytes) is {}, spec says {}",
            show(live.retention_bytes),
            show(want.retention_bytes)
        ));
    }
    d
}

/// The result of one sync: the new status, the Events to publish, and whether it failed
/// (for backoff).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: TopicStatus,
    pub notes: Vec<Note>,
    pub failed: Option<String>,
}

/// Most subscriptions listed in a Topic's status (the totals count them all), so a topic
/// with very many subscriptions cannot push its resource past the API server's size limit.
pub const MAX_STATUS_SUBSCRIPTIONS: usize = 100;

fn fill_live(status: &mut TopicStatus, live: &LiveTopic) {
    status.partitions = Some(live.partitions);
    let mut subs = common::summarize(&live.stats.subscriptions);
    status.backlog = Some(subs.iter().map(|s| s.backlog).sum());
    status.consumers = Some(subs.iter().map(|s| s.consumers).sum());
    subs.truncate(MAX_STATUS_SUBSCRIPTIONS);
    status.subscriptions = subs;
    status.producers = Some(live.stats.producers);
}

fn unreachable_or_refused(
    status: &mut TopicStatus,
    e: &AdminError,
    generation: Option<i64>,
    doing: &str,
) -> Option<String> {
    let (reason, msg) = match e {
        AdminError::Unreachable(m) => ("ClusterUnreachable", format!("{doing}: {m}")),
        AdminError::Refused { .. } => ("AdminError", format!("{doing}: {e}")),
    };
    conditions::set_ready_and_synced(&mut status.conditions, Some(false), reason, &msg, generation);
    Some(msg)
}

/// One reconcile of a Topic that is not being deleted.
pub async fn sync(topic: &Topic, admin: &dyn StrataAdmin) -> Outcome {
    let generation = topic.metadata.generation;
    let mut status = topic.status.clone().unwrap_or_default();
    let mut notes = Vec::new();
    let name = topic.metadata.name.clone().unwrap_or_default();
    conditions::remove(&mut status.conditions, DELETION_BLOCKED);

    let want = match desired(&topic.spec, &name) {
        Ok(d) => d,
        Err(e) => return invalid(status, generation, e, notes),
    };
    if let Some(managed) = &status.topic_name
        && *managed != want.name
    {
        let e = SpecError::new(
            "spec.name",
            format!(
                "is immutable: this resource manages {managed}, not {}; create another Topic for {}",
                want.name, want.name
            ),
        );
        return invalid(status, generation, e, notes);
    }
    let spec_changed = status.observed_generation != generation || status.topic_name.is_none();

    let mut live = match admin.topic(&want.name).await {
        Ok(l) => l,
        Err(e) => {
            let failed = unreachable_or_refused(&mut status, &e, generation, "reading the topic");
            return Outcome { status, notes, failed };
        }
    };
    if live.is_none() {
        match admin.create_topic(&want.name, want.partitions).await {
            Ok(()) => notes.push(Note::normal(
                "Created",
                format!("created topic {} with {} partitions", want.name, want.partitions),
            )),
            // Created meanwhile (a producer auto-created it): adopt it below.
            Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {}
            Err(e) => {
                let failed = unreachable_or_refused(&mut status, &e, generation, "creating the topic");
                return Outcome { status, notes, failed };
            }
        }
        live = match admin.topic(&want.name).await {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                let e = AdminError::Unreachable(format!("topic {} not found right after creating it", want.name));
                let failed = unreachable_or_refused(&mut status, &e, generation, "reading the topic");
                return Outcome { status, notes, failed };
            }
            Err(e) => {
                let failed = unreachable_or_refused(&mut status, &e, generation, "reading the topic");
                return Outcome { status, notes, failed };
            }
        };
    } else if status.topic_name.is_none() {
        notes.push(Note::normal(
            "Adopted",
            format!(
                "topic {} already existed; it is managed by this resource from now on",
                want.name
            ),
        ));
    }
    let mut live = live.expect("read or created above");
    status.topic_name = Some(want.name.clone());

    // Partitions: grow to the spec; never shrink.
    if want.partitions != live.partitions {
        let refusal = if live.partitions == 0 {
            Some(format!(
                "topic {} exists without partitions and cannot become partitioned; set spec.partitions to 0 or use another topic name",
                want.name
            ))
        } else if want.partitions < live.partitions {
            Some(format!(
                "topic {} has {} partitions and partitions cannot shrink; set spec.partitions to {} or more",
                want.name, live.partitions, live.partitions
            ))
        } else {
            None
        };
        if let Some(msg) = refusal {
            fill_live(&mut status, &live);
            let e = SpecError::new("spec.partitions", msg);
            return invalid(status, generation, e, notes);
        }
        match admin.update_partitions(&want.name, want.partitions).await {
            Ok(()) => {
                notes.push(Note::normal(
                    "PartitionsIncreased",
                    format!("{}: partitions {} → {}", want.name, live.partitions, want.partitions),
                ));
                live.partitions = want.partitions;
            }
            Err(e) => {
                let failed = unreachable_or_refused(&mut status, &e, generation, "growing the partitions");
                return Outcome { status, notes, failed };
            }
        }
    }

    // Policies: the spec's on a spec change; otherwise a difference is drift.
    let differences = policy_differences(&live.policies, &want.policies);
    let drift = !spec_changed && !differences.is_empty();
    let correct = !differences.is_empty() && (spec_changed || topic.spec.drift_policy == DriftPolicy::Correct);
    if correct {
        if let Err(e) = admin.set_policies(&want.name, want.policies).await {
            let failed = unreachable_or_refused(&mut status, &e, generation, "setting the policies");
            return Outcome { status, notes, failed };
        }
        live.policies = want.policies;
    }
    let what = differences.join("; ");
    match (drift, topic.spec.drift_policy) {
        (true, DriftPolicy::Correct) => {
            // True until a resync finds the topic in sync, then False with the same reason
            // and message: the last correction stays on record.
            let msg = format!("changed outside this resource and set back: {what}");
            notes.push(Note::warning("DriftCorrected", format!("{}: {msg}", want.name)));
            conditions::set(
                &mut status.conditions,
                DRIFTED,
                Some(true),
                "DriftCorrected",
                msg,
                generation,
            );
        }
        (true, DriftPolicy::Report) => {
            let msg = format!("differs from the spec (driftPolicy Report, left as is): {what}");
            notes.push(Note::warning("DriftDetected", format!("{}: {msg}", want.name)));
            conditions::set(
                &mut status.conditions,
                DRIFTED,
                Some(true),
                "DriftDetected",
                msg,
                generation,
            );
        }
        (false, _) => {
            if spec_changed && !differences.is_empty() {
                notes.push(Note::normal("PoliciesUpdated", format!("{}: {what}", want.name)));
            }
            match conditions::get(&status.conditions, DRIFTED).cloned() {
                Some(c) if c.status == "True" && c.reason == "DriftCorrected" => {
                    let msg = format!("in sync; the last drift was {}", c.message);
                    conditions::set(
                        &mut status.conditions,
                        DRIFTED,
                        Some(false),
                        "DriftCorrected",
                        msg,
                        generation,
                    );
                }
                Some(c) if c.status == "False" => {}
                _ => conditions::set(
                    &mut status.conditions,
                    DRIFTED,
                    Some(false),
                    "InSync",
                    "the topic matches the spec",
                    generation,
                ),
            }
        }
    }

    fill_live(&mut status, &live);
    status.observed_generation = generation;
    status.last_sync_time = Some(Time(Timestamp::now()));
    let msg = format!("topic {} matches the spec", want.name);
    conditions::set(&mut status.conditions, SYNCED, Some(true), "Synced", &msg, generation);
    if drift && topic.spec.drift_policy == DriftPolicy::Report {
        conditions::set(
            &mut status.conditions,
            READY,
            Some(true),
            "DriftReported",
            format!("topic {} exists; see Drifted", want.name),
            generation,
        );
    } else {
        conditions::set(&mut status.conditions, READY, Some(true), "Synced", msg, generation);
    }
    Outcome {
        status,
        notes,
        failed: None,
    }
}

fn invalid(mut status: TopicStatus, generation: Option<i64>, e: SpecError, mut notes: Vec<Note>) -> Outcome {
    let msg = e.to_string();
    conditions::set_ready_and_synced(&mut status.conditions, Some(false), "InvalidSpec", &msg, generation);
    notes.push(Note::warning("InvalidSpec", msg));
    // Acted on (by refusing): a resync does not treat the refusal as drift.
    status.observed_generation = generation;
    Outcome {
        status,
        notes,
        failed: None,
    }
}

/// The Topic resource that manages the same Strata topic on the same cluster and came
/// first (older, then smaller uid), if another one does: this one must then neither act
/// nor delete. The first one stays in charge while it exists, even while terminating.
pub fn conflicting<'a>(me: &Topic, others: impl IntoIterator<Item = &'a Topic>) -> Option<&'a Topic> {
    let resolve = |t: &Topic| -> Option<(String, String)> {
        let name = match &t.status.as_ref().and_then(|s| s.topic_name.clone()) {
            Some(n) => n.clone(),
            None => {
                desired(&t.spec, t.metadata.name.as_deref().unwrap_or_default())
                    .ok()?
                    .name
            }
        };
        // The cluster: its URL, whether given as `serviceUrl` or as a `clusterRef`.
        let cluster = match (&t.spec.service_url, &t.spec.cluster_ref) {
            (Some(u), _) if !u.trim().is_empty() => u.trim().to_string(),
            (_, Some(r)) => {
                crate::cluster::service_url(r.name.trim(), t.metadata.namespace.as_deref().unwrap_or_default())
            }
            _ => String::new(),
        };
        Some((cluster, name))
    };
    let key = |t: &Topic| {
        (
            t.metadata.creation_timestamp.clone().map(|c| c.0),
            t.metadata.uid.clone(),
        )
    };
    let mine = resolve(me)?;
    others
        .into_iter()
        .filter(|o| o.metadata.uid != me.metadata.uid && key(o) < key(me))
        .filter(|o| resolve(o).as_ref() == Some(&mine))
        .min_by_key(|o| key(o))
}

/// What deleting the resource does now.
#[derive(Debug, Clone, PartialEq)]
pub enum Cleanup {
    /// Done: the finalizer can go.
    Done(Option<Note>),
    /// Not yet: keep the finalizer; the status says why.
    Blocked(TopicStatus, Note),
    /// The cluster could not be asked; retry with backoff.
    Failed(TopicStatus, String),
}

/// One reconcile of a Topic being deleted.
pub async fn cleanup(topic: &Topic, admin: Option<&dyn StrataAdmin>) -> Cleanup {
    let generation = topic.metadata.generation;
    let mut status = topic.status.clone().unwrap_or_default();
    let meta_name = topic.metadata.name.clone().unwrap_or_default();
    let name = match (&status.topic_name, desired(&topic.spec, &meta_name)) {
        (Some(n), _) => n.clone(),
        (None, Ok(d)) => d.name,
        // Never valid, so never created: nothing to delete.
        (None, Err(_)) => return Cleanup::Done(None),
    };
    if topic.spec.deletion_policy == DeletionPolicy::Retain {
        return Cleanup::Done(Some(Note::normal(
            "Retained",
            format!("topic {name} kept (deletionPolicy Retain); only the resource is deleted"),
        )));
    }
    let Some(admin) = admin else {
        let msg = "the Strata cluster cannot be reached, so the topic cannot be deleted; set spec.deletionPolicy: Retain to delete only this resource".to_string();
        conditions::set(
            &mut status.conditions,
            DELETION_BLOCKED,
            Some(true),
            "ClusterUnreachable",
            &msg,
            generation,
        );
        return Cleanup::Failed(status, msg);
    };
    let force = common::force_delete(topic.metadata.annotations.as_ref());
    if !force {
        let live = match admin.topic(&name).await {
            Ok(Some(l)) => l,
            Ok(None) => return Cleanup::Done(None),
            Err(e) => {
                let msg = format!(
                    "cannot check the topic before deleting it: {e}; set spec.deletionPolicy: Retain to delete only this resource"
                );
                conditions::set(
                    &mut status.conditions,
                    DELETION_BLOCKED,
                    Some(true),
                    "ClusterUnreachable",
                    &msg,
                    generation,
                );
                return Cleanup::Failed(status, msg);
            }
        };
        fill_live(&mut status, &live);
        let backlog: u64 = status.subscriptions.iter().map(|s| s.backlog).sum();
        let (producers, consumers) = (live.stats.producers, status.consumers.unwrap_or(0));
        if backlog > 0 || producers > 0 || consumers > 0 {
            let mut why = Vec::new();
            if backlog > 0 {
                let subs: Vec<String> = status
                    .subscriptions
                    .iter()
                    .filter(|s| s.backlog > 0)
                    .map(|s| format!("{} ({})", s.name, s.backlog))
                    .collect();
                why.push(format!(
                    "{backlog} unacknowledged entries in subscriptions {}",
                    subs.join(", ")
                ));
            }
            if producers + consumers > 0 {
                why.push(format!("{producers} producers and {consumers} consumers connected"));
            }
            let msg = format!(
                "topic {name} is not deleted: {}. To delete it anyway, annotate this resource strata.io/force-delete=\"true\"; to delete only this resource, set spec.deletionPolicy: Retain",
                why.join(" and ")
            );
            conditions::set(
                &mut status.conditions,
                DELETION_BLOCKED,
                Some(true),
                "InUse",
                &msg,
                generation,
            );
            return Cleanup::Blocked(status, Note::warning("DeletionBlocked", msg));
        }
    }
    match admin.delete_topic(&name, force).await {
        Ok(()) => Cleanup::Done(Some(Note::normal(
            "Deleted",
            format!("topic {name} deleted{}", if force { " (forced)" } else { "" }),
        ))),
        Err(e) if e.code() == Some(ErrorCode::NotEmpty) => {
            let msg = format!(
                "topic {name} is not deleted: {e}. To delete it anyway, annotate this resource strata.io/force-delete=\"true\"; to delete only this resource, set spec.deletionPolicy: Retain"
            );
            conditions::set(
                &mut status.conditions,
                DELETION_BLOCKED,
                Some(true),
                "InUse",
                &msg,
                generation,
            );
            Cleanup::Blocked(status, Note::warning("DeletionBlocked", msg))
        }
        Err(e) => {
            let msg = format!("deleting topic {name} failed: {e}");
            conditions::set(
                &mut status.conditions,
                DELETION_BLOCKED,
                Some(true),
                "AdminError",
                &msg,
                generation,
            );
            Cleanup::Failed(status, msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strata::fake::FakeCluster;
    use std::sync::Arc;
    use strata_client::{SubscriptionStats, TopicStats};

    fn topic(spec: TopicSpec) -> Topic {
        let mut t = Topic::new("orders", spec);
        t.metadata.namespace = Some("apps".into());
        t.metadata.generation = Some(1);
        t
    }

    fn spec(partitions: u32) -> TopicSpec {
        TopicSpec {
            service_url: Some("http://strata:6650".into()),
            partitions,
            ..Default::default()
        }
    }

    /// Runs `sync` and stores its status on the object, as the reconciler does.
    async fn step(t: &mut Topic, c: &FakeCluster) -> Outcome {
        let o = sync(t, c).await;
        t.status = Some(o.status.clone());
        o
    }

    const NAME: &str = "persistent://public/default/orders";

    #[test]
    fn names_durations_and_sizes_parse_or_name_the_field() {
        assert_eq!(topic_name(None, "orders").unwrap(), NAME);
        assert_eq!(
            topic_name(Some("acme/pay/tx"), "x").unwrap(),
            "persistent://acme/pay/tx"
        );
        assert!(
            topic_name(Some("nope"), "x")
                .unwrap_err()
                .to_string()
                .starts_with("spec.name")
        );
        assert_eq!(parse_duration("f", "90m").unwrap(), 5400);
        assert_eq!(parse_duration("f", "7d").unwrap(), 604_800);
        assert_eq!(parse_duration("f", "15").unwrap(), 15);
        assert_eq!(parse_duration("f", "-1").unwrap(), -1);
        assert!(parse_duration("f", "99999999999999999999d").is_err());
        assert!(parse_duration("f", "1y").unwrap_err().to_string().starts_with("f"));
        assert_eq!(parse_size("f", "10Gi").unwrap(), 10 << 30);
        assert_eq!(parse_size("f", "1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("f", "0").unwrap(), 0);
        assert!(parse_size("f", "9223372036854775807Pi").is_err());
        assert!(parse_size("f", "1gb").is_err());
    }

    #[tokio::test]
    async fn creates_then_grows_and_refuses_to_shrink() {
        let c = FakeCluster::default();
        let mut t = topic(spec(3));
        let o = step(&mut t, &c).await;
        assert!(o.failed.is_none());
        assert_eq!(c.calls(), vec![format!("create {NAME} 3")]);
        assert_eq!(o.notes[0].reason, "Created");
        let s = t.status.clone().unwrap();
        assert_eq!((s.partitions, s.topic_name.as_deref()), (Some(3), Some(NAME)));
        assert!(conditions::is_true(&s.conditions, READY));

        t.spec.partitions = 6;
        t.metadata.generation = Some(2);
        let o = step(&mut t, &c).await;
        assert_eq!(c.calls().last().unwrap(), &format!("grow {NAME} 6"));
        assert_eq!(o.notes[0].reason, "PartitionsIncreased");

        t.spec.partitions = 2;
        t.metadata.generation = Some(3);
        let o = step(&mut t, &c).await;
        assert_eq!(c.calls().len(), 2, "nothing is changed: {:?}", c.calls());
        let s = t.status.clone().unwrap();
        let ready = conditions::get(&s.conditions, READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "InvalidSpec"));
        assert!(ready.message.starts_with("spec.partitions"), "{}", ready.message);
        assert_eq!(o.notes[0].reason, "InvalidSpec");
        assert_eq!(s.partitions, Some(6));
    }

    #[tokio::test]
    async fn adopts_an_existing_topic_and_refuses_a_name_change() {
        let c = FakeCluster::default();
        c.topics.lock().unwrap().insert(NAME.into(), LiveTopic::default());
        let mut t = topic(spec(0));
        let o = step(&mut t, &c).await;
        assert_eq!(o.notes[0].reason, "Adopted");
        assert!(c.calls().is_empty(), "{:?}", c.calls());

        t.spec.name = Some("public/default/other".into());
        t.metadata.generation = Some(2);
        step(&mut t, &c).await;
        let s = t.status.clone().unwrap();
        let ready = conditions::get(&s.conditions, READY).unwrap();
        assert!(ready.message.contains("immutable"), "{}", ready.message);
        assert!(c.calls().is_empty());
        // A partitioned spec for a topic that exists without partitions is refused too.
        let mut t2 = topic(spec(4));
        step(&mut t2, &c).await;
        let s = t2.status.unwrap();
        assert!(
            conditions::get(&s.conditions, READY)
                .unwrap()
                .message
                .contains("cannot become partitioned")
        );
    }

    #[tokio::test]
    async fn drift_is_corrected_or_reported_and_a_spec_change_is_not_drift() {
        let c = FakeCluster::default();
        let mut t = topic(TopicSpec {
            retention: Some(Retention {
                time: Some("7d".into()),
                size: None,
            }),
            ..spec(0)
        });
        step(&mut t, &c).await;
        assert_eq!(c.calls()[1], format!("policies {NAME} Some(604800) None"));
        // Someone changes it by hand.
        c.topics
            .lock()
            .unwrap()
            .get_mut(NAME)
            .unwrap()
            .policies
            .retention_time_secs = Some(60);
        let o = step(&mut t, &c).await;
        assert_eq!(o.notes[0].reason, "DriftCorrected");
        assert!(o.notes[0].message.contains("retention time"), "{}", o.notes[0].message);
        assert_eq!(
            c.topics.lock().unwrap()[NAME].policies.retention_time_secs,
            Some(604_800)
        );
        let drifted = conditions::get(&t.status.as_ref().unwrap().conditions, DRIFTED)
            .unwrap()
            .clone();
        assert_eq!(
            (drifted.status.as_str(), drifted.reason.as_str()),
            ("True", "DriftCorrected")
        );
        // The next resync finds it in sync: False, the correction kept on record.
        let o = step(&mut t, &c).await;
        assert!(o.notes.is_empty(), "{:?}", o.notes);
        let drifted = conditions::get(&t.status.as_ref().unwrap().conditions, DRIFTED)
            .unwrap()
            .clone();
        assert_eq!(
            (drifted.status.as_str(), drifted.reason.as_str()),
            ("False", "DriftCorrected")
        );
        assert!(drifted.message.contains("retention time"), "{}", drifted.message);

        t.spec.drift_policy = DriftPolicy::Report;
        t.metadata.generation = Some(2);
        step(&mut t, &c).await; // the spec change itself: applied, not drift
        c.topics.lock().unwrap().get_mut(NAME).unwrap().policies.retention_bytes = Some(5);
        let calls = c.calls().len();
        let o = step(&mut t, &c).await;
        assert_eq!(o.notes[0].reason, "DriftDetected");
        assert_eq!(c.calls().len(), calls, "Report changes nothing");
        let s = t.status.clone().unwrap();
        assert!(conditions::is_true(&s.conditions, DRIFTED));
        assert!(conditions::is_true(&s.conditions, READY));
        // Set back by hand: in sync again.
        c.topics.lock().unwrap().get_mut(NAME).unwrap().policies.retention_bytes = None;
        let o = step(&mut t, &c).await;
        assert!(o.notes.is_empty(), "{:?}", o.notes);
        assert!(!conditions::is_true(&t.status.unwrap().conditions, DRIFTED));
    }

    #[test]
    fn the_first_resource_for_a_topic_keeps_it() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |secs: i64, uid: &str, name: &str, spec_name: Option<&str>| {
            let mut t = topic(TopicSpec {
                name: spec_name.map(String::from),
                ..spec(0)
            });
            t.metadata.name = Some(name.into());
            t.metadata.uid = Some(uid.into());
            t.metadata.creation_timestamp = Some(Time(Timestamp::from_second(secs).unwrap()));
            t
        };
        let first = at(10, "a", "orders", None);
        let second = at(20, "b", "orders-again", Some("public/default/orders"));
        let other = at(5, "c", "payments", None);
        let all = [first.clone(), second.clone(), other.clone()];
        assert!(conflicting(&first, &all).is_none());
        assert_eq!(conflicting(&second, &all).unwrap().metadata.uid.as_deref(), Some("a"));
        // Same time: the smaller uid first.
        let twin = at(10, "0", "orders-twin", Some("persistent://public/default/orders"));
        assert_eq!(
            conflicting(&first, std::slice::from_ref(&twin))
                .unwrap()
                .metadata
                .uid
                .as_deref(),
            Some("0")
        );
        // Another cluster is another topic.
        let mut elsewhere = second.clone();
        elsewhere.spec.service_url = Some("http://other:6650".into());
        assert!(conflicting(&elsewhere, &all).is_none());
        // Two StrataClusters are two clusters; one named both ways is one.
        let by_ref = |t: &Topic, cluster: &str| {
            let mut t = t.clone();
            t.metadata.namespace = Some("ns".into());
            t.spec.service_url = None;
            t.spec.cluster_ref = Some(ClusterRef { name: cluster.into() });
            t
        };
        let (a, b) = (by_ref(&first, "a"), by_ref(&second, "b"));
        assert!(conflicting(&b, std::slice::from_ref(&a)).is_none());
        let a2 = by_ref(&second, "a");
        assert_eq!(
            conflicting(&a2, std::slice::from_ref(&a))
                .unwrap()
                .metadata
                .uid
                .as_deref(),
            Some("a")
        );
        let mut by_url = second.clone();
        by_url.metadata.namespace = Some("ns".into());
        by_url.spec.service_url = Some(crate::cluster::service_url("a", "ns"));
        assert!(conflicting(&by_url, &[a]).is_some());
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_a_condition_and_a_failure() {
        let c = FakeCluster::default();
        c.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut t = topic(spec(0));
        let o = step(&mut t, &c).await;
        assert!(o.failed.is_some());
        let ready = conditions::get(&t.status.as_ref().unwrap().conditions, READY)
            .unwrap()
            .clone();
        assert_eq!(ready.reason, "ClusterUnreachable");
        c.down.store(false, std::sync::atomic::Ordering::SeqCst);
        let o = step(&mut t, &c).await;
        assert!(o.failed.is_none());
        assert!(conditions::is_true(&t.status.unwrap().conditions, READY));
    }

    #[tokio::test]
    async fn deletion_waits_for_backlog_and_clients_unless_forced_or_retained() {
        let c = Arc::new(FakeCluster::default());
        let mut t = topic(TopicSpec {
            deletion_policy: DeletionPolicy::Delete,
            ..spec(0)
        });
        step(&mut t, &c).await;
        c.topics.lock().unwrap().get_mut(NAME).unwrap().stats = TopicStats {
            subscriptions: vec![SubscriptionStats {
                name: "audit".into(),
                backlog_entries: 7,
                ..Default::default()
            }],
            producers: 1,
            ..Default::default()
        };
        let Cleanup::Blocked(status, note) = cleanup(&t, Some(&*c)).await else {
            panic!("not blocked")
        };
        assert!(
            note.message
                .contains("7 unacknowledged entries in subscriptions audit (7)"),
            "{}",
            note.message
        );
        assert!(note.message.contains("1 producers"), "{}", note.message);
        assert!(conditions::is_true(&status.conditions, DELETION_BLOCKED));
        assert!(c.topics.lock().unwrap().contains_key(NAME));

        let mut retained = t.clone();
        retained.spec.deletion_policy = DeletionPolicy::Retain;
        assert!(matches!(cleanup(&retained, None).await, Cleanup::Done(Some(n)) if n.reason == "Retained"));
        assert!(c.topics.lock().unwrap().contains_key(NAME));

        t.metadata.annotations = Some([(common::FORCE_DELETE.to_string(), "true".to_string())].into());
        assert!(matches!(cleanup(&t, Some(&*c)).await, Cleanup::Done(Some(n)) if n.reason == "Deleted"));
        assert_eq!(c.calls().last().unwrap(), &format!("delete {NAME} force=true"));
        assert!(!c.topics.lock().unwrap().contains_key(NAME));
        // Gone already: done.
        assert!(matches!(cleanup(&t, Some(&*c)).await, Cleanup::Done(_)));
    }
}
