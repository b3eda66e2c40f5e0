//! The namespace policy RPCs (the policies themselves: [`crate::ns_policies`]).

use super::{AdminService, split_namespace, to_status, who};
use crate::authz::{Action, Resource};
use crate::error::BrokerError;
use crate::ns_policies::NamespacePolicies;
use bytes::Bytes;
use strata_meta::{Condition, keys};
use strata_proto::v1 as pb;
use tonic::{Request, Response, Status};

fn from_wire(p: pb::NamespacePolicies) -> NamespacePolicies {
    NamespacePolicies {
        publish_rate_per_topic_msgs: p.publish_rate_per_topic_msgs,
        publish_rate_per_topic_bytes: p.publish_rate_per_topic_bytes,
        publish_rate_per_producer_msgs: p.publish_rate_per_producer_msgs,
        publish_rate_per_producer_bytes: p.publish_rate_per_producer_bytes,
        dispatch_rate_per_subscription_msgs: p.dispatch_rate_per_subscription_msgs,
        dispatch_rate_per_subscription_bytes: p.dispatch_rate_per_subscription_bytes,
        max_topics: p.max_topics,
        max_producers_per_topic: p.max_producers_per_topic,
        max_subscriptions_per_topic: p.max_subscriptions_per_topic,
        max_consumers_per_subscription: p.max_consumers_per_subscription,
    }
}

fn to_wire(p: NamespacePolicies) -> pb::NamespacePolicies {
    pb::NamespacePolicies {
        publish_rate_per_topic_msgs: p.publish_rate_per_topic_msgs,
        publish_rate_per_topic_bytes: p.publish_rate_per_topic_bytes,
        publish_rate_per_producer_msgs: p.publish_rate_per_producer_msgs,
        publish_rate_per_producer_bytes: p.publish_rate_per_producer_bytes,
        dispatch_rate_per_subscription_msgs: p.dispatch_rate_per_subscription_msgs,
        dispatch_rate_per_subscription_bytes: p.dispatch_rate_per_subscription_bytes,
        max_topics: p.max_topics,
        max_producers_per_topic: p.max_producers_per_topic,
        max_subscriptions_per_topic: p.max_subscriptions_per_topic,
        max_consumers_per_subscription: p.max_consumers_per_subscription,
    }
}

impl AdminService {
    async fn require_namespace(&self, t: &str, n: &str) -> Result<(), Status> {
        if self.exists(&keys::namespace(t, n)).await? {
            Ok(())
        } else {
            Err(to_status(BrokerError::NotFound(format!(
                "namespace {t}/{n} does not exist"
            ))))
        }
    }

    pub(super) async fn get_namespace_policies_rpc(
        &self,
        r: Request<pb::NamespaceRequest>,
    ) -> Result<Response<pb::NamespacePolicies>, Status> {
        let p = who(&r);
        let (t, n) = split_namespace(&r.into_inner().namespace)?;
        self.allow(p, &[Action::Admin], Resource::Namespace(t.clone(), n.clone()))
            .await?;
        self.require_namespace(&t, &n).await?;
        let policies = crate::ns_policies::load(&**self.broker.store(), &t, &n)
            .await
            .map_err(to_status)?;
        Ok(Response::new(to_wire(policies)))
    }

    pub(super) async fn set_namespace_policies_rpc(
        &self,
        r: Request<pb::SetNamespacePoliciesRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let p = who(&r);
        let r = r.into_inner();
        let (t, n) = split_namespace(&r.namespace)?;
        // Limits are the tenant's to set, not the namespace's own admins'.
        self.allow(p, &[Action::Admin], Resource::Tenant(t.clone())).await?;
        let policies = from_wire(r.policies.unwrap_or_default());
        policies.validate().map_err(to_status)?;
        self.require_namespace(&t, &n).await?;
        let key = keys::namespace_policies(&t, &n);
        let store = self.broker.store();
        if policies == NamespacePolicies::default() {
            store
                .delete(&key, Condition::Any)
                .await
                .map_err(|e| to_status(e.into()))?;
        } else {
            let value = Bytes::from(serde_json::to_vec(&policies).expect("policies serialize"));
            store
                .put(&key, value, Condition::Any)
                .await
                .map_err(|e| to_status(e.into()))?;
        }
        Ok(Response::new(pb::Empty {}))
    }
}
