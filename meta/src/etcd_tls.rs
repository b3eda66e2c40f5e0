//! etcd over TLS (`etcds://`): one lazily connected channel per endpoint, made with
//! strata-net's TLS connector, behind a failover service handed to etcd-client as its
//! raw channel.
//!
//! Invariant: a request goes to the current endpoint; a transport failure (the member is
//! down or unreachable) moves the next requests to the next endpoint, so one dead member
//! costs the requests in flight to it (the store reports them unavailable, callers
//! retry), never the store.

use crate::{MetaError, Result};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;

type Req = http::Request<tonic::body::Body>;
type Resp = http::Response<tonic::body::Body>;

#[derive(Clone)]
struct Failover {
    channels: Arc<[Channel]>,
    current: Arc<AtomicUsize>,
}

impl tower_service::Service<Req> for Failover {
    type Response = Resp;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Resp, tower::BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        // Each call waits for its own channel (`oneshot`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let n = self.channels.len();
        let i = self.current.load(Relaxed) % n;
        let channel = self.channels[i].clone();
        let current = self.current.clone();
        Box::pin(async move {
            let r = channel.oneshot(req).await;
            if r.is_err() {
                let _ = current.compare_exchange(i, (i + 1) % n, Relaxed, Relaxed);
            }
            r.map_err(Into::into)
        })
    }
}

/// The raw channel of an etcd client reaching `endpoints` (`https://host:port`) with `tls`.
pub(crate) fn channel(endpoints: &[String], tls: &strata_net::tls::ClientTls) -> Result<etcd_client::Channel> {
    let channels: Vec<Channel> = endpoints
        .iter()
        .map(|url| {
            let endpoint = Endpoint::from_shared(url.clone())
                .map_err(|e| MetaError::InvalidArgument(format!("etcd endpoint {url:?}: {e}")))?
                .connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            Ok(strata_net::client::connect_lazy(endpoint, Some(tls)))
        })
        .collect::<Result<_>>()?;
    let failover = Failover {
        channels: channels.into(),
        current: Arc::new(AtomicUsize::new(0)),
    };
    Ok(etcd_client::Channel::Custom(tower::util::BoxCloneSyncService::new(
        failover,
    )))
}
