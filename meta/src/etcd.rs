//! The etcd v3 backend (`etcd://host:port[,host:port…]`).
//!
//! Versions are etcd mod revisions; conditional writes are transactions comparing the
//! key's mod revision (or create revision 0 for "absent"). Sessions are etcd leases kept
//! alive every TTL/3; a session counts as lost when the lease expired, was revoked, or a
//! whole TTL passed since the send time of the last acknowledged keep-alive — never later
//! than etcd itself could expire it, so a holder stops acting on it in time.

use crate::{
    Condition, Guard, MetaError, MetadataStore, Result, Session, SessionControl, Versioned, WATCH_BUFFER, Watch,
    WatchEvent, check_key, check_ttl,
};
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

fn unavailable(e: etcd_client::Error) -> MetaError {
    MetaError::Unavailable(format!("etcd: {e}"))
}

/// A metadata store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl EtcdStore {
    /// Connects to any of `endpoints` (`http://host:port`, or `https://` with `tls`).
    pub async fn connect(endpoints: &[String], tls: Option<strata_net::tls::ClientTls>) -> Result<Self> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        let client = match tls {
            None => Client::connect(endpoints, Some(opts)).await,
            Some(tls) => Client::from_channel(crate::etcd_tls::channel(endpoints, &tls)?, Some(opts)).await,
        }
        .map_err(|e| MetaError::Unavailable(format!("connecting to etcd at {endpoints:?}: {e}")))?;
        Ok(Self { client })
    }

    fn compare(key: &str, cond: Condition) -> Option<Compare> {
        match cond {
            Condition::Any => None,
            Condition::Absent => Some(Compare::create_revision(key, CompareOp::Equal, 0)),
            Condition::Version(v) => Some(Compare::mod_revision(key, CompareOp::Equal, v as i64)),
        }
    }

    async fn put_with(&self, key: &str, value: Bytes, cond: Condition, opts: Option<PutOptions>) -> Result<u64> {
        check_key(key)?;
        let mut kv = self.client.kv_client();
        match Self::compare(key, cond) {
            None => {
                let r = kv.put(key, value.to_vec(), opts).await.map_err(map_put_error)?;
                Ok(r.header().map_or(0, |h| h.revision() as u64))
            }
            Some(cmp) => {
                let txn = Txn::new().when([cmp]).and_then([TxnOp::put(key, value.to_vec(), opts)]);
                let r = kv.txn(txn).await.map_err(map_put_error)?;
                if !r.succeeded() {
                    return Err(MetaError::BadVersion(key.to_string()));
                }
                Ok(r.header().map_or(0, |h| h.revision() as u64))
            }
        }
    }
}

fn map_put_error(e: etcd_client::Error) -> MetaError {
    // A put with an expired lease fails with "requested lease not found".
    if e.to_string().contains("lease not found") {
        return MetaError::SessionLost;
    }
    unavailable(e)
}

struct EtcdSession {
    stop_keepalive: AtomicBool,
    /// Set once the session is closed (a flag, so a close is never missed).
    closed: watch::Sender<bool>,
}

struct EtcdSessionHandle {
    state: Arc<EtcdSession>,
    client: Client,
    lease: i64,
}

impl SessionControl for EtcdSessionHandle {
    fn stop_keepalive(&self) {
        self.state.stop_keepalive.store(true, Ordering::Release);
    }

    fn close(&self) {
        self.state.stop_keepalive.store(true, Ordering::Release);
        self.state.closed.send_replace(true);
        let mut lease = self.client.lease_client();
        let id = self.lease;
        tokio::spawn(async move {
            let _ = lease.revoke(id).await;
        });
    }
}

impl Drop for EtcdSessionHandle {
    fn drop(&mut self) {
        // Without handles nobody can use the session: stop keeping it alive; etcd expires
        // it after its TTL.
        self.state.stop_keepalive.store(true, Ordering::Release);
    }
}

#[async_trait::async_trait]
impl MetadataStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        check_key(key)?;
        let r = self.client.kv_client().get(key, None).await.map_err(unavailable)?;
        Ok(r.kvs().first().map(|kv| Versioned {
            value: Bytes::copy_from_slice(kv.value()),
            version: kv.mod_revision() as u64,
        }))
    }

    async fn put(&self, key: &str, value: Bytes, cond: Condition) -> Result<u64> {
        self.put_with(key, value, cond, None).await
    }

    async fn put_guarded(&self, key: &str, value: Bytes, cond: Condition, guard: &Guard) -> Result<u64> {
        check_key(key)?;
        check_key(&guard.key)?;
        let guard_cmp = Compare::mod_revision(guard.key.as_str(), CompareOp::Equal, guard.version as i64);
        let cmps: Vec<Compare> = std::iter::once(guard_cmp).chain(Self::compare(key, cond)).collect();
        // On failure the guard is read in the same transaction, to tell which compare failed.
        let txn = Txn::new()
            .when(cmps)
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(guard.key.as_str(), None)]);
        let r = self.client.kv_client().txn(txn).await.map_err(map_put_error)?;
        if r.succeeded() {
            return Ok(r.header().map_or(0, |h| h.revision() as u64));
        }
        let guard_now = r.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| kv.mod_revision() as u64)),
            _ => None,
        });
        if guard_now.flatten() != Some(guard.version) {
            return Err(MetaError::GuardChanged(guard.key.clone()));
        }
        Err(MetaError::BadVersion(key.to_string()))
    }

    async fn put_ephemeral(&self, session: &Session, key: &str, value: Bytes, cond: Condition) -> Result<u64> {
        if session.is_lost() {
            return Err(MetaError::SessionLost);
        }
        self.put_with(key, value, cond, Some(PutOptions::new().with_lease(session.id as i64)))
            .await
    }

    async fn delete(&self, key: &str, cond: Condition) -> Result<bool> {
        check_key(key)?;
        let mut kv = self.client.kv_client();
        match cond {
            Condition::Any => Ok(kv.delete(key, None).await.map_err(unavailable)?.deleted() > 0),
            Condition::Absent => {
                let exists = !kv.get(key, None).await.map_err(unavailable)?.kvs().is_empty();
                if exists {
                    Err(MetaError::BadVersion(key.to_string()))
                } else {
                    Ok(false)
                }
            }
            Condition::Version(_) => {
                let cmp = Self::compare(key, cond).expect("version compare");
                let txn = Txn::new().when([cmp]).and_then([TxnOp::delete(key, None)]);
                let r = kv.txn(txn).await.map_err(unavailable)?;
                if !r.succeeded() {
                    return Err(MetaError::BadVersion(key.to_string()));
                }
                Ok(true)
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>> {
        let r = self
            .client
            .kv_client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        r.kvs()
            .iter()
            .map(|kv| {
                let key = kv
                    .key_str()
                    .map_err(|_| MetaError::Corruption("non-UTF-8 key in etcd".into()))?
                    .to_string();
                Ok((
                    key,
                    Versioned {
                        value: Bytes::copy_from_slice(kv.value()),
                        version: kv.mod_revision() as u64,
                    },
                ))
            })
            .collect()
    }

    async fn watch(&self, prefix: &str) -> Result<Watch> {
        let mut stream = self
            .client
            .watch_client()
            .watch(prefix, Some(WatchOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                match msg {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            let _ = tx.send(WatchEvent::Resync).await;
                            return;
                        }
                        for ev in resp.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let key = String::from_utf8_lossy(kv.key()).into_owned();
                            let event = match ev.event_type() {
                                EventType::Put => WatchEvent::Put {
                                    key,
                                    value: Bytes::copy_from_slice(kv.value()),
                                    version: kv.mod_revision() as u64,
                                },
                                EventType::Delete => WatchEvent::Delete { key },
                            };
                            if tx.send(event).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) | Err(_) => {
                        // The stream broke: events may be missing; the caller re-lists.
                        let _ = tx.send(WatchEvent::Resync).await;
                        return;
                    }
                }
            }
        });
        Ok(Watch { rx })
    }

    async fn session(&self, ttl: Duration) -> Result<Session> {
        check_ttl(ttl)?;
        let mut lease_client = self.client.lease_client();
        // etcd leases have whole seconds: round up, never down.
        let grant = lease_client
            .grant(ttl.as_secs_f64().ceil() as i64, None)
            .await
            .map_err(unavailable)?;
        let lease = grant.id();
        // The TTL etcd granted (it may raise a small one to its minimum).
        let ttl = Duration::from_secs(grant.ttl().max(1) as u64);
        let (lost_tx, lost_rx) = watch::channel(false);
        let (closed_tx, mut closed_rx) = watch::channel(false);
        let state = Arc::new(EtcdSession {
            stop_keepalive: AtomicBool::new(false),
            closed: closed_tx,
        });
        let st = state.clone();
        tokio::spawn(async move {
            // The lease certainly lives until `expiry`: etcd refreshed it after we sent the
            // keep-alive that was acknowledged, so the server's deadline is later than ours.
            let mut expiry = Instant::now() + ttl;
            let mut keeper = None;
            loop {
                let next = (Instant::now() + ttl / 3).min(expiry);
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {}
                    _ = closed_rx.wait_for(|c| *c) => break,
                }
                if Instant::now() >= expiry {
                    break; // no acknowledged keep-alive for a whole TTL: assume it is gone
                }
                if st.stop_keepalive.load(Ordering::Acquire) {
                    continue;
                }
                let sent = Instant::now();
                let budget = expiry.saturating_duration_since(sent).min(ttl / 3);
                let alive = tokio::time::timeout(budget, async {
                    if keeper.is_none() {
                        keeper = lease_client.keep_alive(lease).await.ok();
                    }
                    let (k, s) = keeper.as_mut()?;
                    k.keep_alive().await.ok()?;
                    s.message().await.ok().flatten().map(|r| r.ttl() > 0)
                })
                .await
                .ok()
                .flatten();
                match alive {
                    Some(true) => expiry = sent + ttl,
                    Some(false) => break,  // etcd says the lease is gone
                    None => keeper = None, // reconnect the keep-alive stream next round
                }
            }
            let _ = lost_tx.send(true);
        });
        Ok(Session {
            id: lease as u64,
            lost: lost_rx,
            control: Arc::new(EtcdSessionHandle {
                state,
                client: self.client.clone(),
                lease,
            }),
        })
    }
}
