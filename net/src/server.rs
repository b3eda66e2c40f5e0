//! Accepting the connections of a gRPC server (the bookie's and the broker's): at most
//! `max_connections` open at once, so a client opening connections in a loop cannot
//! exhaust the node's memory or file descriptors; TLS when configured ([`ServerTls`]:
//! certificate files reloaded when they change, client certificates required when a
//! client CA is set); and [`builder`] sets the HTTP/2 limits every Strata server shares.
//!
//! Invariants: a connection over the limit is closed as soon as it is accepted (its
//! client sees the connection reset and backs off; nothing of it is read or kept); a slot
//! is freed when its connection is dropped; TLS handshakes run concurrently, each within
//! [`HANDSHAKE_TIMEOUT`], so a client that connects and stays silent holds one slot for
//! that long and never delays other clients. Over-limit refusals are logged at most once
//! per [`WARN_EVERY`], with how many there were.

use crate::tls::ServerFiles;
use futures_util::Stream;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::transport::server::Connected;

/// How often refusals over the connection limit are logged at most.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// HTTP/2 pings on an idle connection, and how long an answer may take before the
/// connection is closed: a client that vanished without closing (crashed host, cut
/// network) is noticed within a minute, and its streams end (an Exclusive consumer's
/// subscription is freed, a producer's name released).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// A TLS client has this long to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Certificate files are checked for changes at most this often (on new connections).
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A TLS server configuration that follows its files: when one changes (size or
/// modification time), the next connection gets a configuration built from the new
/// files. Files that do not load (a rotation half-written) keep the previous one, with a
/// warning naming the file.
pub struct ServerTls {
    files: ServerFiles,
    state: Mutex<Current>,
}

struct Current {
    config: Arc<ServerConfig>,
    stamp: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
}

fn stamp(files: &ServerFiles) -> Vec<Option<(SystemTime, u64)>> {
    files
        .paths()
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

impl ServerTls {
    /// Loads the files (an error names the one that failed).
    pub fn load(files: ServerFiles) -> Result<Arc<Self>, String> {
        let stamp = stamp(&files);
        let config = Arc::new(files.config()?);
        Ok(Arc::new(Self {
            files,
            state: Mutex::new(Current {
                config,
                stamp,
                checked: Instant::now(),
            }),
        }))
    }

    /// Runs the TLS handshake of an accepted connection (for servers other than the gRPC
    /// ones [`incoming`] serves, such as the HTTP port).
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        tokio_rustls::TlsAcceptor::from(self.current()).accept(tcp).await
    }

    /// The configuration for a new connection, reloaded first if the files changed.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut g = self.state.lock().expect("tls state");
        if g.checked.elapsed() >= RELOAD_CHECK {
            g.checked = Instant::now();
            let now = stamp(&self.files);
            if now != g.stamp {
                g.stamp = now;
                match self.files.config() {
                    Ok(c) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate files changed; reloaded");
                        g.config = Arc::new(c);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS certificate files changed but do not load; keeping the previous ones")
                    }
                }
            }
        }
        g.config.clone()
    }
}

/// Who is on the other end of a connection: in each request's extensions
/// (`request.extensions().get::<PeerInfo>()`).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The verified certificate chain a TLS client presented (mutual TLS).
    pub client_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection holding one of the server's connection slots.
pub struct Accepted {
    io: Io,
    peer: PeerInfo,
    _slot: OwnedSemaphorePermit,
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.io {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Accepted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl Connected for Accepted {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

struct Refusals {
    what: &'static str,
    max: usize,
    refused: u64,
    warned: Option<Instant>,
}

impl Refusals {
    fn refused(&mut self, peer: SocketAddr) {
        self.refused += 1;
        if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                server = self.what,
                %peer,
                max_connections = self.max,
                refused = self.refused,
                "connection limit reached; closing new connections (setting max_connections)"
            );
            self.warned = Some(Instant::now());
            self.refused = 0;
        }
    }
}

/// The connections of `listener` (TCP_NODELAY set; TLS if `tls`), at most
/// `max_connections` open at once. `what` names the server in logs ("broker",
/// "bookie"). Accepting stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    what: &'static str,
    tls: Option<Arc<ServerTls>>,
) -> impl Stream<Item = io::Result<Accepted>> + Send + 'static {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut refusals = Refusals {
        what,
        max: max_connections,
        refused: 0,
        warned: None,
    };
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (stream, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    tracing::warn!(server = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                refusals.refused(peer);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let info = PeerInfo {
                remote_addr: Some(peer),
                client_certificates: None,
            };
            match &tls {
                None => {
                    let a = Accepted {
                        io: Io::Plain(stream),
                        peer: info,
                        _slot: slot,
                    };
                    if tx.send(Ok(a)).await.is_err() {
                        return;
                    }
                }
                Some(t) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(t.current());
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                let certs = s.get_ref().1.peer_certificates().map(|c| Arc::new(c.to_vec()));
                                let a = Accepted {
                                    io: Io::Tls(Box::new(s)),
                                    peer: PeerInfo {
                                        client_certificates: certs,
                                        ..info
                                    },
                                    _slot: slot,
                                };
                                let _ = tx.send(Ok(a)).await;
                            }
                            Ok(Err(e)) => tracing::debug!(server = what, %peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(server = what, %peer, "TLS handshake not completed in time"),
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A gRPC server builder with the limits every Strata server shares: at most
/// `max_streams` concurrent streams per connection, and keepalive pings.
pub fn builder(max_streams: u32) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(max_streams)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .tcp_keepalive(Some(KEEPALIVE_INTERVAL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_and_slots_come_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener, 2, "test", None));
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = accepted.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _second = accepted.next().await.unwrap().unwrap();
        // The third is closed on accept: its client reads end-of-stream (or a reset).
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = c.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "the connection over the limit is closed");
        // Freeing a slot lets the next connection in.
        drop(first);
        let _d = TcpStream::connect(addr).await.unwrap();
        let d = accepted.next().await.unwrap().unwrap();
        assert!(d.connect_info().remote_addr.is_some());
    }
}
