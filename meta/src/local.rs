//! The in-process metadata store: `memory://` (nothing persisted) and `local:///path`
//! (every write synced to RocksDB before it returns, so data survives restarts).
//!
//! The whole state lives in memory behind one mutex; versions come from one store-wide
//! revision counter, as in etcd. Sessions are emulated in-process: a session lives while
//! its handle keeps it alive, and expires one TTL after keep-alives stop (handle dropped or
//! `stop_keepalive`). Ephemeral keys are never persisted — sessions cannot outlive the
//! process, so neither can their keys.
//!
//! Invariants: a mutation, its persistence and its watch events happen under the state
//! lock, so watchers see changes in revision order; a persisted write is synced before the
//! call returns.

use crate::{
    Condition, Guard, MetaError, MetadataStore, Result, Session, SessionControl, Versioned, WATCH_BUFFER, Watch,
    WatchEvent, check_key, check_ttl,
};
use bytes::Bytes;
use rocksdb::{DB, IteratorMode, Options, WriteBatch, WriteOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// Key under which the revision counter is persisted (user keys start with '/').
const REVISION_KEY: &[u8] = b"\0revision";

struct Entry {
    value: Bytes,
    version: u64,
    session: Option<u64>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<WatchEvent>,
}

#[derive(Default)]
struct State {
    kv: BTreeMap<String, Entry>,
    revision: u64,
    /// Live sessions and their "lost" signals.
    sessions: HashMap<u64, watch::Sender<bool>>,
    watchers: Vec<Watcher>,
}

struct Inner {
    state: Mutex<State>,
    db: Option<DB>,
    next_session: AtomicU64,
}

/// The embedded / in-memory store.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

impl LocalStore {
    /// A store that keeps nothing on disk.
    pub fn memory() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                db: None,
                next_session: AtomicU64::new(1),
            }),
        }
    }

    /// Opens (creating) a persistent store at `path`. Blocking.
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, path).map_err(|e| {
            MetaError::Unavailable(format!(
                "opening the metadata store at {}: {e} (is another process using it?)",
                path.display()
            ))
        })?;
        let mut state = State::default();
        for kv in db.iterator(IteratorMode::Start) {
            let (k, v) = kv.map_err(|e| MetaError::Unavailable(e.to_string()))?;
            if &*k == REVISION_KEY {
                state.revision = u64::from_le_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| MetaError::Corruption("revision counter".into()))?,
                );
                continue;
            }
            let key = String::from_utf8(k.to_vec()).map_err(|_| MetaError::Corruption("non-UTF-8 key".into()))?;
            if v.len() < 8 {
                return Err(MetaError::Corruption(format!("value of {key} is truncated")));
            }
            let version = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
            state.kv.insert(
                key,
                Entry {
                    value: Bytes::copy_from_slice(&v[8..]),
                    version,
                    session: None,
                },
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                db: Some(db),
                next_session: AtomicU64::new(1),
            }),
        })
    }

    /// Runs a mutation on a blocking thread when it writes to disk.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        if inner.db.is_none() {
            return f(&inner);
        }
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| MetaError::Unavailable(e.to_string()))?
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("metadata state lock")
    }

    fn check(state: &State, key: &str, cond: Condition) -> Result<()> {
        let cur = state.kv.get(key).map(|e| e.version);
        let ok = match cond {
            Condition::Any => true,
            Condition::Absent => cur.is_none(),
            Condition::Version(v) => cur == Some(v),
        };
        if ok {
            Ok(())
        } else {
            Err(MetaError::BadVersion(key.to_string()))
        }
    }

    fn persist(&self, revision: u64, key: &str, value: Option<&[u8]>, version: u64) -> Result<()> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let mut b = WriteBatch::default();
        match value {
            Some(v) => {
                let mut buf = Vec::with_capacity(8 + v.len());
                buf.extend_from_slice(&version.to_le_bytes());
                buf.extend_from_slice(v);
                b.put(key.as_bytes(), buf);
            }
            None => b.delete(key.as_bytes()),
        }
        b.put(REVISION_KEY, revision.to_le_bytes());
        let mut w = WriteOptions::default();
        w.set_sync(true);
        db.write_opt(b, &w)
            .map_err(|e| MetaError::Unavailable(format!("metadata write: {e}")))
    }

    fn notify(state: &mut State, event: WatchEvent) {
        let key = match &event {
            WatchEvent::Put { key, .. } | WatchEvent::Delete { key } => key.clone(),
            WatchEvent::Resync => return,
        };
        state.watchers.retain(|w| {
            if !key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            match w.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // The watcher fell behind: it gets Resync (after draining) and the
                    // watch ends; it must list and watch again.
                    let tx = w.tx.clone();
                    tokio::spawn(async move {
                        let _ = tx.send(WatchEvent::Resync).await;
                    });
                    false
                }
            }
        });
    }

    fn put(&self, key: &str, value: Bytes, cond: Condition, session: Option<u64>) -> Result<u64> {
        self.put_if(key, value, cond, session, None)
    }

    fn put_if(
        &self,
        key: &str,
        value: Bytes,
        cond: Condition,
        session: Option<u64>,
        guard: Option<&Guard>,
    ) -> Result<u64> {
        let mut s = self.lock();
        if let Some(g) = guard
            && s.kv.get(&g.key).map(|e| e.version) != Some(g.version)
        {
            return Err(MetaError::GuardChanged(g.key.clone()));
        }
        Self::check(&s, key, cond)?;
        if let Some(id) = session
            && !s.sessions.contains_key(&id)
        {
            return Err(MetaError::SessionLost);
        }
        let revision = s.revision + 1;
        // Ephemeral keys are never persisted; a persistent write over an ephemeral key
        // makes it persistent.
        match session {
            None => self.persist(revision, key, Some(&value), revision)?,
            Some(_) => {
                if s.kv.get(key).is_some_and(|e| e.session.is_none()) {
                    self.persist(revision, key, None, 0)?;
                }
            }
        }
        s.revision = revision;
        s.kv.insert(
            key.to_string(),
            Entry {
                value: value.clone(),
                version: revision,
                session,
            },
        );
        Self::notify(
            &mut s,
            WatchEvent::Put {
                key: key.to_string(),
                value,
                version: revision,
            },
        );
        Ok(revision)
    }

    fn delete(&self, key: &str, cond: Condition) -> Result<bool> {
        let mut s = self.lock();
        if cond == Condition::Absent {
            return if s.kv.contains_key(key) {
                Err(MetaError::BadVersion(key.to_string()))
            } else {
                Ok(false)
            };
        }
        Self::check(&s, key, cond)?;
        let Some(old) = s.kv.get(key) else {
            return Ok(false);
        };
        let revision = s.revision + 1;
        if old.session.is_none() {
            self.persist(revision, key, None, 0)?;
        }
        s.revision = revision;
        s.kv.remove(key);
        Self::notify(&mut s, WatchEvent::Delete { key: key.to_string() });
        Ok(true)
    }

    /// Ends a session: deletes its keys and signals loss.
    fn expire(&self, id: u64) {
        let mut s = self.lock();
        let Some(lost) = s.sessions.remove(&id) else {
            return;
        };
        let keys: Vec<String> =
            s.kv.iter()
                .filter(|(_, e)| e.session == Some(id))
                .map(|(k, _)| k.clone())
                .collect();
        for k in keys {
            s.revision += 1;
            s.kv.remove(&k);
            Self::notify(&mut s, WatchEvent::Delete { key: k });
        }
        let _ = lost.send(true);
    }
}

struct LocalSession {
    inner: std::sync::Weak<Inner>,
    id: u64,
    ttl: Duration,
    stopped: AtomicBool,
    stop: Notify,
}

impl LocalSession {
    fn expire_after_ttl(self: &Arc<Self>) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(me.ttl) => {}
                _ = me.stop.notified() => {}
            }
            if let Some(inner) = me.inner.upgrade() {
                inner.expire(me.id);
            }
        });
    }
}

/// Ends the session one TTL after the last handle is dropped, as a lease whose keep-alives
/// stopped would.
struct SessionHandle(Arc<LocalSession>);

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.0.expire_after_ttl();
        } else if let Some(inner) = self.0.inner.upgrade() {
            inner.expire(self.0.id);
        }
    }
}

impl SessionControl for SessionHandle {
    fn stop_keepalive(&self) {
        self.0.expire_after_ttl();
    }

    fn close(&self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.stop.notify_waiters();
        if let Some(inner) = self.0.inner.upgrade() {
            inner.expire(self.0.id);
        }
    }
}

#[async_trait::async_trait]
impl MetadataStore for LocalStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        check_key(key)?;
        Ok(self.inner.lock().kv.get(key).map(|e| Versioned {
            value: e.value.clone(),
            version: e.version,
        }))
    }

    async fn put(&self, key: &str, value: Bytes, cond: Condition) -> Result<u64> {
        check_key(key)?;
        let key = key.to_string();
        self.run(move |i| i.put(&key, value, cond, None)).await
    }

    async fn put_guarded(&self, key: &str, value: Bytes, cond: Condition, guard: &Guard) -> Result<u64> {
        check_key(key)?;
        let key = key.to_string();
        let guard = guard.clone();
        self.run(move |i| i.put_if(&key, value, cond, None, Some(&guard))).await
    }

    async fn put_ephemeral(&self, session: &Session, key: &str, value: Bytes, cond: Condition) -> Result<u64> {
        check_key(key)?;
        let key = key.to_string();
        let id = session.id;
        self.run(move |i| i.put(&key, value, cond, Some(id))).await
    }

    async fn delete(&self, key: &str, cond: Condition) -> Result<bool> {
        check_key(key)?;
        let key = key.to_string();
        self.run(move |i| i.delete(&key, cond)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Versioned)>> {
        let s = self.inner.lock();
        Ok(s.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| {
                (
                    k.clone(),
                    Versioned {
                        value: e.value.clone(),
                        version: e.version,
                    },
                )
            })
            .collect())
    }

    async fn watch(&self, prefix: &str) -> Result<Watch> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        self.inner.lock().watchers.push(Watcher {
            prefix: prefix.to_string(),
            tx,
        });
        Ok(Watch { rx })
    }

    async fn session(&self, ttl: Duration) -> Result<Session> {
        check_ttl(ttl)?;
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        self.inner.lock().sessions.insert(id, tx);
        let handle = SessionHandle(Arc::new(LocalSession {
            inner: Arc::downgrade(&self.inner),
            id,
            ttl,
            stopped: AtomicBool::new(false),
            stop: Notify::new(),
        }));
        Ok(Session {
            id,
            lost: rx,
            control: Arc::new(handle),
        })
    }
}
