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

/// The role's error for an operation it may not do.
fn denied<T: std::fmt::Debug>(what: &str, r: strata_client::Result<T>) {
    match r {
        Err(e) if e.code() == Some(ErrorCode::PermissionDenied) => {}
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

fn allowed<T: std::fmt::Debug>(what: &str, r: strata_client::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: expected success, got {e}"))
}

/// Publishes one message as the client's role.
async fn produce(c: &Client, topic: &str) -> strata_client::Result<()> {
    c.producer(topic).create().await?.send("m").await.map(drop)
}

/// Subscribes (and leaves) as the client's role.
async fn consume(c: &Client, topic: &str) -> strata_client::Result<()> {
    let consumer = c.consumer(topic).subscription("matrix").subscribe().await?;
    consumer.close().await
}

/// An admin operation on one topic.
async fn administer(c: &Client, topic: &str) -> strata_client::Result<()> {
    c.admin().topic_policies(topic).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_on_tenants_namespaces_and_topics_allow_exactly_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, [7u8; 32]).unwrap();
    let key = SigningKey::secret_file(&secret).unwrap();
    let token = |role: &str| strata_net::auth::create(&key, &claims(role, None), None).unwrap();
    let admin = token("admin");
    let s = start(
        dir.path(),
        &format!(
            "enabled = true\nsecret_file = {:?}\nsuperuser_roles = [\"admin\"]\n",
            secret.to_str().unwrap()
        ),
        &admin,
    )
    .await;
    let root = client(&s.url, Some(&admin)).await;
    let a = root.admin();
    for t in ["acme", "other"] {
        a.create_tenant(t).await.unwrap();
    }
    for n in ["acme/a", "acme/b", "other/x"] {
        a.create_namespace(n).await.unwrap();
    }
    // t1 is partitioned: a grant on it covers its partitions.
    a.create_topic("acme/a/t1", 2).await.unwrap();
    for t in ["acme/a/t2", "acme/b/t3", "other/x/t4"] {
        a.create_topic(t, 0).await.unwrap();
    }
    let cli = |args: &[&str]| {
        let out = Command::new(STRATA)
            .args(["admin", "permissions"])
            .args(args)
            .args(["--url", &s.url])
            .env("STRATA_TOKEN", &admin)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    // Each scope: its grant (CLI flag and value), a topic it covers, one it does not.
    let scopes = [
        ("tenant", "--tenant", "acme", "other/x/t4"),
        ("namespace", "--namespace", "acme/a", "acme/b/t3"),
        ("topic", "--topic", "acme/a/t1", "acme/a/t2"),
    ];
    let covered = "acme/a/t1";
    for (scope, flag, on, outside) in scopes {
        for action in ["produce", "consume", "admin"] {
            let role = format!("{scope}-{action}");
            cli(&["grant", flag, on, "--role", &role, "--actions", action]);
            let c = client(&s.url, Some(&token(&role))).await;
            let cell = format!("{action} on {scope} {on}");
            let (p, co, ad) = (
                produce(&c, covered).await,
                consume(&c, covered).await,
                administer(&c, covered).await,
            );
            match action {
                "produce" => {
                    allowed(&cell, p);
                    denied(&format!("{cell}: consume"), co);
                    denied(&format!("{cell}: admin"), ad);
                }
                "consume" => {
                    denied(&format!("{cell}: produce"), p);
                    allowed(&cell, co);
                    denied(&format!("{cell}: admin"), ad);
                }
                _ => {
                    // admin includes produce and consume.
                    allowed(&format!("{cell}: produce"), p);
                    allowed(&format!("{cell}: consume"), co);
                    allowed(&cell, ad);
                }
            }
            let out = format!("{cell}, outside on {outside}");
            match action {
                "produce" => denied(&out, produce(&c, outside).await),
                "consume" => denied(&out, consume(&c, outside).await),
                _ => denied(&out, administer(&c, outside).await),
            }
        }
    }
    let listed = cli(&["list", "--namespace", "acme/a"]);
    assert!(listed.contains("namespace-produce\tproduce"), "{listed}");
    assert!(listed.contains("namespace-admin\tadmin"), "{listed}");
    assert!(!listed.contains("tenant-"), "inherited grants are not listed: {listed}");

    // Revoking takes effect on the next request.
    cli(&["revoke", "--namespace", "acme/a", "--role", "namespace-produce"]);
    let c = client(&s.url, Some(&token("namespace-produce"))).await;
    denied("after revoke", produce(&c, covered).await);

    // Tenant admins manage their own tenant's namespaces and grants, not another's, and
    // not tenants; a namespace admin grants on its topics but not on its namespace.
    let tadmin = client(&s.url, Some(&token("tenant-admin"))).await;
    let ta = tadmin.admin();
    allowed("tenant admin creates a namespace", ta.create_namespace("acme/c").await);
    allowed("tenant admin lists namespaces", ta.list_namespaces("acme").await);
    denied("tenant admin in another tenant", ta.create_namespace("other/y").await);
    denied("tenant admin creates tenants", ta.create_tenant("mine").await);
    use strata_client::{AuthAction, Resource};
    let ns_c = Resource::Namespace("acme/c".into());
    allowed(
        "tenant admin grants on its namespace",
        ta.grant_permission(&ns_c, "late", &[AuthAction::Consume]).await,
    );
    denied(
        "tenant admin grants on its own tenant",
        ta.grant_permission(&Resource::Tenant("acme".into()), "x", &[AuthAction::Admin])
            .await,
    );
    let nadmin = client(&s.url, Some(&token("namespace-admin"))).await;
    let na = nadmin.admin();
    allowed(
        "namespace admin grants on its topic",
        na.grant_permission(&Resource::Topic("acme/a/t2".into()), "reader", &[AuthAction::Consume])
            .await,
    );
    denied(
        "namespace admin grants on its namespace",
        na.grant_permission(&Resource::Namespace("acme/a".into()), "x", &[AuthAction::Produce])
            .await,
    );
    let reader = client(&s.url, Some(&token("reader"))).await;
    allowed("granted by a namespace admin", consume(&reader, "acme/a/t2").await);
    let e = root
        .admin()
        .grant_permission(&Resource::Namespace("acme/nope".into()), "x", &[AuthAction::Produce])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e}");

    // A deleted topic's grants go with it: one re-created under the name starts with none.
    a.delete_topic_with("acme/a/t2", true).await.unwrap();
    a.create_topic("acme/a/t2", 0).await.unwrap();
    assert!(
        a.permissions(&Resource::Topic("acme/a/t2".into()))
            .await
            .unwrap()
            .is_empty()
    );
    denied("grant of a deleted topic", consume(&reader, "acme/a/t2").await);

    // A role with no grant at all is refused by every admin call, each naming the role.
    let none = client(&s.url, Some(&token("nobody"))).await;
    let n = none.admin();
    let t = "acme/a/t1";
    let ns = Resource::Namespace("acme/a".into());
    denied("create_tenant", n.create_tenant("z").await);
    denied("delete_tenant", n.delete_tenant("acme").await);
    denied("list_tenants", n.list_tenants().await);
    denied("create_namespace", n.create_namespace("acme/z").await);
    denied("delete_namespace", n.delete_namespace("acme/c").await);
    denied("list_namespaces", n.list_namespaces("acme").await);
    denied("namespace_policies", n.namespace_policies("acme/a").await);
    denied(
        "set_namespace_policies",
        n.set_namespace_policies("acme/a", Default::default()).await,
    );
    denied("create_topic", n.create_topic("acme/a/z", 0).await);
    denied("delete_topic", n.delete_topic(t).await);
    denied("list_topics", n.list_topics("acme/a").await);
    denied("topic_stats", n.topic_stats(t).await);
    denied("update_partitions", n.update_partitions(t, 3).await);
    denied("topic_policies", n.topic_policies(t).await);
    denied("set_topic_policies", n.set_topic_policies(t, Default::default()).await);
    denied("unload_topic", n.unload_topic(t).await);
    denied(
        "create_subscription",
        n.create_subscription(t, "s", InitialPosition::Earliest).await,
    );
    denied("delete_subscription", n.delete_subscription(t, "matrix").await);
    denied("list_subscriptions", n.list_subscriptions(t).await);
    denied(
        "reset_subscription",
        n.reset_subscription(t, "matrix", strata_client::ResetTo::Time(0)).await,
    );
    denied("cluster", n.cluster().await);
    denied("list_bundles", n.list_bundles("acme/a").await);
    denied(
        "unload_bundle",
        n.unload_bundle("acme/a", "0x00000000_0x40000000").await,
    );
    denied("split_bundle", n.split_bundle("acme/a", "0x00000000_0x40000000").await);
    denied("bookies", n.bookies().await);
    denied("decommission_bookie", n.decommission_bookie("127.0.0.1:1").await);
    denied("decommission_status", n.decommission_status("127.0.0.1:1").await);
    denied("under_replicated_ledgers", n.under_replicated_ledgers().await);
    denied("offload_topic", n.offload_topic(t).await);
    denied("offload_status", n.offload_status(t).await);
    denied(
        "grant_permission",
        n.grant_permission(&ns, "nobody", &[AuthAction::Admin]).await,
    );
    denied(
        "revoke_permission",
        n.revoke_permission(&ns, "namespace-admin", &[]).await,
    );
    denied("permissions", n.permissions(&ns).await);
    let e = n.list_tenants().await.unwrap_err().to_string();
    assert!(e.contains("\"nobody\"") && e.contains("the cluster"), "{e}");
    // Nothing the refused calls named changed.
    assert!(a.list_tenants().await.unwrap().contains(&"acme".to_string()));
    assert_eq!(a.topic_stats(t).await.unwrap().partitions, 2);
    assert!(!a.permissions(&ns).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookies_take_only_node_tokens_and_brokers_send_theirs() {
    use common::{BookieProcess, BrokerProcess};
    use strata_proto::bookie::v1 as bpb;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secret = d.join("secret");
    std::fs::write(&secret, [9u8; 32]).unwrap();
    let key = SigningKey::secret_file(&secret).unwrap();
    let token = |role: &str| strata_net::auth::create(&key, &claims(role, None), None).unwrap();
    let node_token = d.join("node.token");
    std::fs::write(&node_token, token("node")).unwrap();
    let auth = format!(
        "[auth]\nenabled = true\nsecret_file = {:?}\nsuperuser_roles = [\"node\", \"admin\"]\ntoken_file = {:?}\n",
        secret.to_str().unwrap(),
        node_token.to_str().unwrap()
    );
    let etcd = strata_meta::testing::Etcd::start().await;
    let mut bookies = Vec::new();
    for i in 0..2 {
        let bd = d.join(format!("bookie{i}"));
        std::fs::create_dir_all(&bd).unwrap();
        bookies.push(BookieProcess::start_with_args(
            &bd,
            &auth,
            &["--metadata-url", &etcd.url],
        ));
    }
    let store = strata_meta::connect(&etcd.url).await.unwrap();
    common::wait_registered(&*store, 2).await;
    let mut broker = BrokerProcess::start(
        d,
        &etcd.url,
        &format!("ensemble_size = 2\nwrite_quorum = 2\nack_quorum = 2\n{auth}"),
    );
    broker.ready().await;

    // The broker reaches the bookies with its token: a round trip works.
    let c = client(&broker.url(), Some(&token("admin"))).await;
    let topic = "public/default/behind-authenticated-bookies";
    let consumer = c
        .consumer(topic)
        .subscription("s")
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    c.producer(topic).create().await.unwrap().send("stored").await.unwrap();
    let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"stored");

    // Anyone else is refused before the bookie acts: no token, or a client's role.
    for b in &bookies {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", b.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let fence = bpb::FenceRequest {
            ledger_id: 1,
            writer_token: Default::default(),
        };
        let e = bpb::bookie_client::BookieClient::new(ch.clone())
            .fence(fence.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let app = token("app");
        let mut with_app = bpb::bookie_client::BookieClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {app}").parse().unwrap());
            Ok(r)
        });
        let e = with_app.fence(fence).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("\"app\""), "{e:?}");
    }
    // The refused calls changed nothing: the topic goes on.
    c.producer(topic).create().await.unwrap().send("still").await.unwrap();
    let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"still");
}
