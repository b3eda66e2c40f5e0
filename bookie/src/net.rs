//! Accepting the connections of a gRPC server (the bookie's, and the broker's which
//! depends on this crate): at most `max_connections` are open at once, so a client opening
//! connections in a loop cannot exhaust the node's memory or file descriptors, and
//! [`server`] sets the HTTP/2 limits every Strata server shares.
//!
//! Invariants: a connection over the limit is closed as soon as it is accepted (its
//! client sees the connection reset and backs off; nothing of it is read or kept); a slot
//! is freed when its connection is dropped. Over-limit refusals are logged at most once
//! per [`WARN_EVERY`], with how many there were.

use futures_util::Stream;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How often refusals over the connection limit are logged at most.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// HTTP/2 pings on an idle connection, and how long an answer may take before the
/// connection is closed: a client that vanished without closing (crashed host, cut
/// network) is noticed within a minute, and its streams end (an Exclusive consumer's
/// subscription is freed, a producer's name released).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// An accepted connection holding one of the server's connection slots.
pub struct Accepted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Accepted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

struct State {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max: usize,
    what: &'static str,
    refused: u64,
    warned: Option<Instant>,
}

/// The connections of `listener` (TCP_NODELAY set), at most `max_connections` open at
/// once. `what` names the server in logs ("broker", "bookie").
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    what: &'static str,
) -> impl Stream<Item = io::Result<Accepted>> + Send + 'static {
    let state = State {
        listener,
        slots: Arc::new(Semaphore::new(max_connections)),
        max: max_connections,
        what,
        refused: 0,
        warned: None,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            let (stream, peer) = match s.listener.accept().await {
                Ok(c) => c,
                Err(e) => return Some((Err(e), s)),
            };
            match s.slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let _ = stream.set_nodelay(true);
                    return Some((Ok(Accepted { stream, _slot: slot }), s));
                }
                Err(_) => {
                    drop(stream);
                    s.refused += 1;
                    if s.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(
                            server = s.what,
                            %peer,
                            max_connections = s.max,
                            refused = s.refused,
                            "connection limit reached; closing new connections (setting max_connections)"
                        );
                        s.warned = Some(Instant::now());
                        s.refused = 0;
                    }
                }
            }
        }
    })
}

/// A gRPC server builder with the limits every Strata server shares: at most
/// `max_streams` concurrent streams per connection, and keepalive pings.
pub fn server(max_streams: u32) -> tonic::transport::Server {
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
        let mut accepted = Box::pin(incoming(listener, 2, "test"));
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = accepted.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let _second = accepted.next().await.unwrap().unwrap();
        // The third is closed on accept: its client reads end-of-stream (or a reset).
        let mut c = TcpStream::connect(addr).await.unwrap();
        let next = tokio::spawn(async move {
            let x = accepted.next().await;
            (x, accepted)
        });
        let mut buf = [0u8; 1];
        let n = c.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "the connection over the limit is closed");
        // Freeing a slot lets the next connection in.
        drop(first);
        let _d = TcpStream::connect(addr).await.unwrap();
        let (x, _accepted) = next.await.unwrap();
        x.unwrap().unwrap();
    }
}
