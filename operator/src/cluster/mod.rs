//! The `StrataCluster` custom resource: a whole Strata cluster (metadata store, bookies,
//! brokers) that the operator renders into Kubernetes workloads, rolls and scales.
//!
//! - [`validate`] checks a spec and resolves its defaults into a [`Plan`]; nothing is
//!   applied from a spec that fails it.
//! - [`render`] turns a plan into the objects to apply (ConfigMaps, Services,
//!   StatefulSets, the broker Deployment, PodDisruptionBudgets), all pure.
//! - [`rollout`] holds the decisions over what is live: the order of changes (metadata,
//!   then bookies, then brokers, each gated on the previous being rolled out), scale-down
//!   refusals, immutable fields, the conditions, and the broker autoscaler.
//!
//! Invariants:
//! - A bookie's identity is its StatefulSet pod's DNS name and port
//!   (`<cluster>-bookie-<n>.<cluster>-bookie.<namespace>.svc:3181`): it never changes for an
//!   ordinal, so a restarted bookie is the same bookie to ledger metadata.
//! - The bookie count goes down only after the bookies to remove were decommissioned
//!   through the cluster (no ledger names them, they unregistered); only then are their
//!   pods stopped and their PVCs deleted. Nothing else is deleted by the operator.
//! - A pod template changes only with its component's config, image, resources or
//!   overrides; the config's hash is an annotation of the template, so a config change
//!   rolls exactly the pods that read it.

pub(crate) mod reconcile;
pub mod render;
pub mod rollout;
pub mod tls;

use crate::common::SpecError;
use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The etcd image of a managed metadata store unless `metadataStore.managed.image` says
/// otherwise.
pub const DEFAULT_ETCD_IMAGE: &str = "quay.io/coreos/etcd:v3.5.17";

/// A Strata cluster on Kubernetes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[kube(
    group = "strata.io",
    version = "v1alpha1",
    kind = "StrataCluster",
    namespaced,
    status = "StrataClusterStatus",
    shortname = "sc",
    category = "strata",
    scale(
        spec_replicas_path = ".spec.brokers.replicas",
        status_replicas_path = ".status.brokers.replicas",
        label_selector_path = ".status.brokers.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Brokers", type_ = "integer", json_path = ".status.brokers.readyReplicas"),
    printcolumn(name = "Bookies", type_ = "integer", json_path = ".status.bookies.readyReplicas"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    doc = "A Strata cluster: metadata store, bookies and brokers, rendered, rolled and scaled by the operator."
)]
#[serde(rename_all = "camelCase")]
pub struct StrataClusterSpec {
    /// The Strata image of bookies and brokers, like `ghcr.io/example/strata:0.1.0`.
    #[schemars(length(min = 1))]
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`; unset: Kubernetes' default for the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^(Always|IfNotPresent|Never)$"))]
    pub image_pull_policy: Option<String>,
    /// Secrets (names) holding credentials for the image registries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,
    /// Where the cluster's metadata lives: an etcd the operator runs (`managed`, the
    /// default) or an existing one (`external`).
    #[serde(default)]
    pub metadata_store: MetadataStore,
    #[serde(default)]
    pub bookies: Bookies,
    #[serde(default)]
    pub brokers: Brokers,
    /// How many bookies each ledger uses, stores each entry on, and waits for; the
    /// brokers' defaults, checked against the bookie count.
    #[serde(default)]
    pub replication: Replication,
    /// Tiered offload of closed ledgers to object storage (the brokers' `[offload]`,
    /// docs/storage.md); unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<Offload>,
    /// Authentication and authorization of the cluster (docs/security.md); unset: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
}

/// The cluster's security settings.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Security {
    #[serde(default)]
    pub auth: Auth,
    /// TLS on the brokers' client port and the bookies (docs/security.md); unset: plain
    /// text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// TLS for the cluster's brokers and bookies, with one certificate from a Secret holding
/// `tls.crt`, `tls.key` and `ca.crt` (what cert-manager writes). The certificate must
/// name `<cluster>-broker.<ns>.svc` (clients), `*.<cluster>-broker-pods.<ns>.svc` (each
/// broker, advertised by its pod IP's DNS name) and `*.<cluster>-bookie.<ns>.svc`
/// (bookies); `status.tlsDnsNames` lists them. Certificates are reloaded when the Secret
/// changes, without a restart.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// The Secret holding the certificate. With `issuerRef`, the Secret cert-manager
    /// writes (default `<cluster>-tls`); without, it must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// A cert-manager issuer: the operator creates the Certificate `<cluster>-tls` for
    /// the names above (cert-manager must be installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// Serve `/healthz`, `/readyz` and `/metrics` over HTTPS too (probes use HTTPS;
    /// scrapers must trust the CA).
    #[serde(default)]
    pub http: bool,
}

/// A cert-manager `Issuer` or `ClusterIssuer`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    /// `Issuer` (default) or `ClusterIssuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Default `cert-manager.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Token authentication with default-deny authorization. The operator keeps the keys in
/// the Secret `<cluster>-auth`, creating it if absent: `secret` (the HS256 signing key),
/// `node.token` (role `strata-node`: brokers and bookies), `operator.token` (role
/// `strata-operator`) and `admin.token` (role `admin`, for people and tools). Those three
/// roles are superusers; grant others with `strata admin permissions`.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Require a valid token on every request to brokers and bookies.
    #[serde(default)]
    pub enabled: bool,
    /// More superuser roles (besides `strata-node`, `strata-operator` and `admin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superuser_roles: Vec<String>,
}

impl StrataClusterSpec {
    /// Whether token authentication is on.
    pub fn auth_enabled(&self) -> bool {
        self.security.as_ref().is_some_and(|s| s.auth.enabled)
    }

    /// The TLS settings, if TLS is on.
    pub fn tls(&self) -> Option<&Tls> {
        self.security.as_ref().and_then(|s| s.tls.as_ref())
    }
}

/// The roles the operator's Secret holds tokens for; all superusers.
pub const NODE_ROLE: &str = "strata-node";
pub const OPERATOR_ROLE: &str = "strata-operator";
pub const ADMIN_ROLE: &str = "admin";

/// The brokers' `[offload]` section (docs/storage.md) in camelCase; credentials come from
/// a Secret, never from the resource.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Offload {
    /// `s3://bucket[/prefix]`.
    #[schemars(length(min = 6), pattern(r"^s3://[^/]+"))]
    pub url: String,
    /// An S3-compatible endpoint (MinIO, Ceph RGW), like `http://minio.storage:9000`;
    /// unset: AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://"))]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_hosted_style: Option<bool>,
    /// A Secret in the cluster's namespace whose keys `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` (and optionally `AWS_SESSION_TOKEN`) become the brokers'
    /// environment. Unset: the brokers' own (e.g. IRSA) credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub credentials_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub threshold_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub threshold_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_lag_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_sec: Option<u64>,
}

/// Exactly one of `managed` and `external`; neither means `managed` with its defaults.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataStore {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalMetadata>,
}

/// An etcd cluster run by the operator as a StatefulSet.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedMetadata {
    /// etcd members: 1, or 3 or 5 to survive the loss of 1 or 2. Fixed once created.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 7))]
    pub replicas: i32,
    /// Each member's volume; default 1Gi of the default storage class.
    #[serde(default = "metadata_storage")]
    pub storage: Storage,
    /// The etcd image; default `quay.io/coreos/etcd:v3.5.17`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub pod_template: PodOverrides,
}

impl Default for ManagedMetadata {
    fn default() -> Self {
        Self {
            replicas: 1,
            storage: metadata_storage(),
            image: None,
            resources: None,
            pod_template: PodOverrides::default(),
        }
    }
}

/// An etcd cluster that exists already.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetadata {
    /// Its client endpoints, `host:port` each.
    #[schemars(length(min = 1))]
    pub endpoints: Vec<String>,
}

/// A persistent volume per pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Its size, a Kubernetes quantity like `20Gi`. Fixed once created (see
    /// `docs/kubernetes.md` to grow it).
    pub size: Quantity,
    /// The storage class; unset: the cluster's default. Fixed once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn metadata_storage() -> Storage {
    Storage {
        size: Quantity("1Gi".into()),
        storage_class_name: None,
    }
}

fn bookie_storage() -> Storage {
    Storage {
        size: Quantity("10Gi".into()),
        storage_class_name: None,
    }
}

fn one() -> i32 {
    1
}

fn three() -> i32 {
    3
}

fn two() -> i32 {
    2
}

/// The bookies: a StatefulSet, one volume each.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bookies {
    /// How many; default 3. Lowering it decommissions the highest ordinals first (their
    /// ledgers are re-replicated), then stops them and deletes their volumes.
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// Each bookie's volume (journal, entry logs, index); default 10Gi.
    #[serde(default = "bookie_storage")]
    pub storage: Storage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Bookie settings (`docs/bookie.md`); unset keys keep their defaults.
    #[serde(default)]
    pub config: BookieConfig,
    #[serde(default)]
    pub pod_template: PodOverrides,
}

impl Default for Bookies {
    fn default() -> Self {
        Self {
            replicas: 3,
            storage: bookie_storage(),
            resources: None,
            config: BookieConfig::default(),
            pod_template: PodOverrides::default(),
        }
    }
}

/// The brokers: a Deployment behind the client Service.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Brokers {
    /// How many; default 2. `kubectl scale stratacluster/NAME --replicas=N` sets it.
    /// Ignored while `autoscaling` is set.
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Broker settings (`docs/configuration.md`); unset keys keep their defaults.
    #[serde(default)]
    pub config: BrokerConfig,
    /// Scale between `minReplicas` and `maxReplicas` on load instead of `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    #[serde(default)]
    pub pod_template: PodOverrides,
}

impl Default for Brokers {
    fn default() -> Self {
        Self {
            replicas: 2,
            resources: None,
            config: BrokerConfig::default(),
            autoscaling: None,
            pod_template: PodOverrides::default(),
        }
    }
}

/// The broker autoscaler: `ceil(load / targetLoad)` brokers, within the bounds. Up at
/// once; down only to the highest count recommended during the stabilization window.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Messages per second (published plus delivered) one broker should carry.
    #[schemars(range(min = 1))]
    pub target_load: u64,
    /// How long the load must stay low before brokers are removed; default 300.
    #[serde(default = "default_window")]
    #[schemars(range(min = 0, max = 86400))]
    pub stabilization_window_seconds: u32,
}

fn default_window() -> u32 {
    300
}

/// Ensemble size, write quorum and ack quorum of new ledgers. Unset: 2/2/2 (one bookie:
/// 1/1/1); an unset quorum follows the one before it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub ensemble_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub write_quorum: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub ack_quorum: Option<u32>,
}

/// What the pods of one component get on top of what the operator renders.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra labels (the operator's own `app.kubernetes.io/*` labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Broker settings, the `[broker]` keys of `docs/configuration.md` in camelCase. The
/// quorums come from `spec.replication`, the bookies' entry limit from the bookie config.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_create_topics: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_message_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_time_secs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub retention_check_interval_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub cursor_persist_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_entries_per_ledger: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_ledger_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_ledger_age_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_cache_bytes_per_topic: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_cache_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub session_ttl_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub load_report_interval_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub load_balance_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub default_bundles: Option<u32>,
}

/// Bookie settings, the keys of `docs/bookie.md` in camelCase (data directory, listen and
/// advertised addresses and the metadata store are the operator's).
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BookieConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_sync: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub journal_max_file_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub journal_max_group_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub write_cache_max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub flush_threshold_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub flush_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub entry_log_max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub gc_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub compaction_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_entry_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub disk_usage_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub disk_usage_lwm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub disk_check_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub session_ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autorecovery: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autorecovery_lost_grace_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub autorecovery_audit_interval_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autorecovery_open_ledger_grace_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autorecovery_max_bytes_per_sec: Option<u64>,
}

/// What the operator last saw of the cluster.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrataClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`, `ScaleDownBlocked`, `SpecChangeBlocked`,
    /// `DisruptionBudgets`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_store: Option<ComponentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookies: Option<ComponentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<ComponentStatus>,
    /// The URL clients use, inside the Kubernetes cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_url: Option<String>,
    /// The URL of the admin API (`strata admin --url`); today the brokers' client port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
    /// The image every pod runs, once a rollout of it is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<AutoscalerStatus>,
    /// Bookie pods being removed by a scale-down: decommissioned (their ledgers moved to
    /// the other bookies), then stopped, then their volumes deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decommissioning: Vec<String>,
    /// With TLS on: the DNS names the certificate must carry (for a Secret made by hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_dns_names: Vec<String>,
}

/// Replicas of one component.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Asked for (after the autoscaler and any refused scale-down).
    pub desired_replicas: i32,
    /// Pods that exist.
    pub replicas: i32,
    pub ready_replicas: i32,
    /// Pods running the current template.
    pub updated_replicas: i32,
    /// The label selector of the pods (the scale subresource's, for brokers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// What the broker autoscaler saw and decided.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    /// Messages per second over all brokers at the last look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    /// What that load alone asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_replicas: Option<i32>,
    pub desired_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Why the load could not be read, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A spec checked, with its defaults resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub ensemble: u32,
    pub write_quorum: u32,
    pub ack_quorum: u32,
    /// `etcd://h:p,…` as bookies and brokers are given it.
    pub metadata_url: String,
    /// `Some` when the operator runs etcd.
    pub managed_metadata: Option<ManagedMetadata>,
    /// A hash of the auth Secret's signing key (auth on), part of the pods' config hash:
    /// a new key (the Secret deleted and made again) rolls brokers and bookies onto it.
    pub auth_key_hash: Option<String>,
}

/// The parsed value of a Kubernetes quantity, in units (bytes for storage); `None` if it is
/// not one.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    if num.is_empty() || num.starts_with('-') || num.matches('.').count() > 1 {
        return None;
    }
    let n: f64 = num.trim_start_matches('+').parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(n * mult)
}

fn check_storage(field: &str, s: &Storage, errors: &mut Vec<SpecError>) {
    match parse_quantity(&s.size.0) {
        Some(v) if v >= 1.0 => {}
        Some(_) => errors.push(SpecError::new(
            &format!("{field}.size"),
            format!("{:?} is not a positive size", s.size.0),
        )),
        None => errors.push(SpecError::new(
            &format!("{field}.size"),
            format!(
                "{:?} is not a size: a positive Kubernetes quantity like 10Gi or 500Mi",
                s.size.0
            ),
        )),
    }
    if s.storage_class_name.as_deref().is_some_and(|c| c.trim().is_empty()) {
        errors.push(SpecError::new(
            &format!("{field}.storageClassName"),
            "is empty; leave it out for the default storage class",
        ));
    }
}

fn check_endpoint(e: &str) -> bool {
    let e = e.trim();
    let Some((host, port)) = e.rsplit_once(':') else {
        return false;
    };
    !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// Checks `spec` and resolves its defaults. Every problem is reported, each naming its
/// field.
pub fn validate(spec: &StrataClusterSpec, name: &str, namespace: &str) -> Result<Plan, Vec<SpecError>> {
    let mut errors = Vec::new();
    if spec.image.trim().is_empty() {
        errors.push(SpecError::new("spec.image", "is required"));
    }
    // Names of rendered objects: `<name>-metadata-<n>` must stay a DNS label (63).
    if name.len() > 40 {
        errors.push(SpecError::new(
            "metadata.name",
            format!(
                "{name:?} is {} characters; at most 40, so that pod names stay valid DNS labels",
                name.len()
            ),
        ));
    }
    if let Some(t) = spec.tls() {
        tls::validate(t, &mut errors);
    }
    let bookies = spec.bookies.replicas;
    if bookies < 1 {
        errors.push(SpecError::new("spec.bookies.replicas", format!("{bookies} is below 1")));
    }
    check_storage("spec.bookies.storage", &spec.bookies.storage, &mut errors);
    let brokers = spec.brokers.replicas;
    if brokers < 1 {
        errors.push(SpecError::new("spec.brokers.replicas", format!("{brokers} is below 1")));
    }
    if let Some(a) = &spec.brokers.autoscaling {
        if a.min_replicas < 1 {
            errors.push(SpecError::new(
                "spec.brokers.autoscaling.minReplicas",
                format!("{} is below 1", a.min_replicas),
            ));
        }
        if a.max_replicas < a.min_replicas {
            errors.push(SpecError::new(
                "spec.brokers.autoscaling.maxReplicas",
                format!("{} is below minReplicas ({})", a.max_replicas, a.min_replicas),
            ));
        }
        if a.target_load == 0 {
            errors.push(SpecError::new(
                "spec.brokers.autoscaling.targetLoad",
                "must be at least 1",
            ));
        }
    }
    // Quorums: E ≥ Qw ≥ Qa ≥ 1, and E bookies must exist.
    let r = &spec.replication;
    let ensemble = r.ensemble_size.unwrap_or_else(|| (bookies.max(1) as u32).min(2));
    let write_quorum = r.write_quorum.unwrap_or(ensemble);
    let ack_quorum = r.ack_quorum.unwrap_or(write_quorum);
    if ensemble == 0 || write_quorum == 0 || ack_quorum == 0 {
        errors.push(SpecError::new(
            "spec.replication",
            "ensembleSize, writeQuorum and ackQuorum must each be at least 1",
        ));
    }
    if write_quorum > ensemble {
        errors.push(SpecError::new(
            "spec.replication.writeQuorum",
            format!("{write_quorum} is larger than ensembleSize ({ensemble}): an entry cannot be written to more bookies than the ledger has"),
        ));
    }
    if ack_quorum > write_quorum {
        errors.push(SpecError::new(
            "spec.replication.ackQuorum",
            format!("{ack_quorum} is larger than writeQuorum ({write_quorum}): more acknowledgements than copies can never arrive"),
        ));
    }
    if bookies >= 1 && ensemble > bookies as u32 {
        errors.push(SpecError::new(
            "spec.replication.ensembleSize",
            format!("{ensemble} needs at least {ensemble} bookies, and spec.bookies.replicas is {bookies}: add bookies or lower the ensemble size"),
        ));
    }
    // TOML integers are signed 64-bit: a larger value would stop the process at start.
    for (field, config) in [
        ("spec.brokers.config", serde_json::to_value(&spec.brokers.config)),
        ("spec.bookies.config", serde_json::to_value(&spec.bookies.config)),
    ] {
        if let Ok(serde_json::Value::Object(map)) = config {
            for (k, v) in map {
                if v.as_u64().is_some_and(|n| n > i64::MAX as u64) {
                    errors.push(SpecError::new(
                        &format!("{field}.{k}"),
                        format!("{v} is above the largest value a config file holds ({})", i64::MAX),
                    ));
                }
            }
        }
    }
    let c = &spec.bookies.config;
    if let (Some(hi), Some(lo)) = (c.disk_usage_threshold, c.disk_usage_lwm)
        && lo > hi
    {
        errors.push(SpecError::new(
            "spec.bookies.config.diskUsageLwm",
            format!("{lo} is above diskUsageThreshold ({hi})"),
        ));
    }
    if let (Some(max_msg), Some(max_entry)) = (spec.brokers.config.max_message_bytes, c.max_entry_bytes)
        && max_msg > max_entry
    {
        errors.push(SpecError::new(
            "spec.brokers.config.maxMessageBytes",
            format!("{max_msg} is above the bookies' maxEntryBytes ({max_entry}): such messages could never be stored"),
        ));
    }
    let (metadata_url, managed) = match (&spec.metadata_store.managed, &spec.metadata_store.external) {
        (Some(_), Some(_)) => {
            errors.push(SpecError::new(
                "spec.metadataStore",
                "give either managed or external, not both",
            ));
            (String::new(), None)
        }
        (_, Some(ext)) => {
            if ext.endpoints.is_empty() {
                errors.push(SpecError::new(
                    "spec.metadataStore.external.endpoints",
                    "needs at least one host:port",
                ));
            }
            for (i, e) in ext.endpoints.iter().enumerate() {
                if !check_endpoint(e) {
                    errors.push(SpecError::new(
                        &format!("spec.metadataStore.external.endpoints[{i}]"),
                        format!("{e:?} is not host:port"),
                    ));
                }
            }
            let list: Vec<&str> = ext.endpoints.iter().map(|e| e.trim()).collect();
            (format!("etcd://{}", list.join(",")), None)
        }
        (m, None) => {
            let m = m.clone().unwrap_or_default();
            if !(1..=7).contains(&m.replicas) {
                errors.push(SpecError::new(
                    "spec.metadataStore.managed.replicas",
                    format!("{} is not between 1 and 7", m.replicas),
                ));
            }
            check_storage("spec.metadataStore.managed.storage", &m.storage, &mut errors);
            (managed_metadata_url(name, namespace, m.replicas.clamp(1, 7)), Some(m))
        }
    };
    if errors.is_empty() {
        Ok(Plan {
            ensemble,
            write_quorum,
            ack_quorum,
            metadata_url,
            managed_metadata: managed,
            auth_key_hash: None,
        })
    } else {
        Err(errors)
    }
}

/// `etcd://…` naming every member of a managed etcd of `replicas` members.
pub fn managed_metadata_url(name: &str, namespace: &str, replicas: i32) -> String {
    let svc = render::names::metadata(name);
    let list: Vec<String> = (0..replicas)
        .map(|i| format!("{svc}-{i}.{svc}.{namespace}.svc:{}", render::ETCD_CLIENT_PORT))
        .collect();
    format!("etcd://{}", list.join(","))
}

/// The identity (registered address) of bookie `ordinal`: its stable StatefulSet DNS name.
pub fn bookie_identity(name: &str, namespace: &str, ordinal: i32) -> String {
    let sts = render::names::bookie(name);
    format!("{sts}-{ordinal}.{sts}.{namespace}.svc:{}", render::BOOKIE_PORT)
}

/// The URL clients (and the admin CLI) reach a cluster's brokers at.
pub fn service_url(name: &str, namespace: &str) -> String {
    format!(
        "http://{}.{namespace}.svc:{}",
        render::names::broker(name),
        render::BROKER_PORT
    )
}

/// The StrataCluster (name, namespace) whose [`service_url`] `url` is, if it is one.
pub fn cluster_of_service_url(url: &str) -> Option<(String, String)> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', ':']).next()?;
    let host = host.strip_suffix(".cluster.local").unwrap_or(host);
    let mut parts = host.split('.');
    let (svc, ns, tail) = (parts.next()?, parts.next()?, parts.next()?);
    if tail != "svc" || parts.next().is_some() {
        return None;
    }
    let name = svc.strip_suffix("-broker")?;
    (!name.is_empty()).then(|| (name.to_string(), ns.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StrataClusterSpec {
        StrataClusterSpec {
            image: "strata:test".into(),
            ..Default::default()
        }
    }

    fn fields(r: Result<Plan, Vec<SpecError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn defaults_resolve_to_two_copies_on_three_bookies_and_a_managed_etcd() {
        let p = validate(&spec(), "x", "ns").unwrap();
        assert_eq!((p.ensemble, p.write_quorum, p.ack_quorum), (2, 2, 2));
        assert_eq!(p.metadata_url, "etcd://x-metadata-0.x-metadata.ns.svc:2379");
        let mut one = spec();
        one.bookies.replicas = 1;
        let p = validate(&one, "x", "ns").unwrap();
        assert_eq!((p.ensemble, p.write_quorum, p.ack_quorum), (1, 1, 1));
        // A yaml spec with only the image gets the same defaults as Default.
        let parsed: StrataClusterSpec = serde_json::from_value(serde_json::json!({"image": "strata:test"})).unwrap();
        assert_eq!(parsed.bookies.replicas, 3);
        assert_eq!(parsed.brokers.replicas, 2);
        assert_eq!(parsed.metadata_store, MetadataStore::default());
    }

    #[test]
    fn quorums_are_checked_against_each_other_and_the_bookie_count() {
        let mut s = spec();
        s.replication = Replication {
            ensemble_size: Some(2),
            write_quorum: Some(3),
            ack_quorum: Some(4),
        };
        assert_eq!(
            fields(validate(&s, "x", "ns")),
            ["spec.replication.writeQuorum", "spec.replication.ackQuorum"]
        );
        s.replication = Replication {
            ensemble_size: Some(5),
            write_quorum: Some(3),
            ack_quorum: Some(2),
        };
        let e = validate(&s, "x", "ns").unwrap_err();
        assert_eq!(e[0].field, "spec.replication.ensembleSize");
        assert!(e[0].message.contains("spec.bookies.replicas is 3"), "{}", e[0].message);
        s.replication.ensemble_size = Some(3);
        let p = validate(&s, "x", "ns").unwrap();
        assert_eq!((p.ensemble, p.write_quorum, p.ack_quorum), (3, 3, 2));
        // An unset quorum follows the one before it.
        s.replication = Replication {
            ensemble_size: Some(3),
            write_quorum: None,
            ack_quorum: None,
        };
        let p = validate(&s, "x", "ns").unwrap();
        assert_eq!((p.ensemble, p.write_quorum, p.ack_quorum), (3, 3, 3));
    }

    #[test]
    fn sizes_must_be_positive_quantities() {
        for (size, ok) in [
            ("10Gi", true),
            ("500M", true),
            ("1", true),
            ("1.5Gi", true),
            ("-1Gi", false),
            ("0", false),
            ("0Gi", false),
            ("ten", false),
            ("10Gb", false),
            ("", false),
            ("1..2Gi", false),
        ] {
            let mut s = spec();
            s.bookies.storage.size = Quantity(size.into());
            assert_eq!(validate(&s, "x", "ns").is_ok(), ok, "{size:?}");
            if !ok {
                assert_eq!(fields(validate(&s, "x", "ns")), ["spec.bookies.storage.size"]);
            }
        }
        assert_eq!(parse_quantity("2Ki"), Some(2048.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
    }

    #[test]
    fn metadata_store_is_managed_or_external_never_both() {
        let mut s = spec();
        s.metadata_store.external = Some(ExternalMetadata {
            endpoints: vec!["etcd-a:2379".into(), " etcd-b:2379 ".into()],
        });
        let p = validate(&s, "x", "ns").unwrap();
        assert_eq!(p.metadata_url, "etcd://etcd-a:2379,etcd-b:2379");
        assert!(p.managed_metadata.is_none());
        s.metadata_store.managed = Some(ManagedMetadata::default());
        assert_eq!(fields(validate(&s, "x", "ns")), ["spec.metadataStore"]);
        s.metadata_store.managed = None;
        s.metadata_store.external = Some(ExternalMetadata {
            endpoints: vec!["http://etcd:2379".into(), "etcd".into(), "etcd:0".into()],
        });
        assert_eq!(validate(&s, "x", "ns").unwrap_err().len(), 3);
        let mut s = spec();
        s.metadata_store.managed = Some(ManagedMetadata {
            replicas: 3,
            ..Default::default()
        });
        let p = validate(&s, "c", "prod").unwrap();
        assert_eq!(
            p.metadata_url,
            "etcd://c-metadata-0.c-metadata.prod.svc:2379,c-metadata-1.c-metadata.prod.svc:2379,c-metadata-2.c-metadata.prod.svc:2379"
        );
    }

    #[test]
    fn autoscaling_bounds_and_config_limits_are_checked() {
        let mut s = spec();
        s.brokers.autoscaling = Some(Autoscaling {
            min_replicas: 3,
            max_replicas: 2,
            target_load: 0,
            stabilization_window_seconds: 60,
        });
        assert_eq!(
            fields(validate(&s, "x", "ns")),
            [
                "spec.brokers.autoscaling.maxReplicas",
                "spec.brokers.autoscaling.targetLoad"
            ]
        );
        let mut s = spec();
        s.brokers.config.max_message_bytes = Some(10 << 20);
        s.bookies.config.max_entry_bytes = Some(6 << 20);
        s.bookies.config.disk_usage_threshold = Some(0.8);
        s.bookies.config.disk_usage_lwm = Some(0.9);
        assert_eq!(
            fields(validate(&s, "x", "ns")),
            [
                "spec.bookies.config.diskUsageLwm",
                "spec.brokers.config.maxMessageBytes"
            ]
        );
        assert_eq!(fields(validate(&spec(), &"n".repeat(41), "ns")), ["metadata.name"]);
        let mut s = spec();
        s.brokers.config.max_ledger_bytes = Some(u64::MAX);
        s.bookies.config.min_free_bytes = Some(i64::MAX as u64);
        assert_eq!(fields(validate(&s, "x", "ns")), ["spec.brokers.config.maxLedgerBytes"]);
    }
}
