//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas exactly one reconciles.
//!
//! The algorithm is client-go's: the holder renews the lease every `retry` period; a
//! candidate takes it over when the record (holder and renew time) has not changed for a
//! whole lease duration *as measured on the candidate's own clock*, so clock skew between
//! replicas does not matter. Every write is a compare-and-set on the Lease's
//! resourceVersion, so two candidates can never both win.
//!
//! Invariants:
//! - A replica acts as leader only while its last successful renewal is younger than the
//!   renew deadline, which is shorter than the lease duration a candidate waits: the old
//!   leader stops before anyone else can start.
//! - A replica that stops gracefully releases the lease, so a standby takes over at once.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::time::Duration;
use tokio::time::Instant;

/// Timing of the election.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a lease is valid without renewal (15 s).
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops leading (10 s).
    pub renew_deadline: Duration,
    /// How often holders renew and candidates retry (2 s).
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry: Duration::from_secs(2),
        }
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
    /// The last record seen of another holder, and when (on our clock) it was seen.
    observed: Option<(String, Option<Timestamp>, Instant)>,
    /// When this replica last renewed successfully while leading.
    renewed: Option<Instant>,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            observed: None,
            renewed: None,
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Whether this replica may act as leader now.
    pub fn is_leader(&self) -> bool {
        self.renewed.is_some_and(|t| t.elapsed() < self.timing.renew_deadline)
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One round: create, renew or take over the lease if this replica may. Returns
    /// whether it leads after the round. Errors talking to the API server count as a
    /// failed renewal (leadership ends once the renew deadline passes).
    pub async fn try_acquire_or_renew(&mut self) -> bool {
        match self.round().await {
            Ok(true) => {
                self.renewed = Some(Instant::now());
            }
            Ok(false) => self.renewed = None,
            Err(e) => tracing::warn!(lease = %self.name, error = %e, "leader lease not renewed"),
        }
        self.is_leader()
    }

    async fn round(&mut self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader (created the lease)");
                    Ok(true)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        if holder == self.identity {
            let mut renewed = lease.clone();
            renewed.spec = Some(self.spec(transitions, spec.acquire_time.clone()));
            return match self.api.replace(&self.name, &PostParams::default(), &renewed).await {
                Ok(_) => Ok(true),
                // Someone else wrote it: re-read next round.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        }
        let renew_time = spec.renew_time.as_ref().map(|t| t.0);
        let changed = match &self.observed {
            Some((h, r, _)) => *h != holder || *r != renew_time,
            None => true,
        };
        if changed {
            self.observed = Some((holder.clone(), renew_time, Instant::now()));
        }
        let seen_at = self.observed.as_ref().map(|o| o.2).unwrap_or_else(Instant::now);
        let expired = holder.is_empty() || seen_at.elapsed() >= self.timing.lease_duration;
        if !expired {
            return Ok(false);
        }
        let mut taken = lease.clone();
        taken.spec = Some(self.spec(transitions + 1, None));
        match self.api.replace(&self.name, &PostParams::default(), &taken).await {
            Ok(_) => {
                tracing::info!(lease = %self.name, identity = %self.identity, previous = %holder, "became leader (took over the lease)");
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (stopping gracefully), so a standby need not wait it out.
    pub async fn release(&mut self) {
        if !self.is_leader() {
            return;
        }
        self.renewed = None;
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.name, "leader lease released"),
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "leader lease not released; a standby takes over when it expires")
            }
        }
    }
}
