//! The admin client: tenants, namespaces, topics and subscriptions.

use crate::Client;
use crate::consumer::InitialPosition;
use crate::error::{Error, Result};
use strata_proto::v1 as pb;
use tonic::transport::Channel;

/// A topic's statistics (for a partitioned topic, summed over its partitions).
pub type TopicStats = pb::TopicStats;
/// A subscription's statistics.
pub type SubscriptionStats = pb::SubscriptionStats;

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

    async fn rpc(&self) -> Result<pb::admin_client::AdminClient<Channel>> {
        let ch = self.client.conns.channel(self.client.conns.service_url()).await?;
        Ok(pb::admin_client::AdminClient::new(ch))
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(pb::admin_client::AdminClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = self.rpc().await?;
        let timeout = self.client.conns.operation_timeout;
        match tokio::time::timeout(timeout, f(client)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(Error::from_status(&s)),
            Err(_) => Err(Error::Timeout("admin call".into())),
        }
    }

    pub async fn create_tenant(&self, tenant: &str) -> Result<()> {
        let tenant = tenant.to_string();
        self.call(|mut c| async move { c.create_tenant(pb::TenantRequest { tenant }).await })
            .await
            .map(drop)
    }

    /// Fails with NOT_EMPTY while the tenant has namespaces.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<()> {
        let tenant = tenant.to_string();
        self.call(|mut c| async move { c.delete_tenant(pb::TenantRequest { tenant }).await })
            .await
            .map(drop)
    }

    pub async fn list_tenants(&self) -> Result<Vec<String>> {
        self.call(|mut c| async move { c.list_tenants(pb::Empty {}).await })
            .await
            .map(|l| l.names)
    }

    /// Creates `tenant/namespace`; the tenant must exist.
    pub async fn create_namespace(&self, namespace: &str) -> Result<()> {
        let namespace = namespace.to_string();
        self.call(|mut c| async move { c.create_namespace(pb::NamespaceRequest { namespace }).await })
            .await
            .map(drop)
    }

    /// Fails with NOT_EMPTY while the namespace has topics.
    pub async fn delete_namespace(&self, namespace: &str) -> Result<()> {
        let namespace = namespace.to_string();
        self.call(|mut c| async move { c.delete_namespace(pb::NamespaceRequest { namespace }).await })
            .await
            .map(drop)
    }

    pub async fn list_namespaces(&self, tenant: &str) -> Result<Vec<String>> {
        let tenant = tenant.to_string();
        self.call(|mut c| async move { c.list_namespaces(pb::TenantRequest { tenant }).await })
            .await
            .map(|l| l.names)
    }

    /// Creates a topic; with `partitions > 0`, a partitioned topic.
    pub async fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        let topic = topic.to_string();
        self.call(|mut c| async move { c.create_topic(pb::CreateTopicRequest { topic, partitions }).await })
            .await
            .map(drop)
    }

    /// Deletes a topic (every partition), its data and its subscriptions.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        let topic = topic.to_string();
        self.call(|mut c| async move { c.delete_topic(pb::TopicRequest { topic }).await })
            .await
            .map(drop)
    }

    pub async fn list_topics(&self, namespace: &str) -> Result<Vec<String>> {
        let namespace = namespace.to_string();
        self.call(|mut c| async move { c.list_topics(pb::NamespaceRequest { namespace }).await })
            .await
            .map(|l| l.names)
    }

    pub async fn topic_stats(&self, topic: &str) -> Result<TopicStats> {
        let topic = topic.to_string();
        self.call(|mut c| async move { c.get_topic_stats(pb::TopicRequest { topic }).await })
            .await
    }

    /// Closes the topic on its broker and releases ownership; clients reconnect.
    pub async fn unload_topic(&self, topic: &str) -> Result<()> {
        let topic = topic.to_string();
        self.call(|mut c| async move { c.unload_topic(pb::TopicRequest { topic }).await })
            .await
            .map(drop)
    }

    pub async fn create_subscription(&self, topic: &str, subscription: &str, initial: InitialPosition) -> Result<()> {
        let r = pb::SubscriptionRequest {
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            initial_position: match initial {
                InitialPosition::Latest => pb::InitialPosition::Latest,
                InitialPosition::Earliest => pb::InitialPosition::Earliest,
            } as i32,
        };
        self.call(|mut c| async move { c.create_subscription(r).await })
            .await
            .map(drop)
    }

    pub async fn delete_subscription(&self, topic: &str, subscription: &str) -> Result<()> {
        let r = pb::SubscriptionRequest {
            topic: topic.to_string(),
            subscription: subscription.to_string(),
            initial_position: 0,
        };
        self.call(|mut c| async move { c.delete_subscription(r).await })
            .await
            .map(drop)
    }

    pub async fn list_subscriptions(&self, topic: &str) -> Result<Vec<String>> {
        let topic = topic.to_string();
        self.call(|mut c| async move { c.list_subscriptions(pb::TopicRequest { topic }).await })
            .await
            .map(|l| l.names)
    }
}
