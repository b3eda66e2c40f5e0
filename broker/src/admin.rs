//! The Admin service: tenants, namespaces, topics (plain and partitioned) and
//! subscriptions, kept in the metadata store.
//!
//! Deletions refuse what still has children (NOT_EMPTY) instead of cascading, except a
//! topic, whose deletion removes its ledgers and subscriptions.

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::service::{code_of, status};
use bytes::Bytes;
use std::sync::Arc;
use strata_common::{LedgerId, SubscriptionName, TopicName, topic::NameError};
use strata_meta::{Condition, MetaError, keys};
use strata_proto::v1 as pb;
use tonic::{Request, Response, Status};

fn to_status(e: BrokerError) -> Status {
    status(code_of(&e), e.to_string())
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

/// gRPC metadata marking an admin request one broker forwarded to a topic's owner.
const FORWARDED: &str = "strata-forwarded";

fn forwarded<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    r
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

    /// The admin client of the broker owning `t`'s bundle, if that is another broker
    /// (and this request was not already forwarded to us).
    async fn owner_elsewhere(
        &self,
        was_forwarded: bool,
        t: &TopicName,
    ) -> Result<Option<pb::admin_client::AdminClient<tonic::transport::Channel>>, Status> {
        if was_forwarded {
            return Ok(None);
        }
        let bundle = self.broker.bundle_of(t).await.map_err(to_status)?;
        match self.broker.owner_of(&bundle).await.map_err(to_status)? {
            Some(o) if o.broker != self.broker.address() => {
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
    async fn delete_one(&self, t: &TopicName, was_forwarded: bool) -> Result<(), Status> {
        if let Some(mut owner) = self.owner_elsewhere(was_forwarded, t).await? {
            owner
                .delete_topic(forwarded(pb::TopicRequest { topic: t.to_string() }))
                .await?;
            return Ok(());
        }
        if let Some(loaded) = self.broker.loaded(t).await
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
        for l in info.ledgers {
            if let Ok(id) = LedgerId::new(l.id)
                && let Err(e) = self.broker.ledger_client().delete(id).await
            {
                tracing::warn!(topic = %t, ledger = l.id, error = %e, "ledger of a deleted topic not deleted");
            }
        }
        for (k, _) in store
            .list(&keys::cursors_prefix(&t.path()))
            .await
            .map_err(|e| to_status(e.into()))?
        {
            let _ = store.delete(&k, Condition::Any).await;
        }
        Ok(())
    }

    async fn stats_one(&self, t: &TopicName, out: &mut pb::TopicStats, was_forwarded: bool) -> Result<(), Status> {
        if let Some(mut owner) = self.owner_elsewhere(was_forwarded, t).await? {
            let s = owner
                .get_topic_stats(forwarded(pb::TopicRequest { topic: t.to_string() }))
                .await?
                .into_inner();
            out.entries += s.entries;
            out.storage_bytes += s.storage_bytes;
            out.ledgers += s.ledgers;
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
        let consumers = match &loaded {
            Some(l) => l.consumer_counts().await,
            None => Default::default(),
        };
        for (k, v) in store
            .list(&keys::cursors_prefix(&t.path()))
            .await
            .map_err(|e| to_status(e.into()))?
        {
            let name = last_part(&k);
            let cursor: crate::cursor::CursorInfo = serde_json::from_slice(&v.value)
                .map_err(|e| to_status(BrokerError::Corruption(format!("cursor {name} of {t}: {e}"))))?;
            let backlog = match cursor.mark_delete {
                None => info.ledgers.iter().map(entries_of).sum(),
                Some((ml, me)) => info
                    .ledgers
                    .iter()
                    .map(|l| {
                        let n = entries_of(l);
                        if l.id < ml {
                            0
                        } else if l.id == ml {
                            n.saturating_sub(me + 1)
                        } else {
                            n
                        }
                    })
                    .sum(),
            };
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
        let t = r.into_inner().tenant;
        check_name("tenant", &t)?;
        self.create(&keys::tenant(&t), Bytes::from_static(b"{}"), format!("tenant {t}"))
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn delete_tenant(&self, r: Request<pb::TenantRequest>) -> Result<Response<pb::Empty>, Status> {
        let t = r.into_inner().tenant;
        check_name("tenant", &t)?;
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
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_tenants(&self, _: Request<pb::Empty>) -> Result<Response<pb::NameList>, Status> {
        let names = self
            .list(&keys::tenants_prefix())
            .await?
            .iter()
            .map(|k| last_part(k))
            .collect();
        Ok(Response::new(pb::NameList { names }))
    }

    async fn create_namespace(&self, r: Request<pb::NamespaceRequest>) -> Result<Response<pb::Empty>, Status> {
        let r = r.into_inner();
        let (t, n) = split_namespace(&r.namespace)?;
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
        let (t, n) = split_namespace(&r.into_inner().namespace)?;
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
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_namespaces(&self, r: Request<pb::TenantRequest>) -> Result<Response<pb::NameList>, Status> {
        let t = r.into_inner().tenant;
        check_name("tenant", &t)?;
        let names = self
            .list(&keys::namespaces_prefix(&t))
            .await?
            .iter()
            .map(|k| format!("{t}/{}", last_part(k)))
            .collect();
        Ok(Response::new(pb::NameList { names }))
    }

    async fn create_topic(&self, r: Request<pb::CreateTopicRequest>) -> Result<Response<pb::Empty>, Status> {
        let r = r.into_inner();
        let t = TopicName::parse(&r.topic).map_err(bad_name)?;
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
        if r.partitions > 0 {
            if r.partitions > 10_000 {
                return Err(status(
                    pb::ErrorCode::InvalidArgument,
                    "at most 10,000 partitions".into(),
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
        let fwd = r.metadata().contains_key(FORWARDED);
        let t = TopicName::parse(&r.into_inner().topic).map_err(bad_name)?;
        let n = self.partitions(&t).await?;
        if n > 0 {
            for i in 0..n {
                match self.delete_one(&t.partition(i), fwd).await {
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
            self.delete_one(&t, fwd).await?;
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_topics(&self, r: Request<pb::NamespaceRequest>) -> Result<Response<pb::NameList>, Status> {
        let (tn, n) = split_namespace(&r.into_inner().namespace)?;
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
        let fwd = r.metadata().contains_key(FORWARDED);
        let t = TopicName::parse(&r.into_inner().topic).map_err(bad_name)?;
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
        let fwd = r.metadata().contains_key(FORWARDED);
        let t = TopicName::parse(&r.into_inner().topic).map_err(bad_name)?;
        if let Some(mut owner) = self.owner_elsewhere(fwd, &t).await? {
            owner
                .unload_topic(forwarded(pb::TopicRequest { topic: t.to_string() }))
                .await?;
            return Ok(Response::new(pb::Empty {}));
        }
        self.broker.unload(&t).await;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_subscription(&self, r: Request<pb::SubscriptionRequest>) -> Result<Response<pb::Empty>, Status> {
        let fwd = r.metadata().contains_key(FORWARDED);
        let r = r.into_inner();
        let t = TopicName::parse(&r.topic).map_err(bad_name)?;
        if let Some(mut owner) = self.owner_elsewhere(fwd, &t).await? {
            owner.create_subscription(forwarded(r)).await?;
            return Ok(Response::new(pb::Empty {}));
        }
        let name = SubscriptionName::new(&r.subscription).map_err(bad_name)?;
        if self.exists(&keys::cursor(&t.path(), name.as_str())).await? {
            return Err(to_status(BrokerError::AlreadyExists(format!(
                "subscription {name} on {t}"
            ))));
        }
        let loaded = self.broker.topic(&t, false).await.map_err(to_status)?;
        let initial = if r.initial_position == pb::InitialPosition::Earliest as i32 {
            crate::subscription::InitialPosition::Earliest
        } else {
            crate::subscription::InitialPosition::Latest
        };
        // Shared until a consumer says otherwise is not possible (types are fixed), so an
        // admin-created subscription is Exclusive, like Pulsar's.
        loaded
            .subscription(&name, crate::dispatch::SubType::Exclusive, initial)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn delete_subscription(&self, r: Request<pb::SubscriptionRequest>) -> Result<Response<pb::Empty>, Status> {
        let fwd = r.metadata().contains_key(FORWARDED);
        let r = r.into_inner();
        let t = TopicName::parse(&r.topic).map_err(bad_name)?;
        if let Some(mut owner) = self.owner_elsewhere(fwd, &t).await? {
            owner.delete_subscription(forwarded(r)).await?;
            return Ok(Response::new(pb::Empty {}));
        }
        let name = SubscriptionName::new(&r.subscription).map_err(bad_name)?;
        if let Some(loaded) = self.broker.loaded(&t).await {
            loaded.remove_subscription(&name).await.map_err(to_status)?;
        }
        let existed = self
            .broker
            .store()
            .delete(&keys::cursor(&t.path(), name.as_str()), Condition::Any)
            .await
            .map_err(|e| to_status(e.into()))?;
        if !existed {
            return Err(to_status(BrokerError::NotFound(format!(
                "subscription {name} on {t} does not exist"
            ))));
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_subscriptions(&self, r: Request<pb::TopicRequest>) -> Result<Response<pb::NameList>, Status> {
        let t = TopicName::parse(&r.into_inner().topic).map_err(bad_name)?;
        let names = self
            .list(&keys::cursors_prefix(&t.path()))
            .await?
            .iter()
            .map(|k| last_part(k))
            .collect();
        Ok(Response::new(pb::NameList { names }))
    }

    async fn get_cluster(&self, _: Request<pb::Empty>) -> Result<Response<pb::ClusterInfo>, Status> {
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
            });
        }
        Ok(Response::new(pb::ClusterInfo {
            brokers,
            bookies,
            leader,
        }))
    }

    async fn list_bundles(&self, r: Request<pb::NamespaceRequest>) -> Result<Response<pb::BundleList>, Status> {
        let (t, n) = split_namespace(&r.into_inner().namespace)?;
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
