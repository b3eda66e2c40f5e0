//! The permission RPCs: grant, revoke and list what roles may do on a tenant, a namespace
//! or a topic (the model is in [`crate::authz`]).

use super::{AdminService, bad_name, check_name, split_namespace, to_status, who};
use crate::authz::{self, Action, Resource};
use crate::error::BrokerError;
use strata_common::TopicName;
use strata_meta::keys;
use strata_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// The resource a request names: exactly one of tenant, namespace and topic.
fn resource(r: &pb::PermissionRequest) -> Result<Resource, Status> {
    let named = [&r.tenant, &r.namespace, &r.topic]
        .iter()
        .filter(|s| !s.is_empty())
        .count();
    if named != 1 {
        return Err(to_status(BrokerError::InvalidArgument(format!(
            "name exactly one resource (tenant, namespace or topic); {named} were given"
        ))));
    }
    if !r.tenant.is_empty() {
        check_name("tenant", &r.tenant)?;
        Ok(Resource::Tenant(r.tenant.clone()))
    } else if !r.namespace.is_empty() {
        let (t, n) = split_namespace(&r.namespace)?;
        Ok(Resource::Namespace(t, n))
    } else {
        Ok(Resource::Topic(TopicName::parse(&r.topic).map_err(bad_name)?))
    }
}

fn actions(r: &pb::PermissionRequest) -> Result<Vec<Action>, Status> {
    r.actions
        .iter()
        .map(|&a| match pb::AuthAction::try_from(a) {
            Ok(pb::AuthAction::Produce) => Ok(Action::Produce),
            Ok(pb::AuthAction::Consume) => Ok(Action::Consume),
            Ok(pb::AuthAction::Admin) => Ok(Action::Admin),
            _ => Err(to_status(BrokerError::InvalidArgument(format!(
                "unknown action {a}: use PRODUCE (1), CONSUME (2) or ADMIN (3)"
            )))),
        })
        .collect()
}

fn to_wire(a: Action) -> i32 {
    match a {
        Action::Produce => pb::AuthAction::Produce as i32,
        Action::Consume => pb::AuthAction::Consume as i32,
        Action::Admin => pb::AuthAction::Admin as i32,
    }
}

impl AdminService {
    /// The resource of a grant request, once its caller is allowed to manage its grants
    /// (admin on the resource above it).
    async fn managed(&self, r: &Request<pb::PermissionRequest>) -> Result<Resource, Status> {
        let res = resource(r.get_ref())?;
        self.allow(who(r), &[Action::Admin], res.parent()).await?;
        Ok(res)
    }

    pub(super) async fn grant_rpc(&self, r: Request<pb::PermissionRequest>) -> Result<Response<pb::Empty>, Status> {
        let res = self.managed(&r).await?;
        let r = r.into_inner();
        let acts = actions(&r)?;
        // Grants are on what exists (or, for a topic, may be created): a typo is an
        // error, not a grant nobody will ever use.
        let (key, what) = match &res {
            Resource::Tenant(t) => (keys::tenant(t), format!("tenant {t}")),
            Resource::Namespace(t, n) => (keys::namespace(t, n), format!("namespace {t}/{n}")),
            Resource::Topic(x) => (
                keys::namespace(x.tenant(), x.namespace()),
                format!("namespace {}/{}", x.tenant(), x.namespace()),
            ),
            Resource::Cluster => unreachable!("resource() never names the cluster"),
        };
        if !self.exists(&key).await? {
            return Err(to_status(BrokerError::NotFound(format!("{what} does not exist"))));
        }
        authz::grant(&**self.broker.store(), &res, &r.role, &acts)
            .await
            .map_err(to_status)?;
        tracing::info!(target: "strata::audit", role = %r.role, actions = ?acts, resource = %res, "permission granted");
        Ok(Response::new(pb::Empty {}))
    }

    pub(super) async fn revoke_rpc(&self, r: Request<pb::PermissionRequest>) -> Result<Response<pb::Empty>, Status> {
        let res = self.managed(&r).await?;
        let r = r.into_inner();
        let acts = actions(&r)?;
        authz::revoke(&**self.broker.store(), &res, &r.role, &acts)
            .await
            .map_err(to_status)?;
        tracing::info!(target: "strata::audit", role = %r.role, actions = ?acts, resource = %res, "permission revoked");
        Ok(Response::new(pb::Empty {}))
    }

    pub(super) async fn list_permissions_rpc(
        &self,
        r: Request<pb::PermissionRequest>,
    ) -> Result<Response<pb::PermissionList>, Status> {
        let res = self.managed(&r).await?;
        let permissions = authz::list(&**self.broker.store(), &res)
            .await
            .map_err(to_status)?
            .into_iter()
            .map(|(role, a)| pb::Permission {
                role,
                actions: a.into_iter().map(to_wire).collect(),
            })
            .collect();
        Ok(Response::new(pb::PermissionList { permissions }))
    }
}
