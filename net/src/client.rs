//! gRPC channels to Strata nodes: `http://host:port` in plain text, `https://host:port`
//! over TLS with a [`ClientTls`] (the CA to trust, the certificate to present).
//!
//! Invariants: an `https://` URL is never reached in plain text, and a plain `http://`
//! URL never starts TLS; a failed handshake is reported with its cause (unknown CA, name
//! mismatch, certificate required), not as a bare connection error.

use crate::tls::ClientTls;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// How this process connects to other Strata nodes (broker to bookie, broker to broker,
/// bookie to bookie): set once at start-up from the node's `[tls]` settings.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// For `https://` URLs.
    pub tls: ClientTls,
    /// Bookies are reached over TLS.
    pub bookie_tls: bool,
    /// The token this node sends to other nodes (`[auth] token_file`).
    pub token: Option<String>,
}

static OUTGOING: std::sync::OnceLock<Outgoing> = std::sync::OnceLock::new();

/// Sets the process's [`Outgoing`] settings; `false` if they were set already.
pub fn set_outgoing(o: Outgoing) -> bool {
    OUTGOING.set(o).is_ok()
}

/// The process's [`Outgoing`] settings (plain defaults unless set).
pub fn outgoing() -> Outgoing {
    OUTGOING.get().cloned().unwrap_or_default()
}

/// Whether `url` asks for TLS.
pub fn is_tls(url: &str) -> bool {
    url.starts_with("https://")
}

/// Connects `endpoint` (built from `url`): over TLS with `tls` (the system's roots when
/// `None`) for `https://`, in plain text for `http://`.
pub async fn connect(endpoint: Endpoint, tls: Option<&ClientTls>) -> Result<Channel, tonic::transport::Error> {
    connect_to(endpoint, tls, None).await
}

/// [`connect`], but the TCP connection goes to `addr` (`host:port`) when given, instead
/// of the URL's host: the URL's host still names the server, so a TLS certificate is
/// checked against it (curl's `--resolve`; for reaching a cluster's service name through
/// a port-forward or a test's loopback address).
pub async fn connect_to(
    endpoint: Endpoint,
    tls: Option<&ClientTls>,
    addr: Option<&str>,
) -> Result<Channel, tonic::transport::Error> {
    let addr = addr.map(str::to_string);
    if endpoint.uri().scheme_str() != Some("https") {
        return match addr {
            None => endpoint.connect().await,
            Some(addr) => endpoint.connect_with_connector(PlainConnector { addr }).await,
        };
    }
    let connector = TlsConnector {
        tls: tls.cloned().unwrap_or_default(),
        addr,
    };
    endpoint.connect_with_connector(connector).await
}

/// A channel connecting lazily (on first use), as [`connect`] does.
pub fn connect_lazy(endpoint: Endpoint, tls: Option<&ClientTls>) -> Channel {
    if endpoint.uri().scheme_str() != Some("https") {
        return endpoint.connect_lazy();
    }
    endpoint.connect_with_connector_lazy(TlsConnector {
        tls: tls.cloned().unwrap_or_default(),
        addr: None,
    })
}

/// Plain TCP to a fixed address, whatever the URL's host.
#[derive(Clone)]
struct PlainConnector {
    addr: String,
}

type PlainConnecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

impl tower_service::Service<Uri> for PlainConnector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = PlainConnecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.addr.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(addr.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            Ok(TokioIo::new(tcp))
        })
    }
}

#[derive(Clone)]
struct TlsConnector {
    tls: ClientTls,
    /// Where to connect instead of the URL's `host:port` (the host still names the server).
    addr: Option<String>,
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let addr = self.addr.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let config = tls.config().map_err(io::Error::other)?;
            let tcp = match &addr {
                Some(a) => TcpStream::connect(a.as_str()).await?,
                None => TcpStream::connect((host.as_str(), port)).await?,
            };
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("server name {host:?}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {host}:{port} failed: {e}")))?;
            Ok(TokioIo::new(stream))
        })
    }
}
