//! TLS on a real `strata standalone` process: clients over `https://` with the CA, a
//! plain-text client refused, a client trusting another CA refused with a clear error,
//! certificate rotation without a restart, and mutual TLS (a client without a certificate
//! refused). Certificates are made per test with rcgen.

mod common;

use common::{STRATA, free_port};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strata_client::{Client, InitialPosition};

const WAIT: Duration = Duration::from_secs(60);

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: tokio_rustls::rustls::pki_types::CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A TLS client configuration trusting this CA only (HTTP/2), presenting no
    /// certificate.
    fn client_config(&self) -> std::sync::Arc<tokio_rustls::rustls::ClientConfig> {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        std::sync::Arc::new(cfg)
    }

    /// A leaf certificate for `names` (PEM certificate, PEM key).
    fn leaf(&self, cn: &str, names: &[&str]) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Replaces a file the way a Secret volume does: a new file renamed over the old one.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Node {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `strata standalone` with `config` (TOML); not waited for.
fn start(dir: &Path, config: &str) -> Node {
    start_with(dir, config, &[])
}

/// [`start`] with more command-line arguments.
fn start_with(dir: &Path, config: &str, args: &[&str]) -> Node {
    let port = free_port();
    let cfg = write(dir, "strata.toml", config);
    let log = dir.join("standalone.log");
    let child = Command::new(STRATA)
        .args(["standalone", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(cfg)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Node {
        child,
        url: format!("https://127.0.0.1:{port}"),
        log,
    }
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `connect` succeeds (the node is up), failing with the log.
    async fn ready(&mut self, connect: impl AsyncFn() -> strata_client::Result<Client>) -> Client {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("standalone exited with {st}:\n{}", self.log());
            }
            match connect().await {
                Ok(c) => return c,
                Err(e) => assert!(Instant::now() < deadline, "not ready: {e}\n{}", self.log()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn round_trip(client: &Client, topic: &str, payload: &str) {
    let c = client
        .consumer(topic)
        .subscription("s")
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    client
        .producer(topic)
        .create()
        .await
        .unwrap()
        .send(payload.to_string())
        .await
        .unwrap();
    loop {
        let m = tokio::time::timeout(WAIT, c.receive()).await.unwrap().unwrap();
        c.ack(&m).await.unwrap();
        if &m.payload[..] == payload.as_bytes() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_connect_others_are_refused_and_certificates_rotate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("strata test CA");
    let other_ca = Ca::new("someone else's CA");
    let (cert, key) = ca.leaf("broker v1", &["localhost", "127.0.0.1", "broker.strata.test"]);
    let cert_file = write(d, "tls.crt", &cert);
    let key_file = write(d, "tls.key", &key);
    let ca_file = write(d, "ca.crt", &ca.pem);
    let other_ca_file = write(d, "other-ca.crt", &other_ca.pem);
    let mut node = start(
        d,
        &format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert_file.display().to_string(),
            key_file.display().to_string()
        ),
    );
    let url = node.url.clone();
    let connect = |ca: PathBuf| {
        let url = url.clone();
        async move || Client::builder(url.clone()).tls_ca_file(&ca).build().await
    };
    let client = node.ready(connect(ca_file.clone())).await;
    round_trip(&client, "public/default/secure", "over TLS").await;

    // A plain-text client on the TLS port gets no service.
    let plain = url.replacen("https://", "http://", 1);
    let served = match Client::builder(plain)
        .connect_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(5))
        .build()
        .await
    {
        Ok(c) => c.admin().list_tenants().await.is_ok(),
        Err(_) => false,
    };
    assert!(!served, "a plain-text client was served on the TLS port");

    // A client trusting another CA is refused, and told why.
    let e = Client::builder(url.clone())
        .tls_ca_file(&other_ca_file)
        .build()
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("certificate") || msg.contains("UnknownIssuer"), "{msg}");

    // The CLI speaks TLS too.
    let out = Command::new(STRATA)
        .args([
            "produce",
            "public/default/cli-tls",
            "hello",
            "--url",
            &url,
            "--tls-ca-file",
        ])
        .arg(&ca_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // --resolve: a name the certificate carries, reached at another address, is checked
    // against that name (accepted); a name it does not carry is refused, saying so.
    let port = url.rsplit(':').next().unwrap().to_string();
    let by_name = |host: &str| {
        Command::new(STRATA)
            .args(["produce", "public/default/cli-tls", "hello", "--url"])
            .arg(format!("https://{host}:{port}"))
            .arg("--resolve")
            .arg(format!("{host}:{port}=127.0.0.1:{port}"))
            .arg("--tls-ca-file")
            .arg(&ca_file)
            .output()
            .unwrap()
    };
    let out = by_name("broker.strata.test");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = by_name("elsewhere.strata.test");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("certificate not valid for name \"elsewhere.strata.test\""),
        "{err}"
    );

    // Rotation: the files are replaced by a certificate of the other CA. New connections
    // get it without a restart (clients of the new CA connect); the connection already
    // open keeps working.
    let (cert2, key2) = other_ca.leaf("broker v2", &["localhost", "127.0.0.1"]);
    replace(&key_file, &key2);
    replace(&cert_file, &cert2);
    let deadline = Instant::now() + WAIT;
    let rotated = loop {
        match Client::builder(url.clone()).tls_ca_file(&other_ca_file).build().await {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "rotation not picked up: {e}\n{}", node.log()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    round_trip(&rotated, "public/default/rotated", "new certificate").await;
    round_trip(&client, "public/default/secure", "old connection").await;
    assert!(node.child.try_wait().unwrap().is_none(), "no restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("strata test CA");
    let clients_ca = Ca::new("strata clients CA");
    let (cert, key) = ca.leaf("broker", &["127.0.0.1"]);
    let (client_cert, client_key) = clients_ca.leaf("app-1", &["app-1"]);
    let (stranger_cert, stranger_key) = ca.leaf("stranger", &["stranger"]);
    let ca_file = write(d, "ca.crt", &ca.pem);
    let config = format!(
        "[tls]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n",
        write(d, "tls.crt", &cert).display().to_string(),
        write(d, "tls.key", &key).display().to_string(),
        write(d, "clients-ca.crt", &clients_ca.pem).display().to_string()
    );
    let client_cert = write(d, "client.crt", &client_cert);
    let client_key = write(d, "client.key", &client_key);
    let stranger_cert = write(d, "stranger.crt", &stranger_cert);
    let stranger_key = write(d, "stranger.key", &stranger_key);
    let mut node = start(d, &config);
    let url = node.url.clone();
    let with_cert = {
        let (url, ca_file, client_cert, client_key) =
            (url.clone(), ca_file.clone(), client_cert.clone(), client_key.clone());
        async move || {
            Client::builder(url.clone())
                .tls_ca_file(&ca_file)
                .tls_client_cert_files(&client_cert, &client_key)
                .build()
                .await
        }
    };
    let client = node.ready(with_cert).await;
    round_trip(&client, "public/default/mtls", "with a client certificate").await;
    // Without a certificate, or with one the clients' CA did not sign: refused.
    for builder in [
        Client::builder(url.clone()).tls_ca_file(&ca_file),
        Client::builder(url.clone())
            .tls_ca_file(&ca_file)
            .tls_client_cert_files(&stranger_cert, &stranger_key),
    ] {
        let r = builder
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(5))
            .build()
            .await;
        let e = match r {
            // TLS 1.3 finishes the client's side of the handshake before the server
            // checks the certificate: the refusal shows on the first call.
            Ok(c) => c.admin().list_tenants().await.map(drop).unwrap_err(),
            Err(e) => e,
        };
        eprintln!("refused as expected: {e}");
    }
    // The refusals did not disturb the node.
    round_trip(&client, "public/default/mtls", "still serving").await;
    // A missing certificate file is a clear start-up error naming it.
    let bad = tempfile::tempdir().unwrap();
    let mut broken = start(
        bad.path(),
        "[tls]\ncert_file = \"/nonexistent/tls.crt\"\nkey_file = \"/nonexistent/tls.key\"\n",
    );
    let status = common::wait_exit(&mut broken.child, WAIT).expect("a bad [tls] stops the start");
    assert!(!status.success());
    assert!(broken.log().contains("/nonexistent/tls.crt"), "{}", broken.log());
}

/// GET `path` over HTTPS trusting `ca` only: the status and body, or why it failed.
async fn https_get(addr: &str, ca: &Ca, path: &str) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).map_err(|e| e.to_string())?;
    let mut cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    // The server closes without a TLS close_notify after answering: keep what came.
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    Ok((
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_port_serves_https_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("strata test ca");
    let (cert, key) = ca.leaf("node", &["127.0.0.1"]);
    let cert = write(d, "tls.crt", &cert);
    let key = write(d, "tls.key", &key);
    let http = format!("127.0.0.1:{}", free_port());
    let mut node = start_with(
        d,
        &format!("[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nhttp = true\n"),
        &["--http-listen", &http],
    );
    let ca_path = write(d, "ca.crt", &ca.pem);
    let url = node.url.clone();
    node.ready(async || Client::builder(url.clone()).tls_ca_file(&ca_path).build().await)
        .await;
    let deadline = Instant::now() + WAIT;
    let (status, body) = loop {
        match https_get(&http, &ca, "/healthz").await {
            Ok(r) => break r,
            Err(e) => assert!(Instant::now() < deadline, "{e}\n{}", node.log()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = https_get(&http, &ca, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("# HELP"), "{body}");
    // Plain HTTP gets no answer, and a client trusting another CA fails the handshake.
    assert_eq!(common::http_get(&http, "/healthz").await, None);
    let e = https_get(&http, &Ca::new("other ca"), "/healthz").await.unwrap_err();
    assert!(e.contains("handshake"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_is_reached_over_tls_with_a_client_certificate() {
    use strata_meta::testing::{Etcd, TlsFiles};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("etcd ca");
    let (cert, key) = ca.leaf("etcd", &["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = ca.leaf("strata-node", &["strata-node"]);
    let files = TlsFiles {
        cert: write(d, "etcd.crt", &cert),
        key: write(d, "etcd.key", &key),
        ca: write(d, "ca.crt", &ca.pem),
        client_cert: write(d, "node.crt", &client_cert),
        client_key: write(d, "node.key", &client_key),
    };
    let etcd = Etcd::start_tls(&files).await;
    assert!(etcd.url.starts_with("etcds://"), "{}", etcd.url);
    let store = strata_meta::connect(&etcd.url).await.unwrap();
    store
        .put("/tls-check", "v".into(), strata_meta::Condition::Any)
        .await
        .unwrap();
    assert_eq!(&store.get("/tls-check").await.unwrap().unwrap().value[..], b"v");

    // A dead member first in the list: requests move on to a live one.
    let with_dead = etcd
        .url
        .replacen("etcds://", &format!("etcds://127.0.0.1:{},", free_port()), 1);
    let failing_over = strata_meta::connect(&with_dead).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match failing_over.get("/tls-check").await {
            Ok(v) => {
                assert_eq!(&v.unwrap().value[..], b"v");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never reached the live member: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Plain text, or TLS without the client certificate etcd requires: no access.
    let host = etcd.url["etcds://".len()..].split('?').next().unwrap().to_string();
    for url in [
        format!("etcd://{host}"),
        format!("etcds://{host}?ca_file={}", files.ca.display()),
    ] {
        let r = async { strata_meta::connect(&url).await?.get("/tls-check").await }.await;
        assert!(r.is_err(), "{url} read etcd: {r:?}");
    }
    // A TLS URL without its CA, or with half an identity, is a clear error.
    let e = strata_meta::connect(&format!("etcds://{host}")).await.err().unwrap();
    assert!(e.to_string().contains("ca_file"), "{e}");
    let e = strata_meta::connect(&format!(
        "etcds://{host}?ca_file={}&cert_file={}",
        files.ca.display(),
        files.client_cert.display()
    ))
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("key_file"), "{e}");

    // The nodes take the same URL: a bookie registers through it.
    let bd = d.join("bookie");
    std::fs::create_dir_all(&bd).unwrap();
    let _bookie = common::BookieProcess::start_with_args(&bd, "", &["--metadata-url", &etcd.url]);
    common::wait_registered(&*store, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_and_bookies_talk_over_mutual_tls() {
    use common::{BookieProcess, BrokerProcess};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("cluster ca");
    let ca_file = write(d, "ca.crt", &ca.pem);
    let (cert, key) = ca.leaf("node", &["127.0.0.1", "localhost"]);
    let (cert, key) = (write(d, "node.crt", &cert), write(d, "node.key", &key));
    // Every node serves TLS, requires a client certificate of the cluster's CA, and
    // presents its own to the bookies it reaches.
    let tls = format!(
        "[tls]\ncert_file = {cert:?}\nkey_file = {key:?}\nclient_ca_file = {ca_file:?}\nca_file = {ca_file:?}\n\
         client_cert_file = {cert:?}\nclient_key_file = {key:?}\nbookie_tls = true\n"
    );
    let etcd = strata_meta::testing::Etcd::start().await;
    let mut bookies = Vec::new();
    for i in 0..2 {
        let bd = d.join(format!("bookie{i}"));
        std::fs::create_dir_all(&bd).unwrap();
        bookies.push(BookieProcess::start_with_args(
            &bd,
            &tls,
            &["--metadata-url", &etcd.url],
        ));
    }
    let store = strata_meta::connect(&etcd.url).await.unwrap();
    common::wait_registered(&*store, 2).await;
    let mut broker = BrokerProcess::start(
        d,
        &etcd.url,
        &format!("ensemble_size = 2\nwrite_quorum = 2\nack_quorum = 2\n{tls}"),
    );
    broker.ready().await;

    // Clients need a certificate too; with one, a round trip goes through the bookies.
    let url = format!("https://{}", broker.addr);
    let client = Client::builder(url.clone())
        .tls_ca_file(&ca_file)
        .tls_client_cert_files(&cert, &key)
        .build()
        .await
        .unwrap();
    round_trip(&client, "public/default/over-mtls", "stored over mutual TLS").await;

    // A bookie refuses a peer without a certificate of the cluster's CA.
    for b in &bookies {
        let config = ca.client_config();
        let tcp = tokio::net::TcpStream::connect(&b.addr).await.unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let refused = async {
            let mut s = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            // TLS 1.3: the refusal of a missing certificate comes with the first read.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
            let mut buf = [0u8; 64];
            s.read(&mut buf).await
        }
        .await;
        assert!(
            refused.is_err(),
            "bookie {} served a peer without a certificate: {refused:?}",
            b.addr
        );
    }
}
