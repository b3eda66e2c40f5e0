//! A real kube-apiserver backed by a real etcd on loopback (the envtest model of
//! ../shared/OPERATOR.md): self-signed serving certificate, a token for a user in
//! `system:masters`, RBAC on, and a kubeconfig for the operator, kubectl and the tests.
//! Processes are killed on drop. The binary comes from `scripts/kube/install-kube-apiserver.sh`
//! (built once per machine and cached), or `$STRATA_KUBE_APISERVER`.

use super::free_port;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct KubeApiServer {
    etcd: Child,
    apiserver: Child,
    /// A kubeconfig of a `system:masters` user.
    pub kubeconfig: PathBuf,
    /// A kubeconfig authenticating as `system:serviceaccount:strata:strata-operator`,
    /// with only the permissions RBAC grants that service account.
    pub operator_kubeconfig: PathBuf,
    pub url: String,
    pub dir: PathBuf,
}

fn apiserver_binary() -> String {
    super::tool("STRATA_KUBE_APISERVER", "scripts/kube/install-kube-apiserver.sh")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl KubeApiServer {
    /// Starts etcd and kube-apiserver under `dir`, waits until the API answers (polling,
    /// bounded), and installs Strata's CRDs with kubectl from `crds/`.
    pub async fn start(dir: &Path) -> Self {
        let s = Self::start_without_crds(dir).await;
        s.install_crds().await;
        s
    }

    /// [`Self::start`] without Strata's CRDs (a test installs them, as the Helm chart does).
    pub async fn start_without_crds(dir: &Path) -> Self {
        let bin = apiserver_binary();
        // A port from free_port() can be taken by another process before etcd or the API
        // server binds it: then start both again on other ports.
        for attempt in 0.. {
            match Self::try_start(&bin, &dir.join(format!("kube-{attempt}"))).await {
                Ok(s) => return s,
                Err(e) if attempt < 4 && e.to_lowercase().contains("address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    async fn try_start(bin: &str, dir: &Path) -> Result<Self, String> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        let (etcd_port, peer_port, port) = (free_port(), free_port(), free_port());
        let etcd = Command::new("etcd")
            .args(["--name", "kube", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
                "--initial-cluster",
                &format!("kube=http://127.0.0.1:{peer_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd (Debian's etcd-server)");
        // A CA and a serving certificate it signs (rustls refuses a CA certificate as the
        // server's own, so one self-signed certificate will not do).
        let (ca_cert, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
        let (cert, key, csr, sa) = (
            dir.join("apiserver.crt"),
            dir.join("apiserver.key"),
            dir.join("apiserver.csr"),
            dir.join("sa.key"),
        );
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=strata-test-ca",
            ])
            .arg("-keyout")
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca_cert));
        run(Command::new("openssl")
            .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        let ext = dir.join("apiserver.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca_cert)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        run(Command::new("openssl").args(["genrsa", "-out"]).arg(&sa).arg("2048"));
        let token = format!("strata-test-{}", super::rand_suffix());
        // A second token authenticates as the operator's service account of
        // examples/kubernetes/operator.yaml (no token controller runs here to issue one), so
        // a test can run the operator with exactly that RBAC.
        let operator_token = format!("strata-operator-{}", super::rand_suffix());
        std::fs::write(
            dir.join("tokens.csv"),
            format!(
                "{token},admin,admin-uid,\"system:masters\"\n{operator_token},system:serviceaccount:strata:strata-operator,sa-uid,\"system:serviceaccounts,system:serviceaccounts:strata,system:authenticated\"\n"
            ),
        )
        .unwrap();
        let spawned = Command::new(bin)
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={port}"))
            .arg("--insecure-port=0")
            .arg(format!("--tls-cert-file={}", cert.display()))
            .arg(format!("--tls-private-key-file={}", key.display()))
            .arg(format!("--token-auth-file={}", dir.join("tokens.csv").display()))
            .arg("--authorization-mode=RBAC")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", sa.display()))
            .arg(format!("--service-account-signing-key-file={}", sa.display()))
            .arg("--api-audiences=https://kubernetes.default.svc")
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--endpoint-reconciler-type=none")
            .arg("--profiling=false")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("kube-apiserver.log")).unwrap())
            .spawn();
        let apiserver = match spawned {
            Ok(c) => c,
            Err(e) => {
                let mut etcd = etcd;
                let _ = etcd.kill();
                let _ = etcd.wait();
                return Err(format!("{bin}: {e}"));
            }
        };
        let url = format!("https://127.0.0.1:{port}");
        let ca = base64(&std::fs::read(&ca_cert).unwrap());
        let kubeconfig_with = |token: &str| {
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n    namespace: default\ncurrent-context: test\n"
            )
        };
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_with(&token)).unwrap();
        std::fs::write(dir.join("kubeconfig-operator-sa"), kubeconfig_with(&operator_token)).unwrap();
        let mut s = Self {
            etcd,
            apiserver,
            kubeconfig,
            operator_kubeconfig: dir.join("kubeconfig-operator-sa"),
            url,
            dir: dir.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(st)) = s.etcd.try_wait() {
                let etcd_log = std::fs::read_to_string(s.dir.join("etcd.log")).unwrap_or_default();
                return Err(format!("etcd exited with {st}:\n{etcd_log}"));
            }
            if let Ok(Some(st)) = s.apiserver.try_wait() {
                let etcd_log = std::fs::read_to_string(s.dir.join("etcd.log")).unwrap_or_default();
                let etcd_tail: Vec<&str> = etcd_log.lines().rev().take(5).collect();
                return Err(format!(
                    "kube-apiserver exited with {st}:\n{}\netcd:\n{}",
                    s.log_tail(),
                    etcd_tail.join("\n")
                ));
            }
            let last = match s.try_client().await {
                Ok(c) => match Api::<Namespace>::all(c).get_opt("default").await {
                    Ok(Some(_)) => break,
                    Ok(None) => "no default namespace yet".to_string(),
                    Err(e) => e.to_string(),
                },
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready ({last}):\n{}",
                s.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(s)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("kube-apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn try_client(&self) -> Result<kube::Client, String> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).map_err(|e| e.to_string())?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| e.to_string())?;
        kube::Client::try_from(cfg).map_err(|e| e.to_string())
    }

    pub async fn client(&self) -> kube::Client {
        self.try_client().await.unwrap()
    }

    /// Runs kubectl against this server; panics with its output if it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn kubectl_output(&self, args: &[&str]) -> std::process::Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl")
    }

    /// Applies YAML with kubectl (as a user would).
    pub fn apply(&self, yaml: &str) {
        let path = self.dir.join(format!("apply-{}.yaml", super::rand_suffix()));
        std::fs::write(&path, yaml).unwrap();
        self.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    }

    async fn install_crds(&self) {
        let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/");
        self.kubectl(&["apply", "-f", crds]);
        self.wait_crds_established().await;
    }

    /// Waits until Strata's three CRDs are established: custom resources of the kinds
    /// can be created.
    pub async fn wait_crds_established(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in [
            "strataclusters.strata.io",
            "topics.strata.io",
            "subscriptions.strata.io",
        ] {
            loop {
                let out = self.kubectl_output(&[
                    "get",
                    "crd",
                    name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
                ]);
                if String::from_utf8_lossy(&out.stdout) == "True" {
                    break;
                }
                assert!(Instant::now() < deadline, "CRD {name} not established");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Creates a namespace for one test's objects.
    pub async fn namespace(&self, name: &str) {
        let ns: Api<Namespace> = Api::all(self.client().await);
        let obj: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        ns.create(&PostParams::default(), &obj).await.unwrap();
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `strata operator` process, killed on drop.
pub struct OperatorProcess {
    pub child: Child,
    pub http: String,
    pub identity: String,
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Starts `strata operator` against `kube` with a short resync and lease, so tests
    /// see drift correction and takeover within seconds.
    pub fn start(kube: &KubeApiServer, identity: &str, extra: &[&str]) -> Self {
        Self::start_with_resync(kube, identity, 2, extra)
    }

    /// [`Self::start`] with another resync period (the default is 60 s).
    pub fn start_with_resync(kube: &KubeApiServer, identity: &str, resync_secs: u64, extra: &[&str]) -> Self {
        Self::start_as(kube, &kube.kubeconfig, identity, resync_secs, "default", extra)
    }

    /// [`Self::start_with_resync`] with another kubeconfig (another identity) and the
    /// namespace of its leader Lease.
    pub fn start_as(
        kube: &KubeApiServer,
        kubeconfig: &Path,
        identity: &str,
        resync_secs: u64,
        lease_namespace: &str,
        extra: &[&str],
    ) -> Self {
        let http = format!("127.0.0.1:{}", free_port());
        let log = kube
            .dir
            .join(format!("operator-{identity}-{}.log", super::rand_suffix()));
        let child = Command::new(super::STRATA)
            .args(["operator", "--kubeconfig"])
            .arg(kubeconfig)
            .args([
                "--http-listen",
                &http,
                "--identity",
                identity,
                "--lease-namespace",
                lease_namespace,
            ])
            .args([
                "--resync-secs",
                &resync_secs.to_string(),
                "--max-backoff-secs",
                "2",
                "--lease-duration-secs",
                "6",
            ])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            http,
            identity: identity.to_string(),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The operator's /metrics page, if it answers.
    pub async fn metrics(&self) -> Option<String> {
        super::http_get(&self.http, "/metrics").await.map(|(_, b)| b)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.sigkill();
    }
}
