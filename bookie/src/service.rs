//! The internal gRPC `Bookie` service over the storage engine, and `run`, which serves it
//! on a listener until a shutdown token fires.
//!
//! Conversions between wire and engine types happen here and nowhere else. Every error
//! reaches the client as a stable [`strata_common::ErrorCode`]: per entry in add results,
//! in status metadata for unary calls.
//!
//! Shutdown: on cancellation the server stops accepting connections; each add stream stops
//! reading new requests, finishes (journals and answers) what is in flight and ends; then
//! the storage flushes, checkpoints and stops its threads.

use crate::config::BookieConfig;
use crate::error::{BookieError, Result};
use crate::storage::{self, Storage};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::sync::Arc;
use std::time::Duration;
use strata_proto::bookie::v1 as pb;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Add requests one stream may have in flight before the bookie stops reading more
/// (back-pressure to the client through HTTP/2 flow control).
const MAX_INFLIGHT_REQUESTS: usize = 1024;
/// Payload bytes one stream may have in flight (plus the one message being decoded).
const MAX_STREAM_INFLIGHT_BYTES: usize = 64 << 20;
/// Concurrent HTTP/2 streams per connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Connections open at once (brokers, autorecovery and tools are a bookie's clients).
const MAX_CONNECTIONS: usize = 1024;
/// How long a SIGTERM waits for clients to finish their streams before closing them.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);
/// Largest gRPC message accepted: a batch of entries. Entries themselves are limited by
/// `max_entry_bytes`.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// HTTP/2 windows large enough for 256 × 64 KiB in flight on one stream.
pub const STREAM_WINDOW: u32 = 32 << 20;
pub const CONNECTION_WINDOW: u32 = 64 << 20;

/// The service implementation.
pub struct BookieService {
    storage: Arc<Storage>,
    shutdown: CancellationToken,
    /// Payload KiB accepted from all add streams and not yet answered.
    add_budget: Arc<Semaphore>,
    add_budget_kib: u32,
}

impl BookieService {
    pub fn new(storage: Arc<Storage>, shutdown: CancellationToken) -> Self {
        // Twice the write cache: enough to keep the cache busy while a flush runs, and a
        // hard bound on memory held by requests whatever the number of clients.
        let kib = (storage.config().write_cache_max_bytes * 2 / 1024).clamp(1024, u32::MAX as u64 / 2) as u32;
        Self {
            storage,
            shutdown,
            add_budget: Arc::new(Semaphore::new(kib as usize)),
            add_budget_kib: kib,
        }
    }
}

fn to_add_request(e: pb::AddEntry) -> storage::AddRequest {
    storage::AddRequest {
        ledger: e.ledger_id,
        entry: e.entry_id,
        token: e.writer_token,
        lac: e.lac,
        checksum: e.checksum,
        payload: e.payload,
        recovery: e.recovery,
    }
}

async fn add_batch(storage: Arc<Storage>, req: pb::AddRequest) -> pb::AddResponse {
    let ids: Vec<(u64, u64)> = req.entries.iter().map(|e| (e.ledger_id, e.entry_id)).collect();
    let results = storage.add(req.entries.into_iter().map(to_add_request).collect()).await;
    pb::AddResponse {
        results: ids
            .into_iter()
            .zip(results)
            .map(|((ledger_id, entry_id), r)| match r {
                Ok(()) => pb::AddResult {
                    ledger_id,
                    entry_id,
                    code: pb::ErrorCode::Ok as i32,
                    message: String::new(),
                },
                Err(e) => pb::AddResult {
                    ledger_id,
                    entry_id,
                    code: e.code().to_proto() as i32,
                    message: e.to_string(),
                },
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::bookie_server::Bookie for BookieService {
    type AddStream = ReceiverStream<Result<pb::AddResponse, Status>>;
    type ReadStreamStream = ReceiverStream<Result<pb::ReadResponse, Status>>;

    async fn add(&self, request: Request<Streaming<pb::AddRequest>>) -> Result<Response<Self::AddStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let storage = self.storage.clone();
        let shutdown = self.shutdown.clone();
        let budget = self.add_budget.clone();
        let budget_kib = self.add_budget_kib;
        tokio::spawn(async move {
            // Each batch runs as its own task so it progresses while this loop waits for
            // budget; completions come back here to be answered.
            let mut inflight = FuturesUnordered::new();
            let mut stream_bytes = 0usize;
            let mut reading = true;
            loop {
                tokio::select! {
                    biased;
                    Some(done) = inflight.next(), if !inflight.is_empty() => {
                        let Ok((resp, bytes)) = done else { return };
                        stream_bytes -= bytes;
                        if tx.send(Ok(resp)).await.is_err() {
                            // The client went away; batches still in flight finish on their own.
                            return;
                        }
                    }
                    _ = shutdown.cancelled(), if reading => reading = false,
                    msg = inbound.message(), if reading && inflight.len() < MAX_INFLIGHT_REQUESTS && stream_bytes < MAX_STREAM_INFLIGHT_BYTES => match msg {
                        Ok(Some(req)) => {
                            let bytes: usize = req.entries.iter().map(|e| e.payload.len()).sum();
                            // Node-wide bound on bytes accepted but not yet answered.
                            let kib = ((bytes / 1024) as u32 + 1).min(budget_kib);
                            let Ok(permit) = budget.clone().acquire_many_owned(kib).await else { return };
                            stream_bytes += bytes;
                            let storage = storage.clone();
                            inflight.push(tokio::spawn(async move {
                                let resp = add_batch(storage, req).await;
                                drop(permit);
                                (resp, bytes)
                            }));
                        }
                        Ok(None) => reading = false,
                        Err(status) => {
                            tracing::debug!(%status, "add stream failed");
                            reading = false;
                            let _ = tx.send(Err(status)).await;
                        }
                    },
                    else => break,
                }
                if !reading && inflight.is_empty() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn read(&self, request: Request<pb::ReadRequest>) -> Result<Response<pb::ReadResponse>, Status> {
        let r = request.into_inner();
        let res = self
            .storage
            .read(r.ledger_id, r.first_entry, r.last_entry, r.max_bytes as usize)
            .await?;
        Ok(Response::new(read_response(r.ledger_id, res)))
    }

    async fn read_stream(&self, request: Request<pb::ReadRequest>) -> Result<Response<Self::ReadStreamStream>, Status> {
        let r = request.into_inner();
        // Fail the call itself (not the stream) when the first entry cannot be read.
        let first = self
            .storage
            .read(r.ledger_id, r.first_entry, r.last_entry, r.max_bytes as usize)
            .await?;
        let (tx, rx) = mpsc::channel(4);
        let storage = self.storage.clone();
        tokio::spawn(async move {
            let mut next = first.entries.last().and_then(|e| e.entry.checked_add(1));
            if tx.send(Ok(read_response(r.ledger_id, first))).await.is_err() {
                return;
            }
            while let Some(from) = next.filter(|n| *n <= r.last_entry) {
                match storage
                    .read(r.ledger_id, from, r.last_entry, r.max_bytes as usize)
                    .await
                {
                    Ok(res) => {
                        next = res.entries.last().and_then(|e| e.entry.checked_add(1));
                        if tx.send(Ok(read_response(r.ledger_id, res))).await.is_err() {
                            return;
                        }
                    }
                    // A gap ends the range, as for a unary read.
                    Err(BookieError::NoSuchEntry(..)) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn read_lac(&self, request: Request<pb::ReadLacRequest>) -> Result<Response<pb::ReadLacResponse>, Status> {
        let r = request.into_inner();
        let wait = Duration::from_millis(u64::from(r.wait_ms));
        let (lac, fenced) = tokio::select! {
            res = self.storage.read_lac(r.ledger_id, r.previous_lac, wait) => res?,
            _ = self.shutdown.cancelled() => self.storage.read_lac(r.ledger_id, r.previous_lac, Duration::ZERO).await?,
        };
        Ok(Response::new(pb::ReadLacResponse {
            ledger_id: r.ledger_id,
            lac,
            fenced,
        }))
    }

    async fn fence(&self, request: Request<pb::FenceRequest>) -> Result<Response<pb::FenceResponse>, Status> {
        let r = request.into_inner();
        let res = self.storage.fence(r.ledger_id, r.writer_token).await?;
        Ok(Response::new(pb::FenceResponse {
            ledger_id: r.ledger_id,
            lac: res.lac,
            last_entry: res.last_entry,
        }))
    }

    async fn delete_ledger(
        &self,
        request: Request<pb::DeleteLedgerRequest>,
    ) -> Result<Response<pb::DeleteLedgerResponse>, Status> {
        let existed = self.storage.delete_ledger(request.into_inner().ledger_id).await?;
        Ok(Response::new(pb::DeleteLedgerResponse { existed }))
    }

    async fn node_info(&self, _: Request<pb::NodeInfoRequest>) -> Result<Response<pb::NodeInfoResponse>, Status> {
        let s = self.storage.node_state();
        Ok(Response::new(pb::NodeInfoResponse {
            free_bytes: s.free_bytes,
            total_bytes: s.total_bytes,
            read_only: s.read_only.is_some(),
            read_only_reason: s.read_only.unwrap_or_default(),
            max_entry_bytes: self.storage.config().max_entry_bytes,
            version: env!("CARGO_PKG_VERSION").into(),
            ledger_count: s.ledger_count,
        }))
    }
}

fn read_response(ledger_id: u64, r: storage::ReadResult) -> pb::ReadResponse {
    pb::ReadResponse {
        ledger_id,
        entries: r
            .entries
            .into_iter()
            .map(|e| pb::Entry {
                entry_id: e.entry,
                checksum: e.checksum,
                payload: e.payload,
            })
            .collect(),
        lac: r.lac,
        fenced: r.fenced,
    }
}

/// Opens the storage in `cfg.data_dir` and serves the Bookie service on `listener` until
/// `shutdown` fires; then drains in-flight adds, flushes and returns.
pub async fn run(cfg: BookieConfig, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    run_with_metrics(cfg, listener, shutdown, Default::default()).await
}

/// [`run`], reporting auto-recovery into `autorecovery` (for the process's /metrics).
pub async fn run_with_metrics(
    cfg: BookieConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    autorecovery: Arc<crate::autorecovery::Metrics>,
) -> Result<()> {
    let metadata = match &cfg.metadata_url {
        Some(url) => Some(
            strata_meta::connect(url)
                .await
                .map_err(|e| BookieError::InvalidArgument(format!("metadata_url {url}: {e}")))?,
        ),
        None => None,
    };
    run_with_store(cfg, listener, shutdown, autorecovery, metadata).await
}

/// [`run_with_metrics`] on a metadata store the caller opened (from `cfg.metadata_url`),
/// so the process can share it (an embedded `local://` store opens once).
pub async fn run_with_store(
    cfg: BookieConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    autorecovery: Arc<crate::autorecovery::Metrics>,
    metadata: Option<Arc<dyn strata_meta::MetadataStore>>,
) -> Result<()> {
    let advertised = cfg.advertised_address.clone().unwrap_or_else(|| cfg.listen.clone());
    let tls = match cfg.tls.server_files() {
        Some(files) => Some(strata_net::server::ServerTls::load(files).map_err(BookieError::InvalidArgument)?),
        None => None,
    };
    let auth = cfg
        .auth
        .verifier()
        .map_err(|e| BookieError::InvalidArgument(format!("auth: {e}")))?;
    let ttl = Duration::from_millis(cfg.session_ttl_ms);
    let recovery = (cfg.autorecovery).then(|| {
        let ledgers = crate::ledger::LedgerClientConfig {
            max_entry_bytes: cfg.max_entry_bytes,
            ..Default::default()
        };
        (cfg.autorecovery_config(&advertised), ledgers)
    });
    let storage = Arc::new(
        tokio::task::spawn_blocking(move || Storage::open(cfg))
            .await
            .map_err(|e| BookieError::io("opening storage", e))??,
    );
    // Auto-recovery (with a metadata store): an auditor candidate and a worker.
    let mut tasks = Vec::new();
    if let (Some(store), Some((rcfg, lcfg))) = (&metadata, recovery) {
        let client = crate::ledger::LedgerClient::new(store.clone(), lcfg);
        tasks = crate::autorecovery::spawn(store.clone(), client, rcfg, autorecovery, shutdown.clone());
    }
    // Register only once the storage is open and about to serve.
    let registration = metadata.map(|store| {
        tokio::spawn(crate::registration::keep_registered(
            store,
            storage.clone(),
            advertised,
            ttl,
            shutdown.clone(),
        ))
    });
    let served = serve_secured(storage, listener, shutdown.clone(), tls, auth).await;
    if let Some(r) = registration {
        shutdown.cancel();
        let _ = r.await;
    }
    shutdown.cancel();
    for t in tasks {
        let _ = t.await;
    }
    served
}

/// Serves an already open storage in plain text; see [`run`].
pub async fn serve(storage: Arc<Storage>, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
    serve_with_tls(storage, listener, shutdown, None).await
}

/// Serves an already open storage, over TLS if `tls`.
pub async fn serve_with_tls(
    storage: Arc<Storage>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<Arc<strata_net::server::ServerTls>>,
) -> Result<()> {
    serve_secured(storage, listener, shutdown, tls, None).await
}

/// The interceptor of the bookie port with auth on: a valid token of a superuser role
/// (a broker's or a bookie's own), UNAUTHENTICATED or PERMISSION_DENIED otherwise. Only
/// nodes talk to bookies, so no finer grant exists.
fn nodes_only(
    auth: Option<Arc<strata_net::auth::Verifier>>,
) -> impl FnMut(Request<()>) -> std::result::Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(v) = &auth else {
            return Ok(req);
        };
        let p = v.principal(&req)?;
        if !p.is_superuser() {
            tracing::warn!(target: "strata::audit", role = %p.role, "bookie request refused: not a node role");
            return Err(Status::permission_denied(format!(
                "role {:?} may not call bookies: only superuser roles (brokers and bookies) may",
                p.role
            )));
        }
        Ok(req)
    }
}

/// Serves an already open storage, over TLS if `tls`, taking only node tokens if `auth`.
pub async fn serve_secured(
    storage: Arc<Storage>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<Arc<strata_net::server::ServerTls>>,
    auth: Option<Arc<strata_net::auth::Verifier>>,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| BookieError::io("listener address", e))?;
    let svc = pb::bookie_server::BookieServer::new(BookieService::new(storage.clone(), shutdown.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = strata_net::server::incoming(listener, MAX_CONNECTIONS, "bookie", tls);
    tracing::info!(%addr, "bookie serving");
    let server = strata_net::server::builder(MAX_STREAMS_PER_CONNECTION)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            svc,
            nodes_only(auth),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled());
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_DEADLINE).await;
    };
    tokio::select! {
        r = server => r.map_err(|e| BookieError::io("gRPC server", e))?,
        _ = drain_deadline => tracing::warn!(deadline = ?DRAIN_DEADLINE, "clients did not finish their streams in time; closing them"),
    }
    tracing::info!("gRPC server stopped; flushing");
    storage.close().await?;
    tracing::info!("bookie stopped cleanly");
    Ok(())
}
