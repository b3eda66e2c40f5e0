//! TLS of a StrataCluster (`spec.security.tls`): the names its certificate must carry,
//! the `[tls]` sections of `broker.toml` and `bookie.toml`, the Secret volume, and the
//! cert-manager `Certificate` the operator creates when an issuer is named.
//!
//! Invariants:
//! - One certificate serves every broker and bookie. Brokers are a Deployment (no stable
//!   pod names), so each advertises the DNS name Kubernetes gives its pod IP behind the
//!   headless Service `<cluster>-broker-pods` (`a-b-c-d.<cluster>-broker-pods.<ns>.svc`),
//!   which the wildcard `*.<cluster>-broker-pods.<ns>.svc` names; bookies advertise their
//!   StatefulSet names, under `*.<cluster>-bookie.<ns>.svc`.
//! - Certificates are read from files that brokers and bookies reload when they change:
//!   a renewed Secret needs no restart, so the Secret's content is not in the config hash.
//! - Nothing mounts the Secret until it holds `tls.crt`, `tls.key` and `ca.crt`
//!   ([`check_secret`]): a pod mounting a missing Secret would never start.

use super::{StrataCluster, Tls};
use kube::ResourceExt;
use serde_json::{Value, json};

/// Where brokers and bookies find the TLS Secret's files.
pub const TLS_DIR: &str = "/etc/strata-tls";
/// The keys the Secret must hold (what cert-manager writes).
pub const SECRET_KEYS: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];

/// The Secret holding the cluster's certificate.
pub fn secret_name(cluster: &str, tls: &Tls) -> String {
    match tls.secret_name.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => format!("{cluster}-tls"),
    }
}

/// The cert-manager Certificate the operator creates (with `issuerRef`).
pub fn certificate_name(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// The headless Service whose DNS records name each broker by its pod IP.
pub fn broker_pods_service(cluster: &str) -> String {
    format!("{cluster}-broker-pods")
}

/// The DNS names the cluster's certificate must carry.
pub fn dns_names(cluster: &str, ns: &str) -> Vec<String> {
    let broker = super::render::names::broker(cluster);
    let pods = broker_pods_service(cluster);
    let bookie = super::render::names::bookie(cluster);
    let mut out = vec![broker.clone(), format!("{broker}.{ns}")];
    for suffix in ["svc", "svc.cluster.local"] {
        out.push(format!("{broker}.{ns}.{suffix}"));
        out.push(format!("*.{pods}.{ns}.{suffix}"));
        out.push(format!("*.{bookie}.{ns}.{suffix}"));
    }
    out
}

/// The domain brokers advertise their pod IP's name under (`--advertised-ip-domain`).
pub fn broker_domain(cluster: &str, ns: &str) -> String {
    format!("{}.{ns}.svc", broker_pods_service(cluster))
}

/// The `[tls]` section of brokers and bookies: serve with the Secret's certificate,
/// trust its CA when reaching other nodes, and reach bookies over TLS.
pub fn toml(sc: &StrataCluster) -> String {
    let Some(tls) = sc.spec.tls() else {
        return String::new();
    };
    format!(
        "\n[tls]\ncert_file = \"{TLS_DIR}/tls.crt\"\nkey_file = \"{TLS_DIR}/tls.key\"\nca_file = \"{TLS_DIR}/ca.crt\"\nbookie_tls = true\nhttp = {}\n",
        tls.http
    )
}

/// The Secret's volume and mount, if TLS is on.
pub fn volume(sc: &StrataCluster) -> Option<(Value, Value)> {
    let tls = sc.spec.tls()?;
    Some((
        json!({ "name": "tls", "secret": { "secretName": secret_name(&sc.name_any(), tls) } }),
        json!({ "name": "tls", "mountPath": TLS_DIR, "readOnly": true }),
    ))
}

/// The cert-manager Certificate for `sc` (with `issuerRef`), as JSON for server-side
/// apply: the names of [`dns_names`], for servers and clients (brokers and bookies
/// present it to each other), into the Secret the pods mount.
pub fn certificate(sc: &StrataCluster, meta: Value) -> Option<Value> {
    let tls = sc.spec.tls()?;
    let issuer = tls.issuer_ref.as_ref()?;
    let cluster = sc.name_any();
    let ns = sc.namespace().unwrap_or_default();
    Some(json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": meta,
        "spec": {
            "secretName": secret_name(&cluster, tls),
            "dnsNames": dns_names(&cluster, &ns),
            "issuerRef": {
                "name": issuer.name.trim(),
                "kind": issuer.kind.as_deref().unwrap_or("Issuer"),
                "group": issuer.group.as_deref().unwrap_or("cert-manager.io"),
            },
            "usages": ["server auth", "client auth", "digital signature"],
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
        },
    }))
}

/// `Err` (what is missing) unless the Secret holds non-empty `tls.crt`, `tls.key` and
/// `ca.crt`.
pub fn check_secret(secret: Option<&k8s_openapi::api::core::v1::Secret>, name: &str, ns: &str) -> Result<(), String> {
    let Some(secret) = secret else {
        return Err(format!("Secret {ns}/{name} does not exist yet"));
    };
    let missing: Vec<&str> = SECRET_KEYS
        .iter()
        .copied()
        .filter(|k| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(*k))
                .is_none_or(|v| v.0.is_empty())
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("Secret {ns}/{name} has no {}", missing.join(", ")))
    }
}

/// Checks of `spec.security.tls` (added to the spec's validation errors).
pub fn validate(tls: &Tls, errors: &mut Vec<super::SpecError>) {
    if tls.secret_name.as_deref().is_some_and(|s| s.trim().is_empty()) {
        errors.push(super::SpecError::new(
            "spec.security.tls.secretName",
            "is empty: name a Secret, or leave it out",
        ));
    }
    if tls.secret_name.is_none() && tls.issuer_ref.is_none() {
        errors.push(super::SpecError::new(
            "spec.security.tls",
            "needs secretName (a Secret with tls.crt, tls.key and ca.crt) or issuerRef (a cert-manager issuer)",
        ));
    }
    if let Some(i) = &tls.issuer_ref {
        if i.name.trim().is_empty() {
            errors.push(super::SpecError::new("spec.security.tls.issuerRef.name", "is required"));
        }
        if let Some(k) = i.kind.as_deref()
            && k != "Issuer"
            && k != "ClusterIssuer"
        {
            errors.push(super::SpecError::new(
                "spec.security.tls.issuerRef.kind",
                format!("{k:?} is not Issuer or ClusterIssuer"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_the_service_each_broker_and_each_bookie() {
        let names = dns_names("demo", "prod");
        for n in [
            "demo-broker.prod.svc",
            "demo-broker.prod.svc.cluster.local",
            "*.demo-broker-pods.prod.svc",
            "*.demo-bookie.prod.svc",
        ] {
            assert!(names.contains(&n.to_string()), "{n} missing from {names:?}");
        }
        assert_eq!(broker_domain("demo", "prod"), "demo-broker-pods.prod.svc");
    }

    #[test]
    fn a_secret_must_hold_the_certificate_its_key_and_the_ca() {
        use k8s_openapi::ByteString;
        assert!(check_secret(None, "t", "ns").unwrap_err().contains("does not exist"));
        let mut s = k8s_openapi::api::core::v1::Secret::default();
        let mut data = std::collections::BTreeMap::new();
        data.insert("tls.crt".to_string(), ByteString(b"x".to_vec()));
        data.insert("ca.crt".to_string(), ByteString(Vec::new()));
        s.data = Some(data);
        assert_eq!(
            check_secret(Some(&s), "t", "ns").unwrap_err(),
            "Secret ns/t has no tls.key, ca.crt"
        );
        for k in SECRET_KEYS {
            s.data
                .as_mut()
                .unwrap()
                .insert(k.to_string(), ByteString(b"x".to_vec()));
        }
        check_secret(Some(&s), "t", "ns").unwrap();
    }

    fn with_tls(tls: Tls) -> StrataCluster {
        super::super::render::tests::cluster(super::super::StrataClusterSpec {
            image: "strata:1".into(),
            security: Some(super::super::Security {
                tls: Some(tls),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn tls_mounts_the_secret_renders_the_tls_sections_and_names_each_broker() {
        use super::super::render;
        let sc = with_tls(Tls {
            secret_name: Some("my-certs".into()),
            http: true,
            ..Default::default()
        });
        let plan = super::super::validate(&sc.spec, "demo", "prod").unwrap();
        for toml in [render::broker_toml(&sc, &plan), render::bookie_toml(&sc)] {
            let t: toml::Value = toml::from_str(&toml).unwrap();
            let tls = &t["tls"];
            assert_eq!(tls["cert_file"].as_str(), Some("/etc/strata-tls/tls.crt"), "{toml}");
            assert_eq!(tls["ca_file"].as_str(), Some("/etc/strata-tls/ca.crt"));
            assert_eq!(tls["bookie_tls"].as_bool(), Some(true));
            assert_eq!(tls["http"].as_bool(), Some(true));
        }
        let r = render::render(&sc, &plan, 3, 2);
        let broker = serde_json::to_value(&r.brokers.workload).unwrap();
        let pod = &broker["spec"]["template"]["spec"];
        let args: Vec<&str> = pod["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert!(
            args.contains(&"--advertised-ip-domain=demo-broker-pods.prod.svc"),
            "{args:?}"
        );
        assert_eq!(pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
        let bookie = serde_json::to_value(&r.bookies.workload).unwrap();
        for pod in [pod, &bookie["spec"]["template"]["spec"]] {
            let vols = pod["volumes"].as_array().unwrap();
            assert!(vols.iter().any(|v| v["secret"]["secretName"] == "my-certs"), "{vols:?}");
            let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
            assert!(mounts.iter().any(|m| m["mountPath"] == TLS_DIR));
        }
        // The metadata store (etcd) keeps plain probes; no Certificate without an issuer.
        let etcd = serde_json::to_value(&r.metadata.as_ref().unwrap().workload).unwrap();
        assert!(etcd["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["scheme"].is_null());
        assert!(render::certificate(&sc).is_none());
        let pods = serde_json::to_value(&r.broker_pods).unwrap();
        assert_eq!(pods["metadata"]["name"], "demo-broker-pods");
        assert_eq!(pods["spec"]["clusterIP"], "None");
        assert_eq!(pods["spec"]["publishNotReadyAddresses"], true);
    }

    #[test]
    fn without_tls_nothing_changes_in_the_pods() {
        use super::super::render;
        let sc = render::tests::cluster(super::super::StrataClusterSpec {
            image: "strata:1".into(),
            ..Default::default()
        });
        let plan = super::super::validate(&sc.spec, "demo", "prod").unwrap();
        assert!(!render::broker_toml(&sc, &plan).contains("[tls]"));
        let r = render::render(&sc, &plan, 3, 2);
        let text = serde_json::to_string(&r.brokers.workload).unwrap();
        assert!(!text.contains("advertised-ip-domain") && !text.contains("HTTPS") && !text.contains(TLS_DIR));
    }

    #[test]
    fn an_issuer_gets_a_certificate_for_every_name() {
        let sc = with_tls(Tls {
            issuer_ref: Some(super::super::IssuerRef {
                name: "ca-issuer".into(),
                kind: Some("ClusterIssuer".into()),
                group: None,
            }),
            ..Default::default()
        });
        let cert = super::super::render::certificate(&sc).unwrap();
        assert_eq!(cert["metadata"]["name"], "demo-tls");
        assert_eq!(cert["spec"]["secretName"], "demo-tls");
        assert_eq!(cert["spec"]["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(cert["spec"]["issuerRef"]["group"], "cert-manager.io");
        assert_eq!(cert["spec"]["dnsNames"], serde_json::json!(dns_names("demo", "prod")));
        assert_eq!(cert["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    }

    #[test]
    fn tls_needs_a_secret_or_an_issuer_of_a_known_kind() {
        let mut errors = Vec::new();
        validate(&Tls::default(), &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("secretName"));
        let mut errors = Vec::new();
        validate(
            &Tls {
                issuer_ref: Some(super::super::IssuerRef {
                    name: " ".into(),
                    kind: Some("Vault".into()),
                    group: None,
                }),
                ..Default::default()
            },
            &mut errors,
        );
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{text:?}");
        assert!(text[0].contains("issuerRef.name"));
        assert!(text[1].contains("\"Vault\""));
    }
}
