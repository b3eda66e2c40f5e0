//! The Helm chart's `values.schema.json` (`charts/strata/values.schema.json`), generated
//! so that the chart's `cluster:` values are checked against exactly the schema the
//! StrataCluster CRD serves.
//!
//! `strata operator helm-schema` prints it; a test keeps the file in the chart equal to
//! it, as another keeps `crds/` equal to `strata operator crdgen`.
//!
//! Invariants:
//! - Every object the schema describes lists its keys and rejects any other
//!   (`additionalProperties: false`), so a misspelt value fails `helm install` naming the
//!   key instead of being ignored. Maps (labels, annotations, resource quantities) keep
//!   their value schemas.
//! - `cluster` is the CRD's `spec` converted to plain JSON Schema (draft 7, which Helm
//!   checks): `nullable` becomes a `null` alternative, `x-kubernetes-int-or-string` an
//!   integer-or-string, Kubernetes' `format`s are dropped. `image` is optional there: the
//!   chart fills it from `image.repository` and `image.tag`.

use crate::StrataCluster;
use kube::CustomResourceExt;
use serde_json::{Map, Value, json};

/// The CRD's OpenAPI schema converted to JSON Schema (see the module invariants).
fn plain(schema: &Value) -> Value {
    match schema {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                match k.as_str() {
                    "nullable" | "format" => {}
                    k if k.starts_with("x-kubernetes-") => {}
                    "properties" => {
                        let props = v
                            .as_object()
                            .map(|p| p.iter().map(|(k, v)| (k.clone(), plain(v))).collect())
                            .unwrap_or_default();
                        out.insert(k.to_string(), Value::Object(props));
                    }
                    _ => {
                        out.insert(k.clone(), plain(v));
                    }
                }
            }
            if m.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
                out.insert("anyOf".into(), json!([{ "type": "integer" }, { "type": "string" }]));
            }
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            if m.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(t)) = out.get("type").cloned()
            {
                out.insert("type".into(), json!([t, "null"]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(plain).collect()),
        other => other.clone(),
    }
}

/// The object at JSON pointer `pointer` under `props` (a schema's `properties`).
fn props_value<'a>(props: &'a mut Map<String, Value>, pointer: &str) -> &'a mut Map<String, Value> {
    let (first, rest) = pointer[1..].split_once('/').expect("a path below a property");
    props
        .get_mut(first)
        .and_then(|v| v.pointer_mut(&format!("/{rest}")))
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("{pointer} in the CRD"))
}

/// The StrataCluster CRD's schema of `spec`, as served.
fn cluster_spec_schema() -> Value {
    let crd = serde_json::to_value(StrataCluster::crd()).expect("the CRD serialises");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

fn strings_map() -> Value {
    json!({ "type": "object", "additionalProperties": { "type": "string" } })
}

fn object(description: &str, properties: Value) -> Value {
    json!({
        "type": "object",
        "description": description,
        "additionalProperties": false,
        "properties": properties,
    })
}

/// The chart's whole `values.schema.json`.
pub fn values_schema() -> Value {
    let spec = cluster_spec_schema();
    let mut cluster = plain(&spec);
    let c = cluster.as_object_mut().expect("spec is an object");
    c.remove("required"); // `image` defaults to the chart's image
    c.insert(
        "description".into(),
        json!("The StrataCluster the chart creates: its spec (see docs/kubernetes.md), plus `enabled` and `name`."),
    );
    let props = c
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .expect("spec has properties");
    props.insert(
        "image".into(),
        json!({ "type": "string", "description": "Image of the cluster's pods [default: image.repository:image.tag]." }),
    );
    // The pod template and resources are the same Kubernetes types in every tier: one
    // definition each, referenced.
    let mut definitions = Map::new();
    for tier in [
        "/bookies/properties",
        "/brokers/properties",
        "/metadataStore/properties/managed/properties",
    ] {
        let target = props_value(props, tier);
        for field in ["podTemplate", "resources"] {
            let schema = target.insert(field.into(), json!({ "$ref": format!("#/definitions/{field}") }));
            definitions.entry(field).or_insert(schema.expect("field in the CRD"));
        }
    }
    props.insert(
        "enabled".into(),
        json!({ "type": "boolean", "description": "Create a StrataCluster with this release." }),
    );
    props.insert(
        "name".into(),
        json!({ "type": "string", "description": "Its name [default: the release's full name]." }),
    );
    // The operator's pod uses the same Kubernetes types.
    let reference = |path: &str| json!({ "$ref": format!("#/definitions/podTemplate/properties/{path}") });
    let (affinity, tolerations) = (reference("affinity"), reference("tolerations"));
    let resources = json!({ "$ref": "#/definitions/resources" });
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the strata Helm chart",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "global": { "type": "object", "description": "Values shared with parent and sibling charts (unused by this chart)." },
            "nameOverride": { "type": "string", "description": "Replaces the chart name in object names." },
            "fullnameOverride": { "type": "string", "description": "Replaces the release-and-chart prefix of object names." },
            "commonLabels": strings_map(),
            "image": object("The image holding `strata`, for the operator, the test pod and (unless cluster.image is set) the cluster.", json!({
                "repository": { "type": "string", "minLength": 1 },
                "tag": { "type": "string", "description": "[default: the chart's appVersion]" },
                "pullPolicy": { "type": "string", "enum": ["Always", "IfNotPresent", "Never"] },
            })),
            "imagePullSecrets": { "type": "array", "items": { "type": "string", "minLength": 1 }, "description": "Names of Secrets to pull the image with." },
            "operator": object("The operator's Deployment.", json!({
                "enabled": { "type": "boolean" },
                "replicas": { "type": "integer", "minimum": 0 },
                "watchNamespace": { "type": "string", "description": "Only this namespace's resources [default: every namespace]." },
                "resyncSecs": { "type": "integer", "minimum": 1 },
                "logLevel": { "type": "string", "minLength": 1, "description": "RUST_LOG of the operator." },
                "logFormat": { "type": "string", "enum": ["text", "json"] },
                "extraArgs": { "type": "array", "items": { "type": "string" } },
                "resources": resources,
                "podAnnotations": strings_map(),
                "podLabels": strings_map(),
                "nodeSelector": strings_map(),
                "tolerations": tolerations,
                "affinity": affinity,
                "priorityClassName": { "type": "string" },
                "podDisruptionBudget": object("A PodDisruptionBudget for the operator, when policy/v1 is served.", json!({
                    "enabled": { "type": "boolean" },
                    "maxUnavailable": { "type": "integer", "minimum": 0 },
                })),
            })),
            "serviceAccount": object("The operator's ServiceAccount.", json!({
                "create": { "type": "boolean" },
                "name": { "type": "string", "description": "[default: <fullname>-operator]" },
                "annotations": strings_map(),
            })),
            "rbac": object("The operator's ClusterRole, Role and their bindings.", json!({
                "create": { "type": "boolean" },
            })),
            "monitoring": object("Prometheus scraping: ServiceMonitor/PodMonitor when monitoring.coreos.com/v1 is served, prometheus.io annotations otherwise.", json!({
                "enabled": { "type": "boolean" },
                "interval": { "type": "string", "pattern": "^[0-9]+(ms|s|m|h)$" },
                "labels": strings_map(),
            })),
            "grafana": object("Grafana dashboards as ConfigMaps for Grafana's sidecar.", json!({
                "dashboards": object("", json!({
                    "enabled": { "type": "boolean" },
                    "label": { "type": "string", "minLength": 1 },
                    "labelValue": { "type": "string" },
                    "namespace": { "type": "string", "description": "[default: the release namespace]" },
                    "annotations": strings_map(),
                })),
            })),
            "tests": object("The `helm test` pod: produces and consumes through the cluster's Service.", json!({
                "topic": { "type": "string", "minLength": 1 },
                "messages": { "type": "integer", "minimum": 1, "maximum": 100_000 },
                "timeoutSecs": { "type": "integer", "minimum": 1 },
            })),
            "cluster": cluster,
        },
        "definitions": definitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_only_keywords_become_json_schema() {
        let s = plain(&json!({
            "type": "object",
            "properties": {
                "a": { "type": "integer", "format": "int32", "nullable": true },
                "q": { "x-kubernetes-int-or-string": true },
                "m": { "type": "object", "additionalProperties": { "type": "string" } },
            }
        }));
        assert_eq!(s["additionalProperties"], json!(false));
        assert_eq!(s["properties"]["a"], json!({ "type": ["integer", "null"] }));
        assert_eq!(
            s["properties"]["q"],
            json!({ "anyOf": [{ "type": "integer" }, { "type": "string" }] })
        );
        assert_eq!(
            s["properties"]["m"]["additionalProperties"],
            json!({ "type": "string" })
        );
    }

    #[test]
    fn the_cluster_values_follow_the_crd() {
        let v = values_schema();
        let c = &v["properties"]["cluster"];
        assert_eq!(c["additionalProperties"], json!(false));
        assert!(c.get("required").is_none());
        let replicas = &c["properties"]["brokers"]["properties"]["replicas"];
        assert_eq!(replicas["type"], json!("integer"));
        assert_eq!(
            c["properties"]["bookies"]["properties"]["storage"]["required"],
            json!(["size"])
        );
        assert!(c["properties"]["enabled"].is_object() && c["properties"]["offload"].is_object());
    }
}
