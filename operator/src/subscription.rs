//! The `Subscription` custom resource: a durable subscription declared before any consumer
//! connects, and cursor resets declared as a change of `spec.resetTo`.
//!
//! [`sync`] decides against any [`StrataAdmin`] (unit-tested against an in-memory
//! cluster); the reconciler resolves the topic and writes status and Events.
//!
//! Invariants:
//! - The subscription is created once, at its initial position; an existing one is adopted
//!   as it is (never moved by creation).
//! - A reset is applied once per value of `spec.resetTo`: the value is recorded in
//!   `status.reset` as `Pending` before the cursor moves and as `Applied` after, so a
//!   resync or an operator restart never repeats an applied reset. An operator killed
//!   between the move and the record applies it again (at least once, never lost).

use crate::common::{self, ClusterRef, DeletionPolicy, Note, SpecError};
use crate::conditions::{self, DELETION_BLOCKED, READY, SYNCED};
use crate::strata::{AdminError, StrataAdmin};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use strata_client::{ErrorCode, MessageId, ResetTo, SubscriptionStart, SubscriptionType};

/// Finalizer guarding the Strata subscription when the resource is deleted.
pub const FINALIZER: &str = "strata.io/subscription-protection";

/// A durable subscription of a Strata topic.
// clippy reads the repeated `type_` of separate printcolumn(...) entries as one
// attribute given twice.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "strata.io",
    version = "v1alpha1",
    kind = "Subscription",
    namespaced,
    status = "SubscriptionStatus",
    shortname = "ssub",
    category = "strata",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Topic", type_ = "string", json_path = ".status.topicName"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Backlog", type_ = "integer", json_path = ".status.backlog"),
    printcolumn(name = "Consumers", type_ = "integer", json_path = ".status.consumers"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "A durable subscription of a Strata topic, created before any consumer connects."
)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// A Topic resource in this namespace (its name), or a full topic name
    /// (`tenant/namespace/topic`), which then needs `serviceUrl`.
    #[schemars(length(min = 1))]
    pub topic: String,
    /// The Strata cluster's service URL; default: the Topic resource's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub service_url: Option<String>,
    /// A StrataCluster in this namespace, instead of `serviceUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_ref: Option<ClusterRef>,
    /// The token the operator sends to the `serviceUrl` cluster when it has authentication
    /// on (its role needs `consume` on the topic); default: the Topic resource's. A
    /// StrataCluster's own operator token is used without either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<crate::common::TokenSecretRef>,
    /// The subscription's name; default `<metadata.name>`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9_.=:-]+$"), length(max = 255))]
    pub name: Option<String>,
    /// How messages are shared among its consumers; consumers must use the same type.
    /// Immutable.
    #[serde(default, rename = "type")]
    pub type_: SubType,
    /// Where it starts when created: `Earliest`, `Latest` (the default), or an RFC 3339
    /// time like `2026-11-30T06:00:00Z` (the first message stored at or after it).
    #[serde(default = "latest")]
    #[schemars(pattern(
        r"^(Earliest|Latest|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))$"
    ))]
    pub initial_position: String,
    /// Move the cursor: applied once each time this changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_to: Option<ResetSpec>,
    /// What deleting this resource does: `Retain` (the default) keeps the subscription,
    /// `Delete` deletes it once it has no backlog and no consumer.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A subscription type.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq, JsonSchema)]
pub enum SubType {
    #[default]
    Exclusive,
    Failover,
    Shared,
    KeyShared,
}

impl SubType {
    fn sdk(self) -> SubscriptionType {
        match self {
            SubType::Exclusive => SubscriptionType::Exclusive,
            SubType::Failover => SubscriptionType::Failover,
            SubType::Shared => SubscriptionType::Shared,
            SubType::KeyShared => SubscriptionType::KeyShared,
        }
    }

    /// As the broker's stats name it.
    fn stats_name(self) -> &'static str {
        match self {
            SubType::Exclusive => "Exclusive",
            SubType::Failover => "Failover",
            SubType::Shared => "Shared",
            SubType::KeyShared => "Key_Shared",
        }
    }
}

fn latest() -> String {
    "Latest".into()
}

/// A cursor reset: exactly one of the fields.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetSpec {
    /// The first message stored at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub timestamp: Option<String>,
    /// The first message of this id's entry, as consumers print it:
    /// `ledger:entry:batchIndex:partition` (`ledger:entry` is enough for a
    /// non-partitioned topic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+:[0-9]+(:[0-9]+(:-?[0-9]+)?)?$"))]
    pub message_id: Option<String>,
}

/// A reset's progress, recorded so it is applied once per value.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetRecord {
    /// The `spec.resetTo` value, written `timestamp=…` or `messageId=…`.
    pub value: String,
    /// `Pending` while being applied, then `Applied`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// What the operator last saw of the subscription.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Synced`, `DeletionBlocked`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The Strata topic (fixed once created or adopted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// The Strata subscription name (fixed once created or adopted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_name: Option<String>,
    /// The Strata cluster it is on (kept so that deleting the resource still reaches it
    /// after its Topic resource is gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_url: Option<String>,
    /// Unacknowledged entries, over every partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Consumers connected, over every partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<u32>,
    /// The last `spec.resetTo` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}

fn parse_time(field: &str, s: &str) -> Result<u64, SpecError> {
    let t: Timestamp = s
        .parse()
        .map_err(|e| SpecError::new(field, format!("{s:?} is not an RFC 3339 time: {e}")))?;
    u64::try_from(t.as_millisecond()).map_err(|_| SpecError::new(field, format!("{s:?} is before 1970")))
}

/// Where `spec.initialPosition` says a new subscription starts.
pub fn start_of(initial: &str) -> Result<SubscriptionStart, SpecError> {
    match initial {
        "" | "Latest" => Ok(SubscriptionStart::Latest),
        "Earliest" => Ok(SubscriptionStart::Earliest),
        ts => parse_time("spec.initialPosition", ts)
            .map(SubscriptionStart::Time)
            .map_err(|e| {
                SpecError::new(
                    "spec.initialPosition",
                    format!("use Earliest, Latest or an RFC 3339 time: {}", e.message),
                )
            }),
    }
}

/// A reset spec as the admin API takes it, and the value recorded for it.
pub fn reset_of(r: &ResetSpec) -> Result<(ResetTo, String), SpecError> {
    match (&r.timestamp, &r.message_id) {
        (Some(ts), None) => Ok((
            ResetTo::Time(parse_time("spec.resetTo.timestamp", ts)?),
            format!("timestamp={ts}"),
        )),
        (None, Some(id)) => {
            let parsed: MessageId = id
                .parse()
                .map_err(|e: strata_client::Error| SpecError::new("spec.resetTo.messageId", e.to_string()))?;
            Ok((ResetTo::Message(parsed), format!("messageId={id}")))
        }
        _ => Err(SpecError::new(
            "spec.resetTo",
            "give exactly one of timestamp and messageId",
        )),
    }
}

/// Where the topic is, resolved by the reconciler (a Topic resource or a full name).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub topic: String,
    pub service_url: String,
    /// The token to send, if the resources name one.
    pub token_secret_ref: Option<crate::common::TokenSecretRef>,
}

/// The outcome of one sync.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: SubscriptionStatus,
    pub notes: Vec<Note>,
    pub failed: Option<String>,
    /// A status to write before the next step (a reset about to be applied).
    pub checkpoint: bool,
}

/// The subscription name a spec resolves to.
pub fn subscription_name(spec: &SubscriptionSpec, metadata_name: &str) -> Result<String, SpecError> {
    let n = spec.name.clone().unwrap_or_else(|| metadata_name.to_string());
    strata_common::SubscriptionName::new(&n)
        .map(|s| s.as_str().to_string())
        .map_err(|e| SpecError::new("spec.name", e.to_string()))
}

fn refuse(mut status: SubscriptionStatus, generation: Option<i64>, e: SpecError) -> Outcome {
    let msg = e.to_string();
    conditions::set_ready_and_synced(&mut status.conditions, Some(false), "InvalidSpec", &msg, generation);
    status.observed_generation = generation;
    Outcome {
        status,
        notes: vec![Note::warning("InvalidSpec", msg)],
        failed: None,
        checkpoint: false,
    }
}

fn failure(
    mut status: SubscriptionStatus,
    generation: Option<i64>,
    e: &AdminError,
    doing: &str,
    notes: Vec<Note>,
) -> Outcome {
    let (reason, msg) = match e {
        AdminError::Unreachable(m) => ("ClusterUnreachable", format!("{doing}: {m}")),
        AdminError::Refused {
            code: Some(ErrorCode::TopicNotFound),
            ..
        } => ("TopicNotFound", format!("{doing}: {e}")),
        AdminError::Refused { .. } => ("AdminError", format!("{doing}: {e}")),
    };
    conditions::set_ready_and_synced(&mut status.conditions, Some(false), reason, &msg, generation);
    Outcome {
        status,
        notes,
        failed: Some(msg),
        checkpoint: false,
    }
}

/// Checks the parts of the spec that need no cluster. `Err` names the field.
pub fn validate(sub: &Subscription) -> Result<String, SpecError> {
    let meta_name = sub.metadata.name.clone().unwrap_or_default();
    let name = subscription_name(&sub.spec, &meta_name)?;
    start_of(&sub.spec.initial_position)?;
    if let Some(r) = &sub.spec.reset_to {
        reset_of(r)?;
    }
    Ok(name)
}

/// One reconcile of a Subscription that is not being deleted, on `target`. When the
/// outcome asks for a `checkpoint`, the caller writes its status and calls again.
pub async fn sync(sub: &Subscription, target: &Target, admin: &dyn StrataAdmin) -> Outcome {
    let generation = sub.metadata.generation;
    let mut status = sub.status.clone().unwrap_or_default();
    conditions::remove(&mut status.conditions, DELETION_BLOCKED);
    let name = match validate(sub) {
        Ok(n) => n,
        Err(e) => return refuse(status, generation, e),
    };
    let fixed = [
        ("spec.topic", status.topic_name.clone(), &target.topic),
        ("spec.name", status.subscription_name.clone(), &name),
    ];
    for (field, had, want) in fixed {
        if let Some(had) = had
            && had != *want
        {
            let e = SpecError::new(
                field,
                format!("is immutable: this resource manages {had}, not {want}; create another Subscription"),
            );
            return refuse(status, generation, e);
        }
    }
    let mut notes = Vec::new();
    let start = start_of(&sub.spec.initial_position).expect("validated");
    match admin
        .create_subscription(&target.topic, &name, sub.spec.type_.sdk(), start)
        .await
    {
        Ok(true) => notes.push(Note::normal(
            "Created",
            format!(
                "created subscription {name} on {} ({:?}, from {start:?})",
                target.topic, sub.spec.type_
            ),
        )),
        Ok(false) if status.subscription_name.is_none() => notes.push(Note::normal(
            "Adopted",
            format!(
                "subscription {name} on {} already existed; it is managed by this resource from now on",
                target.topic
            ),
        )),
        Ok(false) => {}
        Err(e) => return failure(status, generation, &e, "creating the subscription", notes),
    }
    status.topic_name = Some(target.topic.clone());
    status.subscription_name = Some(name.clone());
    status.service_url = Some(target.service_url.clone());

    // A reset, once per value of spec.resetTo.
    if let Some(r) = &sub.spec.reset_to {
        let (to, value) = reset_of(r).expect("validated");
        let applied = status
            .reset
            .as_ref()
            .is_some_and(|x| x.value == value && x.state == "Applied");
        let pending = status
            .reset
            .as_ref()
            .is_some_and(|x| x.value == value && x.state == "Pending");
        if !applied && !pending {
            status.reset = Some(ResetRecord {
                value,
                state: "Pending".into(),
                time: Some(Time(Timestamp::now())),
            });
            return Outcome {
                status,
                notes,
                failed: None,
                checkpoint: true,
            };
        }
        if pending {
            if let Err(e) = admin.reset_subscription(&target.topic, &name, to).await {
                return failure(status, generation, &e, "resetting the subscription", notes);
            }
            notes.push(Note::normal(
                "Reset",
                format!("subscription {name} on {} moved to {value}", target.topic),
            ));
            status.reset = Some(ResetRecord {
                value,
                state: "Applied".into(),
                time: Some(Time(Timestamp::now())),
            });
        }
    }

    let live = match admin.topic(&target.topic).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            let e = AdminError::Refused {
                code: Some(ErrorCode::TopicNotFound),
                message: format!("topic {} does not exist", target.topic),
            };
            return failure(status, generation, &e, "reading the subscription", notes);
        }
        Err(e) => return failure(status, generation, &e, "reading the subscription", notes),
    };
    let summary = common::summarize(&live.stats.subscriptions)
        .into_iter()
        .find(|s| s.name == name);
    status.backlog = summary.as_ref().map(|s| s.backlog);
    status.consumers = summary.as_ref().map(|s| s.consumers);
    status.observed_generation = generation;
    status.last_sync_time = Some(Time(Timestamp::now()));
    match summary {
        Some(s) if s.type_ != sub.spec.type_.stats_name() => {
            let msg = format!(
                "spec.type: subscription {name} exists as {}, not {}; a type cannot change: delete it or use another name",
                s.type_,
                sub.spec.type_.stats_name()
            );
            conditions::set(
                &mut status.conditions,
                READY,
                Some(false),
                "TypeMismatch",
                &msg,
                generation,
            );
            conditions::set(
                &mut status.conditions,
                SYNCED,
                Some(true),
                "Synced",
                "read from the cluster",
                generation,
            );
            notes.push(Note::warning("TypeMismatch", msg));
        }
        _ => {
            let msg = format!("subscription {name} on {} exists", target.topic);
            conditions::set_ready_and_synced(&mut status.conditions, Some(true), "Synced", msg, generation);
        }
    }
    Outcome {
        status,
        notes,
        failed: None,
        checkpoint: false,
    }
}

/// What deleting the resource does now.
#[derive(Debug, Clone, PartialEq)]
pub enum Cleanup {
    Done(Option<Note>),
    Blocked(SubscriptionStatus, Note),
    Failed(SubscriptionStatus, String),
}

/// One reconcile of a Subscription being deleted. `target` is `None` when the topic
/// cannot be resolved any more (its Topic resource is gone): nothing is deleted then.
pub async fn cleanup(sub: &Subscription, target: Option<&Target>, admin: Option<&dyn StrataAdmin>) -> Cleanup {
    let generation = sub.metadata.generation;
    let mut status = sub.status.clone().unwrap_or_default();
    let (Some(topic), Some(name)) = (
        status.topic_name.clone().or(target.map(|t| t.topic.clone())),
        status.subscription_name.clone(),
    ) else {
        // Never created by this resource.
        return Cleanup::Done(None);
    };
    if sub.spec.deletion_policy == DeletionPolicy::Retain {
        return Cleanup::Done(Some(Note::normal(
            "Retained",
            format!("subscription {name} on {topic} kept (deletionPolicy Retain); only the resource is deleted"),
        )));
    }
    let Some(admin) = admin else {
        let msg = "the Strata cluster cannot be reached, so the subscription cannot be deleted; set spec.deletionPolicy: Retain to delete only this resource".to_string();
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
    let force = common::force_delete(sub.metadata.annotations.as_ref());
    let live = match admin.topic(&topic).await {
        Ok(Some(l)) => l,
        Ok(None) => return Cleanup::Done(None),
        Err(e) => {
            let msg = format!("cannot check the subscription before deleting it: {e}");
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
    let summary = common::summarize(&live.stats.subscriptions)
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_default();
    if summary.consumers > 0 || (summary.backlog > 0 && !force) {
        let msg = if summary.consumers > 0 {
            format!(
                "subscription {name} on {topic} is not deleted: {} consumers are connected; stop them, or set spec.deletionPolicy: Retain to delete only this resource",
                summary.consumers
            )
        } else {
            format!(
                "subscription {name} on {topic} is not deleted: {} unacknowledged entries. To delete it anyway, annotate this resource strata.io/force-delete=\"true\"; to delete only this resource, set spec.deletionPolicy: Retain",
                summary.backlog
            )
        };
        status.backlog = Some(summary.backlog);
        status.consumers = Some(summary.consumers);
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
    match admin.delete_subscription(&topic, &name).await {
        Ok(_) => Cleanup::Done(Some(Note::normal(
            "Deleted",
            format!("subscription {name} on {topic} deleted"),
        ))),
        Err(e) => {
            let msg = format!("deleting subscription {name} on {topic} failed: {e}");
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
    use crate::strata::LiveTopic;
    use crate::strata::fake::FakeCluster;

    const TOPIC: &str = "persistent://public/default/orders";

    fn target() -> Target {
        Target {
            topic: TOPIC.into(),
            service_url: "http://strata:6650".into(),
            token_secret_ref: None,
        }
    }

    fn sub(spec: SubscriptionSpec) -> Subscription {
        let mut s = Subscription::new("audit", spec);
        s.metadata.generation = Some(1);
        s
    }

    /// Syncs as the reconciler does: checkpoints written, then called again.
    async fn step(s: &mut Subscription, c: &FakeCluster) -> Vec<Note> {
        let mut notes = Vec::new();
        loop {
            let o = sync(s, &target(), c).await;
            s.status = Some(o.status);
            notes.extend(o.notes);
            if !o.checkpoint {
                return notes;
            }
        }
    }

    fn cluster() -> FakeCluster {
        let c = FakeCluster::default();
        c.topics.lock().unwrap().insert(TOPIC.into(), LiveTopic::default());
        c
    }

    #[tokio::test]
    async fn created_once_at_its_start_and_adopted_if_it_exists() {
        let c = cluster();
        let mut s = sub(SubscriptionSpec {
            topic: "orders".into(),
            type_: SubType::Shared,
            initial_position: "2026-11-30T06:00:00Z".into(),
            ..Default::default()
        });
        let notes = step(&mut s, &c).await;
        assert_eq!(notes[0].reason, "Created");
        assert_eq!(
            c.calls(),
            vec![format!("subscribe {TOPIC} audit Shared Time(1796018400000)")]
        );
        let notes = step(&mut s, &c).await;
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(c.calls().len(), 1);
        assert!(conditions::is_true(&s.status.as_ref().unwrap().conditions, READY));

        let mut other = sub(SubscriptionSpec {
            topic: "orders".into(),
            type_: SubType::Exclusive,
            ..Default::default()
        });
        let notes = step(&mut other, &c).await;
        assert_eq!(notes[0].reason, "Adopted");
        // It exists as Shared: the type cannot change.
        let ready = conditions::get(&other.status.unwrap().conditions, READY)
            .unwrap()
            .clone();
        assert_eq!(ready.reason, "TypeMismatch");
    }

    #[tokio::test]
    async fn a_reset_is_applied_once_per_value() {
        let c = cluster();
        let mut s = sub(SubscriptionSpec {
            topic: "orders".into(),
            reset_to: Some(ResetSpec {
                timestamp: Some("2026-11-30T06:00:00Z".into()),
                message_id: None,
            }),
            ..Default::default()
        });
        step(&mut s, &c).await;
        step(&mut s, &c).await;
        let resets = |c: &FakeCluster| c.calls().iter().filter(|x| x.starts_with("reset")).count();
        assert_eq!(resets(&c), 1);
        assert_eq!(s.status.as_ref().unwrap().reset.as_ref().unwrap().state, "Applied");
        // A restart that finds it Pending (killed between the record and the move) moves it.
        s.status.as_mut().unwrap().reset.as_mut().unwrap().state = "Pending".into();
        step(&mut s, &c).await;
        assert_eq!(resets(&c), 2);
        // A new value: once more.
        s.spec.reset_to = Some(ResetSpec {
            timestamp: None,
            message_id: Some("7:3:0:-1".into()),
        });
        step(&mut s, &c).await;
        step(&mut s, &c).await;
        assert_eq!(resets(&c), 3);
        assert!(c.calls().last().unwrap().contains("ledger_id: 7"), "{:?}", c.calls());
    }

    #[tokio::test]
    async fn bad_specs_name_their_field() {
        let c = cluster();
        for (spec, field) in [
            (
                SubscriptionSpec {
                    topic: "orders".into(),
                    initial_position: "yesterday".into(),
                    ..Default::default()
                },
                "spec.initialPosition",
            ),
            (
                SubscriptionSpec {
                    topic: "orders".into(),
                    reset_to: Some(ResetSpec::default()),
                    ..Default::default()
                },
                "spec.resetTo",
            ),
            (
                SubscriptionSpec {
                    topic: "orders".into(),
                    name: Some("bad/name".into()),
                    ..Default::default()
                },
                "spec.name",
            ),
        ] {
            let mut s = sub(spec);
            step(&mut s, &c).await;
            let ready = conditions::get(&s.status.unwrap().conditions, READY).unwrap().clone();
            assert!(ready.message.starts_with(field), "{field}: {}", ready.message);
        }
        assert!(c.calls().is_empty());
    }

    #[tokio::test]
    async fn deletion_waits_for_consumers_and_backlog() {
        let c = cluster();
        let mut s = sub(SubscriptionSpec {
            topic: "orders".into(),
            deletion_policy: DeletionPolicy::Delete,
            ..Default::default()
        });
        step(&mut s, &c).await;
        c.topics.lock().unwrap().get_mut(TOPIC).unwrap().stats.subscriptions[0].backlog_entries = 3;
        assert!(matches!(
            cleanup(&s, Some(&target()), Some(&c)).await,
            Cleanup::Blocked(..)
        ));
        s.metadata.annotations = Some([(common::FORCE_DELETE.to_string(), "true".to_string())].into());
        assert!(
            matches!(cleanup(&s, Some(&target()), Some(&c)).await, Cleanup::Done(Some(n)) if n.reason == "Deleted")
        );
        assert_eq!(c.calls().last().unwrap(), &format!("unsubscribe {TOPIC} audit"));
    }
}
