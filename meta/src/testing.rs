//! Test support: a real etcd server on loopback, for this crate's and other crates' tests.
//! Needs the `etcd` binary (Debian's etcd-server; `scripts/install-deps.sh` installs it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Certificate files of a TLS etcd ([`Etcd::start_tls`]), PEM.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A real etcd process on loopback, killed on drop.
pub struct Etcd {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd on free loopback ports and waits (polling, bounded) until it answers.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Starts etcd serving clients over TLS with `tls.cert`/`tls.key`, requiring client
    /// certificates signed by `tls.ca`; `url` is then an `etcds://` URL presenting
    /// `tls.client_cert`/`tls.client_key`.
    pub async fn start_tls(tls: &TlsFiles) -> Self {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<&TlsFiles>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut cmd = Command::new("etcd");
        if let Some(t) = tls {
            cmd.arg("--cert-file")
                .arg(&t.cert)
                .arg("--key-file")
                .arg(&t.key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "strata-test", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("strata-test=http://127.0.0.1:{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd must be installed (scripts/install-deps.sh installs Debian's etcd-server)");
        let url = match tls {
            None => format!("etcd://127.0.0.1:{client}"),
            Some(t) => format!(
                "etcds://127.0.0.1:{client}?ca_file={}&cert_file={}&key_file={}",
                t.ca.display(),
                t.client_cert.display(),
                t.client_key.display()
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(store) = crate::connect(&url).await
                && store.get("/ready").await.is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become ready: {}",
                std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, url, _dir: dir }
    }
}

impl Etcd {
    /// The etcd process id (to pause it with SIGSTOP in outage tests).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
