//! StrataCluster security end to end (a real kube-apiserver, `strata operator` and the
//! test kubelet running what it renders): token auth set up by the operator, and TLS
//! from a cert-manager Certificate (this test plays cert-manager: it serves the
//! Certificate CRD and issues the Secret the Certificate asks for).

mod common;

use common::clusters::*;
use common::kubelet::Kubelet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, PostParams};
use strata_client::{Client, InitialPosition};
use strata_operator::StrataCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_cluster_takes_only_tokens_and_the_operator_uses_its_own() {
    let env = Env::start("secure").await;
    let kubelet = Kubelet::start(env.client.clone(), &env.ns, &env.dir.path().join("kubelet"));
    let op = operator(&env, Some(&kubelet), &[]);
    env.kube.apply(&cluster_yaml(
        &env.ns,
        "  image: strata:test
  metadataStore:
    managed:
      replicas: 1
  bookies:
    replicas: 1
    storage:
      size: 1Gi
  brokers:
    replicas: 1
  replication:
    ensembleSize: 1
    writeQuorum: 1
    ackQuorum: 1
  security:
    auth:
      enabled: true
      superuserRoles: [ops]
",
    ));
    let sc = cluster_where(&env, Some(&kubelet), "the secured cluster ready", ready).await;
    // The operator made the keys; brokers and bookies run with [auth].
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = env.api();
    let data = secrets.get("demo-auth").await.unwrap().data.unwrap();
    for file in ["secret", "node.token", "operator.token", "admin.token"] {
        assert!(data.contains_key(file), "demo-auth has no {file}");
    }
    let admin_token = String::from_utf8(data["admin.token"].0.clone()).unwrap();
    let cms: Api<ConfigMap> = env.api();
    for (cm, file) in [
        ("demo-broker-config", "broker.toml"),
        ("demo-bookie-config", "bookie.toml"),
    ] {
        let toml = cms.get(cm).await.unwrap().data.unwrap()[file].clone();
        assert!(
            toml.contains("[auth]") && toml.contains(r#""strata-operator", "admin", "ops"]"#),
            "{toml}"
        );
    }

    // Without a token: refused.
    let url = kubelet.map(sc.status.as_ref().unwrap().service_url.as_deref().unwrap());
    let anonymous = Client::builder(url.clone()).build().await.unwrap();
    let e = anonymous.admin().list_tenants().await.unwrap_err();
    assert_eq!(e.code(), Some(strata_client::ErrorCode::Unauthenticated), "{e}");

    // The operator reconciles a Topic with its own token.
    apply_topic_and_wait_ready(&env, &op, 2).await;

    // The admin token of the Secret works for people and tools.
    let client = Client::builder(url.clone()).token(&admin_token).build().await.unwrap();
    assert_eq!(
        client
            .admin()
            .topic_stats("public/default/orders")
            .await
            .unwrap()
            .partitions,
        2
    );
    let consumer = client
        .consumer("public/default/orders")
        .subscription("s")
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    client
        .producer("public/default/orders")
        .create()
        .await
        .unwrap()
        .send("secured")
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"secured");

    // Rotation: deleting the Secret makes a new key, and the pods roll onto it.
    secrets.delete("demo-auth", &Default::default()).await.unwrap();
    let new_admin = eventually(
        "a new auth Secret",
        || op.log_text(),
        || async {
            let s = secrets.get_opt("demo-auth").await.ok().flatten()?;
            let t = String::from_utf8(s.data?.get("admin.token")?.0.clone()).ok()?;
            (t != admin_token).then_some(t)
        },
    )
    .await;
    eventually(
        "the cluster taking the new key",
        || format!("{}\n{:?}", op.log_text(), kubelet.history()),
        || async {
            let c = Client::builder(url.clone()).token(&new_admin).build().await.ok()?;
            c.admin().topic_stats("public/default/orders").await.ok().map(drop)
        },
    )
    .await;
    let e = Client::builder(url)
        .token(&admin_token)
        .build()
        .await
        .unwrap()
        .admin()
        .list_tenants()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(strata_client::ErrorCode::Unauthenticated), "{e}");
}

/// cert-manager's Certificate CRD, as much of it as the operator uses.
const CERTIFICATE_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates.cert-manager.io
spec:
  group: cert-manager.io
  scope: Namespaced
  names: { plural: certificates, singular: certificate, kind: Certificate }
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
";

/// A CA made for the test, issuing what cert-manager would.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "test cluster CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses): (certificate, key) PEM.
    fn leaf(&self, names: Vec<String>) -> (String, String) {
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn ready_reason(sc: &StrataCluster) -> (String, String) {
    cond(sc, "Ready").map(|c| (c.reason, c.message)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_from_cert_manager_brokers_and_bookies_serve_it_and_clients_check_their_names() {
    let env = Env::start("tls").await;
    let ns = env.ns.clone();
    let kubelet = Kubelet::start(env.client.clone(), &ns, &env.dir.path().join("kubelet"));
    let op = operator(&env, Some(&kubelet), &[]);
    env.kube.apply(&cluster_yaml(
        &ns,
        "  image: strata:test
  metadataStore:
    managed:
      replicas: 1
  bookies:
    replicas: 1
    storage:
      size: 1Gi
  brokers:
    replicas: 1
  replication:
    ensembleSize: 1
    writeQuorum: 1
    ackQuorum: 1
  security:
    tls:
      issuerRef:
        name: ca-issuer
        kind: ClusterIssuer
",
    ));

    // No cert-manager: held, saying so, and nothing is created.
    cluster_where(&env, Some(&kubelet), "held without cert-manager", |sc| {
        let (reason, msg) = ready_reason(sc);
        reason == "TlsNotReady" && msg.contains("install cert-manager")
    })
    .await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = env.api();
    assert!(deployments.get_opt("demo-broker").await.unwrap().is_none());

    // cert-manager arrives: the operator asks it for a Certificate, and waits for it.
    env.kube.apply(CERTIFICATE_CRD);
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "cert-manager.io",
        "v1",
        "Certificate",
    ));
    let certs: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &ns, &ar);
    let cert = eventually(
        "the operator's Certificate demo-tls",
        || op.log_text(),
        || async { certs.get_opt("demo-tls").await.ok().flatten() },
    )
    .await;
    let spec = &cert.data["spec"];
    assert_eq!(spec["secretName"], "demo-tls");
    assert_eq!(spec["issuerRef"]["name"], "ca-issuer");
    assert_eq!(spec["issuerRef"]["kind"], "ClusterIssuer");
    let mut names: Vec<String> = spec["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    for n in [
        format!("demo-broker.{ns}.svc"),
        format!("*.demo-broker-pods.{ns}.svc"),
        format!("*.demo-bookie.{ns}.svc"),
    ] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
    let sc = cluster_where(&env, Some(&kubelet), "waiting for the Secret", |sc| {
        let (reason, msg) = ready_reason(sc);
        reason == "TlsNotReady" && msg.contains(&format!("Secret {ns}/demo-tls does not exist"))
    })
    .await;
    assert_eq!(sc.status.as_ref().unwrap().tls_dns_names, names);

    // Issue it, as cert-manager would. The test kubelet has no DNS: pods reach bookies
    // by the loopback address it maps their names to, so that address is named too.
    let ca = Ca::new();
    names.push(kubelet.pod_ip("demo-bookie", 0).to_string());
    let (crt, key) = ca.leaf(names);
    let secrets: Api<Secret> = env.api();
    let mut data = std::collections::BTreeMap::new();
    for (k, v) in [("tls.crt", &crt), ("tls.key", &key), ("ca.crt", &ca.pem)] {
        data.insert(k.to_string(), k8s_openapi::ByteString(v.as_bytes().to_vec()));
    }
    secrets
        .create(
            &PostParams::default(),
            &Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some("demo-tls".into()),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(data),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let sc = cluster_where(&env, Some(&kubelet), "the TLS cluster ready", ready).await;
    let service = format!("demo-broker.{ns}.svc:6650");
    assert_eq!(
        sc.status.as_ref().unwrap().service_url.as_deref(),
        Some(format!("https://{service}").as_str())
    );
    let cms: Api<ConfigMap> = env.api();
    for (cm, file) in [
        ("demo-broker-config", "broker.toml"),
        ("demo-bookie-config", "bookie.toml"),
    ] {
        let toml = cms.get(cm).await.unwrap().data.unwrap()[file].clone();
        assert!(toml.contains("[tls]") && toml.contains("bookie_tls = true"), "{toml}");
    }

    // A client trusting the CA reaches the service by its name (through the kubelet's
    // proxy: the certificate is still checked against the name).
    let proxy = format!("{}:6650", kubelet.service_ip("demo-broker"));
    let url = format!("https://{service}");
    let admin = Client::builder(url.clone())
        .resolve(&service, &proxy)
        .tls_ca_pem(&ca.pem)
        .build()
        .await
        .unwrap();
    // The broker advertises its pod IP's DNS name, which the wildcard names.
    let info = admin.admin().cluster().await.unwrap();
    let broker = info.brokers[0].address.clone();
    let suffix = format!(".demo-broker-pods.{ns}.svc:6650");
    let dashed = broker
        .strip_suffix(&suffix)
        .unwrap_or_else(|| panic!("{broker} is not under {suffix}"));
    let pod_addr = format!("{}:6650", dashed.replace('-', "."));

    // The operator reconciles a Topic over TLS (trusting the Secret's ca.crt).
    apply_topic_and_wait_ready(&env, &op, 1).await;

    // Produce and consume: lookups send the client to the broker's name; bookies are
    // written over TLS.
    let client = Client::builder(url.clone())
        .resolve(&service, &proxy)
        .resolve(&broker, &pod_addr)
        .tls_ca_pem(&ca.pem)
        .build()
        .await
        .unwrap();
    let consumer = client
        .consumer("public/default/orders")
        .subscription("s")
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
        .unwrap();
    client
        .producer("public/default/orders")
        .create()
        .await
        .unwrap()
        .send("over tls")
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, consumer.receive()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"over tls");

    // Plain text, and TLS without the CA, are refused.
    let refused = |r: strata_client::Result<Client>| async move {
        match r {
            Err(e) => e.to_string(),
            Ok(c) => c.admin().list_tenants().await.unwrap_err().to_string(),
        }
    };
    let plain = refused(Client::builder(format!("http://{proxy}")).build().await).await;
    assert!(!plain.is_empty());
    let untrusted = refused(Client::builder(url.clone()).resolve(&service, &proxy).build().await).await;
    assert!(untrusted.to_lowercase().contains("certificate"), "{untrusted}");
    // A certificate not naming what the client asked for is refused too.
    let wrong_name = refused(
        Client::builder(format!("https://elsewhere.{ns}.svc:6650"))
            .resolve(format!("elsewhere.{ns}.svc:6650"), &proxy)
            .tls_ca_pem(&ca.pem)
            .build()
            .await,
    )
    .await;
    assert!(wrong_name.contains("not valid for name"), "{wrong_name}");
}
