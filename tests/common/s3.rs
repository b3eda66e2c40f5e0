//! A real S3-compatible server on loopback for the offload tests: moto's server (PyPI
//! `moto[server]`), from `scripts/install-moto.sh` (installed once per machine and cached)
//! or `$STRATA_MOTO_SERVER`. Killed on drop.

use super::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

fn moto_binary() -> String {
    super::tool("STRATA_MOTO_SERVER", "scripts/install-moto.sh")
}

/// One plain HTTP/1.1 request without a body; the status, or `None` if nothing answers.
async fn request(addr: &str, method: &str, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&buf).split_whitespace().nth(1)?.parse().ok()
}

impl Moto {
    /// Starts moto's server on a free loopback port and waits until it answers. Moto
    /// accepts any credentials.
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, false).await
    }

    /// With `check_credentials`, every request must be signed by an access key moto's IAM
    /// knows (none exist): every request fails with `InvalidAccessKeyId`, as wrong
    /// credentials do on S3.
    pub async fn start_with(dir: &Path, check_credentials: bool) -> Self {
        let bin = moto_binary();
        for attempt in 0.. {
            let port = free_port();
            let log = std::fs::File::create(dir.join(format!("moto-{attempt}.log"))).unwrap();
            let mut cmd = Command::new(&bin);
            if check_credentials {
                cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
            }
            let mut child = cmd
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
            let addr = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                // Any answer (403 with credentials checked) means it serves.
                if request(&addr, "GET", "/").await.is_some() {
                    return Self {
                        child,
                        endpoint: format!("http://{addr}"),
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    // The port was taken meanwhile: try another.
                    assert!(attempt < 5, "moto_server keeps exiting; see {}", dir.display());
                    break;
                }
                assert!(Instant::now() < deadline, "moto_server did not answer");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        unreachable!()
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let addr = self.endpoint.trim_start_matches("http://");
        assert_eq!(request(addr, "PUT", &format!("/{bucket}")).await, Some(200));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
