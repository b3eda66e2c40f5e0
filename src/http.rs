//! The operations endpoint of brokers and bookies: `/healthz` (the process serves),
//! `/readyz` (it should get traffic: Kubernetes readiness) and `/metrics` (Prometheus).
//!
//! A deliberately tiny HTTP/1.1 server — GET and HEAD of three paths, one request per
//! connection — so no web framework is pulled in. Requests are bounded (8 KiB of headers,
//! 5 s to send them), and so are connections ([`MAX_CONNECTIONS`] at once; more are
//! answered 503 and closed without being read); anything else gets a clear 4xx and the
//! server keeps serving. With `[tls] http = true` the port speaks HTTPS (HTTP/1.1 over
//! TLS with the node's certificate, reloaded as the gRPC port's is); a client has 5 s for
//! the handshake, then 5 s for its request.

use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a node exposes: readiness and a Prometheus page.
pub trait Probes: Send + Sync + 'static {
    /// `Ok` if ready, else why not.
    fn ready(&self) -> BoxFuture<'_, Result<(), String>>;
    fn metrics(&self) -> BoxFuture<'_, String>;
}

/// Binds `addr` (failing with a clear error) and serves until `shutdown`.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for /healthz, /readyz and /metrics (--http-listen)"))
}

/// Connections served at once; scrapers and kubelets need a handful.
pub const MAX_CONNECTIONS: usize = 64;

/// The TLS of the HTTP port (`[tls] http = true`), if on.
pub fn tls(settings: &strata_net::tls::TlsSettings) -> anyhow::Result<Option<Arc<strata_net::server::ServerTls>>> {
    match settings.http_files() {
        Some(files) => Ok(Some(
            strata_net::server::ServerTls::load(files).map_err(|e| anyhow::anyhow!("[tls] http: {e}"))?,
        )),
        None => Ok(None),
    }
}

pub async fn serve(
    listener: TcpListener,
    probes: Arc<dyn Probes>,
    shutdown: CancellationToken,
    tls: Option<Arc<strata_net::server::ServerTls>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (conn, _) = tokio::select! {
            c = listener.accept() => match c {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Best effort and without waiting: the connection is closed either way.
            let _ = conn.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n",
            );
            continue;
        };
        let probes = probes.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => answer(conn, &*probes).await,
                Some(t) => match tokio::time::timeout(Duration::from_secs(5), t.accept(conn)).await {
                    Ok(Ok(stream)) => answer(stream, &*probes).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "http TLS handshake failed"),
                    Err(_) => tracing::debug!("http TLS handshake not done within 5 s"),
                },
            }
        });
    }
}

/// Reads one request from `conn` and answers it.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut conn: S, probes: &dyn Probes) {
    let (status, body) = match tokio::time::timeout(Duration::from_secs(5), read_head(&mut conn)).await {
        Ok(Ok(head)) => respond(&head, probes).await,
        Ok(Err(e)) => (400, format!("bad request: {e}\n")),
        Err(_) => (408, "request headers not received within 5 s\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Service Unavailable",
    };
    let ctype = if body.starts_with("# HELP") {
        "text/plain; version=0.0.4"
    } else {
        "text/plain"
    };
    let msg = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(msg.as_bytes()).await;
    let _ = conn.shutdown().await;
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(conn: &mut S) -> Result<String, String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > 8192 {
            return Err("headers over 8 KiB".into());
        }
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the request ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).map_err(|_| "request is not UTF-8".into())
}

async fn respond(head: &str, probes: &dyn Probes) -> (u16, String) {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if method != "GET" && method != "HEAD" {
        return (405, format!("{method} is not supported; use GET\n"));
    }
    match target.split('?').next().unwrap_or_default() {
        "/healthz" => (200, "ok\n".into()),
        "/readyz" => match probes.ready().await {
            Ok(()) => (200, "ready\n".into()),
            Err(why) => (503, format!("not ready: {why}\n")),
        },
        "/metrics" => (200, probes.metrics().await),
        other => (404, format!("{other} not found; try /healthz, /readyz or /metrics\n")),
    }
}
