//! `strata operator`: the Kubernetes operator (StrataCluster, Topic and Subscription
//! resources), and
//! `strata operator crdgen`, which prints its CustomResourceDefinitions.

use anyhow::Context;
use clap::{Args, Subcommand};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct OperatorArgs {
    #[command(subcommand)]
    command: Option<OperatorCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Print the CustomResourceDefinitions (YAML) to install with `kubectl apply -f -`.
    Crdgen,
    /// Print the Helm chart's values.schema.json (its `cluster:` values follow the
    /// StrataCluster CRD); `charts/strata/values.schema.json` is kept equal to it.
    HelmSchema,
}

#[derive(Args)]
struct RunArgs {
    /// A kubeconfig file [default: $KUBECONFIG, ~/.kube/config, or the in-cluster service
    /// account].
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Only this namespace's StrataClusters, Topics and Subscriptions [default: every
    /// namespace].
    #[arg(long, env = "STRATA_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080", env = "STRATA_HTTP_LISTEN")]
    http_listen: String,
    /// Seconds between comparisons of every object with its Strata cluster (drift).
    #[arg(long, default_value_t = 60, env = "STRATA_OPERATOR_RESYNC_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    resync_secs: u64,
    /// Reconciles at a time, per kind.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Longest wait, in seconds, between retries of a failing object.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    max_backoff_secs: u64,
    /// Namespace of the leader Lease [default: the pod's namespace, else `default`].
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "strata-operator")]
    lease_name: String,
    /// This replica's identity in the Lease [default: the pod name, else host name and pid].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader lease is valid without renewal; a standby takes over after that.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..))]
    lease_duration_secs: u64,
    /// Seconds between the broker autoscaler's readings of the load.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    autoscale_interval_secs: u64,
    /// Connect to ADDR:PORT whenever a Strata service URL names HOST:PORT; repeatable. For
    /// an operator running outside the Kubernetes cluster, which cannot resolve service
    /// names (with `kubectl port-forward svc/NAME-broker 6650`, say); TLS certificates are
    /// still checked against HOST. Bookie identities
    /// (`NAME-bookie-N.NAME-bookie.NS.svc:3181`) the operator decommissions are mapped too.
    #[arg(long = "resolve", value_name = "HOST:PORT=ADDR:PORT", value_parser = crate::conn_args::parse_resolve)]
    resolve: Vec<(String, String)>,
}

struct OperatorProbes(Arc<strata_operator::State>);

impl crate::http::Probes for OperatorProbes {
    fn ready(&self) -> BoxFuture<'_, Result<(), String>> {
        async move { self.0.ready() }.boxed()
    }

    fn metrics(&self) -> BoxFuture<'_, String> {
        async move { self.0.metrics.render() }.boxed()
    }
}

async fn client(path: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match path {
        // $KUBECONFIG may list several files (a:b): the standard merge rules apply.
        Some(p) if p.to_string_lossy().contains(':') => kube::Config::infer()
            .await
            .with_context(|| format!("kubeconfig {}", p.display()))?,
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration: not in a pod, and no kubeconfig (--kubeconfig or $KUBECONFIG)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "strata-operator".into());
    format!("{host}-{}", std::process::id())
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    match args.command {
        Some(OperatorCommand::Crdgen) => {
            print!("{}", strata_operator::crds_yaml());
            return Ok(());
        }
        Some(OperatorCommand::HelmSchema) => {
            let schema = strata_operator::helm::values_schema();
            println!("{}", serde_json::to_string_pretty(&schema)?);
            return Ok(());
        }
        None => {}
    }
    let a = args.run;
    let lease = Duration::from_secs(a.lease_duration_secs);
    let cfg = strata_operator::Config {
        resync: Duration::from_secs(a.resync_secs),
        concurrency: a.concurrency,
        max_backoff: Duration::from_secs(a.max_backoff_secs),
        namespace: a.namespace,
        lease_namespace: a.lease_namespace,
        lease_name: a.lease_name,
        identity: a.identity.unwrap_or_else(identity),
        timing: strata_operator::leader::Timing {
            lease_duration: lease,
            renew_deadline: lease * 2 / 3,
            retry: (lease / 7).max(Duration::from_millis(500)),
        },
        autoscale_interval: Duration::from_secs(a.autoscale_interval_secs),
        resolve: a.resolve,
        ..Default::default()
    };
    let client = client(a.kubeconfig.as_ref()).await?;
    let state = Arc::new(strata_operator::State::default());
    let http = crate::http::bind(&a.http_listen).await?;
    let stop = CancellationToken::new();
    crate::bookie_cmd::spawn_signal_handler(stop.clone())?;
    let http_stop = CancellationToken::new();
    tokio::spawn(crate::http::serve(
        http,
        Arc::new(OperatorProbes(state.clone())),
        http_stop.clone(),
        None,
    ));
    tracing::info!(identity = %cfg.identity, http = %a.http_listen, "operator started");
    let result = strata_operator::run(client, cfg, state, stop).await;
    http_stop.cancel();
    result
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use strata_operator::StrataCluster;
    use strata_operator::cluster::{StrataClusterSpec, render, validate};

    /// A config object with every property of `schema` set to a value of its type.
    fn every_key(schema: &serde_json::Value) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (k, v) in schema["properties"].as_object().expect("properties") {
            let value = match v["type"].as_str() {
                Some("boolean") => serde_json::json!(true),
                Some("integer") => serde_json::json!(1),
                Some("number") => serde_json::json!(0.5),
                other => panic!("config key {k} has an unexpected type {other:?}"),
            };
            out.insert(k.clone(), value);
        }
        serde_json::Value::Object(out)
    }

    /// Every key a StrataCluster can set in `spec.brokers.config` and `spec.bookies.config`
    /// renders to a TOML key of the right type that `strata broker` and `strata bookie`
    /// read (both refuse unknown keys).
    #[test]
    fn every_config_key_a_stratacluster_can_set_is_one_strata_reads() {
        let crd = serde_json::to_value(StrataCluster::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let broker_keys = every_key(&spec["brokers"]["properties"]["config"]);
        let bookie_keys = every_key(&spec["bookies"]["properties"]["config"]);
        let (nb, nk) = (
            broker_keys.as_object().unwrap().len(),
            bookie_keys.as_object().unwrap().len(),
        );
        assert!(nb >= 15 && nk >= 15, "{nb} broker and {nk} bookie keys");
        let spec: StrataClusterSpec = serde_json::from_value(serde_json::json!({
            "image": "strata:test",
            "brokers": { "config": broker_keys },
            "bookies": { "config": bookie_keys },
        }))
        .unwrap();
        let mut sc = StrataCluster::new("t", spec);
        sc.metadata.namespace = Some("ns".into());
        let plan = validate(&sc.spec, "t", "ns").unwrap();

        let broker = render::broker_toml(&sc, &plan);
        let file: crate::broker_cmd::BrokerFile = toml::from_str(&broker).unwrap_or_else(|e| panic!("{e}\n{broker}"));
        // Every key reached the file: the settings differ from the defaults where set.
        assert!(
            file.broker.auto_create_topics && file.broker.max_message_bytes == 1,
            "{broker}"
        );
        assert_eq!(broker.lines().filter(|l| l.contains(" = ")).count(), nb + 4, "{broker}");

        let bookie = render::bookie_toml(&sc);
        let cfg: strata_bookie::BookieConfig = toml::from_str(&bookie).unwrap_or_else(|e| panic!("{e}\n{bookie}"));
        assert_eq!(cfg.compaction_threshold, 0.5);
        assert_eq!(bookie.lines().filter(|l| l.contains(" = ")).count(), nk, "{bookie}");
    }
}
