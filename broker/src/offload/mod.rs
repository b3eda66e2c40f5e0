//! Tiered offload of closed ledgers to object storage (DESIGN.md §3 "Offload").
//!
//! A closed ledger of a topic is copied to an object store ([`Offloader::upload`]) as one
//! data object and one index object ([`mod@format`]), then recorded in the topic's ledger
//! list. Reads of offloaded ledgers ([`OffloadedLedger`]) are ranged GETs with read-ahead,
//! every entry checked against the checksum its writer computed. The run that decides
//! what to offload and when lives in `managed_ledger.rs` (`run_offload`), because every
//! step is a compare-and-set of the ledger list.
//!
//! Object names: `<prefix>/<tenant>/<namespace>/<topic>/<ledger>-<attempt>.data` and
//! `.index`, where `<attempt>` is new for every attempt. So:
//! - an attempt's objects are never overwritten by another attempt;
//! - the ledger list names the attempt before its upload starts (so a crashed attempt's
//!   objects are found and deleted by the next one) and marks it complete only once both
//!   objects are written and read back: a half-written object is never referenced;
//! - S3 multipart uploads and the local store's temporary files make an object appear
//!   only whole.
//!
//! Backends (through `object_store`): `s3://bucket[/prefix]` (AWS or any S3-compatible
//! server through `endpoint`), `file:///dir`, and memory for unit tests.

pub mod format;
mod reader;

pub use reader::OffloadedLedger;

use crate::error::BrokerError;
use bytes::BytesMut;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, WriteMultipart,
};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use strata_bookie::ledger::LedgerReader;
use strata_common::metrics::{Histogram, LATENCY_BOUNDS, TextWriter};
use strata_common::{LedgerId, TopicName};

/// The `[offload]` section of a broker's (or standalone's) configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OffloadSettings {
    /// Where offloaded ledgers go: `s3://bucket[/prefix]` or `file:///absolute/dir`.
    /// Unset: offload is off.
    pub url: Option<String>,
    /// S3: the endpoint of an S3-compatible service (MinIO, Ceph RGW, moto), e.g.
    /// `http://10.0.0.5:9000`. Unset: AWS. An `http://` endpoint allows plain HTTP.
    pub endpoint: Option<String>,
    /// S3: the region (`us-east-1` unless set here or in `AWS_REGION`).
    pub region: Option<String>,
    /// S3 credentials. Unset: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN` from the environment, then the instance's credentials.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// S3: `bucket.host` addressing instead of `host/bucket` (false: path style, which
    /// S3-compatible servers expect).
    pub virtual_hosted_style: bool,
    /// Closed ledgers are offloaded, oldest first, while a topic keeps more than this many
    /// bytes on bookies (-1: never by size; 0: every closed ledger). A topic policy
    /// overrides it.
    pub threshold_bytes: i64,
    /// Closed ledgers are offloaded once they were closed this long ago, in seconds (-1:
    /// never by age). A topic policy overrides it.
    pub threshold_secs: i64,
    /// The bookie copy of an offloaded ledger is deleted this long after its upload was
    /// verified, in seconds (14,400: 4 hours, as Pulsar). A topic policy overrides it.
    pub deletion_lag_secs: u64,
    /// How often each topic is checked against its thresholds, in seconds (60).
    pub check_interval_secs: u64,
    /// Size of the parts of a multipart upload (8 MiB; S3 needs at least 5 MiB).
    pub part_bytes: usize,
    /// Bytes fetched per ranged GET when reading an offloaded ledger, and read ahead of
    /// the reader (8 MiB).
    pub read_ahead_bytes: usize,
    /// Upload bandwidth per broker, bytes per second (0: unlimited).
    pub max_bytes_per_sec: u64,
    /// Requests are retried this many times before the attempt fails (2); a failed
    /// attempt is retried later with backoff.
    pub max_retries: usize,
    /// Timeout of one request to the object store, in seconds (30).
    pub request_timeout_secs: u64,
}

/// Pulsar's default deletion lag.
pub const DEFAULT_DELETION_LAG: Duration = Duration::from_secs(4 * 3600);

impl Default for OffloadSettings {
    fn default() -> Self {
        Self {
            url: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            virtual_hosted_style: false,
            threshold_bytes: -1,
            threshold_secs: -1,
            deletion_lag_secs: DEFAULT_DELETION_LAG.as_secs(),
            check_interval_secs: 60,
            part_bytes: 8 << 20,
            read_ahead_bytes: 8 << 20,
            max_bytes_per_sec: 0,
            max_retries: 2,
            request_timeout_secs: 30,
        }
    }
}

/// When a topic's closed ledgers are offloaded: its policies over the broker's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadPolicy {
    /// Offload while more than this many bytes are on bookies (`None`: never by size).
    pub threshold_bytes: Option<u64>,
    /// Offload ledgers closed this long ago (`None`: never by age).
    pub threshold_age: Option<Duration>,
    /// Delete the bookie copy this long after a verified upload.
    pub deletion_lag: Duration,
}

fn limit(name: &str, v: i64) -> Result<Option<u64>, String> {
    match v {
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(v as u64)),
        v => Err(format!("offload.{name} is {v}: use -1 (off) or a number ≥ 0")),
    }
}

impl OffloadSettings {
    /// The broker-wide default policy.
    pub fn policy(&self) -> OffloadPolicy {
        OffloadPolicy {
            threshold_bytes: limit("", self.threshold_bytes).ok().flatten(),
            threshold_age: limit("", self.threshold_secs).ok().flatten().map(Duration::from_secs),
            deletion_lag: Duration::from_secs(self.deletion_lag_secs),
        }
    }

    /// Checks the settings and connects nothing yet: `None` when offload is off. The
    /// error names the setting.
    pub fn build(&self) -> Result<Option<Arc<Offloader>>, String> {
        let Some(url) = self.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        limit("threshold_bytes", self.threshold_bytes)?;
        limit("threshold_secs", self.threshold_secs)?;
        if self.check_interval_secs == 0 {
            return Err("offload.check_interval_secs must be greater than 0".into());
        }
        if self.part_bytes < 5 << 20 || self.part_bytes > 512 << 20 {
            return Err("offload.part_bytes must be 5 MiB to 512 MiB (S3's part limits)".into());
        }
        if self.read_ahead_bytes == 0 || self.read_ahead_bytes > 256 << 20 {
            return Err("offload.read_ahead_bytes must be 1 byte to 256 MiB".into());
        }
        if self.request_timeout_secs == 0 {
            return Err("offload.request_timeout_secs must be greater than 0".into());
        }
        let (store, prefix, metadata): (Arc<dyn ObjectStore>, String, bool) =
            if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("offload.url {url:?} names no bucket: use s3://bucket[/prefix]"));
                }
                // HTTPS through rustls with ring (a second install is a no-op).
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_virtual_hosted_style_request(self.virtual_hosted_style)
                    .with_retry(object_store::RetryConfig {
                        max_retries: self.max_retries,
                        retry_timeout: Duration::from_secs(self.request_timeout_secs * (self.max_retries as u64 + 1)),
                        backoff: object_store::BackoffConfig::default(),
                    })
                    .with_client_options(
                        object_store::ClientOptions::new()
                            .with_timeout(Duration::from_secs(self.request_timeout_secs))
                            .with_connect_timeout(Duration::from_secs(self.request_timeout_secs.min(5))),
                    );
                if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                    b = b.with_region("us-east-1");
                }
                if let Some(r) = &self.region {
                    b = b.with_region(r);
                }
                if let Some(e) = &self.endpoint {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        return Err(format!("offload.endpoint {e:?} must start with http:// or https://"));
                    }
                    b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
                }
                match (&self.access_key_id, &self.secret_access_key) {
                    (Some(k), Some(s)) => b = b.with_access_key_id(k).with_secret_access_key(s),
                    (None, None) => {}
                    _ => {
                        return Err("offload.access_key_id and offload.secret_access_key must be set together".into());
                    }
                }
                if let Some(t) = &self.session_token {
                    b = b.with_token(t);
                }
                let s3 = b.build().map_err(|e| format!("offload.url {url:?}: {e}"))?;
                (Arc::new(s3), prefix.trim_matches('/').to_string(), true)
            } else if let Some(dir) = url.strip_prefix("file://") {
                if !dir.starts_with('/') {
                    return Err(format!(
                        "offload.url {url:?}: a file URL needs an absolute path (file:///var/lib/strata/offload)"
                    ));
                }
                std::fs::create_dir_all(dir).map_err(|e| format!("offload.url {url:?}: cannot create {dir}: {e}"))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| format!("offload.url {url:?}: {e}"))?
                    .with_automatic_cleanup(true);
                (Arc::new(fs), String::new(), false)
            } else {
                return Err(format!(
                    "offload.url {url:?}: use s3://bucket[/prefix] or file:///absolute/dir"
                ));
            };
        Ok(Some(Arc::new(Offloader::new(
            store,
            url.trim_end_matches('/').to_string(),
            &prefix,
            metadata,
            self.clone(),
        ))))
    }
}

/// Offload counters and the object-store read latency (in the broker's /metrics).
pub struct OffloadMetrics {
    pub offloaded_ledgers: AtomicU64,
    /// Bytes of data objects uploaded and verified.
    pub offloaded_bytes: AtomicU64,
    /// Failed offload attempts (each retried later).
    pub errors: AtomicU64,
    /// Failed or refused reads of offloaded data.
    pub read_errors: AtomicU64,
    pub read_bytes: AtomicU64,
    /// Bookie copies deleted after their deletion lag.
    pub deleted_from_bookies: AtomicU64,
    pub read_latency: Histogram,
}

impl Default for OffloadMetrics {
    fn default() -> Self {
        Self {
            offloaded_ledgers: AtomicU64::new(0),
            offloaded_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            deleted_from_bookies: AtomicU64::new(0),
            read_latency: Histogram::new(LATENCY_BOUNDS),
        }
    }
}

impl OffloadMetrics {
    pub fn write(&self, w: &mut TextWriter) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        w.counter(
            "strata_offload_ledgers_total",
            "Ledgers offloaded to object storage (uploaded and verified).",
            get(&self.offloaded_ledgers),
        );
        w.counter(
            "strata_offload_bytes_total",
            "Bytes of data objects offloaded to object storage.",
            get(&self.offloaded_bytes),
        );
        w.counter(
            "strata_offload_errors_total",
            "Failed offload attempts (retried with backoff).",
            get(&self.errors),
        );
        w.counter(
            "strata_offload_read_errors_total",
            "Reads of offloaded data that failed or were refused (damaged objects).",
            get(&self.read_errors),
        );
        w.counter(
            "strata_offload_read_bytes_total",
            "Bytes read from object storage.",
            get(&self.read_bytes),
        );
        w.counter(
            "strata_offload_deleted_from_bookies_total",
            "Bookie copies of offloaded ledgers deleted after the deletion lag.",
            get(&self.deleted_from_bookies),
        );
        w.histogram(
            "strata_offload_read_latency_seconds",
            "Latency of one ranged GET from object storage.",
            &self.read_latency,
        );
    }
}

/// An object store and where in it offloaded ledgers go.
pub struct Offloader {
    store: Arc<dyn ObjectStore>,
    /// The configured URL, for messages (`s3://bucket/prefix`, `file:///dir`).
    url: String,
    prefix: Option<ObjectPath>,
    /// Whether the store keeps object metadata (S3 does; the local store does not).
    metadata: bool,
    settings: OffloadSettings,
    pub metrics: OffloadMetrics,
    /// Upload throttle: when the bandwidth budget is next free.
    throttle: tokio::sync::Mutex<Instant>,
}

impl std::fmt::Debug for Offloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offloader").field("url", &self.url).finish()
    }
}

/// Which object of an offloaded ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Data,
    Index,
}

/// A new attempt id: unique across brokers and restarts (time, process, counter mixed).
pub fn new_attempt() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 40) ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(20);
    // splitmix64, so ids made close together look unrelated.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Offloader {
    fn new(store: Arc<dyn ObjectStore>, url: String, prefix: &str, metadata: bool, settings: OffloadSettings) -> Self {
        Self {
            store,
            url,
            prefix: (!prefix.is_empty()).then(|| ObjectPath::from(prefix)),
            metadata,
            settings,
            metrics: OffloadMetrics::default(),
            throttle: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    /// An offloader over memory (unit tests).
    pub fn in_memory(settings: OffloadSettings) -> Arc<Self> {
        Arc::new(Self::new(
            Arc::new(object_store::memory::InMemory::new()),
            "memory://".into(),
            "",
            false,
            settings,
        ))
    }

    pub fn settings(&self) -> &OffloadSettings {
        &self.settings
    }

    /// The configured URL (`s3://bucket/prefix`, `file:///dir`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The store itself (tests, tools).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The path of a topic's objects: `<prefix>/<tenant>/<namespace>/<topic>`.
    pub fn topic_path(&self, topic: &TopicName) -> ObjectPath {
        let base = self.prefix.clone().unwrap_or_default();
        base.join(topic.tenant())
            .join(topic.namespace())
            .join(topic.local_name())
    }

    /// The path of one object of an attempt.
    pub fn object_path(&self, topic: &TopicName, ledger: u64, attempt: u64, kind: ObjectKind) -> ObjectPath {
        let ext = match kind {
            ObjectKind::Data => "data",
            ObjectKind::Index => "index",
        };
        self.topic_path(topic).join(format!("{ledger}-{attempt:016x}.{ext}"))
    }

    /// An object's full name for messages: the URL plus its path under the prefix.
    pub fn describe(&self, path: &ObjectPath) -> String {
        let under = match &self.prefix {
            Some(p) => path.prefix_match(p).map_or_else(
                || path.to_string(),
                |parts| parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"),
            ),
            None => path.to_string(),
        };
        format!("{}/{under}", self.url)
    }

    fn error(&self, what: &str, path: &ObjectPath, e: object_store::Error) -> BrokerError {
        BrokerError::Offload(format!("{what} {}: {e}", self.describe(path)))
    }

    fn attributes(&self, ledger: u64, entries: u64) -> Attributes {
        let mut a = Attributes::new();
        if self.metadata {
            a.insert(
                Attribute::Metadata("strata-offload-format".into()),
                format::FORMAT.to_string().into(),
            );
            a.insert(Attribute::Metadata("strata-ledger".into()), ledger.to_string().into());
            a.insert(Attribute::Metadata("strata-entries".into()), entries.to_string().into());
        }
        a
    }

    /// Waits for upload bandwidth for `bytes` (no wait when unlimited).
    async fn throttle(&self, bytes: u64) {
        let rate = self.settings.max_bytes_per_sec;
        if rate == 0 {
            return;
        }
        let wait_until = {
            let mut next = self.throttle.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            start
        };
        tokio::time::sleep_until(wait_until.into()).await;
    }

    /// Uploads closed ledger `reader` of `topic` as attempt `attempt`: the data object
    /// (multipart), then the index object, then reads both back to verify them. Returns
    /// the data object's size. Nothing is referenced yet: the caller records the attempt
    /// complete only after this returns.
    pub async fn upload(&self, topic: &TopicName, reader: &LedgerReader, attempt: u64) -> Result<u64, BrokerError> {
        let ledger = reader.id();
        let id = ledger.get();
        let entries = reader.last_readable().map_or(0, |l| l + 1);
        let data_path = self.object_path(topic, id, attempt, ObjectKind::Data);
        let index_path = self.object_path(topic, id, attempt, ObjectKind::Index);
        let opts = PutMultipartOptions {
            attributes: self.attributes(id, entries),
            ..Default::default()
        };
        let upload = self
            .store
            .put_multipart_opts(&data_path, opts)
            .await
            .map_err(|e| self.error("cannot start uploading", &data_path, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, self.settings.part_bytes);
        let mut index = format::IndexBuilder::new(ledger);
        // Read in runs of about 4 MiB (at least one entry).
        let avg = (reader.metadata().length / entries.max(1)).max(1);
        let run = (4 << 20) / avg;
        let run = run.clamp(1, 1000);
        let mut next = 0;
        let written: Result<(), BrokerError> = async {
            while next < entries {
                let last = (next + run - 1).min(entries - 1);
                let got = reader.read(next, last).await?;
                let mut buf = BytesMut::new();
                for e in &got {
                    format::put_record(&mut buf, ledger, e.entry, &e.payload);
                    index.push(e.payload.len());
                }
                next += got.len() as u64;
                self.throttle(buf.len() as u64).await;
                w.wait_for_capacity(4)
                    .await
                    .map_err(|e| self.error("cannot upload", &data_path, e))?;
                w.write(&buf);
            }
            Ok(())
        }
        .await;
        if let Err(e) = written {
            let _ = w.abort().await;
            return Err(e);
        }
        w.finish()
            .await
            .map_err(|e| self.error("cannot finish uploading", &data_path, e))?;
        let index_bytes = index.finish();
        self.store
            .put_opts(
                &index_path,
                index_bytes.clone().into(),
                PutOptions {
                    attributes: self.attributes(id, entries),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.error("cannot upload", &index_path, e))?;
        // Verify: the data object has the size the index says, and the index reads back
        // as written.
        let head = self
            .store
            .head(&data_path)
            .await
            .map_err(|e| self.error("cannot verify", &data_path, e))?;
        if head.size != index.data_bytes() {
            return Err(BrokerError::Offload(format!(
                "verifying {}: {} bytes stored, {} written",
                self.describe(&data_path),
                head.size,
                index.data_bytes()
            )));
        }
        let back = self
            .store
            .get(&index_path)
            .await
            .map_err(|e| self.error("cannot verify", &index_path, e))?
            .bytes()
            .await
            .map_err(|e| self.error("cannot verify", &index_path, e))?;
        if back != index_bytes {
            return Err(BrokerError::Offload(format!(
                "verifying {}: it does not read back as written",
                self.describe(&index_path)
            )));
        }
        self.metrics.offloaded_ledgers.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .offloaded_bytes
            .fetch_add(index.data_bytes(), Ordering::Relaxed);
        Ok(index.data_bytes())
    }

    /// Deletes an attempt's objects; objects already gone are fine.
    pub async fn delete_attempt(&self, topic: &TopicName, ledger: u64, attempt: u64) -> Result<(), BrokerError> {
        for kind in [ObjectKind::Index, ObjectKind::Data] {
            let path = self.object_path(topic, ledger, attempt, kind);
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error("cannot delete", &path, e)),
            }
        }
        Ok(())
    }

    /// Opens offloaded ledger `ledger` (attempt `attempt`, `entries` entries) for reads:
    /// fetches and checks its index.
    pub async fn open(
        self: &Arc<Self>,
        topic: &TopicName,
        ledger: LedgerId,
        attempt: u64,
        entries: u64,
    ) -> Result<Arc<OffloadedLedger>, BrokerError> {
        OffloadedLedger::open(self.clone(), topic, ledger, attempt, entries).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_name_the_setting() {
        assert!(OffloadSettings::default().build().unwrap().is_none(), "off by default");
        let with = |f: fn(&mut OffloadSettings)| {
            let mut s = OffloadSettings {
                url: Some("s3://bucket/prefix".into()),
                endpoint: Some("http://127.0.0.1:1".into()),
                ..Default::default()
            };
            f(&mut s);
            s.build().map(|o| o.map(|o| o.url().to_string()))
        };
        assert_eq!(with(|_| {}).unwrap().as_deref(), Some("s3://bucket/prefix"));
        let err = |f| with(f).unwrap_err();
        assert!(err(|s| s.url = Some("s3:///x".into())).contains("no bucket"));
        assert!(err(|s| s.url = Some("gs://b".into())).contains("s3://bucket"));
        assert!(err(|s| s.url = Some("file://relative".into())).contains("absolute"));
        assert!(err(|s| s.threshold_bytes = -2).contains("offload.threshold_bytes"));
        assert!(err(|s| s.endpoint = Some("127.0.0.1:9000".into())).contains("offload.endpoint"));
        assert!(err(|s| s.access_key_id = Some("k".into())).contains("together"));
        assert!(err(|s| s.part_bytes = 1 << 20).contains("offload.part_bytes"));
        assert!(err(|s| s.check_interval_secs = 0).contains("check_interval_secs"));
    }

    #[test]
    fn object_names_are_per_attempt_and_described_with_the_url() {
        let s = OffloadSettings {
            url: Some("s3://bucket/some/prefix/".into()),
            endpoint: Some("http://127.0.0.1:1".into()),
            ..Default::default()
        };
        let o = s.build().unwrap().unwrap();
        let t = TopicName::parse("persistent://acme/ns/orders").unwrap();
        let a = o.object_path(&t, 12, 0xabc, ObjectKind::Data);
        let b = o.object_path(&t, 12, 0xabd, ObjectKind::Data);
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "some/prefix/acme/ns/orders/12-0000000000000abc.data");
        assert_eq!(
            o.describe(&a),
            "s3://bucket/some/prefix/acme/ns/orders/12-0000000000000abc.data"
        );
        assert_ne!(new_attempt(), new_attempt());
    }
}
