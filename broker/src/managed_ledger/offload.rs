//! A managed ledger's offload runs (docs/storage.md, `crate::offload`): which closed
//! ledgers to offload ([`offload_candidates`]), and the run that uploads them, records
//! each step in the ledger list by compare-and-set, and deletes bookie copies after the
//! deletion lag. The read side (offloaded ledgers served from object storage) stays with
//! the other reads in the parent module.

use super::*;

impl ManagedLedger {
    /// Changes ledger `id`'s entry in the list with `f` (which says whether it changed
    /// anything) and stores the list. `false` if the ledger is not listed or `f` declined.
    async fn update_ledger(&self, id: u64, f: impl FnOnce(&mut LedgerInfo) -> bool) -> Result<bool> {
        let _list = self.list.lock().await;
        let info = {
            let st = self.state();
            let mut info = st.info.clone();
            let Some(l) = info.ledgers.iter_mut().find(|l| l.id == id) else {
                return Ok(false);
            };
            if !f(l) {
                return Ok(false);
            }
            info
        };
        self.store_info(info).await?;
        Ok(true)
    }

    /// The open ledger's id and its size so far.
    pub fn current_ledger(&self) -> (Option<u64>, u64) {
        let st = self.state();
        let current = st.writer.as_ref().map(|w| w.id().get());
        (current, if current.is_some() { st.bytes } else { 0 })
    }

    /// The closed ledgers an offload run would offload now under `policy`.
    pub fn offload_pending(&self, policy: &OffloadPolicy) -> Vec<u64> {
        let (current, current_bytes) = self.current_ledger();
        let st = self.state();
        offload_candidates(
            &st.info.ledgers,
            current,
            current_bytes,
            st.info.offload_requested_upto,
            policy,
            now_ms(),
        )
    }

    /// Asks for every closed ledger to be offloaded, whatever the thresholds. Recorded in
    /// the ledger list, so the request survives a crash or a move of the topic; the
    /// backoff of earlier failures is reset. Run [`Self::run_offload`] to act on it.
    pub async fn request_offload(&self) -> Result<()> {
        {
            let _list = self.list.lock().await;
            let (current, _) = self.current_ledger();
            let info = {
                let st = self.state();
                let upto = st
                    .info
                    .ledgers
                    .iter()
                    .map(|l| l.id)
                    .filter(|id| Some(*id) != current)
                    .max();
                match upto {
                    Some(u) if st.info.offload_requested_upto.is_none_or(|p| p < u) => {
                        let mut info = st.info.clone();
                        info.offload_requested_upto = Some(u);
                        Some(info)
                    }
                    _ => None,
                }
            };
            if let Some(info) = info {
                self.store_info(info).await?;
            }
        }
        self.offload_status.lock().expect("offload status").next_try_ms = 0;
        Ok(())
    }

    /// The topic's offload runs so far.
    pub fn offload_status(&self) -> OffloadRunStatus {
        self.offload_status.lock().expect("offload status").clone()
    }

    /// Whether a run may start now (none running, and past the backoff of failures).
    pub fn offload_due(&self) -> bool {
        let st = self.offload_status.lock().expect("offload status");
        !st.running && now_ms() >= st.next_try_ms
    }

    /// The ledger list's offload request, if any.
    pub fn offload_requested_upto(&self) -> Option<u64> {
        self.state().info.offload_requested_upto
    }

    /// Starts an offload run in a task of its own (uploads take long), marked running at
    /// once so that a status read right after shows it.
    pub fn start_offload(self: &Arc<Self>, policy: OffloadPolicy) {
        if self.cfg.offload.is_none() {
            return;
        }
        self.offload_status.lock().expect("offload status").running = true;
        let ml = self.clone();
        tokio::spawn(async move {
            let _ = ml.run_offload(policy).await;
        });
    }

    /// One offload run: offloads the ledgers [`offload_candidates`] picks, oldest first,
    /// then deletes the bookie copies past `policy.deletion_lag`. At most one run per
    /// topic at a time (a second returns `Ok(0)` at once); stops when the topic closes.
    /// A failure is recorded in [`Self::offload_status`] with the time of the next try
    /// (backoff doubling from 1 s to [`MAX_OFFLOAD_BACKOFF`]). Returns the ledgers
    /// offloaded.
    pub async fn run_offload(&self, policy: OffloadPolicy) -> Result<usize> {
        let Some(off) = self.cfg.offload.clone() else {
            return Ok(0);
        };
        let Ok(_run) = self.offload_run.try_lock() else {
            return Ok(0);
        };
        self.offload_status.lock().expect("offload status").running = true;
        let result = tokio::select! {
            r = self.offload_pass(&off, policy) => r,
            _ = self.stopped.cancelled() => Err(BrokerError::Closed(self.topic.to_string())),
        };
        let mut st = self.offload_status.lock().expect("offload status");
        st.running = false;
        match &result {
            Ok(_) => {
                st.failures = 0;
                st.next_try_ms = 0;
                st.last_error = None;
            }
            Err(BrokerError::Closed(_)) => {}
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                let backoff = Duration::from_secs(1u64 << (st.failures - 1).min(16)).min(MAX_OFFLOAD_BACKOFF);
                let now = now_ms();
                st.next_try_ms = now + backoff.as_millis() as u64;
                st.last_error = Some(e.to_string());
                st.last_error_ms = now;
                off.metrics.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(topic = %self.topic, error = %e, retry_in = ?backoff, "offload failed; will retry");
            }
        }
        result
    }

    async fn offload_pass(&self, off: &Arc<Offloader>, policy: OffloadPolicy) -> Result<usize> {
        let mut done = 0;
        for id in self.offload_pending(&policy) {
            self.offload_one(off, id).await?;
            done += 1;
        }
        let now = now_ms();
        let lag = policy.deletion_lag.as_millis() as u64;
        let due: Vec<u64> = self
            .state()
            .info
            .ledgers
            .iter()
            .filter(|l| {
                l.offload
                    .is_some_and(|o| o.complete && !o.bookie_deleted && now >= o.completed_ms.saturating_add(lag))
            })
            .map(|l| l.id)
            .collect();
        for id in due {
            // Deleted first, then recorded: in between, reads of the ledger fail over
            // from its bookies to object storage.
            self.readers.lock().expect("reader cache").remove(&id);
            match self
                .client
                .delete(LedgerId::new(id).expect("stored ids are valid"))
                .await
            {
                Ok(()) | Err(BookieError::NoSuchLedger(_)) => {}
                Err(e) => return Err(e.into()),
            }
            self.update_ledger(id, |l| match &mut l.offload {
                Some(o) if o.complete && !o.bookie_deleted => {
                    o.bookie_deleted = true;
                    true
                }
                _ => false,
            })
            .await?;
            off.metrics
                .deleted_from_bookies
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(topic = %self.topic, ledger = id, "offloaded ledger deleted from bookies");
        }
        Ok(done)
    }

    /// Offloads closed ledger `id` as a new attempt: the attempt is recorded first (after
    /// deleting the objects of an unfinished earlier one), uploaded and verified, and only
    /// then recorded complete.
    async fn offload_one(&self, off: &Arc<Offloader>, id: u64) -> Result<()> {
        let previous = match self.state().info.ledgers.iter().find(|l| l.id == id) {
            Some(l) if l.offload.is_some_and(|o| o.complete) => return Ok(()),
            Some(l) => l.offload.map(|o| o.attempt),
            None => return Ok(()),
        };
        // The unfinished attempt's objects go before the list stops naming them, so a
        // failure here leaves nothing unreferenced behind.
        if let Some(p) = previous {
            off.delete_attempt(&self.topic, id, p).await?;
        }
        let attempt = crate::offload::new_attempt();
        let started = self
            .update_ledger(id, |l| {
                if l.offload.map(|o| o.attempt) != previous {
                    return false;
                }
                l.offload = Some(OffloadInfo {
                    attempt,
                    started_ms: now_ms(),
                    ..Default::default()
                });
                true
            })
            .await?;
        if !started {
            return Ok(());
        }
        let lid = LedgerId::new(id).expect("stored ids are valid");
        tracing::info!(topic = %self.topic, ledger = id, attempt = format!("{attempt:016x}"), "offloading ledger");
        let reader = self.reader(lid).await?;
        let data_bytes = off.upload(&self.topic, &reader, attempt).await?;
        let completed = self
            .update_ledger(id, |l| match &mut l.offload {
                Some(o) if o.attempt == attempt => {
                    o.complete = true;
                    o.completed_ms = now_ms();
                    o.data_bytes = data_bytes;
                    true
                }
                _ => false,
            })
            .await;
        match completed {
            Ok(true) => {
                tracing::info!(topic = %self.topic, ledger = id, bytes = data_bytes, "ledger offloaded");
                Ok(())
            }
            // Superseded or deleted meanwhile: nothing names these objects.
            Ok(false) => off.delete_attempt(&self.topic, id, attempt).await,
            Err(e) => Err(e),
        }
    }
}

/// The closed ledgers of a topic to offload now, oldest first: those with an unfinished
/// attempt (resumed whatever the policy), those up to a requested id, those closed longer
/// than the age threshold, and the oldest while more than the size threshold stays on
/// bookies. `current` is the open ledger and `current_bytes` its size so far.
pub fn offload_candidates(
    ledgers: &[LedgerInfo],
    current: Option<u64>,
    current_bytes: u64,
    requested_upto: Option<u64>,
    policy: &OffloadPolicy,
    now_ms: u64,
) -> Vec<u64> {
    let offloaded = |l: &LedgerInfo| l.offload.is_some_and(|o| o.complete);
    let mut on_bookies: u64 = ledgers
        .iter()
        .filter(|l| !offloaded(l))
        .fold(current_bytes, |sum, l| sum.saturating_add(l.bytes));
    let mut out = Vec::new();
    for (i, l) in ledgers.iter().enumerate() {
        if Some(l.id) == current || l.entries == 0 || offloaded(l) {
            continue;
        }
        // Closed when the next ledger was created.
        let closed_ms = ledgers.get(i + 1).map(|n| n.created_ms);
        let resume = l.offload.is_some();
        let requested = requested_upto.is_some_and(|u| l.id <= u);
        let old = match (policy.threshold_age, closed_ms) {
            (Some(age), Some(c)) => now_ms.saturating_sub(c) >= age.as_millis() as u64,
            _ => false,
        };
        let big = policy.threshold_bytes.is_some_and(|t| on_bookies > t);
        if resume || requested || old || big {
            on_bookies = on_bookies.saturating_sub(l.bytes);
            out.push(l.id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(id: u64, entries: u64, bytes: u64, created_ms: u64) -> LedgerInfo {
        LedgerInfo {
            id,
            entries,
            bytes,
            created_ms,
            offload: None,
        }
    }

    const OFF: OffloadPolicy = OffloadPolicy {
        threshold_bytes: None,
        threshold_age: None,
        deletion_lag: Duration::ZERO,
    };

    #[test]
    fn offload_candidates_follow_the_thresholds_oldest_first() {
        // Ledgers 1–4 closed (100 bytes each), 5 open with 50 bytes; 3 is empty.
        let mut ls = vec![
            ledger(1, 10, 100, 1_000),
            ledger(2, 10, 100, 2_000),
            ledger(3, 0, 0, 3_000),
            ledger(4, 10, 100, 4_000),
            ledger(5, 0, 0, 5_000),
        ];
        let pick = |ls: &[LedgerInfo], p: OffloadPolicy, req: Option<u64>, now: u64| {
            offload_candidates(ls, Some(5), 50, req, &p, now)
        };
        assert!(pick(&ls, OFF, None, 10_000).is_empty(), "no threshold, no request");
        // Size: 350 bytes on bookies; keep at most 200 → the two oldest with data go.
        let size = OffloadPolicy {
            threshold_bytes: Some(200),
            ..OFF
        };
        assert_eq!(pick(&ls, size, None, 10_000), vec![1, 2]);
        let all = OffloadPolicy {
            threshold_bytes: Some(0),
            ..OFF
        };
        assert_eq!(
            pick(&ls, all, None, 10_000),
            vec![1, 2, 4],
            "never the empty or open one"
        );
        // Age: closed when the next ledger was created; 2 closed at 3,000.
        let age = OffloadPolicy {
            threshold_age: Some(Duration::from_secs(7)),
            ..OFF
        };
        assert_eq!(pick(&ls, age, None, 10_000), vec![1, 2]);
        assert_eq!(pick(&ls, OFF, Some(2), 0), vec![1, 2], "a request up to ledger 2");
        // Offloaded ones count off the bookie bytes and are not picked again; an
        // interrupted attempt is resumed whatever the policy.
        ls[0].offload = Some(OffloadInfo {
            attempt: 1,
            complete: true,
            ..Default::default()
        });
        ls[3].offload = Some(OffloadInfo {
            attempt: 2,
            ..Default::default()
        });
        assert_eq!(pick(&ls, OFF, None, 0), vec![4]);
        let keep_250 = OffloadPolicy {
            threshold_bytes: Some(250),
            ..OFF
        };
        assert_eq!(
            pick(&ls, keep_250, None, 0),
            vec![4],
            "250 on bookies: 4 resumes, 2 may stay"
        );
        assert_eq!(pick(&ls, size, None, 0), vec![2, 4]);
        assert_eq!(pick(&ls, all, None, 0), vec![2, 4]);
        // u64::MAX ids and an empty list are fine.
        assert!(offload_candidates(&[], None, 0, Some(u64::MAX), &all, u64::MAX).is_empty());
        let big = [ledger(u64::MAX - 1, 1, u64::MAX, 0), ledger(u64::MAX, 0, 0, 0)];
        assert_eq!(
            offload_candidates(&big, Some(u64::MAX), u64::MAX, None, &all, 0),
            vec![u64::MAX - 1]
        );
    }
}
