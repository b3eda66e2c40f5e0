//! Authorization: what a token's role may do, when authentication is on.
//!
//! Roles are granted [`Action`]s on [`Resource`]s: a tenant, a namespace or a topic. A
//! grant covers everything below its resource (a tenant's namespaces and topics, a
//! namespace's topics, a partitioned topic's partitions), and `admin` includes `produce`
//! and `consume`. Superuser roles (the `[auth] superuser_roles` setting) may do
//! everything, and only they act on the cluster itself (tenants, bookies, bundles).
//! Grants are stored per resource in the metadata store (`keys::*_permissions`, JSON) and
//! read when a request is checked, so a grant or revocation applies to the next request
//! (streams already open are not cut).
//!
//! Invariants:
//! - default deny: with auth on, a request is allowed only by a superuser role or a grant
//!   found on the resource or above it; a metadata error refuses rather than allows;
//! - with auth off (no [`Principal`] on the request) every request is allowed;
//! - every refusal is written to the audit log (`strata::audit`) and names the role, the
//!   action and the resource;
//! - role names and the number of roles per resource are bounded
//!   ([`MAX_ROLE_BYTES`], [`MAX_ROLES_PER_RESOURCE`]).

use crate::error::{BrokerError, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use strata_common::TopicName;
use strata_meta::{Condition, MetaError, MetadataStore, keys};
use strata_net::auth::Principal;

/// Longest role name a grant takes, in bytes.
pub const MAX_ROLE_BYTES: usize = 256;
/// Most roles one resource grants to.
pub const MAX_ROLES_PER_RESOURCE: usize = 1_000;

/// What a role may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Look topics up and publish.
    Produce,
    /// Look topics up, subscribe, read stats, manage subscriptions.
    Consume,
    /// Everything on the resource and below, including grants below it.
    Admin,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Admin => "admin",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Produce => "produce to",
            Action::Consume => "consume from",
            Action::Admin => "administer",
        }
    }
}

/// What a grant is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// The cluster itself: tenants, brokers, bookies, bundles. Superusers only.
    Cluster,
    Tenant(String),
    Namespace(String, String),
    Topic(TopicName),
}

impl Resource {
    pub fn namespace_of(t: &TopicName) -> Self {
        Resource::Namespace(t.tenant().into(), t.namespace().into())
    }

    /// Where this resource's grants are kept (none for the cluster).
    fn key(&self) -> Option<String> {
        match self {
            Resource::Cluster => None,
            Resource::Tenant(t) => Some(keys::tenant_permissions(t)),
            Resource::Namespace(t, n) => Some(keys::namespace_permissions(t, n)),
            Resource::Topic(x) => Some(keys::topic_permissions(&x.path())),
        }
    }

    /// The resource and those above it whose grants cover it, nearest first: a topic, its
    /// partitioned topic (for a partition), its namespace, its tenant.
    fn scopes(&self) -> Vec<Resource> {
        match self {
            Resource::Cluster => vec![],
            Resource::Tenant(_) => vec![self.clone()],
            Resource::Namespace(t, _) => vec![self.clone(), Resource::Tenant(t.clone())],
            Resource::Topic(x) => {
                let mut v = vec![self.clone()];
                if let Some((base, _)) = x.partition_of() {
                    v.push(Resource::Topic(base));
                }
                v.push(Resource::namespace_of(x));
                v.push(Resource::Tenant(x.tenant().into()));
                v
            }
        }
    }

    /// The resource whose `admin` grant manages this one's grants: a topic's namespace, a
    /// namespace's tenant, a tenant's cluster (superusers).
    pub fn parent(&self) -> Resource {
        match self {
            Resource::Cluster | Resource::Tenant(_) => Resource::Cluster,
            Resource::Namespace(t, _) => Resource::Tenant(t.clone()),
            Resource::Topic(x) => Resource::namespace_of(x),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Cluster => write!(f, "the cluster"),
            Resource::Tenant(t) => write!(f, "tenant {t}"),
            Resource::Namespace(t, n) => write!(f, "namespace {t}/{n}"),
            Resource::Topic(x) => write!(f, "topic {x}"),
        }
    }
}

/// One resource's grants, as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Grants {
    #[serde(default)]
    roles: BTreeMap<String, BTreeSet<Action>>,
}

async fn read(store: &dyn MetadataStore, key: &str) -> Result<(Grants, Option<u64>)> {
    match store.get(key).await? {
        None => Ok((Grants::default(), None)),
        Some(v) => {
            let g = serde_json::from_slice(&v.value)
                .map_err(|e| BrokerError::Corruption(format!("permissions at {key}: {e}")))?;
            Ok((g, Some(v.version)))
        }
    }
}

/// Allows the request when `p` may do one of `any_of` on `r`; PERMISSION_DENIED naming
/// the role, the action and the resource (and audit-logged) otherwise. `p` is `None` when
/// authentication is off.
pub async fn check(store: &dyn MetadataStore, p: Option<&Principal>, any_of: &[Action], r: &Resource) -> Result<()> {
    let Some(p) = p else {
        return Ok(());
    };
    if p.is_superuser() {
        return Ok(());
    }
    for scope in r.scopes() {
        let Some(key) = scope.key() else { continue };
        let (g, _) = read(store, &key).await?;
        if let Some(has) = g.roles.get(&p.role)
            && (has.contains(&Action::Admin) || any_of.iter().any(|a| has.contains(a)))
        {
            return Ok(());
        }
    }
    Err(denied(p, any_of, r))
}

/// A refusal of all of `any_of`, written to the audit log.
pub fn denied(p: &Principal, any_of: &[Action], r: &Resource) -> BrokerError {
    let any_of = if any_of.is_empty() {
        &[Action::Admin][..]
    } else {
        any_of
    };
    let names: Vec<&str> = any_of.iter().map(|a| a.name()).collect();
    let verbs: Vec<&str> = any_of.iter().map(|a| a.verb()).collect();
    tracing::warn!(target: "strata::audit", role = %p.role, action = %names.join("|"), resource = %r, "permission denied");
    let how = match r {
        Resource::Cluster => "only superuser roles may (auth.superuser_roles)".to_string(),
        _ => format!(
            "no {} (or admin) grant covers it; grant one with `strata admin permissions grant`",
            names.join(" or ")
        ),
    };
    BrokerError::PermissionDenied(format!("role {:?} may not {} {r}: {how}", p.role, verbs.join(" or ")))
}

fn check_role(role: &str) -> Result<()> {
    if role.is_empty() {
        return Err(BrokerError::InvalidArgument("role is empty".into()));
    }
    if role.len() > MAX_ROLE_BYTES {
        return Err(BrokerError::InvalidArgument(format!(
            "role is {} bytes, over the limit of {MAX_ROLE_BYTES}",
            role.len()
        )));
    }
    if role.chars().any(char::is_control) {
        return Err(BrokerError::InvalidArgument(format!(
            "role {role:?} contains a control character"
        )));
    }
    Ok(())
}

/// Changes `role`'s actions on `r` with `change` (a compare-and-set loop, so concurrent
/// grants on one resource are never lost). A role left with no action is removed.
async fn update(
    store: &dyn MetadataStore,
    r: &Resource,
    role: &str,
    change: impl Fn(&mut BTreeSet<Action>),
) -> Result<()> {
    check_role(role)?;
    let Some(key) = r.key() else {
        return Err(BrokerError::InvalidArgument(
            "grants are on a tenant, a namespace or a topic".into(),
        ));
    };
    for _ in 0..32 {
        let (mut g, version) = read(store, &key).await?;
        let mut actions = g.roles.remove(role).unwrap_or_default();
        change(&mut actions);
        if !actions.is_empty() {
            g.roles.insert(role.to_string(), actions);
        }
        if g.roles.len() > MAX_ROLES_PER_RESOURCE {
            return Err(BrokerError::LimitExceeded(format!(
                "{r} already grants to {MAX_ROLES_PER_RESOURCE} roles, the most one resource may; grant on a namespace or tenant instead"
            )));
        }
        let cond = version.map_or(Condition::Absent, Condition::Version);
        let done = if g.roles.is_empty() {
            match version {
                None => return Ok(()),
                Some(_) => store.delete(&key, cond).await.map(drop),
            }
        } else {
            let value = Bytes::from(serde_json::to_vec(&g).expect("grants serialize"));
            store.put(&key, value, cond).await.map(drop)
        };
        match done {
            Ok(()) => return Ok(()),
            Err(MetaError::BadVersion(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(BrokerError::Unavailable(format!(
        "the grants of {r} kept changing; try again"
    )))
}

/// Adds `actions` to `role`'s on `r`.
pub async fn grant(store: &dyn MetadataStore, r: &Resource, role: &str, actions: &[Action]) -> Result<()> {
    if actions.is_empty() {
        return Err(BrokerError::InvalidArgument(
            "no action to grant: name produce, consume or admin".into(),
        ));
    }
    update(store, r, role, |has| has.extend(actions.iter().copied())).await
}

/// Takes `actions` (every one, when empty) from `role` on `r`.
pub async fn revoke(store: &dyn MetadataStore, r: &Resource, role: &str, actions: &[Action]) -> Result<()> {
    update(store, r, role, |has| {
        if actions.is_empty() {
            has.clear();
        } else {
            has.retain(|a| !actions.contains(a));
        }
    })
    .await
}

/// The roles granted something on `r` itself, with their actions, by role.
pub async fn list(store: &dyn MetadataStore, r: &Resource) -> Result<Vec<(String, Vec<Action>)>> {
    let Some(key) = r.key() else {
        return Ok(vec![]);
    };
    let (g, _) = read(store, &key).await?;
    Ok(g.roles
        .into_iter()
        .map(|(role, a)| (role, a.into_iter().collect()))
        .collect())
}

/// Forgets `r`'s grants (the resource was deleted: one re-created under its name starts
/// with none).
pub async fn forget(store: &dyn MetadataStore, r: &Resource) -> Result<()> {
    if let Some(key) = r.key() {
        store.delete(&key, Condition::Any).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_meta::local::LocalStore;

    fn who(role: &str) -> Principal {
        Principal {
            role: role.into(),
            superuser: false,
        }
    }

    fn topic(s: &str) -> Resource {
        Resource::Topic(TopicName::parse(s).unwrap())
    }

    #[tokio::test]
    async fn grants_cover_what_is_below_them_and_nothing_else() {
        let store = LocalStore::memory();
        let s: &dyn MetadataStore = &store;
        let app = who("app");
        let x = topic("t/n/x");
        assert!(matches!(
            check(s, Some(&app), &[Action::Produce], &x).await,
            Err(BrokerError::PermissionDenied(_))
        ));
        grant(
            s,
            &Resource::Namespace("t".into(), "n".into()),
            "app",
            &[Action::Produce],
        )
        .await
        .unwrap();
        check(s, Some(&app), &[Action::Produce], &x).await.unwrap();
        check(s, Some(&app), &[Action::Produce], &topic("t/n/x-partition-3"))
            .await
            .unwrap();
        assert!(check(s, Some(&app), &[Action::Consume], &x).await.is_err());
        assert!(check(s, Some(&app), &[Action::Produce], &topic("t/m/x")).await.is_err());
        assert!(check(s, Some(&who("other")), &[Action::Produce], &x).await.is_err());
        // A partitioned topic's grant covers its partitions; admin includes consume.
        grant(s, &topic("t/m/y"), "app", &[Action::Admin]).await.unwrap();
        check(s, Some(&app), &[Action::Consume], &topic("t/m/y-partition-0"))
            .await
            .unwrap();
        assert!(
            check(s, Some(&app), &[Action::Admin], &Resource::Cluster)
                .await
                .is_err()
        );
        // Superusers and auth off pass everything.
        let root = Principal {
            role: "root".into(),
            superuser: true,
        };
        check(s, Some(&root), &[Action::Admin], &Resource::Cluster)
            .await
            .unwrap();
        check(s, None, &[Action::Admin], &Resource::Cluster).await.unwrap();
    }

    #[tokio::test]
    async fn revoke_removes_actions_and_empty_grants_leave_no_key() {
        let store = LocalStore::memory();
        let s: &dyn MetadataStore = &store;
        let ns = Resource::Namespace("t".into(), "n".into());
        grant(s, &ns, "app", &[Action::Produce, Action::Consume]).await.unwrap();
        grant(s, &ns, "ops", &[Action::Admin]).await.unwrap();
        revoke(s, &ns, "app", &[Action::Produce]).await.unwrap();
        assert_eq!(
            list(s, &ns).await.unwrap(),
            vec![
                ("app".to_string(), vec![Action::Consume]),
                ("ops".to_string(), vec![Action::Admin])
            ]
        );
        revoke(s, &ns, "app", &[]).await.unwrap();
        revoke(s, &ns, "ops", &[]).await.unwrap();
        assert!(list(s, &ns).await.unwrap().is_empty());
        assert!(s.get(&ns.key().unwrap()).await.unwrap().is_none());
        // Revoking what was never granted is not an error.
        revoke(s, &ns, "nobody", &[]).await.unwrap();
    }

    #[tokio::test]
    async fn roles_and_role_counts_are_bounded() {
        let store = LocalStore::memory();
        let s: &dyn MetadataStore = &store;
        let ns = Resource::Namespace("t".into(), "n".into());
        let at_limit = "r".repeat(MAX_ROLE_BYTES);
        grant(s, &ns, &at_limit, &[Action::Produce]).await.unwrap();
        let over = "r".repeat(MAX_ROLE_BYTES + 1);
        assert!(matches!(
            grant(s, &ns, &over, &[Action::Produce]).await,
            Err(BrokerError::InvalidArgument(m)) if m.contains("257 bytes")
        ));
        assert!(grant(s, &ns, "", &[Action::Produce]).await.is_err());
        assert!(grant(s, &ns, "app", &[]).await.is_err());
        for i in 1..MAX_ROLES_PER_RESOURCE {
            grant(s, &ns, &format!("role-{i}"), &[Action::Consume]).await.unwrap();
        }
        assert!(matches!(
            grant(s, &ns, "one-too-many", &[Action::Consume]).await,
            Err(BrokerError::LimitExceeded(_))
        ));
        // A role already there can still be changed.
        grant(s, &ns, "role-1", &[Action::Produce]).await.unwrap();
        assert!(matches!(
            grant(s, &Resource::Cluster, "app", &[Action::Admin]).await,
            Err(BrokerError::InvalidArgument(_))
        ));
    }
}
