//! The Helm chart's test helpers: helm itself (from `scripts/install-helm.sh`, or
//! `$STRATA_HELM`) with a private home, rendering the chart, and picking objects out of
//! rendered YAML.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use serde_yaml::Value;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const WAIT: Duration = Duration::from_secs(180);

pub fn chart() -> String {
    format!("{ROOT}/charts/strata")
}

/// The value sets the chart is checked with: the defaults, then each file of `ci/`.
pub fn value_sets() -> Vec<(&'static str, Option<String>)> {
    let mut sets = vec![("default", None)];
    for name in ["minimal", "production", "external-metadata"] {
        sets.push((name, Some(format!("{ROOT}/charts/strata/ci/{name}-values.yaml"))));
    }
    sets
}

/// helm with its cache, config and data in a directory of the test.
pub struct Helm {
    pub bin: String,
    pub home: tempfile::TempDir,
}

impl Helm {
    pub fn new() -> Self {
        Self {
            bin: super::tool("STRATA_HELM", "scripts/install-helm.sh"),
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let h = self.home.path();
        Command::new(&self.bin)
            .args(args)
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_DATA_HOME", h.join("data"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("helm {args:?}: {e}"))
    }

    /// Runs helm and returns its stdout, failing the test with its stderr if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `helm template` of the chart as release `strata` in namespace `ns`.
    pub fn template(&self, ns: &str, values: Option<&str>, extra: &[&str]) -> String {
        let chart = chart();
        let mut args = vec!["template", "strata", chart.as_str(), "--namespace", ns];
        if let Some(v) = values {
            args.extend(["-f", v]);
        }
        args.extend_from_slice(extra);
        self.ok(&args)
    }
}

pub fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

pub fn kind(v: &Value) -> &str {
    v["kind"].as_str().unwrap_or_default()
}

pub fn find<'a>(all: &'a [Value], k: &str) -> Vec<&'a Value> {
    all.iter().filter(|v| kind(v) == k).collect()
}

pub fn one<'a>(all: &'a [Value], k: &str) -> &'a Value {
    let found = find(all, k);
    assert_eq!(found.len(), 1, "expected one {k}, found {}", found.len());
    found[0]
}

/// The operator's Deployment (the one labelled component=operator).
pub fn operator_deployment(all: &[Value]) -> &Value {
    find(all, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["labels"]["app.kubernetes.io/component"].as_str() == Some("operator"))
        .expect("an operator Deployment")
}

/// The ServiceAccount controller's `default` account (no controllers run here), which
/// admission requires of every pod.
pub async fn default_service_account(client: &kube::Client, ns: &str) {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa: ServiceAccount = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "default" },
        "automountServiceAccountToken": false,
    }))
    .unwrap();
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating the default ServiceAccount: {e}"),
    }
}
