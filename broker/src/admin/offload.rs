//! Admin RPCs of tiered offload: `OffloadTopic` (a recorded request to offload every
//! closed ledger) and `GetOffloadStatus`, and the offload figures of topic stats.
//!
//! Both are answered by the topic's owner (forwarded like the other topic RPCs); a status
//! of a topic no broker has loaded is read from its stored ledger list.

use super::{AdminService, bad_name, forwarded, to_status};
use crate::authz::{Action, Resource};
use crate::error::BrokerError;
use crate::managed_ledger::{LedgerInfo, ManagedLedgerInfo, OffloadRunStatus, offload_candidates};
use crate::offload::{ObjectKind, OffloadPolicy};
use strata_common::TopicName;
use strata_meta::keys;
use strata_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// Payload bytes of offloaded ledgers, and payload bytes still on bookies.
pub(super) fn offload_bytes(ledgers: &[LedgerInfo], current_bytes: u64) -> (u64, u64) {
    let offloaded = ledgers
        .iter()
        .filter(|l| l.offload.is_some_and(|o| o.complete))
        .fold(0u64, |sum, l| sum.saturating_add(l.bytes));
    let on_bookies = ledgers
        .iter()
        .filter(|l| !l.offload.is_some_and(|o| o.bookie_deleted))
        .fold(current_bytes, |sum, l| sum.saturating_add(l.bytes));
    (offloaded, on_bookies)
}

/// What one topic's owner knows of its offload.
struct TopicView {
    ledgers: Vec<LedgerInfo>,
    current: Option<u64>,
    current_bytes: u64,
    /// Entries of the open ledger so far.
    current_entries: u64,
    requested_upto: Option<u64>,
    run: OffloadRunStatus,
}

impl AdminService {
    pub(super) async fn offload_rpc(
        &self,
        r: Request<pb::TopicRequest>,
        trigger: bool,
    ) -> Result<Response<pb::OffloadStatus>, Status> {
        let fwd = r.metadata().contains_key(super::FORWARDED);
        let p = super::who(&r);
        let t = TopicName::parse(&r.into_inner().topic).map_err(bad_name)?;
        self.allow(p, &[Action::Admin], Resource::Topic(t.clone())).await?;
        let n = self.partitions(&t).await?;
        let mut out = pb::OffloadStatus {
            topic: t.to_string(),
            ..Default::default()
        };
        if n > 0 {
            for i in 0..n {
                self.offload_one(&t.partition(i), fwd, trigger, &mut out).await?;
            }
        } else {
            self.offload_one(&t, fwd, trigger, &mut out).await?;
        }
        Ok(Response::new(out))
    }

    async fn offload_one(
        &self,
        t: &TopicName,
        was_forwarded: bool,
        trigger: bool,
        out: &mut pb::OffloadStatus,
    ) -> Result<(), Status> {
        if let Some(mut owner) = self.owner_elsewhere(was_forwarded, t).await? {
            let req = forwarded(pb::TopicRequest {
                topic: t.to_string(),
                ..Default::default()
            });
            let s = if trigger {
                owner.offload_topic(req).await?
            } else {
                owner.get_offload_status(req).await?
            };
            merge(out, s.into_inner());
            return Ok(());
        }
        let Some(off) = self.broker.offloader().cloned() else {
            if trigger {
                return Err(super::status(
                    pb::ErrorCode::InvalidArgument,
                    format!("cannot offload {t}: this broker has no [offload] url configured (docs/storage.md)"),
                ));
            }
            let view = self.stored_view(t).await?;
            fill(out, t, &view, None, None);
            return Ok(());
        };
        let policy = self.broker.offload_policy(t).await.map_err(to_status)?;
        let view = if trigger {
            let loaded = self.broker.topic(t, false).await.map_err(to_status)?;
            let ml = loaded.topic.managed_ledger().clone();
            ml.request_offload().await.map_err(to_status)?;
            if let Some(policy) = policy {
                ml.start_offload(policy);
            }
            self.loaded_view(&ml).await
        } else {
            match self.broker.loaded(t).await {
                Some(l) => self.loaded_view(l.topic.managed_ledger()).await,
                None => {
                    // Offload runs on the topic's owner while the topic is loaded. A topic
                    // with work left (an interrupted attempt, a request) and no client
                    // since a restart is loaded here, so the work resumes.
                    let stored = self.stored_view(t).await?;
                    let now = crate::managed_ledger::now_ms();
                    let unfinished = policy.is_some_and(|p| {
                        !offload_candidates(&stored.ledgers, stored.current, 0, stored.requested_upto, &p, now)
                            .is_empty()
                    });
                    if unfinished {
                        let loaded = self.broker.topic(t, false).await.map_err(to_status)?;
                        self.loaded_view(loaded.topic.managed_ledger()).await
                    } else {
                        stored
                    }
                }
            }
        };
        out.enabled = true;
        out.url = off.url().to_string();
        fill(out, t, &view, Some(&off), policy);
        Ok(())
    }

    async fn loaded_view(&self, ml: &crate::managed_ledger::ManagedLedger) -> TopicView {
        let (current, current_bytes) = ml.current_ledger();
        let current_entries = match ml.last_confirmed() {
            Some(p) if Some(p.ledger.get()) == current => p.entry.get() + 1,
            _ => 0,
        };
        TopicView {
            ledgers: ml.ledgers().await,
            current,
            current_bytes,
            current_entries,
            requested_upto: ml.offload_requested_upto(),
            run: ml.offload_status(),
        }
    }

    /// The view of a topic no broker has loaded: its stored list, the last ledger taken as
    /// the open one (its next owner recovers it).
    async fn stored_view(&self, t: &TopicName) -> Result<TopicView, Status> {
        let Some(v) = self
            .broker
            .store()
            .get(&keys::topic(&t.path()))
            .await
            .map_err(|e| to_status(e.into()))?
        else {
            return Err(to_status(BrokerError::TopicNotFound(t.to_string())));
        };
        let info: ManagedLedgerInfo = serde_json::from_slice(&v.value)
            .map_err(|e| to_status(BrokerError::Corruption(format!("ledger list of {t}: {e}"))))?;
        Ok(TopicView {
            current: info.ledgers.last().map(|l| l.id),
            current_bytes: 0,
            current_entries: 0,
            requested_upto: info.offload_requested_upto,
            ledgers: info.ledgers,
            run: OffloadRunStatus::default(),
        })
    }
}

fn fill(
    out: &mut pb::OffloadStatus,
    t: &TopicName,
    v: &TopicView,
    off: Option<&crate::offload::Offloader>,
    policy: Option<OffloadPolicy>,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Some(p) = policy {
        out.pending_ledgers +=
            offload_candidates(&v.ledgers, v.current, v.current_bytes, v.requested_upto, &p, now).len() as u32;
    }
    let (offloaded, on_bookies) = offload_bytes(&v.ledgers, v.current_bytes);
    out.offloaded_bytes += offloaded;
    out.bookie_bytes += on_bookies;
    out.running |= v.run.running;
    out.consecutive_failures = out.consecutive_failures.max(v.run.failures);
    out.next_retry_ms = out.next_retry_ms.max(v.run.next_try_ms);
    if let Some(e) = &v.run.last_error
        && v.run.last_error_ms >= out.last_error_ms
    {
        out.last_error = e.clone();
        out.last_error_ms = v.run.last_error_ms;
    }
    if let Some(e) = &v.run.last_read_error
        && v.run.last_read_error_ms >= out.last_read_error_ms
    {
        out.last_read_error = e.clone();
        out.last_read_error_ms = v.run.last_read_error_ms;
    }
    for l in &v.ledgers {
        let open = Some(l.id) == v.current;
        let state = match l.offload {
            _ if open => "open",
            None => "bookies",
            Some(o) if !o.complete => "offloading",
            Some(o) if !o.bookie_deleted => "offloaded",
            Some(_) => "object-storage",
        };
        if l.offload.is_some_and(|o| o.complete) {
            out.offloaded_ledgers += 1;
        }
        let name = |kind| match (off, l.offload) {
            (Some(off), Some(o)) => off.describe(&off.object_path(t, l.id, o.attempt, kind)),
            _ => String::new(),
        };
        out.ledgers.push(pb::OffloadLedger {
            topic: t.to_string(),
            ledger: l.id,
            entries: if open { v.current_entries } else { l.entries },
            bytes: if open { v.current_bytes } else { l.bytes },
            state: state.into(),
            data_object: name(ObjectKind::Data),
            index_object: name(ObjectKind::Index),
            data_object_bytes: l.offload.map_or(0, |o| o.data_bytes),
        });
    }
}

/// Adds a partition's status (answered by its owner) to a partitioned topic's.
fn merge(out: &mut pb::OffloadStatus, s: pb::OffloadStatus) {
    out.enabled |= s.enabled;
    out.running |= s.running;
    out.pending_ledgers += s.pending_ledgers;
    out.offloaded_ledgers += s.offloaded_ledgers;
    out.offloaded_bytes += s.offloaded_bytes;
    out.bookie_bytes += s.bookie_bytes;
    if !s.last_error.is_empty() && s.last_error_ms >= out.last_error_ms {
        out.last_error = s.last_error;
        out.last_error_ms = s.last_error_ms;
    }
    if !s.last_read_error.is_empty() && s.last_read_error_ms >= out.last_read_error_ms {
        out.last_read_error = s.last_read_error;
        out.last_read_error_ms = s.last_read_error_ms;
    }
    out.consecutive_failures = out.consecutive_failures.max(s.consecutive_failures);
    out.next_retry_ms = out.next_retry_ms.max(s.next_retry_ms);
    if out.url.is_empty() {
        out.url = s.url;
    }
    out.ledgers.extend(s.ledgers);
}
