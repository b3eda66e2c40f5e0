//! The admin client: tenants, namespaces, topics and subscriptions.

use crate::Client;
use crate::consumer::{InitialPosition, SubscriptionType};
use crate::error::{Error, Result};
use crate::message::MessageId;
use strata_proto::v1 as pb;

/// A topic's statistics (for a partitioned topic, summed over its partitions).
///
/// ```no_run
/// # async fn example(admin: strata_client::Admin) -> strata_client::Result<()> {
/// let stats = admin.topic_stats("public/default/orders").await?;
/// println!("{} entries, {} bytes in {} ledgers", stats.entries, stats.storage_bytes, stats.ledgers);
/// for sub in &stats.subscriptions {
///     println!("{} ({}): {} entries behind, {} consumers", sub.name, sub.r#type, sub.backlog_entries, sub.consumers);
/// }
/// # Ok(()) }
/// ```
pub type TopicStats = pb::TopicStats;
/// A subscription's statistics, part of [`TopicStats`] (see its example).
pub type SubscriptionStats = pb::SubscriptionStats;
/// A topic's own policies; an unset field takes the broker's default.
///
/// ```no_run
/// # async fn example(admin: strata_client::Admin) -> strata_client::Result<()> {
/// let policies = strata_client::TopicPolicies {
///     retention_time_secs: Some(7 * 24 * 3600), // keep acknowledged messages a week
///     retention_bytes: Some(-1),                // of any size
///     offload_threshold_bytes: Some(1 << 30),   // offload beyond 1 GiB on bookies
///     ..Default::default()                      // the rest: the broker's defaults
/// };
/// admin.set_topic_policies("public/default/orders", policies).await?;
/// # Ok(()) }
/// ```
pub type TopicPolicies = pb::TopicPolicies;
/// A namespace's own limits and rates; an unset field takes the brokers' setting.
///
/// ```no_run
/// # async fn example(admin: strata_client::Admin) -> strata_client::Result<()> {
/// let policies = strata_client::NamespacePolicies {
///     publish_rate_per_topic_msgs: Some(10_000), // each topic: 10,000 msgs/s, producers together
///     max_topics: Some(500),                      // at most 500 topics (partitions count one each)
///     ..Default::default()                        // the rest: the brokers' settings
/// };
/// admin.set_namespace_policies("acme/payments", policies).await?;
/// # Ok(()) }
/// ```
pub type NamespacePolicies = pb::NamespacePolicies;
/// A topic's tiered offload: see [`Admin::offload_status`].
pub type OffloadStatus = pb::OffloadStatus;
/// A bookie as [`Admin::bookies`] lists it.
pub type BookieStatus = pb::BookieStatus;
/// Progress of a bookie's decommission.
pub type DecommissionStatus = pb::DecommissionStatus;
/// A ledger waiting for re-replication.
pub type UnderReplicatedLedger = pb::UnderReplicatedLedger;

/// Where a subscription created by [`Admin::create_subscription_with`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStart {
    /// Every message the topic still has.
    Earliest,
    /// Only messages published from now on.
    Latest,
    /// The first message stored at or after this time (milliseconds since the Unix epoch).
    Time(u64),
}

/// Where [`Admin::reset_subscription`] moves a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The first message stored at or after this time (milliseconds since the Unix epoch).
    Time(u64),
    /// The first message of this id's entry (its partition, for a partitioned topic).
    Message(MessageId),
}

/// The cluster: brokers with their load and bundles, bookies, the leader.
///
/// ```no_run
/// # async fn example(admin: strata_client::Admin) -> strata_client::Result<()> {
/// let cluster = admin.cluster().await?;
/// println!("leader: {}", cluster.leader);
/// for b in &cluster.brokers {
///     println!("{} owns {} bundles", b.url, b.bundles.len());
/// }
/// for bundle in admin.list_bundles("public/default").await? {
///     println!("{} owned by {}", bundle.range, bundle.owner);
/// }
/// # Ok(()) }
/// ```
pub type ClusterInfo = pb::ClusterInfo;
/// A namespace bundle (hash range) and its owner; see [`ClusterInfo`]'s example.
pub type BundleInfo = pb::BundleInfo;

/// What a role may be granted on a [`Resource`]: `Produce`, `Consume` or `Admin` (which
/// includes both).
pub type AuthAction = pb::AuthAction;
/// A role and what it was granted, as [`Admin::permissions`] lists them.
pub type Permission = pb::Permission;

/// What a grant is on; a grant covers everything below its resource.
///
/// ```no_run
/// # async fn example(admin: strata_client::Admin) -> strata_client::Result<()> {
/// use strata_client::{AuthAction, Resource};
/// // The `orders-app` role may publish to every topic of acme/payments ...
/// let ns = Resource::Namespace("acme/payments".into());
/// admin.grant_permission(&ns, "orders-app", &[AuthAction::Produce]).await?;
/// // ... and `billing` may read one topic.
/// let topic = Resource::Topic("acme/payments/transfers".into());
/// admin.grant_permission(&topic, "billing", &[AuthAction::Consume]).await?;
/// for p in admin.permissions(&ns).await? {
///     println!("{}: {:?}", p.role, p.actions());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A tenant: its namespaces and topics.
    Tenant(String),
    /// `tenant/namespace`: its topics.
    Namespace(String),
    /// A topic (a partitioned topic: its partitions).
    Topic(String),
}

impl Resource {
    fn request(&self, role: &str, actions: &[AuthAction]) -> pb::PermissionRequest {
        let mut r = pb::PermissionRequest {
            role: role.to_string(),
            actions: actions.iter().map(|&a| a as i32).collect(),
            ..Default::default()
        };
        match self {
            Resource::Tenant(t) => r.tenant = t.clone(),
            Resource::Namespace(n) => r.namespace = n.clone(),
            Resource::Topic(t) => r.topic = t.clone(),
        }
        r
    }
}

/// Administers tenants, namespaces, topics and subscriptions. Errors carry the broker's
/// [`ErrorCode`](crate::ErrorCode): `ALREADY_EXISTS`, `NOT_FOUND`, `NOT_EMPTY`, ….
///
/// ```no_run
/// # async fn example(client: strata_client::Client) -> strata_client::Result<()> {
/// let admin = client.admin();
/// admin.create_tenant("acme").await?;
/// admin.create_namespace("acme/payments").await?;
/// admin.create_topic("acme/payments/transfers", 4).await?;
/// let stats = admin.topic_stats("acme/payments/transfers").await?;
/// println!("{} entries in {} partitions", stats.entries, stats.partitions);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub(crate) fn new(client: Client) -> Self {
        Self { client }
    }

    /// Calls a broker of the service URL (the next one if one cannot be reached).
    async fn call<R, T, F, Fut>(&self, request: R, f: F) -> Result<T>
    where
        R: Clone,
        F: Fn(pb::admin_client::AdminClient<crate::connection::Chan>, R) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let conns = &self.client.conns;
        let call = conns.on_service(|ch| {
            let fut = f(pb::admin_client::AdminClient::new(ch), request.clone());
            async move { fut.await.map(tonic::Response::into_inner) }
        });
        match tokio::time::timeout(conns.operation_timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout("admin call".into())),
        }
    }

    /// Creates a tenant; ALREADY_EXISTS if it exists.
    pub async fn create_tenant(&self, tenant: &str) -> Result<()> {
        let tenant = tenant.to_string();
        self.call(pb::TenantRequest { tenant }, |mut c, r| async move {
            c.create_tenant(r).await
        })
        .await
        .map(drop)
    }

    /// Fails with NOT_EMPTY while the tenant has namespaces.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<()> {
        let tenant = tenant.to_string();
        self.call(pb::TenantRequest { tenant }, |mut c, r| async move {
            c.delete_tenant(r).await
        })
        .await
        .map(drop)
    }

    /// Every tenant.
    pub async fn list_tenants(&self) -> Result<Vec<String>> {
        self.call(pb::Empty {}, |mut c, r| async move { c.list_tenants(r).await })
            .await
            .map(|l| l.names)
    }

    /// Creates `tenant/namespace`; the tenant must exist.
    pub async fn create_namespace(&self, namespace: &str) -> Result<()> {
        let namespace = namespace.to_string();
        self.call(pb::NamespaceRequest { namespace, bundles: 0 }, |mut c, r| async move {
            c.create_namespace(r).await
        })
        .await
        .map(drop)
    }

    /// Creates `tenant/namespace` with `bundles` bundles (hash ranges, the unit of
    /// ownership spread over brokers); more bundles spread a namespace's topics wider.
    pub async fn create_namespace_with_bundles(&self, namespace: &str, bundles: u32) -> Result<()> {
        let namespace = namespace.to_string();
        self.call(pb::NamespaceRequest { namespace, bundles }, |mut c, r| async move {
            c.create_namespace(r).await
        })
        .await
        .map(drop)
    }

    /// Brokers (address, load, owned bundles, leader), bookies.
    pub async fn cluster(&self) -> Result<ClusterInfo> {
        self.call(pb::Empty {}, |mut c, r| async move { c.get_cluster(r).await })
            .await
    }

    /// Bookies with their state (`writable`, `read-only`, `draining`, `decommissioned`,
    /// `lost`) and how many ledgers name each, including lost ones ledgers still name.
    pub async fn bookies(&self) -> Result<Vec<BookieStatus>> {
        self.call(pb::Empty {}, |mut c, r| async move { c.list_bookies(r).await })
            .await
            .map(|l| l.bookies)
    }

    /// Starts decommissioning a bookie (or answers the one under way): it stops taking
    /// writes, its ledgers are re-replicated, and once no ledger names it (state `done`)
    /// it unregisters and can be removed. Follow it with [`Admin::decommission_status`].
    pub async fn decommission_bookie(&self, address: &str) -> Result<DecommissionStatus> {
        let r = pb::DecommissionBookieRequest {
            address: address.to_string(),
            cancel: false,
        };
        self.call(r, |mut c, r| async move { c.decommission_bookie(r).await })
            .await
    }

    /// Stops a decommission still draining; the bookie takes writes again.
    pub async fn cancel_decommission(&self, address: &str) -> Result<DecommissionStatus> {
        let r = pb::DecommissionBookieRequest {
            address: address.to_string(),
            cancel: true,
        };
        self.call(r, |mut c, r| async move { c.decommission_bookie(r).await })
            .await
    }

    /// A decommission's progress (state `none` if there is none).
    pub async fn decommission_status(&self, address: &str) -> Result<DecommissionStatus> {
        let r = pb::BookieRequest {
            address: address.to_string(),
        };
        self.call(r, |mut c, r| async move { c.get_decommission_status(r).await })
            .await
    }

    /// Ledgers naming a lost or decommissioning bookie, awaiting re-replication.
    pub async fn under_replicated_ledgers(&self) -> Result<Vec<UnderReplicatedLedger>> {
        self.call(pb::Empty {}, |mut c, r| async move {
            c.list_under_replicated_ledgers(r).await
        })
        .await
        .map(|l| l.ledgers)
    }

    /// A namespace's bundles and who owns each.
    pub async fn list_bundles(&self, namespace: &str) -> Result<Vec<BundleInfo>> {
        let namespace = namespace.to_string();
        self.call(pb::NamespaceRequest { namespace, bundles: 0 }, |mut c, r| async move {
            c.list_bundles(r).await
        })
        .await
        .map(|l| l.bundles)
    }

    /// Unloads a bundle from its owner; its topics move to the least loaded broker when
    /// their clients look them up again (they do so by themselves).
    pub async fn unload_bundle(&self, namespace: &str, bundle: &str) -> Result<()> {
        let r = pb::BundleRequest {
            namespace: namespace.to_string(),
            bundle: bundle.to_string(),
        };
        self.call(r, |mut c, r| async move { c.unload_bundle(r).await })
            .await
            .map(drop)
    }

    /// Splits a bundle into two halves (its topics are unloaded and reassigned).
    pub async fn split_bundle(&self, namespace: &str, bundle: &str) -> Result<()> {
        let r = pb::BundleRequest {
            namespace: namespace.to_string(),
            bundle: bundle.to_string(),
        };
        self.call(r, |mut c, r| async move { c.split_bundle(r).await })
            .await
            .map(drop)
    }

    /// Fails with NOT_EMPTY while the namespace has topics.
    pub async fn delete_namespace(&self, namespace: &str) -> Result<()> {
        let namespace = namespace.to_string();
        self.call(pb::NamespaceRequest { namespace, bundles: 0 }, |mut c, r| async move {
            c.delete_namespace(r).await
        })
        .await
        .map(drop)
    }

    /// The namespaces of a tenant, as `tenant/namespace`.
    pub async fn list_namespaces(&self, tenant: &str) -> Result<Vec<String>> {
        let tenant = tenant.to_string();
        self.call(pb::TenantRequest { tenant }, |mut c, r| async move {
            c.list_namespaces(r).await
        })
        .await
        .map(|l| l.names)
    }

    /// Creates a topic; with `partitions > 0`, a partitioned topic.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let topic = topic.to_string();
        self.call(pb::CreateTopicRequest { topic, partitions }, |mut c, r| async move {
            c.create_topic(r).await
        })
        .await
        .map(drop)
    }

    /// Deletes a topic (every partition), its data, subscriptions and policies;
    /// NOT_EMPTY while consumers are connected.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        self.delete_topic_with(topic, false).await
    }

    /// [`Admin::delete_topic`]; with `force`, also while clients are connected (they are
    /// disconnected).
    pub async fn delete_topic_with(&self, topic: &str, force: bool) -> Result<()> {
        let topic = topic.to_string();
        self.call(pb::TopicRequest { topic, force }, |mut c, r| async move {
            c.delete_topic(r).await
        })
        .await
        .map(drop)
    }

    /// The topics of a namespace (`tenant/namespace`); a partitioned topic is listed once,
    /// by its own name.
    pub async fn list_topics(&self, namespace: &str) -> Result<Vec<String>> {
        let namespace = namespace.to_string();
        self.call(pb::NamespaceRequest { namespace, bundles: 0 }, |mut c, r| async move {
            c.list_topics(r).await
        })
        .await
        .map(|l| l.names)
    }

    /// Entries, storage, ledgers and each subscription's backlog and consumers (summed over
    /// the partitions of a partitioned topic).
    pub async fn topic_stats(&self, topic: &str) -> Result<TopicStats> {
        let topic = topic.to_string();
        self.call(pb::TopicRequest { topic, force: false }, |mut c, r| async move {
            c.get_topic_stats(r).await
        })
        .await
    }

    /// Closes the topic on its owner; its clients reconnect and it loads again there.
    pub async fn unload_topic(&self, topic: &str) -> Result<()> {
        let topic = topic.to_string();
        self.call(pb::TopicRequest { topic, force: false }, |mut c, r| async move {
            c.unload_topic(r).await
        })
        .await
        .map(drop)
    }

    /// Creates a durable subscription starting at `initial`, so messages published from
    /// now on are kept for it before any consumer connects.
    pub async fn create_subscription(&self, topic: &str, subscription: &str, initial: InitialPosition) -> Result<()> {
        let r = pb::SubscriptionRequest {
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            initial_position: match initial {
                InitialPosition::Latest => pb::InitialPosition::Latest,
                InitialPosition::Earliest => pb::InitialPosition::Earliest,
            } as i32,
            ..Default::default()
        };
        self.call(r, |mut c, r| async move { c.create_subscription(r).await })
            .await
            .map(drop)
    }

    /// Creates a durable subscription of `sub_type` starting at `start` (on every
    /// partition of a partitioned topic; a retry completes a partial creation). Consumers
    /// must then use the same type. ALREADY_EXISTS if it existed everywhere.
    pub async fn create_subscription_with(
        &self,
        topic: &str,
        subscription: &str,
        sub_type: SubscriptionType,
        start: SubscriptionStart,
    ) -> Result<()> {
        let r = pb::SubscriptionRequest {
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            initial_position: match start {
                SubscriptionStart::Earliest => pb::InitialPosition::Earliest,
                _ => pb::InitialPosition::Latest,
            } as i32,
            start_time_ms: match start {
                SubscriptionStart::Time(ms) => Some(ms),
                _ => None,
            },
            r#type: sub_type.to_wire() as i32,
        };
        self.call(r, |mut c, r| async move { c.create_subscription(r).await })
            .await
            .map(drop)
    }

    /// Moves a subscription's cursor; its connected consumers are disconnected and
    /// reconnect at the new position. A message id must name a message the topic has (or
    /// had: an id in deleted ledgers moves to the first message still kept).
    pub async fn reset_subscription(&self, topic: &str, subscription: &str, to: ResetTo) -> Result<()> {
        let r = pb::ResetSubscriptionRequest {
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            to: Some(match to {
                ResetTo::Time(ms) => pb::reset_subscription_request::To::TimestampMs(ms),
                ResetTo::Message(id) => pb::reset_subscription_request::To::MessageId(id.to_wire()),
            }),
        };
        self.call(r, |mut c, r| async move { c.reset_subscription(r).await })
            .await
            .map(drop)
    }

    /// Grows a partitioned topic to `partitions`; fewer than it has is INVALID_ARGUMENT.
    pub async fn update_partitions(&self, topic: &str, partitions: u32) -> Result<()> {
        let topic = topic.to_string();
        self.call(pb::CreateTopicRequest { topic, partitions }, |mut c, r| async move {
            c.update_partitions(r).await
        })
        .await
        .map(drop)
    }

    /// Offloads every closed ledger of the topic (each partition's) to object storage now,
    /// whatever its thresholds; returns at once with the status (follow it with
    /// [`Self::offload_status`]). The request is recorded, so a broker restart finishes it.
    pub async fn offload_topic(&self, topic: &str) -> Result<OffloadStatus> {
        let r = pb::TopicRequest {
            topic: topic.to_string(),
            ..Default::default()
        };
        self.call(r, |mut c, r| async move { c.offload_topic(r).await }).await
    }

    /// The topic's offload: ledgers and where each is, bytes on bookies and in object
    /// storage, and the last error.
    pub async fn offload_status(&self, topic: &str) -> Result<OffloadStatus> {
        let r = pb::TopicRequest {
            topic: topic.to_string(),
            ..Default::default()
        };
        self.call(r, |mut c, r| async move { c.get_offload_status(r).await })
            .await
    }

    /// The topic's own policies (unset fields: the broker's defaults apply).
    pub async fn topic_policies(&self, topic: &str) -> Result<TopicPolicies> {
        let topic = topic.to_string();
        self.call(pb::TopicRequest { topic, force: false }, |mut c, r| async move {
            c.get_topic_policies(r).await
        })
        .await
    }

    /// Replaces the topic's policies as a whole (unset fields go back to the defaults).
    pub async fn set_topic_policies(&self, topic: &str, policies: TopicPolicies) -> Result<()> {
        let r = pb::SetTopicPoliciesRequest {
            topic: topic.to_string(),
            policies: Some(policies),
        };
        self.call(r, |mut c, r| async move { c.set_topic_policies(r).await })
            .await
            .map(drop)
    }

    /// Deletes a subscription and its cursor; NOT_EMPTY while consumers are connected.
    pub async fn delete_subscription(&self, topic: &str, subscription: &str) -> Result<()> {
        let r = pb::SubscriptionRequest {
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            ..Default::default()
        };
        self.call(r, |mut c, r| async move { c.delete_subscription(r).await })
            .await
            .map(drop)
    }

    /// The subscriptions of a topic.
    pub async fn list_subscriptions(&self, topic: &str) -> Result<Vec<String>> {
        let topic = topic.to_string();
        self.call(pb::TopicRequest { topic, force: false }, |mut c, r| async move {
            c.list_subscriptions(r).await
        })
        .await
        .map(|l| l.names)
    }

    /// Adds `actions` to what `role` may do on `on`. Needs `admin` on the resource above
    /// (the namespace of a topic, the tenant of a namespace) or, for a tenant, a superuser
    /// role. NOT_FOUND when the tenant or namespace does not exist.
    pub async fn grant_permission(&self, on: &Resource, role: &str, actions: &[AuthAction]) -> Result<()> {
        self.call(on.request(role, actions), |mut c, r| async move {
            c.grant_permission(r).await
        })
        .await
        .map(drop)
    }

    /// Takes `actions` from `role` on `on`; every action when `actions` is empty.
    pub async fn revoke_permission(&self, on: &Resource, role: &str, actions: &[AuthAction]) -> Result<()> {
        self.call(on.request(role, actions), |mut c, r| async move {
            c.revoke_permission(r).await
        })
        .await
        .map(drop)
    }

    /// The roles granted something on `on` itself (not what they inherit from above).
    pub async fn permissions(&self, on: &Resource) -> Result<Vec<Permission>> {
        self.call(
            on.request("", &[]),
            |mut c, r| async move { c.list_permissions(r).await },
        )
        .await
        .map(|l| l.permissions)
    }

    /// The namespace's own policies (unset fields: the brokers' settings apply).
    pub async fn namespace_policies(&self, namespace: &str) -> Result<NamespacePolicies> {
        let namespace = namespace.to_string();
        self.call(pb::NamespaceRequest { namespace, bundles: 0 }, |mut c, r| async move {
            c.get_namespace_policies(r).await
        })
        .await
    }

    /// Replaces the namespace's policies as a whole (needs admin on its tenant). Loaded
    /// topics take them at once, on every broker.
    pub async fn set_namespace_policies(&self, namespace: &str, policies: NamespacePolicies) -> Result<()> {
        let namespace = namespace.to_string();
        self.call(
            pb::SetNamespacePoliciesRequest {
                namespace,
                policies: Some(policies),
            },
            |mut c, r| async move { c.set_namespace_policies(r).await },
        )
        .await
        .map(drop)
    }
}
