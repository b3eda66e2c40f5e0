//! The metadata key layout, in one place. Every key lives under [`ROOT`]; the `v1` in it
//! is the layout version, bumped (with a migration) if the layout ever changes.
//!
//! - `/strata/v1/bookies/<address>`      ephemeral, JSON `BookieInfo` (bookie crate)
//! - `/strata/v1/ledgers/<ledger-id>`    JSON `LedgerMetadata` (bookie crate), 20-digit id
//! - `/strata/v1/ledger-id`              the last ledger id handed out (decimal)
//! - `/strata/v1/topics/<tenant>/<ns>/<topic>`  JSON `ManagedLedgerInfo` (broker crate)
//! - `/strata/v1/cursors/<tenant>/<ns>/<topic>/<sub>`  JSON `CursorInfo` (broker crate)
//! - `/strata/v1/dedup/<tenant>/<ns>/<topic>`  JSON dedup `Snapshot` (broker crate)
//! - `/strata/v1/bundles/<tenant>/<ns>`   JSON `BundleLayout`: the namespace's hash ranges
//! - `/strata/v1/ownership/<tenant>/<ns>/<range>`  ephemeral, JSON `BundleOwner`
//! - `/strata/v1/brokers/<address>`       ephemeral, JSON `BrokerInfo` with its load report
//! - `/strata/v1/leader`                  ephemeral, the load-balancing leader's address
//! - `/strata/v1/autorecovery/auditor`    ephemeral, the auditor's id (one auditor at a time)
//! - `/strata/v1/autorecovery/lost/<address>`  JSON `LostBookie`: a bookie ledgers name that
//!   is not registered, and since when
//! - `/strata/v1/autorecovery/under-replicated/<ledger-id>`  JSON `UnderReplicated` (bookie crate)
//! - `/strata/v1/autorecovery/locks/<ledger-id>`  ephemeral, the worker re-replicating it
//! - `/strata/v1/decommission/<address>`  JSON `Decommission`: a bookie being (or done being)
//!   drained
//! - `/strata/v1/permissions/tenants/<tenant>`, `.../namespaces/<tenant>/<ns>`,
//!   `.../topics/<tenant>/<ns>/<topic>`  JSON grants: role to actions (broker `authz`)

/// Root of every Strata key.
pub const ROOT: &str = "/strata/v1";

/// Prefix of bookie registrations.
pub fn bookies_prefix() -> String {
    format!("{ROOT}/bookies/")
}

/// Registration key of the bookie reachable at `address`.
pub fn bookie(address: &str) -> String {
    format!("{ROOT}/bookies/{address}")
}

/// Prefix of ledger metadata.
pub fn ledgers_prefix() -> String {
    format!("{ROOT}/ledgers/")
}

/// Metadata key of a ledger; zero-padded so keys sort by id.
pub fn ledger(id: u64) -> String {
    format!("{ROOT}/ledgers/{id:020}")
}

/// The ledger id counter.
pub fn ledger_id_counter() -> String {
    format!("{ROOT}/ledger-id")
}

/// Managed-ledger key of a topic (`path` is `tenant/namespace/topic`).
pub fn topic(path: &str) -> String {
    format!("{ROOT}/topics/{path}")
}

/// Cursor key of subscription `sub` on a topic (`path` is `tenant/namespace/topic`).
pub fn cursor(path: &str, sub: &str) -> String {
    format!("{ROOT}/cursors/{path}/{sub}")
}

/// Ownership key of namespace bundle `range` (ephemeral on the owner's session).
pub fn bundle_owner(tenant: &str, namespace: &str, range: &str) -> String {
    format!("{ROOT}/ownership/{tenant}/{namespace}/{range}")
}

/// Prefix of every bundle ownership key.
pub fn ownership_prefix() -> String {
    format!("{ROOT}/ownership/")
}

/// Bundle layout (hash ranges) of a namespace.
pub fn bundles(tenant: &str, namespace: &str) -> String {
    format!("{ROOT}/bundles/{tenant}/{namespace}")
}

/// Registration key of the broker serving clients at `address` (host:port).
pub fn broker(address: &str) -> String {
    format!("{ROOT}/brokers/{address}")
}

/// Prefix of broker registrations.
pub fn brokers_prefix() -> String {
    format!("{ROOT}/brokers/")
}

/// The load-balancing leader's key.
pub fn leader() -> String {
    format!("{ROOT}/leader")
}

/// Deduplication snapshot of a topic (`path` is `tenant/namespace/topic`).
pub fn dedup(path: &str) -> String {
    format!("{ROOT}/dedup/{path}")
}

/// Key of a tenant.
pub fn tenant(tenant: &str) -> String {
    format!("{ROOT}/tenants/{tenant}")
}

/// Key of a namespace.
pub fn namespace(tenant: &str, namespace: &str) -> String {
    format!("{ROOT}/namespaces/{tenant}/{namespace}")
}

/// Prefix of every tenant key.
pub fn tenants_prefix() -> String {
    format!("{ROOT}/tenants/")
}

/// Prefix of a tenant's namespace keys.
pub fn namespaces_prefix(tenant: &str) -> String {
    format!("{ROOT}/namespaces/{tenant}/")
}

/// Prefix of a namespace's topic keys.
pub fn topics_prefix(tenant: &str, namespace: &str) -> String {
    format!("{ROOT}/topics/{tenant}/{namespace}/")
}

/// Partition count of a partitioned topic (decimal).
pub fn partitioned(path: &str) -> String {
    format!("{ROOT}/partitioned/{path}")
}

/// Prefix of a namespace's partitioned topics.
pub fn partitioned_prefix(tenant: &str, namespace: &str) -> String {
    format!("{ROOT}/partitioned/{tenant}/{namespace}/")
}

/// Policies of a topic (a partitioned topic's apply to its partitions), JSON.
pub fn topic_policies(path: &str) -> String {
    format!("{ROOT}/policies/topics/{path}")
}

/// Prefix of a topic's cursors.
pub fn cursors_prefix(path: &str) -> String {
    format!("{ROOT}/cursors/{path}/")
}

/// The auto-recovery auditor's election key (ephemeral).
pub fn auditor() -> String {
    format!("{ROOT}/autorecovery/auditor")
}

/// Mark of a bookie that ledgers name but that is not registered.
pub fn lost_bookie(address: &str) -> String {
    format!("{ROOT}/autorecovery/lost/{address}")
}

/// Prefix of lost-bookie marks.
pub fn lost_bookies_prefix() -> String {
    format!("{ROOT}/autorecovery/lost/")
}

/// Under-replication mark of a ledger; zero-padded so keys sort by id.
pub fn under_replicated(ledger: u64) -> String {
    format!("{ROOT}/autorecovery/under-replicated/{ledger:020}")
}

/// Prefix of under-replication marks.
pub fn under_replicated_prefix() -> String {
    format!("{ROOT}/autorecovery/under-replicated/")
}

/// Lock a worker holds (ephemeral) while it re-replicates a ledger.
pub fn replication_lock(ledger: u64) -> String {
    format!("{ROOT}/autorecovery/locks/{ledger:020}")
}

/// Decommissioning state of a bookie.
pub fn decommission(address: &str) -> String {
    format!("{ROOT}/decommission/{address}")
}

/// Prefix of decommissioning states.
pub fn decommission_prefix() -> String {
    format!("{ROOT}/decommission/")
}

/// Grants on a tenant (JSON).
pub fn tenant_permissions(tenant: &str) -> String {
    format!("{ROOT}/permissions/tenants/{tenant}")
}

/// Grants on a namespace (JSON).
pub fn namespace_permissions(tenant: &str, namespace: &str) -> String {
    format!("{ROOT}/permissions/namespaces/{tenant}/{namespace}")
}

/// Grants on a topic (`path` is `tenant/namespace/topic`), JSON.
pub fn topic_permissions(path: &str) -> String {
    format!("{ROOT}/permissions/topics/{path}")
}

/// Policies of a namespace, JSON.
pub fn namespace_policies(tenant: &str, namespace: &str) -> String {
    format!("{}{tenant}/{namespace}", namespace_policies_prefix())
}

/// The prefix of every namespace's policies (what brokers watch).
pub fn namespace_policies_prefix() -> String {
    format!("{ROOT}/policies/namespaces/")
}
