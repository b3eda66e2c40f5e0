//! `strata broker`: a stateless broker of a cluster — topics, ownership and dispatch
//! against a shared metadata store (etcd) and the bookies registered there.

use anyhow::Context;
use clap::Args;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;
use strata_bookie::ledger::{LedgerClient, LedgerClientConfig};
use strata_broker::broker::Broker;
use strata_broker::config::BrokerSettings;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct BrokerArgs {
    /// The cluster's metadata store: etcd://host:port[,host:port…].
    #[arg(long, env = "STRATA_METADATA_URL")]
    metadata_url: String,
    /// Address to serve clients on.
    #[arg(long, default_value = "127.0.0.1:6650", env = "STRATA_LISTEN")]
    listen: String,
    /// `host:port` clients and other brokers reach this broker at; also its id in the
    /// cluster [default: the --listen address].
    #[arg(long, env = "STRATA_ADVERTISED_ADDRESS")]
    advertised_address: Option<String>,
    /// Advertise `<a-b-c-d>.<DOMAIN>:<port>` instead of the IP address of
    /// --advertised-address: the name Kubernetes DNS gives a pod behind the headless
    /// Service `DOMAIN` (`<service>.<namespace>.svc`), so that one TLS certificate for
    /// `*.<DOMAIN>` names every broker.
    #[arg(long, env = "STRATA_ADVERTISED_IP_DOMAIN", value_name = "DOMAIN")]
    advertised_ip_domain: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:8080", env = "STRATA_HTTP_LISTEN")]
    http_listen: String,
    /// TOML file with a `[broker]` section (docs/configuration.md).
    #[arg(long, env = "STRATA_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BrokerFile {
    pub(crate) broker: BrokerSettings,
    /// Tiered offload to object storage (off unless `url` is set).
    pub(crate) offload: strata_broker::offload::OffloadSettings,
    /// TLS of the client port, and how this broker reaches bookies and other brokers.
    pub(crate) tls: strata_net::tls::TlsSettings,
    /// Token authentication of the client port (off unless `enabled`).
    pub(crate) auth: strata_net::auth::AuthSettings,
}

pub async fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
            toml::from_str::<BrokerFile>(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
        }
        None => BrokerFile::default(),
    };
    let settings: BrokerSettings = file.broker;
    let offload = file.offload.build().map_err(anyhow::Error::msg)?;
    file.tls.validate().map_err(|e| anyhow::anyhow!("[tls]: {e}"))?;
    let auth = file.auth.verifier().map_err(|e| anyhow::anyhow!("[auth]: {e}"))?;
    strata_net::client::set_outgoing(strata_net::client::Outgoing {
        token: file.auth.own_token().map_err(anyhow::Error::msg)?,
        ..file.tls.outgoing().map_err(anyhow::Error::msg)?
    });
    let tls = match file.tls.server_files() {
        Some(files) => Some(strata_net::server::ServerTls::load(files).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is another process using it?)", args.listen))?;
    // The bound address, so `--listen 127.0.0.1:0` advertises the port it got.
    let advertised = match &args.advertised_address {
        Some(a) => a.clone(),
        None => listener.local_addr()?.to_string(),
    };
    let advertised = match &args.advertised_ip_domain {
        Some(domain) => ip_as_dns(&advertised, domain).map_err(anyhow::Error::msg)?,
        None => advertised,
    };
    if advertised.starts_with("0.0.0.0:") || advertised.starts_with("[::]:") {
        anyhow::bail!(
            "--advertised-address is needed when listening on {}: clients must be told a reachable host:port",
            args.listen
        );
    }
    // Pulsar's cluster defaults: two copies, both acknowledged.
    let mut cfg = settings
        .to_config(format!("{scheme}://{advertised}"), (2, 2, 2))
        .map_err(anyhow::Error::msg)?;
    cfg.ledger.offload = offload;
    let http = crate::http::bind(&args.http_listen).await?;
    let store = strata_meta::connect(&args.metadata_url)
        .await
        .with_context(|| format!("cannot reach the metadata store {}", args.metadata_url))?;
    let client = LedgerClient::new(
        store.clone(),
        LedgerClientConfig {
            max_entry_bytes: settings.bookie_max_entry_bytes,
            ..LedgerClientConfig::default()
        },
    );
    let broker = Broker::new(cfg, store, client).await.context("starting the broker")?;
    broker.ensure_namespace("public", "default").await?;
    let stop = CancellationToken::new();
    crate::bookie_cmd::spawn_signal_handler(stop.clone())?;
    let http_stop = CancellationToken::new();
    tokio::spawn(crate::http::serve(
        http,
        Arc::new(BrokerProbes(broker.clone())),
        http_stop.clone(),
        crate::http::tls(&file.tls)?,
    ));
    tracing::info!(listen = %args.listen, advertised = %advertised, http = %args.http_listen, "broker ready");
    let served = strata_broker::service::serve_with(
        broker,
        listener,
        stop,
        strata_broker::service::ServeOptions { tls, auth },
    )
    .await;
    http_stop.cancel();
    served?;
    tracing::info!("broker stopped cleanly");
    Ok(())
}

/// Per topic and per subscription series of the topics loaded on this broker (Pulsar's
/// topic-level metrics): rates in and out by topic, backlog and consumers by subscription.
/// Each family is listed even while no topic is loaded.
async fn topic_metrics(b: &Broker, w: &mut strata_common::metrics::TextWriter) {
    use std::sync::atomic::Ordering::Relaxed;
    let topics = b.loaded_topics();
    type Read = fn(&strata_broker::metrics::TopicCounters) -> u64;
    let counters: [(&str, &str, Read); 4] = [
        (
            "strata_topic_messages_in_total",
            "Messages stored, by topic (since it was loaded here).",
            |c| c.msgs_in.load(Relaxed),
        ),
        ("strata_topic_bytes_in_total", "Payload bytes stored, by topic.", |c| {
            c.bytes_in.load(Relaxed)
        }),
        (
            "strata_topic_messages_out_total",
            "Messages delivered to consumers, by topic.",
            |c| c.msgs_out.load(Relaxed),
        ),
        (
            "strata_topic_bytes_out_total",
            "Payload bytes delivered to consumers, by topic.",
            |c| c.bytes_out.load(Relaxed),
        ),
    ];
    for (name, help, get) in counters {
        w.family(name, help, "counter");
        for t in &topics {
            let topic = t.topic.name().to_string();
            w.sample(name, &[("topic", &topic)], get(t.topic.counters()) as f64);
        }
    }
    let mut subs = Vec::new();
    for t in &topics {
        match t.subscription_backlogs().await {
            Ok(list) => subs.push((t.topic.name().to_string(), list)),
            Err(e) => tracing::debug!(topic = %t.topic.name(), error = %e, "no subscription metrics"),
        }
    }
    type Pick = fn(&(String, u64, u32)) -> f64;
    let per_subscription: [(&str, &str, Pick); 2] = [
        (
            "strata_subscription_backlog_entries",
            "Entries (producer batches) not yet acknowledged, by topic and subscription.",
            |s| s.1 as f64,
        ),
        (
            "strata_subscription_consumers",
            "Consumers connected, by topic and subscription.",
            |s| f64::from(s.2),
        ),
    ];
    for (name, help, get) in per_subscription {
        w.family(name, help, "gauge");
        for (topic, list) in &subs {
            for sub in list {
                w.sample(name, &[("topic", topic), ("subscription", &sub.0)], get(sub));
            }
        }
    }
}

/// Probes of a broker (also used by standalone mode).
pub struct BrokerProbes(pub Arc<Broker>);

impl crate::http::Probes for BrokerProbes {
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        async move {
            if self.0.is_draining() {
                Err("shutting down".into())
            } else if !self.0.is_ready() {
                Err("no live metadata session (renewing it)".into())
            } else {
                Ok(())
            }
        }
        .boxed()
    }

    fn metrics(&self) -> BoxFuture<'_, String> {
        async move {
            let b = &self.0;
            let mut w = strata_common::metrics::TextWriter::default();
            w.gauge(
                "strata_broker_ready",
                "1 while the broker has a live session and is not shutting down.",
                f64::from(u8::from(b.is_ready())),
            );
            let load = b.load_report().await;
            w.gauge("strata_broker_bundles", "Bundles owned.", f64::from(load.bundles));
            w.gauge("strata_broker_topics", "Topics loaded.", f64::from(load.topics));
            w.gauge(
                "strata_broker_producers",
                "Producers connected.",
                f64::from(load.producers),
            );
            w.gauge(
                "strata_broker_consumers",
                "Consumers connected.",
                f64::from(load.consumers),
            );
            let cache = &b.cfg.ledger.cache_budget;
            w.gauge(
                "strata_broker_read_cache_bytes",
                "Bytes in the read caches of all topics.",
                cache.used() as f64,
            );
            w.gauge(
                "strata_broker_read_cache_limit_bytes",
                "Bound of the read caches of all topics (read_cache_bytes).",
                cache.limit() as f64,
            );
            b.metrics.write(&mut w);
            topic_metrics(b, &mut w).await;
            if let Some(off) = b.offloader() {
                off.metrics.write(&mut w);
            }
            w.process();
            w.finish()
        }
        .boxed()
    }
}

/// `10.1.2.3:6650` under `pods.ns.svc` → `10-1-2-3.pods.ns.svc:6650` (an IPv6 address's
/// colons become dashes too, as Kubernetes DNS names endpoints of a headless Service).
fn ip_as_dns(advertised: &str, domain: &str) -> Result<String, String> {
    let addr: std::net::SocketAddr = advertised.parse().map_err(|_| {
        format!("--advertised-ip-domain needs --advertised-address to be an IP address and port, not {advertised:?}")
    })?;
    let domain = domain.trim().trim_matches('.');
    if domain.is_empty() || domain.contains([':', '/', ' ']) {
        return Err(format!("--advertised-ip-domain {domain:?} is not a DNS domain"));
    }
    let host = addr.ip().to_string().replace(['.', ':'], "-");
    Ok(format!("{host}.{domain}:{}", addr.port()))
}

#[cfg(test)]
mod tests {
    use super::ip_as_dns;

    #[test]
    fn an_ip_becomes_its_dashed_name_under_the_domain() {
        assert_eq!(
            ip_as_dns("10.1.2.3:6650", "demo-broker-pods.prod.svc").unwrap(),
            "10-1-2-3.demo-broker-pods.prod.svc:6650"
        );
        assert_eq!(
            ip_as_dns("[fd00::1]:6650", "p.ns.svc.").unwrap(),
            "fd00--1.p.ns.svc:6650"
        );
        assert!(
            ip_as_dns("broker-0:6650", "p.ns.svc")
                .unwrap_err()
                .contains("IP address")
        );
        assert!(
            ip_as_dns("10.1.2.3:6650", " ")
                .unwrap_err()
                .contains("not a DNS domain")
        );
    }
}
