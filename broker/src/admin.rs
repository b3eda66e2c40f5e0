//! The Admin service: tenants, namespaces, topics (plain and partitioned) and
//! subscriptions, kept in the metadata store.
//!
//! Deletions refuse what still has children (NOT_EMPTY) instead of cascading, except a
//! topic, whose deletion removes its ledgers and subscriptions.

mod ns_policies;
mod offload;
mod permissions;

use crate::authz::{Action, Resource};
use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::service::{code_of, status};
use bytes::Bytes;
use std::sync::Arc;
use strata_bookie::autorecovery;
use strata_common::{SubscriptionName, TopicName, topic::NameError};
use strata_meta::{Condition, MetaError, keys};
use strata_net::auth::Principal;
use strata_proto::v1 as pb;
use tonic::{Request, Response, Status};

fn to_status(e: BrokerError) -> Status {
    status(code_of(&e), e.to_string())
}

/// A bookie-layer error as a status: its own invalid-argument message stays
/// INVALID_ARGUMENT; anything else is a storage error.
fn bookie_status(e: strata_bookie::BookieError) -> Status {
    match e {
        strata_bookie::BookieError::InvalidArgument(m) => status(pb::ErrorCode::InvalidArgument, m),
        e => to_status(BrokerError::Storage(e)),
    }
}

/// A bookie address as `host:port`, checked before it becomes part of a metadata key.
fn check_bookie_address(a: &str) -> Result<&str, Status> {
    let ok = !a.is_empty()
        && a.len() <= 255
        && a.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b));
    if ok {
        Ok(a)
    } else {
        Err(status(
            pb::ErrorCode::InvalidArgument,
            format!("invalid bookie address {a:?}: expected host:port as `strata admin bookies list` shows it"),
        ))
    }
}

fn bad_name(e: NameError) -> Status {
    status(pb::ErrorCode::InvalidArgument, e.to_string())
}

/// Validates a tenant or namespace part (same rules as topic parts).
fn check_name(what: &'static str, s: &str) -> Result<(), Status> {
    SubscriptionName::new(s).map(|_| ()).map_err(|_| {
        status(
            pb::ErrorCode::InvalidArgument,
            format!("invalid {what} {s:?}: use letters, digits, '-', '_', '.', '=', ':'"),
        )
    })
}

fn split_namespace(ns: &str) -> Result<(String, String), Status> {
    let Some((t, n)) = ns.split_once('/') else {
        return Err(status(
            pb::ErrorCode::InvalidArgument,
            format!("namespace {ns:?} must be written tenant/namespace"),
        ));
    };
    check_name("tenant", t)?;
    check_name("namespace", n)?;
    Ok((t.to_string(), n.to_string()))
}

/// Most partitions a topic can have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// gRPC metadata marking an admin request one broker forwarded to a topic's owner.
const FORWARDED: &str = "strata-forwarded";

fn forwarded<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    r
}

/// The caller of a request (none when auth is off).
fn who<T>(r: &Request<T>) -> Option<Principal> {
    r.extensions().get::<Principal>().cloned()
}

fn last_part(key: &str) -> String {
    key.rsplit('/').next().unwrap_or_default().to_string()
}

pub struct AdminService {
    broker: Arc<Broker>,
}

impl AdminService {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    /// Allows the request when its caller may do one of `any_of` on `r` ([`crate::authz`]).
    async fn allow(&self, p: Option<Principal>, any_of: &[Action], r: Resource) -> Result<(), Status> {
        crate::authz::check(&**self.broker.store(), p.as_ref(), any_of, &r)
            .await
            .map_err(to_status)
    }

    /// Drops a deleted resource's grants (a failure only leaves them to a resource
    /// re-created under the name, and is logged).
    async fn forget(&self, r: Resource) {
        if let Err(e) = crate::authz::forget(&**self.broker.store(), &r).await {
            tracing::warn!(resource = %r, error = %e, "could not delete the grants of a deleted resource");
        }
    }

    async fn decommission_status(&self, address: &str) -> Result<pb::DecommissionStatus, Status> {
        let status = autorecovery::admin::decommission_status(self.broker.store().as_ref(), address)
            .await
            .map_err(bookie_status)?;
        let registered = self.exists(&keys::bookie(address)).await?;
        let (status, remaining) = status;
        Ok(match status {
            Some(d) => pb::DecommissionStatus {
                address: address.to_string(),
                state: d.state.as_str().to_string(),
                started_ms: d.started_ms,
                finished_ms: d.finished_ms.unwrap_or(0),
                remaining_ledgers: remaining,
                registered,
            },
            None => pb::DecommissionStatus {
                address: address.to_string(),
                state: "none".into(),
                registered,
                remaining_ledgers: remaining,
                ..Default::default()
            },
        })
    }

    async fn exists(&self, key: &str) -> Result<bool, Status> {
        Ok(self
            .broker
            .store()
            .get(key)
            .await
            .map_err(|e| to_status(e.into()))?
            .is_some())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, Status> {
        Ok(self
            .broker
            .store()
            .list(prefix)
            .await
            .map_err(|e| to_status(e.into()))?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    async fn create(&self, key: &str, value: Bytes, what: String) -> Result<(), Status> {
        match self.broker.store().put(key, value, Condition::Absent).await {
            Ok(_) => Ok(()),
            Err(MetaError::BadVersion(_)) => Err(to_status(BrokerError::AlreadyExists(what))),
            Err(e) => Err(to_status(e.into())),
        }
    }

    /// Creates a topic's (empty) ledger list; its owner opens the first ledger when the
    /// topic is first used. Needs no ownership, so any broker can do it.
    async fn create_storage(&self, t: &TopicName) -> Result<(), Status> {
        let info = crate::managed_ledger::ManagedLedgerInfo {
            format: crate::managed_ledger::INFO_FORMAT,
            ledgers: Vec::new(),
            offload_requested_upto: None,
        };
        match self
            .broker
            .store()
            .put(&keys::topic(&t.path()), info.encode(), Condition::Absent)
            .await
        {
            Ok(_) | Err(MetaError::BadVersion(_)) => Ok(()),
            Err(e) => Err(to_status(e.into())),
        }
    }

    /// The admin client of the broker owning `t`'s bundle, if that is another broker.
    /// A forwarded request is never forwarded again, and never served by a broker that
    /// does not own the topic: the header only says where the request came from, and a
    /// client can set it too, so it must not let a request skip the owner's checks
    /// (connected consumers, loaded state). Ownership that moved meanwhile is NOT_OWNER.
    async fn owner_elsewhere(
        &self,
        was_forwarded: bool,
        t: &TopicName,
    ) -> Result<Option<crate::cluster::PeerAdmin>, Status> {
        let bundle = self.broker.bundle_of(t).await.map_err(to_status)?;
        match self.broker.owner_of(&bundle).await.map_err(to_status)? {
            Some(o) if o.broker != self.broker.address() => {
                if was_forwarded {
                    return Err(to_status(BrokerError::NotOwner(t.to_string())));
                }
                Ok(Some(crate::cluster::admin_client(&o.url).await.map_err(to_status)?))
            }
            _ => Ok(None),
        }
    }

    /// The bundle a request names, checked against the namespace's current layout.
    async fn bundle(&self, r: &pb::BundleRequest) -> Result<crate::bundles::Bundle, Status> {
        let (t, n) = split_namespace(&r.namespace)?;
        let range = crate::bundles::Range::parse(&r.bundle).map_err(to_status)?;
        let layout = self.broker.layout(&t, &n).await.map_err(to_status)?;
        if !layout.ranges().any(|x| x == range) {
            return Err(to_status(BrokerError::NotFound(format!(
                "bundle {} of {t}/{n}; `strata admin bundles list {t}/{n}` shows the current ones",
                r.bundle
            ))));
        }
        Ok(crate::bundles::Bundle {
            tenant: t,
            namespace: n,
            range,
        })
    }

    async fn partitions(&self, t: &TopicName) -> Result<u32, Status> {
        self.broker.partitions(t).await.map_err(to_status)
    }

    /// Deletes one (non-partitioned) topic: unload, ledgers, cursors, the ledger list.
    async fn delete_one(&self, t: &TopicName, was_forwarded: bool, force: bool) -> Result<(), Status> {
        if let Some(mut owner) = self.owner_elsewhere(was_forwarded, t).await? {
            owner
                .delete_topic(forwarded(pb::TopicRequest {
                    topic: t.to_string(),
                    force,
                }))
                .await?;
            return Ok(());
        }
        if !force
            && let Some(loaded) = self.broker.loaded(t).await
            && loaded.consumer_counts().await.values().any(|n| *n > 0)
        {
            return Err(to_status(BrokerError::NotEmpty(format!(
                "topic {t} has connected consumers; disconnect them first"
            ))));
        }
        self.broker.unload(t).await;
        let store = self.broker.store();
        let key = keys::topic(&t.path());
        let Some(v) = store.get(&key).await.map_err(|e| to_status(e.into()))? else {
            return Err(to_status(BrokerError::TopicNotFound(t.to_string())));
        };
        let info: crate::managed_ledger::ManagedLedgerInfo = serde_json::from_slice(&v.value)
            .map_err(|e| to_status(BrokerError::Corruption(format!("ledger list of {t}: {e}"))))?;
        // The list goes first: a half-done delete leaves unreferenced ledgers, never a
        // topic pointing at deleted ones.
        store
            .delete(&key, Condition::Version(v.version))
            .await
            .map_err(|e| to_status(e.into()))?;
        for l in &info.ledgers {
            crate::managed_ledger::delete_ledger_copies(
                t,
                self.broker.ledger_client(),
                self.broker.offloader().map(|o| &**o),
                l,
            )
            .await;
        }
        for (k, _) in store
            .list(&keys::cursors_prefix(&t.path()))
            .await
            .map_err(|e| to_status(e.into()))?
        {
            let _ = store.delete(&k, Condition::Any).await;
        }
        // A topic created again under this name starts with no producer history (else
        // its producers would inherit sequence ids and have new sends taken as resends).
        crate::dedup::Dedup::delete(store.as_ref(), &t.path())
            .await
            .map_err(to_status)?;
        Ok(())
    }

    async fn require_topic(&self, t: &TopicName) -> Result<(), Status> {
        if self.exists(&keys::topic(&t.path())).await? || self.partitions(t).await? > 0 {
            Ok(())
        } else {
            Err(to_status(BrokerError::TopicNotFound(t.to_string())))
        }
    }

    /// Creates a subscription on one (non-partitioned) topic, on its owner. `false` if it
    /// already existed (it is then left as it is).
    async fn create_subscription_one(
        &self,
        t: &TopicName,
        r: &pb::SubscriptionRequest,
        was_forwarded: bool,
    ) -> Result<bool, Status> {
        if let Some(mut owner) = self.owner_elsewhere(was_forwarded, t).await? {
            let req = pb::SubscriptionRequest {
                topic: t.to_string(),
                ..r.clone()
            };
            return match owner.create_subscription(forwarded(req)).await {
                Ok(_) => Ok(true),
                Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(false),
                Err(s) => Err(s),
            };
        }
        let name = SubscriptionName::new(&r.subscription).map_err(bad_name)?;
        if self.exists(&keys::cursor(&t.path(), name.as_str())).await? {
            return if was_forwarded {
                Err(to_status(BrokerError::AlreadyExists(format!(
                    "subscription {name} on {t}"
                ))))
            } else {
                Ok(false)
            };
        }
        let sub_type =
            crate::service::sub_type(r.r#type).map_err(|e| status(pb::ErrorCode::InvalidArgument, e.message))?;
        let loaded = self.broker.topic(t, false).await.map_err(to_status)?;
        let initial = match r.start_time_ms {
            Some(ms) => crate::subscription::InitialPosition::At(
                loaded.topic.find_by_publish_time(ms).await.map_err(to_status)?,
            ),
            None if r.initial_position == pb::InitialPosition::Earliest as i32 => {
                crate::subscription::InitialPosition::Earliest
            }
            None => crate::subscription::InitialPosition::Latest,
        };
        let s = loaded.subscription(&name, sub_type, initial).await.map_err(to_status)?;
        // Durable before the reply: a crash right after must not lose the position.
        s.persist().await.map_err(to_status)?;
        Ok(true)
    }

    /// Deletes a subscription of one (non-partitioned) topic, on its owner. `false` if it
    /// did not exist.
    async fn delete_subscription_one(
        &self,
        t: &TopicName,
        r: &pb::SubscriptionRequest,
        was_forwarded: bool,
    ) -> Result<bool, Status> {
        if let Some(mut owner) = self.owner_elsewhere(was_forwarded, t).await? {
            let req = pb::SubscriptionRequest {
                topic: t.to_string(),
                ..r.clone()
            };
            return match owner.delete_subscription(forwarded(req)).await {
                Ok(_) => Ok(true),
                Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
                Err(s) => Err(s),
            };
        }
        let name = SubscriptionName::new(&r.subscription).map_err(bad_name)?;
        if let Some(loaded) = self.broker.loaded(t).await {
            loaded.remove_subscription(&name).await.map_err(to_status)?;
        }
        let existed = self
            .broker
            .store()
            .delete(&keys::cursor(&t.path(), name.as_str()), Condition::Any)
            .await
            .map_err(|e| to_status(e.into()))?;
        if !existed && was_forwarded {
            return Err(to_status(BrokerError::NotFound(format!(
                "subscription {name} on {t} does not exist"
            ))));
        }
        Ok(existed)
    }

    /// Moves one (non-partitioned) topic's subscription, on its owner.
    async fn reset_subscription_one(
        &self,
        t: &TopicName,
        r: &pb::ResetSubscriptionRequest,
        was_forwarded: bool,
    ) -> Result<(), Status> {
        if let Some(mut owner) = self.owner_elsewhere(was_forwarded, t).await? {
            let req = pb::ResetSubscriptionRequest {
                topic: t.to_string(),
                ..r.clone()
            };
            owner.reset_subscription(forwarded(req)).await?;
            return Ok(());
        }
        let name = SubscriptionName::new(&r.subscription).map_err(bad_name)?;
        let Some(v) = self
            .broker
            .store()
            .get(&keys::cursor(&t.path(), name.as_str()))
            .await
            .map_err(|e| to_status(e.into()))?
        else {
            return Err(to_status(BrokerError::NotFound(format!(
                "subscription {name} on {t} does not exist"
            ))));
        };
        let cursor: crate::cursor::CursorInfo = serde_json::from_slice(&v.value)
            .map_err(|e| to_status(BrokerError::Corruption(format!("cursor {name} of {t}: {e}"))))?;
        let sub_type = crate::dispatch::SubType::from_name(&cursor.sub_type).ok_or_else(|| {
            to_status(BrokerError::Corruption(format!(
                "cursor {name} of {t} has unknown type {:?}",
                cursor.sub_type
            )))
        })?;
        let loaded = self.broker.topic(t, false).await.map_err(to_status)?;
        let position = match &r.to {
            Some(pb::reset_subscription_request::To::TimestampMs(ms)) => {
                loaded.topic.find_by_publish_time(*ms).await.map_err(to_status)?
            }
            Some(pb::reset_subscription_request::To::MessageId(id)) => {
                let wanted = crate::service::from_wire_id(id)
                    .map_err(|e| status(pb::ErrorCode::InvalidArgument, e.message))?
                    .position;
                let layout = crate::cursor::Layout {
                    ledgers: loaded.topic.managed_ledger().ledger_counts().await,
                };
                layout.resolve(wanted).ok_or_else(|| {
                    status(
                        pb::ErrorCode::InvalidArgument,
                        format!(
                            "message_id {}:{} is not a message of {t}: no such ledger or entry",
                            id.ledger_id, id.entry_id
                        ),
                    )
                })?
            }
            None => {
                return Err(status(
                    pb::ErrorCode::InvalidArgument,
                    "reset: give timestamp_ms or message_id".into(),
                ));
            }
        };
        let s = loaded
            .subscription(&name, sub_type, crate::subscription::InitialPosition::Earliest)
            .await
            .map_err(to_status)?;
        // No consumer has id 0: every connected one is disconnected and reconnects there.
        s.seek(0, position).await.map_err(to_status)?;
        s.persist().await.map_err(to_status)?;
        Ok(())
    }

    async fn stats_one(&self, t: &TopicName, out: &mut pb::TopicStats, was_forwarded: bool) -> Result<(), Status> {
        if let Some(mut owner) = self.owner_elsewhere(was_forwarded, t).await? {
            let s = owner
                .get_topic_stats(forwarded(pb::TopicRequest {
                    topic: t.to_string(),
                    ..Default::default()
                }))
                .await?
                .into_inner();
            out.entries += s.entries;
            out.storage_bytes += s.storage_bytes;
            out.ledgers += s.ledgers;
            out.producers += s.producers;
            out.offloaded_bytes += s.offloaded_bytes;
            out.bookie_bytes += s.bookie_bytes;
            out.subscriptions.extend(s.subscriptions);
            return Ok(());
        }
        let store = self.broker.store();
        let Some(v) = store
            .get(&keys::topic(&t.path()))
            .await
            .map_err(|e| to_status(e.into()))?
        else {
            return Err(to_status(BrokerError::TopicNotFound(t.to_string())));
        };
        let info: crate::managed_ledger::ManagedLedgerInfo = serde_json::from_slice(&v.value)
            .map_err(|e| to_status(BrokerError::Corruption(format!("ledger list of {t}: {e}"))))?;
        let loaded = self.broker.loaded(t).await;
        // A loaded topic's current ledger is still growing: count up to its last entry.
        let current = match &loaded {
            Some(l) => l.topic.managed_ledger().last_confirmed(),
            None => None,
        };
        let entries_of = |l: &crate::managed_ledger::LedgerInfo| -> u64 {
            match current {
                Some(p) if p.ledger.get() == l.id && l.entries == 0 => p.entry.get() + 1,
                _ => l.entries,
            }
        };
        out.entries += info.ledgers.iter().map(entries_of).sum::<u64>();
        out.storage_bytes += info.ledgers.iter().map(|l| l.bytes).sum::<u64>();
        out.ledgers += info.ledgers.len() as u32;
        let current_bytes = loaded
            .as_ref()
            .map_or(0, |l| l.topic.managed_ledger().current_ledger().1);
        let (offloaded, on_bookies) = offload::offload_bytes(&info.ledgers, current_bytes);
        out.offloaded_bytes += offloaded;
        out.bookie_bytes += on_bookies;
        let consumers = match &loaded {
            Some(l) => l.consumer_counts().await,
            None => Default::default(),
        };
        out.producers += loaded.as_ref().map_or(0, |l| l.topic.producer_count());
        for (k, v) in store
            .list(&keys::cursors_prefix(&t.path()))
            .await
            .map_err(|e| to_status(e.into()))?
        {
            let name = last_part(&k);
            let cursor: crate::cursor::CursorInfo = serde_json::from_slice(&v.value)
                .map_err(|e| to_status(BrokerError::Corruption(format!("cursor {name} of {t}: {e}"))))?;
            let counts: Vec<(u64, u64)> = info.ledgers.iter().map(|l| (l.id, entries_of(l))).collect();
            let backlog = crate::cursor::backlog_entries(&counts, cursor.mark_delete);
            out.subscriptions.push(pb::SubscriptionStats {
                consumers: consumers.get(&name).copied().unwrap_or(0),
                name,
                r#type: cursor.sub_type,
                backlog_entries: backlog,
            });
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_tenant(&self, r: Request<pb::TenantRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let t = r.into_inner().tenant;
        check_name("tenant", &t)?;
        self.allow(p, &[Action::Admin], Resource::Cluster).await?;
        self.create(&keys::tenant(&t), Bytes::from_static(b"{}"), format!("tenant {t}"))
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn delete_tenant(&self, r: Request<pb::TenantRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let t = r.into_inner().tenant;
        check_name("tenant", &t)?;
        self.allow(p, &[Action::Admin], Resource::Cluster).await?;
        if !self.list(&keys::namespaces_prefix(&t)).await?.is_empty() {
            return Err(to_status(BrokerError::NotEmpty(format!(
                "tenant {t} still has namespaces; delete them first"
            ))));
        }
        let existed = self
            .broker
            .store()
            .delete(&keys::tenant(&t), Condition::Any)
            .await
            .map_err(|e| to_status(e.into()))?;
        if !existed {
            return Err(to_status(BrokerError::NotFound(format!("tenant {t} does not exist"))));
        }
        self.forget(Resource::Tenant(t)).await;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_tenants(&self, r: Request<pb::Empty>) -> Result<Response<pb::NameList>, Status> {
        let p = who(&r);
        self.allow(p, &[Action::Admin], Resource::Cluster).await?;
        let names = self
            .list(&keys::tenants_prefix())
            .await?
            .iter()
            .map(|k| last_part(k))
            .collect();
        Ok(Response::new(pb::NameList { names }))
    }

    async fn create_namespace(&self, r: Request<pb::NamespaceRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let r = r.into_inner();
        let (t, n) = split_namespace(&r.namespace)?;
        self.allow(p, &[Action::Admin], Resource::Tenant(t.clone())).await?;
        if !self.exists(&keys::tenant(&t)).await? {
            return Err(to_status(BrokerError::NotFound(format!(
                "tenant {t} does not exist; create it with `strata admin tenants create {t}`"
            ))));
        }
        let count = if r.bundles == 0 {
            self.broker.cfg.default_bundles
        } else {
            r.bundles
        };
        let layout = crate::bundles::BundleLayout::even(count).map_err(to_status)?;
        if self.exists(&keys::namespace(&t, &n)).await? {
            return Err(to_status(BrokerError::AlreadyExists(format!("namespace {t}/{n}"))));
        }
        // The layout first: a namespace is never visible without its bundles.
        match crate::bundles::store_layout(&**self.broker.store(), &t, &n, &layout, 0).await {
            Ok(()) | Err(BrokerError::Metadata(_)) => {}
            Err(e) => return Err(to_status(e)),
        }
        self.create(
            &keys::namespace(&t, &n),
            Bytes::from_static(b"{}"),
            format!("namespace {t}/{n}"),
        )
        .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn delete_namespace(&self, r: Request<pb::NamespaceRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let (t, n) = split_namespace(&r.into_inner().namespace)?;
        self.allow(p, &[Action::Admin], Resource::Tenant(t.clone())).await?;
        if !self.list(&keys::topics_prefix(&t, &n)).await?.is_empty()
            || !self.list(&keys::partitioned_prefix(&t, &n)).await?.is_empty()
        {
            return Err(to_status(BrokerError::NotEmpty(format!(
                "namespace {t}/{n} still has topics; delete them first"
            ))));
        }
        let existed = self
            .broker
            .store()
            .delete(&keys::namespace(&t, &n), Condition::Any)
            .await
            .map_err(|e| to_status(e.into()))?;
        if !existed {
            return Err(to_status(BrokerError::NotFound(format!(
                "namespace {t}/{n} does not exist"
            ))));
        }
        let _ = self.broker.store().delete(&keys::bundles(&t, &n), Condition::Any).await;
        let _ = self
            .broker
            .store()
            .delete(&keys::namespace_policies(&t, &n), Condition::Any)
            .await;
        self.forget(Resource::Namespace(t, n)).await;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_namespaces(&self, r: Request<pb::TenantRequest>) -> Result<Response<pb::NameList>, Status> {
        let p = who(&r);
        let t = r.into_inner().tenant;
        check_name("tenant", &t)?;
        self.allow(p, &[Action::Admin], Resource::Tenant(t.clone())).await?;
        let names = self
            .list(&keys::namespaces_prefix(&t))
            .await?
            .iter()
            .map(|k| format!("{t}/{}", last_part(k)))
            .collect();
        Ok(Response::new(pb::NameList { names }))
    }

    async fn create_topic(&self, r: Request<pb::CreateTopicRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let r = r.into_inner();
        let t = TopicName::parse(&r.topic).map_err(bad_name)?;
        self.allow(p, &[Action::Admin], Resource::Topic(t.clone())).await?;
        if !self.exists(&keys::namespace(t.tenant(), t.namespace())).await? {
            return Err(to_status(BrokerError::NotFound(format!(
                "namespace {}/{} does not exist; create it with `strata admin namespaces create {}/{}`",
                t.tenant(),
                t.namespace(),
                t.tenant(),
                t.namespace()
            ))));
        }
        if self.exists(&keys::topic(&t.path())).await? || self.partitions(&t).await? > 0 {
            return Err(to_status(BrokerError::AlreadyExists(format!("topic {t}"))));
        }
        if let Some((base, _)) = t.partition_of() {
            return Err(status(
                pb::ErrorCode::InvalidTopicName,
                format!(
                    "topic names ending in -partition-N are the partitions of partitioned topics; \
                     create {base} with --partitions, or choose another name"
                ),
            ));
        }
        self.broker
            .check_topic_room(&t, u64::from(r.partitions.max(1)))
            .await
            .map_err(to_status)?;
        if r.partitions > 0 {
            if r.partitions > MAX_PARTITIONS {
                return Err(status(
                    pb::ErrorCode::InvalidArgument,
                    format!("partitions: at most {MAX_PARTITIONS}, not {}", r.partitions),
                ));
            }
            self.create(
                &keys::partitioned(&t.path()),
                Bytes::from(r.partitions.to_string()),
                format!("topic {t}"),
            )
            .await?;
            for i in 0..r.partitions {
                self.create_storage(&t.partition(i)).await?;
            }
        } else {
            self.create_storage(&t).await?;
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn delete_topic(&self, r: Request<pb::TopicRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let fwd = r.metadata().contains_key(FORWARDED);
        let r = r.into_inner();
        let t = TopicName::parse(&r.topic).map_err(bad_name)?;
        self.allow(p, &[Action::Admin], Resource::Topic(t.clone())).await?;
        let n = self.partitions(&t).await?;
        if n > 0 {
            for i in 0..n {
                match self.delete_one(&t.partition(i), fwd, r.force).await {
                    Ok(()) => {}
                    Err(s) if s.code() == tonic::Code::NotFound => {}
                    Err(s) => return Err(s),
                }
            }
            self.broker
                .store()
                .delete(&keys::partitioned(&t.path()), Condition::Any)
                .await
                .map_err(|e| to_status(e.into()))?;
        } else {
            self.delete_one(&t, fwd, r.force).await?;
        }
        if !fwd {
            // Policies go last: a half-done delete leaves them to a topic re-created
            // under the name, never a topic without the policies it was given.
            let _ = self
                .broker
                .store()
                .delete(&keys::topic_policies(&t.path()), Condition::Any)
                .await;
            self.forget(Resource::Topic(t)).await;
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn update_partitions(&self, r: Request<pb::CreateTopicRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let r = r.into_inner();
        let t = TopicName::parse(&r.topic).map_err(bad_name)?;
        self.allow(p, &[Action::Admin], Resource::Topic(t.clone())).await?;
        let key = keys::partitioned(&t.path());
        let store = self.broker.store();
        let Some(v) = store.get(&key).await.map_err(|e| to_status(e.into()))? else {
            return Err(if self.exists(&keys::topic(&t.path())).await? {
                status(
                    pb::ErrorCode::InvalidArgument,
                    format!("topic {t} is not partitioned; only a partitioned topic's partitions can grow"),
                )
            } else {
                to_status(BrokerError::TopicNotFound(t.to_string()))
            });
        };
        let now = self.partitions(&t).await?;
        if r.partitions < now {
            return Err(status(
                pb::ErrorCode::InvalidArgument,
                format!(
                    "partitions: topic {t} has {now} partitions and partitions can only grow, not shrink to {}",
                    r.partitions
                ),
            ));
        }
        if r.partitions > MAX_PARTITIONS {
            return Err(status(
                pb::ErrorCode::InvalidArgument,
                format!("partitions: at most {MAX_PARTITIONS}, not {}", r.partitions),
            ));
        }
        if r.partitions > now {
            self.broker
                .check_topic_room(&t, u64::from(r.partitions - now))
                .await
                .map_err(to_status)?;
        }
        // Storage first, then the count: a client never sees a partition without storage.
        for i in now..r.partitions {
            self.create_storage(&t.partition(i)).await?;
        }
        if r.partitions > now {
            match store
                .put(
                    &key,
                    Bytes::from(r.partitions.to_string()),
                    Condition::Version(v.version),
                )
                .await
            {
                Ok(_) => {}
                Err(MetaError::BadVersion(_)) => {
                    return Err(status(
                        pb::ErrorCode::StorageError,
                        format!("partitions of {t} changed concurrently; retry"),
                    ));
                }
                Err(e) => return Err(to_status(e.into())),
            }
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_topic_policies(&self, r: Request<pb::TopicRequest>) -> Result<Response<pb::TopicPolicies>, Status> {
        let p = who(&r);
        let t = TopicName::parse(&r.into_inner().topic).map_err(bad_name)?;
        self.allow(p, &[Action::Admin], Resource::Topic(t.clone())).await?;
        self.require_topic(&t).await?;
        let p = crate::policies::load(&**self.broker.store(), &t)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::TopicPolicies {
            retention_time_secs: p.retention_time_secs,
            retention_bytes: p.retention_bytes,
            offload_threshold_bytes: p.offload_threshold_bytes,
            offload_threshold_secs: p.offload_threshold_secs,
            offload_deletion_lag_secs: p.offload_deletion_lag_secs,
        }))
    }

    async fn set_topic_policies(&self, r: Request<pb::SetTopicPoliciesRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let r = r.into_inner();
        let t = TopicName::parse(&r.topic).map_err(bad_name)?;
        self.allow(p, &[Action::Admin], Resource::Topic(t.clone())).await?;
        let p = r.policies.unwrap_or_default();
        let policies = crate::policies::TopicPolicies {
            retention_time_secs: p.retention_time_secs,
            retention_bytes: p.retention_bytes,
            offload_threshold_bytes: p.offload_threshold_bytes,
            offload_threshold_secs: p.offload_threshold_secs,
            offload_deletion_lag_secs: p.offload_deletion_lag_secs,
        };
        policies.validate().map_err(to_status)?;
        self.require_topic(&t).await?;
        if let Some((parent, _)) = t.partition_of()
            && self.partitions(&parent).await? > 0
        {
            return Err(status(
                pb::ErrorCode::InvalidArgument,
                format!("{t} is a partition: set the policies of its partitioned topic"),
            ));
        }
        let key = keys::topic_policies(&t.path());
        let store = self.broker.store();
        let result = if policies.is_empty() {
            store.delete(&key, Condition::Any).await.map(|_| ())
        } else {
            let value = serde_json::to_vec(&policies).expect("policies serialise");
            store.put(&key, Bytes::from(value), Condition::Any).await.map(|_| ())
        };
        result.map_err(|e| to_status(e.into()))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_topics(&self, r: Request<pb::NamespaceRequest>) -> Result<Response<pb::NameList>, Status> {
        let p = who(&r);
        let (tn, n) = split_namespace(&r.into_inner().namespace)?;
        self.allow(
            p,
            &[Action::Produce, Action::Consume],
            Resource::Namespace(tn.clone(), n.clone()),
        )
        .await?;
        let mut names: Vec<String> = self
            .list(&keys::partitioned_prefix(&tn, &n))
            .await?
            .iter()
            .map(|k| format!("persistent://{tn}/{n}/{}", last_part(k)))
            .collect();
        for k in self.list(&keys::topics_prefix(&tn, &n)).await? {
            let name = format!("persistent://{tn}/{n}/{}", last_part(&k));
            // Partitions are listed through their partitioned topic.
            let is_partition = TopicName::parse(&name)
                .ok()
                .and_then(|t| t.partition_of())
                .is_some_and(|(parent, _)| names.contains(&parent.to_string()));
            if !is_partition {
                names.push(name);
            }
        }
        names.sort();
        Ok(Response::new(pb::NameList { names }))
    }

    async fn get_topic_stats(&self, r: Request<pb::TopicRequest>) -> Result<Response<pb::TopicStats>, Status> {
        let p = who(&r);
        let fwd = r.metadata().contains_key(FORWARDED);
        let t = TopicName::parse(&r.into_inner().topic).map_err(bad_name)?;
        self.allow(p, &[Action::Produce, Action::Consume], Resource::Topic(t.clone()))
            .await?;
        let n = self.partitions(&t).await?;
        let mut out = pb::TopicStats {
            topic: t.to_string(),
            partitions: n,
            ..Default::default()
        };
        if n > 0 {
            for i in 0..n {
                self.stats_one(&t.partition(i), &mut out, fwd).await?;
            }
        } else {
            self.stats_one(&t, &mut out, fwd).await?;
        }
        Ok(Response::new(out))
    }

    async fn unload_topic(&self, r: Request<pb::TopicRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let fwd = r.metadata().contains_key(FORWARDED);
        let t = TopicName::parse(&r.into_inner().topic).map_err(bad_name)?;
        self.allow(p, &[Action::Admin], Resource::Topic(t.clone())).await?;
        if let Some(mut owner) = self.owner_elsewhere(fwd, &t).await? {
            owner
                .unload_topic(forwarded(pb::TopicRequest {
                    topic: t.to_string(),
                    ..Default::default()
                }))
                .await?;
            return Ok(Response::new(pb::Empty {}));
        }
        self.broker.unload(&t).await;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_subscription(&self, r: Request<pb::SubscriptionRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let fwd = r.metadata().contains_key(FORWARDED);
        let r = r.into_inner();
        let t = TopicName::parse(&r.topic).map_err(bad_name)?;
        self.allow(p, &[Action::Consume], Resource::Topic(t.clone())).await?;
        SubscriptionName::new(&r.subscription).map_err(bad_name)?;
        crate::service::sub_type(r.r#type).map_err(|e| status(pb::ErrorCode::InvalidArgument, e.message))?;
        let n = if fwd { 0 } else { self.partitions(&t).await? };
        if n == 0 {
            return match self.create_subscription_one(&t, &r, fwd).await? {
                true => Ok(Response::new(pb::Empty {})),
                false => Err(to_status(BrokerError::AlreadyExists(format!(
                    "subscription {} on {t}",
                    r.subscription
                )))),
            };
        }
        // Every partition gets it; a retry after a partial failure completes the rest, and
        // only a subscription every partition already had is ALREADY_EXISTS.
        let mut created = false;
        for i in 0..n {
            let p = t.partition(i);
            let req = pb::SubscriptionRequest {
                topic: p.to_string(),
                ..r.clone()
            };
            created |= self.create_subscription_one(&p, &req, false).await?;
        }
        if !created {
            return Err(to_status(BrokerError::AlreadyExists(format!(
                "subscription {} on {t}",
                r.subscription
            ))));
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn reset_subscription(
        &self,
        r: Request<pb::ResetSubscriptionRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let fwd = r.metadata().contains_key(FORWARDED);
        let r = r.into_inner();
        let t = TopicName::parse(&r.topic).map_err(bad_name)?;
        self.allow(p, &[Action::Consume], Resource::Topic(t.clone())).await?;
        SubscriptionName::new(&r.subscription).map_err(bad_name)?;
        let Some(to) = r.to else {
            return Err(status(
                pb::ErrorCode::InvalidArgument,
                "reset: give timestamp_ms or message_id".into(),
            ));
        };
        let n = if fwd { 0 } else { self.partitions(&t).await? };
        if n == 0 {
            self.reset_subscription_one(&t, &r, fwd).await?;
            return Ok(Response::new(pb::Empty {}));
        }
        let targets: Vec<u32> = match &to {
            pb::reset_subscription_request::To::TimestampMs(_) => (0..n).collect(),
            pb::reset_subscription_request::To::MessageId(id) => {
                if id.partition < 0 || id.partition as u32 >= n {
                    return Err(status(
                        pb::ErrorCode::InvalidArgument,
                        format!(
                            "message_id.partition is {}, but {t} has partitions 0 to {}",
                            id.partition,
                            n - 1
                        ),
                    ));
                }
                vec![id.partition as u32]
            }
        };
        for i in targets {
            let p = t.partition(i);
            let req = pb::ResetSubscriptionRequest {
                topic: p.to_string(),
                ..r.clone()
            };
            self.reset_subscription_one(&p, &req, false).await?;
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn delete_subscription(&self, r: Request<pb::SubscriptionRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let fwd = r.metadata().contains_key(FORWARDED);
        let r = r.into_inner();
        let t = TopicName::parse(&r.topic).map_err(bad_name)?;
        self.allow(p, &[Action::Consume], Resource::Topic(t.clone())).await?;
        SubscriptionName::new(&r.subscription).map_err(bad_name)?;
        let n = if fwd { 0 } else { self.partitions(&t).await? };
        if n == 0 {
            return match self.delete_subscription_one(&t, &r, fwd).await? {
                true => Ok(Response::new(pb::Empty {})),
                false => Err(to_status(BrokerError::NotFound(format!(
                    "subscription {} on {t} does not exist",
                    r.subscription
                )))),
            };
        }
        // Every partition's; NOT_FOUND only if no partition had it.
        let mut existed = false;
        for i in 0..n {
            let p = t.partition(i);
            let req = pb::SubscriptionRequest {
                topic: p.to_string(),
                ..r.clone()
            };
            existed |= self.delete_subscription_one(&p, &req, false).await?;
        }
        if !existed {
            return Err(to_status(BrokerError::NotFound(format!(
                "subscription {} on {t} does not exist",
                r.subscription
            ))));
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_subscriptions(&self, r: Request<pb::TopicRequest>) -> Result<Response<pb::NameList>, Status> {
        let p = who(&r);
        let t = TopicName::parse(&r.into_inner().topic).map_err(bad_name)?;
        self.allow(p, &[Action::Produce, Action::Consume], Resource::Topic(t.clone()))
            .await?;
        let n = self.partitions(&t).await?;
        let topics: Vec<TopicName> = if n == 0 {
            vec![t]
        } else {
            (0..n).map(|i| t.partition(i)).collect()
        };
        let mut names = std::collections::BTreeSet::new();
        for t in topics {
            for k in self.list(&keys::cursors_prefix(&t.path())).await? {
                names.insert(last_part(&k));
            }
        }
        Ok(Response::new(pb::NameList {
            names: names.into_iter().collect(),
        }))
    }

    async fn get_cluster(&self, r: Request<pb::Empty>) -> Result<Response<pb::ClusterInfo>, Status> {
        let p = who(&r);
        self.allow(p, &[Action::Admin], Resource::Cluster).await?;
        let b = &self.broker;
        let leader = b.leader().await.map_err(to_status)?.unwrap_or_default();
        let owners = b.owners().await.map_err(to_status)?;
        let mut brokers: Vec<pb::BrokerStatus> = b
            .brokers()
            .await
            .map_err(to_status)?
            .into_iter()
            .map(|i| pb::BrokerStatus {
                leader: i.address == leader,
                bundles: owners
                    .iter()
                    .filter(|(_, o)| o.broker == i.address)
                    .map(|(b, _)| b.id())
                    .collect(),
                topics: i.load.topics,
                producers: i.load.producers,
                consumers: i.load.consumers,
                msg_rate_in: i.load.msg_rate_in,
                msg_rate_out: i.load.msg_rate_out,
                version: i.version,
                started_ms: i.started_ms,
                address: i.address,
                url: i.url,
            })
            .collect();
        brokers.sort_by(|a, b| a.address.cmp(&b.address));
        let mut bookies = Vec::new();
        for (k, v) in b
            .store()
            .list(&keys::bookies_prefix())
            .await
            .map_err(|e| to_status(e.into()))?
        {
            let i: strata_bookie::registration::BookieInfo = serde_json::from_slice(&v.value)
                .map_err(|e| to_status(BrokerError::Corruption(format!("bookie registration {k}: {e}"))))?;
            bookies.push(pb::BookieStatus {
                address: i.address,
                read_only: i.read_only,
                free_bytes: i.free_bytes,
                total_bytes: i.total_bytes,
                version: i.version,
                ..Default::default()
            });
        }
        Ok(Response::new(pb::ClusterInfo {
            brokers,
            bookies,
            leader,
        }))
    }

    async fn list_bookies(&self, r: Request<pb::Empty>) -> Result<Response<pb::BookieList>, Status> {
        let p = who(&r);
        self.allow(p, &[Action::Admin], Resource::Cluster).await?;
        let list = autorecovery::admin::list_bookies(self.broker.store().as_ref())
            .await
            .map_err(bookie_status)?;
        let bookies = list
            .into_iter()
            .map(|b| {
                let state = b.state().to_string();
                let info = b.info.clone().unwrap_or_default();
                pb::BookieStatus {
                    state,
                    ledgers: b.ledgers,
                    lost_since_ms: if b.info.is_none() {
                        b.lost_since_ms.unwrap_or(0)
                    } else {
                        0
                    },
                    registered: b.info.is_some(),
                    read_only: info.read_only,
                    read_only_reason: info.read_only_reason,
                    free_bytes: info.free_bytes,
                    total_bytes: info.total_bytes,
                    version: info.version,
                    address: b.address,
                }
            })
            .collect();
        Ok(Response::new(pb::BookieList { bookies }))
    }

    async fn decommission_bookie(
        &self,
        r: Request<pb::DecommissionBookieRequest>,
    ) -> Result<Response<pb::DecommissionStatus>, Status> {
        let p = who(&r);
        self.allow(p, &[Action::Admin], Resource::Cluster).await?;
        let r = r.into_inner();
        let address = check_bookie_address(&r.address)?;
        let store = self.broker.store().as_ref();
        if r.cancel {
            autorecovery::admin::cancel_decommission(store, address)
                .await
                .map_err(bookie_status)?;
        } else {
            autorecovery::admin::start_decommission(store, address, self.broker.cfg.ledger.ensemble)
                .await
                .map_err(bookie_status)?;
        }
        self.decommission_status(address).await.map(Response::new)
    }

    async fn get_decommission_status(
        &self,
        r: Request<pb::BookieRequest>,
    ) -> Result<Response<pb::DecommissionStatus>, Status> {
        let p = who(&r);
        self.allow(p, &[Action::Admin], Resource::Cluster).await?;
        let r = r.into_inner();
        let address = check_bookie_address(&r.address)?;
        self.decommission_status(address).await.map(Response::new)
    }

    async fn offload_topic(&self, r: Request<pb::TopicRequest>) -> Result<Response<pb::OffloadStatus>, Status> {
        self.offload_rpc(r, true).await
    }

    async fn get_offload_status(&self, r: Request<pb::TopicRequest>) -> Result<Response<pb::OffloadStatus>, Status> {
        self.offload_rpc(r, false).await
    }

    async fn get_namespace_policies(
        &self,
        r: Request<pb::NamespaceRequest>,
    ) -> Result<Response<pb::NamespacePolicies>, Status> {
        self.get_namespace_policies_rpc(r).await
    }

    async fn set_namespace_policies(
        &self,
        r: Request<pb::SetNamespacePoliciesRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.set_namespace_policies_rpc(r).await
    }

    async fn grant_permission(&self, r: Request<pb::PermissionRequest>) -> Result<Response<pb::Empty>, Status> {
        self.grant_rpc(r).await
    }

    async fn revoke_permission(&self, r: Request<pb::PermissionRequest>) -> Result<Response<pb::Empty>, Status> {
        self.revoke_rpc(r).await
    }

    async fn list_permissions(
        &self,
        r: Request<pb::PermissionRequest>,
    ) -> Result<Response<pb::PermissionList>, Status> {
        self.list_permissions_rpc(r).await
    }

    async fn list_under_replicated_ledgers(
        &self,
        r: Request<pb::Empty>,
    ) -> Result<Response<pb::UnderReplicatedLedgerList>, Status> {
        let p = who(&r);
        self.allow(p, &[Action::Admin], Resource::Cluster).await?;
        let ledgers = autorecovery::admin::under_replicated(self.broker.store().as_ref())
            .await
            .map_err(bookie_status)?
            .into_iter()
            .map(|u| pb::UnderReplicatedLedger {
                ledger_id: u.ledger,
                bookies: u.mark.bookies,
                since_ms: u.mark.since_ms,
                worker: u.worker.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::UnderReplicatedLedgerList { ledgers }))
    }

    async fn list_bundles(&self, r: Request<pb::NamespaceRequest>) -> Result<Response<pb::BundleList>, Status> {
        let p = who(&r);
        let (t, n) = split_namespace(&r.into_inner().namespace)?;
        self.allow(p, &[Action::Admin], Resource::Namespace(t.clone(), n.clone()))
            .await?;
        if !self.exists(&keys::namespace(&t, &n)).await? {
            return Err(to_status(BrokerError::NotFound(format!(
                "namespace {t}/{n} does not exist"
            ))));
        }
        let layout = self.broker.layout(&t, &n).await.map_err(to_status)?;
        let owners = self.broker.owners().await.map_err(to_status)?;
        let bundles = layout
            .ranges()
            .map(|range| pb::BundleInfo {
                range: range.name(),
                owner: owners
                    .iter()
                    .find(|(b, _)| b.tenant == t && b.namespace == n && b.range == range)
                    .map(|(_, o)| o.broker.clone())
                    .unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::BundleList { bundles }))
    }

    async fn unload_bundle(&self, r: Request<pb::BundleRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        self.allow(p, &[Action::Admin], Resource::Cluster).await?;
        let bundle = self.bundle(r.get_ref()).await?;
        match self.broker.owner_of(&bundle).await.map_err(to_status)? {
            Some(o) if o.broker != self.broker.address() => {
                crate::cluster::unload_remote(&o.url, &bundle)
                    .await
                    .map_err(to_status)?;
            }
            _ => {
                self.broker.release_bundle(&bundle).await.map_err(to_status)?;
            }
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn split_bundle(&self, r: Request<pb::BundleRequest>) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        self.allow(p, &[Action::Admin], Resource::Cluster).await?;
        let bundle = self.bundle(r.get_ref()).await?;
        match self.broker.owner_of(&bundle).await.map_err(to_status)? {
            Some(o) if o.broker != self.broker.address() => {
                crate::cluster::split_remote(&o.url, &bundle).await.map_err(to_status)?;
            }
            _ => self.broker.split_bundle_locally(&bundle).await.map_err(to_status)?,
        }
        Ok(Response::new(pb::Empty {}))
    }
}
