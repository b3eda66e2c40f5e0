//! How every client command (`produce`, `consume`, `admin`, `perf`) reaches Strata: the
//! service URL and, for `https://` URLs, the CA to trust and the client certificate to
//! present. Flattened into each command's arguments; each flag has an environment
//! variable, so a shell (or a Kubernetes Pod) sets them once.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use strata_client::Client;

#[derive(Args, Clone, Debug)]
pub struct ConnArgs {
    /// Broker (or any brokers of a cluster: http://b1:6650,b2:6650); https:// for TLS.
    #[arg(long, global = true, default_value = strata_client::DEFAULT_URL, env = "STRATA_URL")]
    pub url: String,
    /// CA certificates (PEM) to trust for https:// URLs [default: the system's roots].
    #[arg(long, global = true, env = "STRATA_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for brokers requiring one (mutual TLS); with
    /// --tls-key-file.
    #[arg(long, global = true, env = "STRATA_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert-file.
    #[arg(long, global = true, env = "STRATA_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// Authentication token (JWT) for brokers with auth on.
    #[arg(
        long,
        global = true,
        env = "STRATA_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file holding the token (a mounted Secret, say).
    #[arg(long, global = true, env = "STRATA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Connect to ADDR:PORT whenever a URL names HOST:PORT, still checking TLS
    /// certificates against HOST (curl's --resolve): for a cluster's DNS names reached
    /// through `kubectl port-forward`. Repeatable.
    #[arg(long, global = true, value_name = "HOST:PORT=ADDR:PORT", value_parser = parse_resolve)]
    pub resolve: Vec<(String, String)>,
}

/// `HOST:PORT=ADDR:PORT` of `--resolve`.
pub fn parse_resolve(s: &str) -> Result<(String, String), String> {
    let (from, to) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT=ADDR:PORT"))?;
    for part in [from, to] {
        match part.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
            _ => return Err(format!("{part:?} in {s:?} is not HOST:PORT")),
        }
    }
    Ok((from.to_string(), to.to_string()))
}

impl ConnArgs {
    /// The SDK client builder for these arguments.
    pub fn builder(&self) -> anyhow::Result<strata_client::ClientBuilder> {
        let mut b = Client::builder(self.url.clone());
        for (from, to) in &self.resolve {
            b = b.resolve(from, to);
        }
        if let Some(ca) = &self.tls_ca_file {
            b = b.tls_ca_file(ca);
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => b = b.tls_client_cert_files(c, k),
            (None, None) => {}
            _ => anyhow::bail!("--tls-cert-file and --tls-key-file go together; give both"),
        }
        if let Some(t) = &self.token {
            b = b.token(t.clone());
        } else if let Some(f) = &self.token_file {
            let t = std::fs::read_to_string(f).with_context(|| format!("cannot read --token-file {}", f.display()))?;
            b = b.token(t.trim().to_string());
        }
        Ok(b)
    }

    /// Connects, with an error saying where and how to change it.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        self.builder()?.build().await.with_context(|| {
            format!(
                "cannot reach Strata at {}; is it running? (--url sets the address)",
                self.url
            )
        })
    }
}
