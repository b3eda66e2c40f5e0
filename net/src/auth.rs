//! Token authentication: JWTs signed with a shared secret (HS256) or a private key
//! (RS256 / ES256, checked with a PEM public key or a JWKS file), as Pulsar's token
//! authentication. A token's role is its `sub` claim.
//!
//! - Servers: [`Verifier`] checks the `authorization: Bearer <token>` metadata of every
//!   request ([`Verifier::interceptor`]) and puts the caller's [`Principal`] in the
//!   request's extensions; a missing, malformed, expired or wrongly signed token is
//!   UNAUTHENTICATED with the reason. What a principal may do is decided by the service
//!   ([`Principal::is_superuser`]: superuser roles may do everything).
//! - Clients: [`TokenInterceptor`] adds a token to every request.
//! - `strata token create|validate`: [`create`] and [`Verifier::verify`].
//!
//! Invariants: with auth on, no request reaches a service without a verified principal;
//! a token without `exp` never expires (as in Pulsar), one with `exp` is refused from that
//! second on (no leeway); only the algorithms of the configured key are accepted (an
//! HS256 token is never checked against a public key, nor the reverse).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::{Request, Status};

/// The `[auth]` section of a node's configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Require a valid token on every request (off by default).
    pub enabled: bool,
    /// HS256: the shared secret, the whole file (a trailing newline is ignored).
    pub secret_file: Option<PathBuf>,
    /// RS256 or ES256: the public key (PEM) tokens are checked with.
    pub public_key_file: Option<PathBuf>,
    /// RS256 or ES256: a JWKS file (`{"keys": [...]}`); a token's `kid` picks its key.
    pub jwks_file: Option<PathBuf>,
    /// Roles that may do everything (include the nodes' own role).
    pub superuser_roles: Vec<String>,
    /// Tokens must carry this `aud` (unchecked when unset).
    pub audience: Option<String>,
    /// Tokens must carry this `iss` (unchecked when unset).
    pub issuer: Option<String>,
    /// The token this node sends when it calls other nodes (broker to broker, broker to
    /// bookie); its role should be a superuser.
    pub token_file: Option<PathBuf>,
}

impl AuthSettings {
    /// The verifier, if auth is on (errors name the setting or file).
    pub fn verifier(&self) -> Result<Option<Arc<Verifier>>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let keys = [&self.secret_file, &self.public_key_file, &self.jwks_file]
            .iter()
            .filter(|k| k.is_some())
            .count();
        if keys != 1 {
            return Err(
                "auth.enabled needs exactly one of auth.secret_file (HS256), auth.public_key_file or auth.jwks_file (RS256/ES256)"
                    .into(),
            );
        }
        let keys = if let Some(f) = &self.secret_file {
            Keys::Secret(DecodingKey::from_secret(&read_secret(f)?))
        } else if let Some(f) = &self.public_key_file {
            let pem = std::fs::read(f).map_err(|e| format!("cannot read auth.public_key_file {}: {e}", f.display()))?;
            match DecodingKey::from_rsa_pem(&pem) {
                Ok(k) => Keys::Public(k, vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]),
                Err(_) => match DecodingKey::from_ec_pem(&pem) {
                    Ok(k) => Keys::Public(k, vec![Algorithm::ES256, Algorithm::ES384]),
                    Err(e) => {
                        return Err(format!(
                            "auth.public_key_file {} is neither an RSA nor an EC public key (PEM): {e}",
                            f.display()
                        ));
                    }
                },
            }
        } else {
            let f = self.jwks_file.as_ref().expect("one key source");
            let text = std::fs::read(f).map_err(|e| format!("cannot read auth.jwks_file {}: {e}", f.display()))?;
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&text)
                .map_err(|e| format!("auth.jwks_file {} is not a JWKS: {e}", f.display()))?;
            if set.keys.is_empty() {
                return Err(format!("auth.jwks_file {} has no keys", f.display()));
            }
            Keys::Jwks(set)
        };
        Ok(Some(Arc::new(Verifier {
            keys,
            superusers: self.superuser_roles.iter().cloned().collect(),
            audience: self.audience.clone(),
            issuer: self.issuer.clone(),
        })))
    }

    /// This node's own token for calls to other nodes, if configured.
    pub fn own_token(&self) -> Result<Option<String>, String> {
        self.token_file
            .as_ref()
            .map(|f| {
                std::fs::read_to_string(f)
                    .map(|t| t.trim().to_string())
                    .map_err(|e| format!("cannot read auth.token_file {}: {e}", f.display()))
            })
            .transpose()
    }
}

fn read_secret(f: &Path) -> Result<Vec<u8>, String> {
    let mut s = std::fs::read(f).map_err(|e| format!("cannot read the secret {}: {e}", f.display()))?;
    while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        s.pop();
    }
    if s.len() < 32 {
        return Err(format!(
            "the secret {} has {} bytes; HS256 needs at least 32 (e.g. `head -c 32 /dev/urandom > {}`)",
            f.display(),
            s.len(),
            f.display()
        ));
    }
    Ok(s)
}

/// The claims Strata reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The role.
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// The signing key of [`create`].
pub enum SigningKey {
    /// HS256 with this secret.
    Secret(Vec<u8>),
    /// RS256 (RSA) or ES256 (P-256) with this PEM private key.
    PrivatePem(Vec<u8>),
}

impl SigningKey {
    /// HS256 with the secret in `path` (at least 32 bytes).
    pub fn secret_file(path: &Path) -> Result<Self, String> {
        Ok(Self::Secret(read_secret(path)?))
    }

    /// RS256 or ES256 with the PEM private key in `path`.
    pub fn private_key_file(path: &Path) -> Result<Self, String> {
        std::fs::read(path)
            .map(Self::PrivatePem)
            .map_err(|e| format!("cannot read the private key {}: {e}", path.display()))
    }
}

/// A signed token with these claims (`kid` set in the header if given).
pub fn create(key: &SigningKey, claims: &Claims, kid: Option<&str>) -> Result<String, String> {
    let (alg, enc) = match key {
        SigningKey::Secret(s) => (Algorithm::HS256, EncodingKey::from_secret(s)),
        SigningKey::PrivatePem(pem) => match EncodingKey::from_rsa_pem(pem) {
            Ok(k) => (Algorithm::RS256, k),
            Err(_) => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(pem)
                    .map_err(|e| format!("the private key is neither RSA nor EC (PEM, PKCS#8 for EC): {e}"))?,
            ),
        },
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &enc).map_err(|e| format!("cannot sign the token: {e}"))
}

enum Keys {
    Secret(DecodingKey),
    Public(DecodingKey, Vec<Algorithm>),
    Jwks(jsonwebtoken::jwk::JwkSet),
}

/// Checks tokens against the configured key.
pub struct Verifier {
    keys: Keys,
    superusers: HashSet<String>,
    audience: Option<String>,
    issuer: Option<String>,
}

/// Who made a request (in its extensions when auth is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub role: String,
    pub superuser: bool,
}

impl Principal {
    pub fn is_superuser(&self) -> bool {
        self.superuser
    }
}

impl Verifier {
    /// The claims of a valid token, or why it is not valid.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let (key, algs): (std::borrow::Cow<'_, DecodingKey>, Vec<Algorithm>) = match &self.keys {
            Keys::Secret(k) => (std::borrow::Cow::Borrowed(k), vec![Algorithm::HS256]),
            Keys::Public(k, a) => (std::borrow::Cow::Borrowed(k), a.clone()),
            Keys::Jwks(set) => {
                let jwk = match &header.kid {
                    Some(kid) => set
                        .find(kid)
                        .ok_or_else(|| format!("no key with kid {kid:?} in the JWKS"))?,
                    None if set.keys.len() == 1 => &set.keys[0],
                    None => return Err("the token has no kid and the JWKS has several keys".into()),
                };
                let k = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWKS key: {e}"))?;
                let algs = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => {
                        vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]
                    }
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
                        vec![Algorithm::ES256, Algorithm::ES384]
                    }
                    _ => return Err("JWKS keys must be RSA or EC".into()),
                };
                (std::borrow::Cow::Owned(k), algs)
            }
        };
        if !algs.contains(&header.alg) {
            return Err(format!(
                "token signed with {:?}; this broker accepts {algs:?}",
                header.alg
            ));
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = algs;
        v.leeway = 0;
        v.required_spec_claims = ["sub".to_string()].into_iter().collect();
        v.validate_aud = self.audience.is_some();
        if let Some(a) = &self.audience {
            v.set_audience(&[a]);
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired".to_string(),
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                "the token's signature does not match this broker's key".to_string()
            }
            other => format!("invalid token: {other:?}"),
        })?;
        if data.claims.sub.is_empty() {
            return Err("the token's subject (role) is empty".into());
        }
        Ok(data.claims)
    }

    /// The principal of a request's `authorization: Bearer` metadata.
    pub fn principal<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let Some(v) = req.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "authentication is required: send a token (--token / STRATA_TOKEN, or `authorization: Bearer <token>`)",
            ));
        };
        let v = v
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let token = v
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer <token>`"))?;
        let claims = self.verify(token.trim()).map_err(Status::unauthenticated)?;
        Ok(Principal {
            superuser: self.superusers.contains(&claims.sub),
            role: claims.sub,
        })
    }

    /// A tonic interceptor: verifies the token and stores the [`Principal`].
    pub fn interceptor(self: &Arc<Self>) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let v = self.clone();
        move |mut req: Request<()>| {
            let p = v.principal(&req)?;
            req.extensions_mut().insert(p);
            Ok(req)
        }
    }
}

/// A client interceptor adding `authorization: Bearer <token>` to every request (nothing
/// when there is no token).
#[derive(Clone, Default)]
pub struct TokenInterceptor {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for TokenInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenInterceptor")
            .field("token", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl TokenInterceptor {
    pub fn new(token: Option<&str>) -> Result<Self, String> {
        let header = token
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| "the token has characters not allowed in a header".to_string())
            })
            .transpose()?;
        Ok(Self { header })
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(dir: &Path, secret: &[u8]) -> (Arc<Verifier>, SigningKey) {
        let f = dir.join("secret");
        std::fs::write(&f, secret).unwrap();
        let s = AuthSettings {
            enabled: true,
            secret_file: Some(f.clone()),
            superuser_roles: vec!["admin".into()],
            ..Default::default()
        };
        (s.verifier().unwrap().unwrap(), SigningKey::secret_file(&f).unwrap())
    }

    fn claims(sub: &str, exp: Option<u64>) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            iat: None,
            aud: None,
            iss: None,
        }
    }

    #[test]
    fn tokens_are_checked_for_signature_expiry_and_shape() {
        let dir = tempfile::tempdir().unwrap();
        let (v, key) = hs(dir.path(), &[7u8; 32]);
        let ok = create(&key, &claims("app", Some(now() + 3600)), None).unwrap();
        assert_eq!(v.verify(&ok).unwrap().sub, "app");
        let forever = create(&key, &claims("app", None), None).unwrap();
        v.verify(&forever).unwrap();
        let expired = create(&key, &claims("app", Some(now() - 1)), None).unwrap();
        assert!(v.verify(&expired).unwrap_err().contains("expired"));
        let other = SigningKey::Secret(vec![8u8; 32]);
        let wrong = create(&other, &claims("app", None), None).unwrap();
        assert!(v.verify(&wrong).unwrap_err().contains("signature"));
        for bad in ["", "abc", "a.b.c", &ok[..ok.len() - 3]] {
            v.verify(bad).unwrap_err();
        }
        // An HS256 token is not accepted by a verifier of RSA/EC keys, and "none" never.
        let none = format!("{}.{}.", b64("{\"alg\":\"none\"}"), b64("{\"sub\":\"admin\"}"));
        v.verify(&none).unwrap_err();
        let empty = create(&key, &claims("", None), None).unwrap();
        assert!(v.verify(&empty).unwrap_err().contains("empty"));
    }

    fn b64(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..=c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn settings_need_exactly_one_key_and_a_long_enough_secret() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, b"12345\n").unwrap();
        let s = AuthSettings {
            enabled: true,
            secret_file: Some(short),
            ..Default::default()
        };
        assert!(s.verifier().err().unwrap().contains("at least 32"));
        let none = AuthSettings {
            enabled: true,
            ..Default::default()
        };
        assert!(none.verifier().err().unwrap().contains("exactly one"));
        assert!(AuthSettings::default().verifier().unwrap().is_none());
    }

    #[test]
    fn requests_get_a_principal_or_unauthenticated() {
        let dir = tempfile::tempdir().unwrap();
        let (v, key) = hs(dir.path(), &[1u8; 40]);
        let mut intercept = v.interceptor();
        let e = intercept(Request::new(())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("token"), "{}", e.message());
        for (role, superuser) in [("admin", true), ("app", false)] {
            let t = create(&key, &claims(role, None), None).unwrap();
            let r = tonic::service::Interceptor::call(&mut TokenInterceptor::new(Some(&t)).unwrap(), Request::new(()))
                .unwrap();
            let p = intercept(r).unwrap();
            let p = p.extensions().get::<Principal>().unwrap();
            assert_eq!((p.role.as_str(), p.is_superuser()), (role, superuser));
        }
    }
}
