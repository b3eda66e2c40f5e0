//! Token authentication on a real `strata standalone` process (`[auth]`, HS256 and
//! ES256): requests without a token, or with a malformed, expired or wrongly signed one,
//! are UNAUTHENTICATED with the reason; a role that is not a superuser is refused
//! (PERMISSION_DENIED naming role, action and resource) for produce, consume and admin,
//! since no permission is granted; a superuser's token works through the SDK and the CLI;
//! `strata token create|validate` make and check tokens.

mod common;

use common::{STRATA, Standalone, free_port};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use strata_client::{Client, ErrorCode, InitialPosition};
use strata_net::auth::{Claims, SigningKey};

const WAIT: Duration = Duration::from_secs(60);

fn strata(args: &[&str]) -> std::process::Output {
    Command::new(STRATA).args(args).output().unwrap()
}

fn token_cli(args: &[&str]) -> String {
    let out = strata(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn client(url: &str, token: Option<&str>) -> Client {
    let mut b = Client::builder(url).operation_timeout(Duration::from_secs(10));
    if let Some(t) = token {
        b = b.token(t);
    }
    b.build().await.unwrap()
}

/// Starts standalone with `auth` as its `[auth]` section and waits until `admin` (a
/// superuser token) is served.
async fn start(dir: &Path, auth: &str, admin: &str) -> Standalone {
    let mut s = Standalone::spawn(dir, free_port(), Some(&format!("[auth]\n{auth}")), &[]);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(Some(st)) = s.child.try_wait() {
            panic!("standalone exited with {st}:\n{}", s.log_text());
        }
        if let Ok(c) = Client::builder(s.url.clone()).token(admin).build().await
            && c.admin().list_tenants().await.is_ok()
        {
            return s;
        }
        assert!(Instant::now() < deadline, "not ready:\n{}", s.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_need_a_valid_token_and_non_superusers_are_denied() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, [42u8; 32]).unwrap();
    let secret_arg = secret.to_str().unwrap();
    let admin = token_cli(&["token", "create", "--subject", "admin", "--secret-file", secret_arg]);
    let app = token_cli(&[
        "token",
        "create",
        "--subject",
        "app",
        "--secret-file",
        secret_arg,
        "--expiry",
        "1h",
    ]);
    let checked = token_cli(&["token", "validate", &app, "--secret-file", secret_arg]);
    assert!(checked.contains("\"sub\":\"app\""), "{checked}");
    let s = start(
        dir.path(),
        &format!("enabled = true\nsecret_file = {secret_arg:?}\nsuperuser_roles = [\"admin\"]\n"),
        &admin,
    )
    .await;
    let topic = "public/default/guarded";

    // No token, malformed, expired, wrongly signed: UNAUTHENTICATED, saying why.
    let key = SigningKey::secret_file(&secret).unwrap();
    let expired = strata_net::auth::create(&key, &claims("admin", Some(now() - 10)), None).unwrap();
    let forged = strata_net::auth::create(&SigningKey::Secret(vec![1u8; 32]), &claims("admin", None), None).unwrap();
    for (token, why) in [
        (None, "token"),
        (Some("not-a-jwt"), "malformed"),
        (Some(expired.as_str()), "expired"),
        (Some(forged.as_str()), "signature"),
    ] {
        let c = client(&s.url, token).await;
        let e = c.producer(topic).create().await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unauthenticated), "{token:?}: {e}");
        assert!(e.to_string().contains(why), "{token:?}: {e}");
        let e = c.admin().list_tenants().await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unauthenticated), "{e}");
        let e = c.consumer(topic).subscription("s").subscribe().await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::Unauthenticated), "{e}");
    }

    // A valid token of a role with no grants: PERMISSION_DENIED naming role, action and
    // resource, for produce, consume and admin.
    let c = client(&s.url, Some(&app)).await;
    let e = c.producer(topic).create().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::PermissionDenied), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"app\"") && msg.contains("produce") && msg.contains(topic),
        "{msg}"
    );
    let e = c.consumer(topic).subscription("s").subscribe().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::PermissionDenied), "{e}");
    assert!(e.to_string().contains("consume"), "{e}");
    let e = c.admin().create_topic(topic, 0).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::PermissionDenied), "{e}");
    assert!(e.to_string().contains("admin"), "{e}");
    assert!(s.log_text().contains("permission denied"), "denials are audit-logged");

    // The superuser produces, consumes and administers, through the SDK and the CLI.
    let c = client(&s.url, Some(&admin)).await;
    c.admin().create_topic(topic, 0).await.unwrap();
    let consumer = c
        .consumer(topic)
        .subscription("s")
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    c.producer(topic).create().await.unwrap().send("hello").await.unwrap();
    let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"hello");
    consumer.ack(&m).await.unwrap();
    let out = Command::new(STRATA)
        .args(["produce", topic, "from-cli", "--url", &s.url])
        .env("STRATA_TOKEN", &admin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = strata(&["produce", topic, "no-token", "--url", &s.url]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"from-cli");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_are_checked_with_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let private = d.join("private.pem");
    std::fs::write(&private, key.serialize_pem()).unwrap();
    let public = d.join("public.pem");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let other_private = d.join("other.pem");
    std::fs::write(&other_private, other.serialize_pem()).unwrap();
    let admin = token_cli(&[
        "token",
        "create",
        "--subject",
        "ops",
        "--private-key-file",
        private.to_str().unwrap(),
    ]);
    let forged = token_cli(&[
        "token",
        "create",
        "--subject",
        "ops",
        "--private-key-file",
        other_private.to_str().unwrap(),
    ]);
    let out = strata(&[
        "token",
        "validate",
        &forged,
        "--public-key-file",
        public.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a token of another key validates");
    let s = start(
        d,
        &format!(
            "enabled = true\npublic_key_file = {:?}\nsuperuser_roles = [\"ops\"]\n",
            public.to_str().unwrap()
        ),
        &admin,
    )
    .await;
    let e = client(&s.url, Some(&forged))
        .await
        .admin()
        .list_tenants()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthenticated), "{e}");
    // An HS256 token made with the public key as its secret (the classic confusion) is
    // refused too.
    let pem = std::fs::read(&public).unwrap();
    let confused = strata_net::auth::create(&SigningKey::Secret(pem), &claims("ops", None), None).unwrap();
    let e = client(&s.url, Some(&confused))
        .await
        .admin()
        .list_tenants()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthenticated), "{e}");
    client(&s.url, Some(&admin)).await.admin().list_tenants().await.unwrap();
}
