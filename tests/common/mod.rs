//! Harness for end-to-end tests: runs the real `strata` binary on loopback with a temp data
//! directory, waits for readiness by polling (never sleeping), and kills by PID.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata_bookie::client::BookieClient;

/// Polls the metadata store until exactly `n` bookies are registered (30 s at most).
pub async fn wait_registered(store: &dyn strata_meta::MetadataStore, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = store.list(&strata_meta::keys::bookies_prefix()).await.unwrap().len();
        if got == n {
            return;
        }
        assert!(Instant::now() < deadline, "{got} bookies registered, expected {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback port (bound then released; the bookie binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Seed from `STRATA_TEST_SEED` or the clock; always printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {seed} (rerun with STRATA_TEST_SEED={seed})");
    seed
}

/// xorshift64*: small, seedable, good enough for choosing kill points and sizes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Deterministic payload of an entry, so tests need not keep what they wrote.
pub fn payload(ledger: u64, entry: u64, len: usize) -> bytes::Bytes {
    let mut x = ledger.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ entry.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    bytes::Bytes::from(v)
}

/// A running `strata bookie` child process.
pub struct BookieProcess {
    pub child: Child,
    pub addr: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl BookieProcess {
    /// Writes `extra_config` (TOML lines) next to the data dir and starts a bookie.
    pub fn start(dir: &Path, extra_config: &str) -> Self {
        Self::start_with_args(dir, extra_config, &[])
    }

    pub fn start_with_args(dir: &Path, extra_config: &str, args: &[&str]) -> Self {
        Self::start_at(dir, extra_config, args, &format!("127.0.0.1:{}", free_port()))
    }

    /// Starts a bookie on a given address (to restart one where clients expect it).
    pub fn start_at(dir: &Path, extra_config: &str, args: &[&str], addr: &str) -> Self {
        let data_dir = dir.join("data");
        let config = dir.join("bookie.toml");
        std::fs::write(&config, extra_config).unwrap();
        let addr = addr.to_string();
        let log = dir.join(format!(
            "bookie-{}.log",
            Instant::now().elapsed().as_nanos() ^ rand_suffix()
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["bookie", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", &addr, "--config"])
            .arg(&config)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn strata bookie");
        Self {
            child,
            addr,
            data_dir,
            config,
            log,
        }
    }

    /// Polls NodeInfo until the bookie answers, or fails with its log.
    pub async fn ready(&mut self) -> BookieClient {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("bookie exited early with {status}; log:\n{}", self.log_text());
            }
            if let Ok(c) = BookieClient::connect(&self.addr).await
                && c.node_info().await.is_ok()
            {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "bookie not ready in 60 s; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.wait_exit(Duration::from_secs(30))
    }

    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        match wait_exit(&mut self.child, limit) {
            Some(s) => s,
            None => {
                self.sigkill();
                panic!("bookie did not exit within {limit:?}; log:\n{}", self.log_text());
            }
        }
    }
}

/// Polls a child process for its exit, up to `limit`; `None` if it is still running.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Nanoseconds of the wall clock, to make file names unique.
pub fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl Drop for BookieProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.sigkill();
        }
    }
}

/// Total bytes of regular files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                total += dir_size(&e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

pub const STRATA: &str = env!("CARGO_BIN_EXE_strata");

/// A `strata standalone` process on loopback.
pub struct Standalone {
    pub child: Child,
    pub url: String,
    pub log: std::path::PathBuf,
}

impl Standalone {
    pub async fn start(dir: &Path, port: u16) -> Self {
        Self::start_with_config(dir, port, None).await
    }

    /// Starts with `config` (TOML) written to `<dir>/strata.toml` and passed as --config.
    pub async fn start_with_config(dir: &Path, port: u16, config: Option<&str>) -> Self {
        Self::start_with_args(dir, port, config, &[]).await
    }

    /// Starts with `config` (as [`Self::start_with_config`]) and extra command-line `args`.
    pub async fn start_with_args(dir: &Path, port: u16, config: Option<&str>, args: &[&str]) -> Self {
        let mut s = Self::spawn(dir, port, config, args);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!(
                    "standalone exited with {st}:\n{}",
                    std::fs::read_to_string(&s.log).unwrap_or_default()
                );
            }
            if let Ok(mut c) = strata_proto::v1::lookup_client::LookupClient::connect(s.url.clone()).await
                && c.lookup_topic(strata_proto::v1::LookupTopicRequest {
                    topic: "public/default/x".into(),
                })
                .await
                .is_ok()
            {
                return s;
            }
            assert!(Instant::now() < deadline, "standalone not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the process without waiting for it to serve (TLS or auth tests wait their
    /// own way).
    pub fn spawn(dir: &Path, port: u16, config: Option<&str>, args: &[&str]) -> Self {
        let log = dir.join(format!(
            "standalone-{}.log",
            Instant::now().elapsed().as_nanos() ^ std::process::id() as u128 ^ port as u128 ^ rand_suffix()
        ));
        let mut cmd = Command::new(STRATA);
        cmd.args(["standalone", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args);
        if let Some(c) = config {
            let path = dir.join("strata.toml");
            std::fs::write(&path, c).unwrap();
            cmd.arg("--config").arg(path);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `strata ARGS --url <this>` to its end (at most 120 s, or the test fails with
    /// what it printed), feeding it `stdin`.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut cmd = Command::new(STRATA);
        cmd.args(args).args(["--url", &self.url]);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = CliProcess::spawn(cmd, args);
        if let Some(input) = stdin {
            use std::io::Write;
            child.child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.finish(Duration::from_secs(120))
    }

    /// Starts `strata ARGS --url <this>` in the background (see [`CliProcess::finish`]).
    pub fn spawn_cli(&self, args: &[&str]) -> CliProcess {
        let mut cmd = Command::new(STRATA);
        cmd.args(args).args(["--url", &self.url]).stdin(Stdio::null());
        CliProcess::spawn(cmd, args)
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        wait_exit(&mut self.child, Duration::from_secs(30)).expect("standalone did not stop on SIGTERM")
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.sigkill();
        }
    }
}

/// A CLI process whose stdout and stderr are collected as it runs (so it never blocks on
/// a full pipe).
pub struct CliProcess {
    pub child: Child,
    what: String,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl CliProcess {
    fn spawn(mut cmd: Command, args: &[&str]) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let read = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                buf
            })
        };
        let out = read(Box::new(child.stdout.take().unwrap()));
        let err = read(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            what: format!("strata {}", args.join(" ")),
            out: Some(out),
            err: Some(err),
        }
    }

    /// Waits up to `limit` for the process to end and returns what it printed; one still
    /// running then is killed and the test fails with its output.
    pub fn finish(mut self, limit: Duration) -> std::process::Output {
        let status = wait_exit(&mut self.child, limit);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let stdout = self.out.take().unwrap().join().unwrap();
        let stderr = self.err.take().unwrap().join().unwrap();
        let Some(status) = status else {
            panic!(
                "`{}` did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                self.what,
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        };
        std::process::Output { status, stdout, stderr }
    }
}

impl Drop for CliProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `sig` (e.g. "STOP", "CONT", "TERM") to a process we started.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

/// A plain HTTP GET on loopback: (status, body), or `None` if nothing answers.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// A running `strata broker` child process (cluster mode).
pub struct BrokerProcess {
    pub child: Child,
    /// `127.0.0.1:port`, its advertised address and id.
    pub addr: String,
    pub http: String,
    pub log: PathBuf,
    metadata_url: String,
    config: PathBuf,
    /// Whether its ports were picked for it (so another pair may be picked if one was
    /// taken between picking and binding); false after a restart, which keeps them.
    fresh_ports: bool,
}

impl BrokerProcess {
    /// Starts a broker on free ports with `config` as its `[broker]` TOML section.
    pub fn start(dir: &Path, metadata_url: &str, config: &str) -> Self {
        let config_path = dir.join(format!("broker-{}.toml", rand_suffix()));
        std::fs::write(&config_path, format!("[broker]\n{config}")).unwrap();
        let mut b = Self::start_at(
            dir,
            metadata_url,
            &config_path,
            &format!("127.0.0.1:{}", free_port()),
            &format!("127.0.0.1:{}", free_port()),
        );
        b.fresh_ports = true;
        b
    }

    fn start_at(dir: &Path, metadata_url: &str, config: &Path, addr: &str, http: &str) -> Self {
        let log = dir.join(format!("broker-{}.log", rand_suffix()));
        let child = Command::new(STRATA)
            .args([
                "broker",
                "--metadata-url",
                metadata_url,
                "--listen",
                addr,
                "--http-listen",
                http,
            ])
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn strata broker");
        Self {
            child,
            addr: addr.to_string(),
            http: http.to_string(),
            log,
            metadata_url: metadata_url.to_string(),
            config: config.to_path_buf(),
            fresh_ports: false,
        }
    }

    /// Starts this broker again (same addresses and configuration) after it stopped.
    pub fn restart(&mut self, dir: &Path) {
        let _ = self.child.wait();
        let again = Self::start_at(dir, &self.metadata_url, &self.config, &self.addr, &self.http);
        drop(std::mem::replace(self, again));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Polls /readyz until 200, or fails with the log.
    pub async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut port_retries = 0;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // A port from free_port() can be taken (by any process's outgoing
                // connection) before the broker binds it: pick others and start again.
                if self.fresh_ports && port_retries < 5 && self.log_text().contains("Address already in use") {
                    port_retries += 1;
                    let dir = self.log.parent().unwrap().to_path_buf();
                    let mut again = Self::start_at(
                        &dir,
                        &self.metadata_url,
                        &self.config,
                        &format!("127.0.0.1:{}", free_port()),
                        &format!("127.0.0.1:{}", free_port()),
                    );
                    again.fresh_ports = true;
                    *self = again;
                    continue;
                }
                panic!("broker exited early with {status}; log:\n{}", self.log_text());
            }
            if let Some((200, _)) = http_get(&self.http, "/readyz").await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker not ready in 60 s; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        match wait_exit(&mut self.child, Duration::from_secs(30)) {
            Some(s) => s,
            None => {
                self.sigkill();
                panic!("broker did not stop within 30 s of SIGTERM; log:\n{}", self.log_text());
            }
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
/// The path of a test tool: `$env_var` if set, else what `script` (relative to the
/// repository, installing the tool once per machine) prints.
pub fn tool(env_var: &str, script: &str) -> String {
    if let Ok(p) = std::env::var(env_var) {
        return p;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = Command::new(&path)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(out.status.success(), "{script} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub mod clusters;
pub mod helm;
pub mod kube;
pub mod kubelet;
pub mod s3;

/// A raw consume stream: subscribes, then sends whatever else is pushed on the sender.
pub async fn raw_consume(
    url: &str,
    subscribe: strata_proto::v1::Subscribe,
) -> (
    tokio::sync::mpsc::Sender<strata_proto::v1::ConsumeRequest>,
    tonic::Streaming<strata_proto::v1::ConsumeResponse>,
) {
    let mut c = strata_proto::v1::consumer_client::ConsumerClient::connect(url.to_string())
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(strata_proto::v1::ConsumeRequest {
        request: Some(strata_proto::v1::consume_request::Request::Subscribe(subscribe)),
    })
    .await
    .unwrap();
    let stream = c
        .consume(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, stream)
}

/// Polls `f` until it holds (every 50 ms), failing with `what` and the last value after
/// 60 s.
pub async fn eventually<T: std::fmt::Debug>(what: &str, mut f: impl AsyncFnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, v) = f().await;
        if ok {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: still {v:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
