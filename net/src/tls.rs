//! TLS settings and material: certificates, keys and CAs from PEM files (errors name the
//! file and what was wrong), and the rustls configurations built from them.
//!
//! Invariants: every configuration uses the ring provider and offers only `h2` by ALPN
//! (gRPC); a client configuration verifies the server's name and chain against the
//! configured CA, or the system's roots when none is configured.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The `[tls]` section of a node's configuration file. Every field is optional; TLS is
/// on for the node's gRPC port when `cert_file` and `key_file` are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The node's certificate chain (PEM), served on its gRPC port. Reloaded when the
    /// file changes (a rotated Kubernetes Secret), without a restart.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1), reloaded with the certificate.
    pub key_file: Option<PathBuf>,
    /// Clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// The CA this node trusts when it connects to other nodes over `https://` (broker
    /// to bookie, broker to broker); the system's roots when unset.
    pub ca_file: Option<PathBuf>,
    /// The certificate and key this node presents when it connects to other nodes
    /// (needed when they require client certificates).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Connect to bookies over TLS (they must serve it: their own `[tls]`).
    pub bookie_tls: bool,
    /// Serve the HTTP port (`/healthz`, `/readyz`, `/metrics`) over TLS too, with
    /// `cert_file` and `key_file` (HTTP/1.1; no client certificate is asked for, so
    /// kubelet probes and scrapers only need to trust the CA).
    pub http: bool,
}

impl TlsSettings {
    /// Checks the combination (both or neither of each pair) and that every file loads.
    pub fn validate(&self) -> Result<(), String> {
        pair("cert_file", &self.cert_file, "key_file", &self.key_file)?;
        pair(
            "client_cert_file",
            &self.client_cert_file,
            "client_key_file",
            &self.client_key_file,
        )?;
        if self.http && self.cert_file.is_none() {
            return Err("tls.http needs tls.cert_file and tls.key_file".into());
        }
        if self.client_ca_file.is_some() && self.cert_file.is_none() {
            return Err(
                "tls.client_ca_file needs tls.cert_file and tls.key_file (client certificates are checked over TLS)"
                    .into(),
            );
        }
        if let Some(s) = self.server_files() {
            s.config()?;
        }
        self.client()?;
        Ok(())
    }

    /// The files of the server side, if TLS is on.
    pub fn server_files(&self) -> Option<ServerFiles> {
        Some(ServerFiles {
            cert: self.cert_file.clone()?,
            key: self.key_file.clone()?,
            client_ca: self.client_ca_file.clone(),
            http1: false,
        })
    }

    /// The files of the HTTP port's TLS, if `http` is on.
    pub fn http_files(&self) -> Option<ServerFiles> {
        if !self.http {
            return None;
        }
        Some(ServerFiles {
            client_ca: None,
            http1: true,
            ..self.server_files()?
        })
    }

    /// The process-wide settings for connecting to other nodes.
    pub fn outgoing(&self) -> Result<crate::client::Outgoing, String> {
        Ok(crate::client::Outgoing {
            tls: self.client()?,
            bookie_tls: self.bookie_tls,
            token: None,
        })
    }

    /// The client side: for connecting to other nodes.
    pub fn client(&self) -> Result<ClientTls, String> {
        let mut c = match &self.ca_file {
            Some(f) => ClientTls::with_ca_file(f)?,
            None => ClientTls::default(),
        };
        if let (Some(cert), Some(key)) = (&self.client_cert_file, &self.client_key_file) {
            c = c.with_identity_files(cert, key)?;
        }
        Ok(c)
    }
}

fn pair(a: &str, va: &Option<PathBuf>, b: &str, vb: &Option<PathBuf>) -> Result<(), String> {
    match (va, vb) {
        (Some(_), None) => Err(format!("tls.{a} is set but tls.{b} is not; give both")),
        (None, Some(_)) => Err(format!("tls.{b} is set but tls.{a} is not; give both")),
        _ => Ok(()),
    }
}

/// The crypto provider of every configuration.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (at least one).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

/// A root store of the certificates of a PEM file.
pub fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
    }
    Ok(store)
}

/// The files of a TLS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates are required and checked against this CA.
    pub client_ca: Option<PathBuf>,
    /// For an HTTP/1.1 server (ALPN `http/1.1`) rather than gRPC (`h2`).
    pub http1: bool,
}

impl ServerFiles {
    pub fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        v.extend(self.client_ca.as_deref());
        v
    }

    /// A server configuration from the files as they are now.
    pub fn config(&self) -> Result<ServerConfig, String> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                        .build()
                        .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs(&self.cert)?, key(&self.key)?)
            .map_err(|e| {
                format!(
                    "certificate {} and key {} do not make a TLS identity: {e}",
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        config.alpn_protocols = vec![if self.http1 {
            b"http/1.1".to_vec()
        } else {
            b"h2".to_vec()
        }];
        Ok(config)
    }
}

/// How a client connects over TLS: the roots it trusts, and the certificate it presents.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// `None`: the system's roots.
    roots: Option<Arc<RootCertStore>>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("custom_roots", &self.roots.as_ref().map(|r| r.len()))
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    /// Trusts the CA certificates of a PEM file (instead of the system's roots).
    pub fn with_ca_file(path: &Path) -> Result<Self, String> {
        Ok(Self {
            roots: Some(Arc::new(roots(path)?)),
            identity: None,
        })
    }

    /// Trusts the CA certificates of PEM text.
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self, String> {
        let mut store = RootCertStore::empty();
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| format!("bad CA certificate: {e}"))?;
            store.add(c).map_err(|e| format!("bad CA certificate: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err("the CA PEM holds no certificate".into());
        }
        Ok(Self {
            roots: Some(Arc::new(store)),
            identity: None,
        })
    }

    /// Presents this certificate chain and key (PEM files) to servers asking for one.
    pub fn with_identity_files(self, cert: &Path, key_file: &Path) -> Result<Self, String> {
        Ok(Self {
            identity: Some((certs(cert)?, Arc::new(key(key_file)?))),
            ..self
        })
    }

    /// Presents this certificate chain and key (PEM text).
    pub fn with_identity_pem(self, cert: &[u8], key_pem: &[u8]) -> Result<Self, String> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad client certificate: {e}"))?;
        if chain.is_empty() {
            return Err("the client certificate PEM holds no certificate".into());
        }
        let k = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("bad client key: {e}"))?;
        Ok(Self {
            identity: Some((chain, Arc::new(k))),
            ..self
        })
    }

    /// These roots with `other`'s client certificate (if any).
    pub fn with_identity_of(self, other: &ClientTls) -> Self {
        Self {
            identity: other.identity.clone(),
            ..self
        }
    }

    /// The rustls configuration (built per connection attempt; cheap next to a handshake).
    pub fn config(&self) -> Result<Arc<ClientConfig>, String> {
        let roots = match &self.roots {
            Some(r) => r.clone(),
            None => {
                let found = rustls_native_certs::load_native_certs();
                let mut store = RootCertStore::empty();
                let (added, _) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(
                        "no CA to trust: the system has no root certificates; give the CA file (--tls-ca-file)".into(),
                    );
                }
                Arc::new(store)
            }
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("client certificate and key do not match: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}
