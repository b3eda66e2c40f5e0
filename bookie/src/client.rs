//! A typed client of one bookie's gRPC service, used by `strata perf bookie`, tests and the
//! ledger client. It computes the writer checksum of every add and verifies the checksum
//! of every entry it reads, so corruption anywhere between writer and reader is caught.

use crate::error::{BookieError, Result};
use crate::service::{CONNECTION_WINDOW, MAX_MESSAGE_BYTES, STREAM_WINDOW};
use bytes::Bytes;
use std::time::Duration;
use strata_common::{EntryId, ErrorCode, LedgerId, ids::entry_checksum};
use strata_proto::bookie::v1 as pb;
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Maps a gRPC status to a bookie error, keeping the Strata code when the server sent one.
pub fn status_to_error(s: tonic::Status) -> BookieError {
    match ErrorCode::from_status(&s) {
        Some(code) => BookieError::Remote {
            code,
            message: s.message().to_string(),
        },
        None => BookieError::Transport(format!("{}: {}", s.code(), s.message())),
    }
}

/// An entry to add.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub ledger: LedgerId,
    pub entry: EntryId,
    pub payload: Bytes,
    pub lac: Option<u64>,
}

/// The outcome of one add.
#[derive(Debug, Clone)]
pub struct AddOutcome {
    pub ledger: u64,
    pub entry: u64,
    /// `None` on success.
    pub error: Option<(ErrorCode, String)>,
}

/// Sends batches of adds on one stream.
pub struct AddSender {
    tx: mpsc::Sender<pb::AddRequest>,
    token: Bytes,
    recovery: bool,
}

impl AddSender {
    fn request(&self, entries: Vec<NewEntry>) -> pb::AddRequest {
        pb::AddRequest {
            entries: entries
                .into_iter()
                .map(|e| pb::AddEntry {
                    ledger_id: e.ledger.get(),
                    entry_id: e.entry.get(),
                    writer_token: self.token.clone(),
                    lac: e.lac,
                    checksum: entry_checksum(e.ledger, e.entry, &e.payload),
                    payload: e.payload,
                    recovery: self.recovery,
                })
                .collect(),
        }
    }

    /// Queues a batch; waits only when the stream's send buffer is full.
    pub async fn send(&self, entries: Vec<NewEntry>) -> Result<()> {
        self.tx
            .send(self.request(entries))
            .await
            .map_err(|_| BookieError::Transport("add stream closed".into()))
    }

    /// Queues a batch without waiting; a full buffer is an error (the bookie is not
    /// keeping up, or not answering).
    pub fn try_send(&self, entries: Vec<NewEntry>) -> Result<()> {
        self.tx.try_send(self.request(entries)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                BookieError::Transport("add stream buffer full: the bookie is not keeping up".into())
            }
            mpsc::error::TrySendError::Closed(_) => BookieError::Transport("add stream closed".into()),
        })
    }
}

/// Receives add outcomes, in completion order.
pub struct AddReceiver {
    inner: tonic::Streaming<pb::AddResponse>,
}

impl AddReceiver {
    /// The next response's outcomes; `None` once the bookie closed the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<AddOutcome>>> {
        let Some(resp) = self.inner.message().await.map_err(status_to_error)? else {
            return Ok(None);
        };
        Ok(Some(
            resp.results
                .into_iter()
                .map(|r| AddOutcome {
                    ledger: r.ledger_id,
                    entry: r.entry_id,
                    error: match ErrorCode::from_wire(r.code) {
                        Ok(None) => None,
                        Ok(Some(c)) => Some((c, r.message)),
                        Err(raw) => Some((ErrorCode::IoError, format!("unknown error code {raw}: {}", r.message))),
                    },
                })
                .collect(),
        ))
    }
}

/// A verified entry as read.
#[derive(Debug, Clone)]
pub struct Entry {
    pub entry: u64,
    pub payload: Bytes,
}

/// A client of one bookie.
#[derive(Clone)]
pub struct BookieClient {
    inner: pb::bookie_client::BookieClient<Chan>,
}

/// A bookie channel that sends this node's token (`[auth] token_file`), if it has one.
pub type Chan = InterceptedService<Channel, strata_net::auth::TokenInterceptor>;

impl BookieClient {
    /// Connects to `addr` (`host:port` or a URL).
    pub async fn connect(addr: &str) -> Result<Self> {
        let out = strata_net::client::outgoing();
        let url = if addr.contains("://") {
            addr.to_string()
        } else if out.bookie_tls {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| BookieError::InvalidArgument(format!("bookie address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Notice a bookie that vanished without a TCP reset (partition, frozen host).
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        let channel = strata_net::client::connect(endpoint, Some(&out.tls))
            .await
            .map_err(|e| BookieError::Transport(format!("connecting to bookie {addr}: {e}")))?;
        let token = strata_net::auth::TokenInterceptor::new(out.token.as_deref())
            .map_err(|e| BookieError::InvalidArgument(format!("this node's token: {e}")))?;
        Ok(Self {
            inner: pb::bookie_client::BookieClient::new(InterceptedService::new(channel, token))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }

    /// The raw generated client, for callers that need every field.
    pub fn raw(&self) -> pb::bookie_client::BookieClient<Chan> {
        self.inner.clone()
    }

    /// Opens an add stream for a writer identified by `token`.
    pub async fn add_stream(&self, token: Bytes, buffer: usize) -> Result<(AddSender, AddReceiver)> {
        self.add_stream_with(token, buffer, false).await
    }

    /// Opens an add stream; `recovery` marks every add as a recovery add (allowed on a
    /// fenced ledger, used only by ledger recovery).
    pub async fn add_stream_with(
        &self,
        token: Bytes,
        buffer: usize,
        recovery: bool,
    ) -> Result<(AddSender, AddReceiver)> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let resp = self
            .inner
            .clone()
            .add(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(status_to_error)?;
        Ok((
            AddSender { tx, token, recovery },
            AddReceiver {
                inner: resp.into_inner(),
            },
        ))
    }

    /// Reads entries `first..=last` (possibly fewer, see the proto), verifying each
    /// checksum.
    pub async fn read(&self, ledger: LedgerId, first: u64, last: u64) -> Result<Vec<Entry>> {
        let resp = self
            .inner
            .clone()
            .read(pb::ReadRequest {
                ledger_id: ledger.get(),
                first_entry: first,
                last_entry: last,
                max_bytes: 0,
            })
            .await
            .map_err(status_to_error)?
            .into_inner();
        resp.entries
            .into_iter()
            .take_while(|e| e.entry_id <= last)
            .enumerate()
            .map(|(i, e)| {
                if e.entry_id != first + i as u64 {
                    return Err(BookieError::Transport(format!(
                        "bookie returned entry {} where entry {} was expected",
                        e.entry_id,
                        first + i as u64
                    )));
                }
                let actual = entry_checksum(ledger, EntryId::new(e.entry_id), &e.payload);
                if actual != e.checksum {
                    return Err(BookieError::BadChecksum {
                        ledger: ledger.get(),
                        entry: e.entry_id,
                        sent: e.checksum,
                        actual,
                    });
                }
                Ok(Entry {
                    entry: e.entry_id,
                    payload: e.payload,
                })
            })
            .collect()
    }

    pub async fn fence(&self, ledger: LedgerId, token: Bytes) -> Result<pb::FenceResponse> {
        Ok(self
            .inner
            .clone()
            .fence(pb::FenceRequest {
                ledger_id: ledger.get(),
                writer_token: token,
            })
            .await
            .map_err(status_to_error)?
            .into_inner())
    }

    pub async fn delete_ledger(&self, ledger: LedgerId) -> Result<bool> {
        Ok(self
            .inner
            .clone()
            .delete_ledger(pb::DeleteLedgerRequest {
                ledger_id: ledger.get(),
            })
            .await
            .map_err(status_to_error)?
            .into_inner()
            .existed)
    }

    pub async fn read_lac(&self, ledger: LedgerId, previous: Option<u64>, wait: Duration) -> Result<Option<u64>> {
        Ok(self
            .inner
            .clone()
            .read_lac(pb::ReadLacRequest {
                ledger_id: ledger.get(),
                previous_lac: previous,
                wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
            })
            .await
            .map_err(status_to_error)?
            .into_inner()
            .lac)
    }

    pub async fn node_info(&self) -> Result<pb::NodeInfoResponse> {
        Ok(self
            .inner
            .clone()
            .node_info(pb::NodeInfoRequest {})
            .await
            .map_err(status_to_error)?
            .into_inner())
    }
}
