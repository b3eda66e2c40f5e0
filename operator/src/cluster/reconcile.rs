//! The StrataCluster reconciler: reads what is live, asks [`super::rollout`] what may
//! change, applies it tier by tier (server-side apply, field manager `strata-operator`),
//! and writes the status and Events.
//!
//! Invariants:
//! - Nothing is applied from a spec that fails [`super::validate`].
//! - A tier's ConfigMap changes only together with its pod template (never under running
//!   pods whose template still names the old config).
//! - The reconciler deletes one thing only: the volume (PVC) of a bookie removed by a
//!   scale-down, after the cluster confirmed that no ledger names the bookie and it has
//!   unregistered (see [`scale_bookies`]). Removed components and every other PVC are
//!   left for the user (Kubernetes' garbage collector removes owned objects with the
//!   StrataCluster).

use super::render::{self, Rendered, Tier};
use super::rollout::{self, Counts, autoscale};
use super::{AutoscalerStatus, Autoscaling, StrataCluster, StrataClusterStatus, validate};
use crate::common::Note;
use crate::conditions;
use crate::{Context, Error, MANAGER, condition_pairs, key_of, write_status};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const SCALE_DOWN_BLOCKED: &str = "ScaleDownBlocked";
pub const SPEC_CHANGE_BLOCKED: &str = "SpecChangeBlocked";
pub const DISRUPTION_BUDGETS: &str = "DisruptionBudgets";

/// How soon to look again while something is rolling (owned workloads' status changes
/// also wake the reconciler; this is the safety net).
const WHILE_PROGRESSING: Duration = Duration::from_secs(10);

pub(crate) async fn reconcile(sc: Arc<StrataCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = key_of(&*sc);
    let result = reconcile_inner(&sc, &ctx).await;
    if let Err(e) = &result {
        // Say why in the status too (best effort: the API may be what failed).
        let mut status = sc.status.clone().unwrap_or_default();
        conditions::set(
            &mut status.conditions,
            conditions::READY,
            Some(false),
            e.reason(),
            e.to_string(),
            sc.metadata.generation,
        );
        let api: Api<StrataCluster> = Api::namespaced(ctx.client.clone(), &sc.namespace().unwrap_or_default());
        let _ = write_status(&api, &sc.name_any(), &status).await;
    }
    ctx.state.metrics.reconciled(
        "StrataCluster",
        started.elapsed(),
        result.as_ref().err().map(Error::reason),
    );
    if result.is_ok() {
        ctx.succeeded(&key);
    }
    result
}

async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(obj))
        .await?)
}

/// Sets a condition and says whether it just became `True` or changed its message while
/// `True` (worth an Event).
fn raise(
    list: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    type_: &str,
    why: Option<&str>,
    reason_true: &str,
    reason_false: &str,
    message_false: &str,
    generation: Option<i64>,
) -> bool {
    let before = conditions::get(list, type_).map(|c| (c.status.clone(), c.message.clone()));
    match why {
        Some(msg) => {
            conditions::set(list, type_, Some(true), reason_true, msg, generation);
            before.is_none_or(|(s, m)| s != "True" || m != msg)
        }
        None => {
            conditions::set(list, type_, Some(false), reason_false, message_false, generation);
            false
        }
    }
}

struct Apis {
    sts: Api<StatefulSet>,
    deploy: Api<Deployment>,
    svc: Api<Service>,
    cm: Api<ConfigMap>,
    pdb: Api<PodDisruptionBudget>,
}

/// Applies one StatefulSet tier unless `gate` holds it back: returns the applied workload
/// (`None` if not created yet) and whether it runs the rendered template completely.
async fn apply_sts_tier(
    apis: &Apis,
    tier: &mut Tier<StatefulSet>,
    live: Option<&StatefulSet>,
    gate_closed: bool,
    pdbs: bool,
    notes: &mut Vec<Note>,
    what: &str,
) -> Result<(Option<StatefulSet>, bool), Error> {
    rollout::stamp_sts(&mut tier.workload);
    let want = tier
        .workload
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(rollout::TEMPLATE_HASH))
        .cloned()
        .unwrap_or_default();
    let held = match (live, gate_closed) {
        (None, true) => return Ok((None, false)),
        (Some(l), true) => rollout::hold_sts(&mut tier.workload, l),
        _ => false,
    };
    if !held && let Some(cm) = &tier.config {
        apply(&apis.cm, cm).await?;
    }
    apply(&apis.svc, &tier.service).await?;
    let applied = apply(&apis.sts, &tier.workload).await?;
    if pdbs {
        apply(&apis.pdb, &tier.pdb).await?;
    }
    let name = applied.name_any();
    let replicas = applied.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    match live {
        None => notes.push(Note::normal(
            "Created",
            format!("created {what} (StatefulSet {name}, {replicas} replicas)"),
        )),
        Some(l) => {
            let before = l.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            if before != replicas {
                notes.push(Note::normal(
                    "Scaled",
                    format!("{what}: {before} → {replicas} replicas"),
                ));
            }
            if !held && !rollout::at_template(&l.metadata, &want) {
                notes.push(Note::normal(
                    "RollingUpdate",
                    format!("{what}: rolling to a new pod template (StatefulSet {name}), one pod at a time"),
                ));
            }
        }
    }
    let done = rollout::at_template(&applied.metadata, &want) && Counts::of_sts(&applied).rolled_out();
    Ok((Some(applied), done))
}

/// 64 random hex characters (a printable HS256 key: no trailing newline to be trimmed).
fn new_signing_key() -> Result<String, Error> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::Strata(format!("cannot read /dev/urandom for a signing key: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Creates the cluster's auth Secret (signing key and tokens) unless it exists, and
/// returns a hash of its key. An existing Secret is never changed: rotating the key is
/// deleting the Secret (every token made with it then stops working, and the key's new
/// hash rolls the pods onto the new one).
async fn ensure_auth_secret(ctx: &Context, sc: &StrataCluster) -> Result<String, Error> {
    let ns = sc.namespace().unwrap_or_default();
    let name = render::names::auth_secret(&sc.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let secret = match api.get_opt(&name).await? {
        Some(s) => s,
        None => {
            let new = render::auth_secret(sc, &new_signing_key()?).map_err(Error::Strata)?;
            match api.create(&PostParams::default(), &new).await {
                Ok(s) => s,
                // Another reconcile made it first.
                Err(kube::Error::Api(e)) if e.code == 409 => api.get(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get("secret"))
        .map(|k| k.0.clone())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            Error::Strata(format!(
                "Secret {ns}/{name} holds no `secret`; delete it to have it made again"
            ))
        })?;
    Ok(render::hash(&String::from_utf8_lossy(&key)))
}

/// Why a reconcile applies nothing: the Ready condition's reason and message, and what
/// Progressing says.
struct Held {
    reason: &'static str,
    message: String,
    progressing: &'static str,
}

/// Writes a status that says why nothing is applied (an Event when the message is new)
/// and looks again after `again`.
async fn hold(
    sc: &StrataCluster,
    ctx: &Context,
    api: &Api<StrataCluster>,
    mut status: StrataClusterStatus,
    held: Held,
    again: Duration,
) -> Result<Action, Error> {
    let generation = sc.metadata.generation;
    let before = conditions::get(&status.conditions, conditions::READY).map(|c| c.message.clone());
    conditions::set(
        &mut status.conditions,
        conditions::READY,
        Some(false),
        held.reason,
        &held.message,
        generation,
    );
    conditions::set(
        &mut status.conditions,
        PROGRESSING,
        Some(false),
        held.reason,
        held.progressing,
        generation,
    );
    status.observed_generation = generation;
    write_status(api, &sc.name_any(), &status).await?;
    if before.as_deref() != Some(held.message.as_str()) {
        ctx.publish(sc, &[Note::warning(held.reason, held.message)]).await;
    }
    ctx.state
        .metrics
        .observe("StrataCluster", key_of(sc), condition_pairs(&status.conditions));
    Ok(Action::requeue(again))
}

/// With TLS on: creates the cert-manager Certificate (with `issuerRef`) and checks that
/// the Secret holds the certificate. `Ok(Err(why))` until it does: nothing is applied
/// then (a pod mounting a missing Secret never starts).
async fn ensure_tls(ctx: &Context, sc: &StrataCluster) -> Result<Result<(), String>, Error> {
    let Some(tls) = sc.spec.tls() else { return Ok(Ok(())) };
    let ns = sc.namespace().unwrap_or_default();
    let cluster = sc.name_any();
    if let Some(cert) = render::certificate(sc) {
        use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"));
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
        let name = super::tls::certificate_name(&cluster);
        match api
            .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&cert))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return Ok(Err(
                    "spec.security.tls.issuerRef needs cert-manager, but this Kubernetes cluster does not serve \
                     certificates.cert-manager.io/v1: install cert-manager, or give spec.security.tls.secretName \
                     a Secret with tls.crt, tls.key and ca.crt"
                        .into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let secret = super::tls::secret_name(&cluster, tls);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let found = api.get_opt(&secret).await?;
    Ok(
        super::tls::check_secret(found.as_ref(), &secret, &ns).map_err(|missing| {
            let from = if tls.issuer_ref.is_some() {
                format!(
                    "cert-manager issues Certificate {}",
                    super::tls::certificate_name(&cluster)
                )
            } else {
                "spec.security.tls.secretName must hold tls.crt, tls.key and ca.crt".to_string()
            };
            format!(
                "waiting for the TLS certificate: {missing} ({from}; it must name {})",
                super::tls::dns_names(&cluster, &ns).join(", ")
            )
        }),
    )
}

async fn reconcile_inner(sc: &StrataCluster, ctx: &Arc<Context>) -> Result<Action, Error> {
    let ns = sc.namespace().unwrap_or_default();
    let name = sc.name_any();
    let generation = sc.metadata.generation;
    let api: Api<StrataCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let mut status: StrataClusterStatus = sc.status.clone().unwrap_or_default();
    let url = super::service_url(&name, &ns);
    // What clients use: https with TLS on (the operator's own calls switch to it too).
    let client_url = match sc.spec.tls() {
        Some(_) => url.replacen("http://", "https://", 1),
        None => url.clone(),
    };
    status.service_url = Some(client_url.clone());
    status.admin_url = Some(client_url);
    status.tls_dns_names = match sc.spec.tls() {
        Some(_) => super::tls::dns_names(&name, &ns),
        None => Vec::new(),
    };
    let mut notes = Vec::new();

    let mut plan = match validate(&sc.spec, &name, &ns) {
        Ok(p) => p,
        Err(errors) => {
            let msg = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            let held = Held {
                reason: "InvalidSpec",
                message: msg,
                progressing: "nothing is applied from a spec that fails validation",
            };
            return hold(sc, ctx, &api, status, held, ctx.cfg.resync).await;
        }
    };

    if sc.spec.auth_enabled() {
        plan.auth_key_hash = Some(ensure_auth_secret(ctx, sc).await?);
    }
    if let Err(why) = ensure_tls(ctx, sc).await? {
        let held = Held {
            reason: "TlsNotReady",
            message: why,
            progressing: "nothing is applied until the TLS certificate is there",
        };
        // The Secret is not watched: look again soon.
        return hold(sc, ctx, &api, status, held, Duration::from_secs(5)).await;
    }
    let apis = Apis {
        sts: Api::namespaced(ctx.client.clone(), &ns),
        deploy: Api::namespaced(ctx.client.clone(), &ns),
        svc: Api::namespaced(ctx.client.clone(), &ns),
        cm: Api::namespaced(ctx.client.clone(), &ns),
        pdb: Api::namespaced(ctx.client.clone(), &ns),
    };
    let live_meta = match &plan.managed_metadata {
        Some(_) => apis.sts.get_opt(&render::names::metadata(&name)).await?,
        None => None,
    };
    let live_bookies = apis.sts.get_opt(&render::names::bookie(&name)).await?;
    let live_brokers = apis.deploy.get_opt(&render::names::broker(&name)).await?;

    // Replica decisions.
    let mut change_blocked: Vec<String> = Vec::new();
    if let Some(m) = plan.managed_metadata.as_mut() {
        let (n, why) =
            rollout::metadata_replicas(m.replicas, live_meta.as_ref().and_then(|s| s.spec.as_ref()?.replicas));
        m.replicas = n;
        plan.metadata_url = super::managed_metadata_url(&name, &ns, n);
        change_blocked.extend(why);
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let (bookie_n, scale_down, draining) =
        scale_bookies(ctx, sc, &pvcs, live_bookies.as_ref(), &url, &mut status, &mut notes).await?;
    let broker_n = match &sc.spec.brokers.autoscaling {
        Some(a) => {
            let (n, st) = autoscale_brokers(ctx, sc, a, live_brokers.as_ref(), &url, &mut notes).await;
            status.autoscaler = Some(st);
            n
        }
        None => {
            status.autoscaler = None;
            sc.spec.brokers.replicas
        }
    };
    let mut r: Rendered = render::render(sc, &plan, bookie_n, broker_n);
    let pdbs = ctx.policy_v1_served().await;
    let mut waiting: Option<String> = None;

    // 1. The metadata store.
    if let Some(m) = r.metadata.as_mut() {
        if let Some(l) = &live_meta {
            change_blocked.extend(rollout::keep_immutable(
                &mut m.workload,
                l,
                "spec.metadataStore.managed.storage",
            ));
        }
        let (applied, done) = apply_sts_tier(
            &apis,
            m,
            live_meta.as_ref(),
            false,
            pdbs,
            &mut notes,
            "the metadata store",
        )
        .await?;
        if let Some(a) = &applied {
            let c = Counts::of_sts(a);
            status.metadata_store = Some(c.status(None));
            if !done {
                waiting = Some(format!(
                    "the metadata store: {} of {} members ready and updated",
                    c.ready.min(c.updated),
                    c.desired
                ));
            }
        }
    } else {
        status.metadata_store = None;
    }

    // 2. Bookies, once the metadata store is rolled out.
    if let Some(l) = &live_bookies {
        change_blocked.extend(rollout::keep_immutable(
            &mut r.bookies.workload,
            l,
            "spec.bookies.storage",
        ));
    }
    let (applied, done) = apply_sts_tier(
        &apis,
        &mut r.bookies,
        live_bookies.as_ref(),
        waiting.is_some(),
        pdbs,
        &mut notes,
        "bookies",
    )
    .await?;
    match &applied {
        Some(a) => {
            let c = Counts::of_sts(a);
            status.bookies = Some(c.status(None));
            if !done && waiting.is_none() {
                waiting = Some(format!(
                    "bookies: {} of {} ready and updated",
                    c.ready.min(c.updated),
                    c.desired
                ));
            }
        }
        None => status.bookies = None,
    }

    // 3. Brokers, once the bookies are rolled out.
    let brokers = &mut r.brokers;
    rollout::stamp_deployment(&mut brokers.workload);
    let want = brokers
        .workload
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(rollout::TEMPLATE_HASH))
        .cloned()
        .unwrap_or_default();
    let gate_closed = waiting.is_some();
    let held = match (&live_brokers, gate_closed) {
        (None, true) => None,
        (Some(l), true) => Some(rollout::hold_deployment(&mut brokers.workload, l)),
        _ => Some(false),
    };
    let mut brokers_done = false;
    if let Some(held) = held {
        if !held && let Some(cm) = &brokers.config {
            apply(&apis.cm, cm).await?;
        }
        apply(&apis.svc, &brokers.service).await?;
        apply(&apis.svc, &r.broker_pods).await?;
        let applied = apply(&apis.deploy, &brokers.workload).await?;
        if pdbs {
            apply(&apis.pdb, &brokers.pdb).await?;
        }
        let replicas = applied.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        match &live_brokers {
            None => notes.push(Note::normal(
                "Created",
                format!(
                    "created brokers (Deployment {}, {replicas} replicas)",
                    applied.name_any()
                ),
            )),
            Some(l) => {
                let before = l.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                if before != replicas {
                    notes.push(Note::normal(
                        "Scaled",
                        format!("brokers: {before} → {replicas} replicas"),
                    ));
                }
                if !held && !rollout::at_template(&l.metadata, &want) {
                    notes.push(Note::normal(
                        "RollingUpdate",
                        "brokers: rolling to a new pod template, one new broker ready before an old one stops",
                    ));
                }
            }
        }
        let c = Counts::of_deployment(&applied);
        status.brokers = Some(c.status(Some(render::selector_string(&name, "broker"))));
        brokers_done = rollout::at_template(&applied.metadata, &want) && c.rolled_out();
        if !brokers_done && waiting.is_none() {
            waiting = Some(format!(
                "brokers: {} of {} ready and updated",
                c.ready.min(c.updated),
                c.desired
            ));
        }
    } else {
        status.brokers = None;
    }

    // Status.
    let all_done = waiting.is_none() && brokers_done;
    let progressing = waiting.is_some() || draining.is_some();
    match &waiting {
        Some(w) => {
            conditions::set(
                &mut status.conditions,
                PROGRESSING,
                Some(true),
                "RollingOut",
                format!("waiting for {w}"),
                generation,
            );
            conditions::set(
                &mut status.conditions,
                conditions::READY,
                Some(false),
                "RollingOut",
                format!("waiting for {w}"),
                generation,
            );
        }
        None => {
            // Serving as before while bookies drain: Ready stays, Progressing says why.
            match &draining {
                Some(d) => conditions::set(
                    &mut status.conditions,
                    PROGRESSING,
                    Some(true),
                    "DecommissioningBookies",
                    d.as_str(),
                    generation,
                ),
                None => conditions::set(
                    &mut status.conditions,
                    PROGRESSING,
                    Some(false),
                    "RolledOut",
                    "every component runs the current spec",
                    generation,
                ),
            }
            conditions::set(
                &mut status.conditions,
                conditions::READY,
                Some(true),
                "Ready",
                "every pod is ready and runs the current spec",
                generation,
            );
        }
    }
    if all_done {
        status.version = Some(sc.spec.image.clone());
    }
    // Degraded: pods missing although nothing is rolling, in a cluster that was whole once
    // (pods still starting up in a new cluster are `Progressing`, not degraded).
    let was_whole = status.version.is_some();
    let short: Vec<String> = [
        ("metadata store", status.metadata_store.as_ref()),
        ("bookies", status.bookies.as_ref()),
        ("brokers", status.brokers.as_ref()),
    ]
    .into_iter()
    .filter(|_| was_whole)
    .filter_map(|(what, c)| {
        let c = c?;
        (c.updated_replicas >= c.desired_replicas && c.ready_replicas < c.desired_replicas)
            .then(|| format!("{what}: {} of {} ready", c.ready_replicas, c.desired_replicas))
    })
    .collect();
    let degraded = (!short.is_empty()).then(|| short.join("; "));
    if raise(
        &mut status.conditions,
        DEGRADED,
        degraded.as_deref(),
        "PodsUnavailable",
        "AllPodsReady",
        "every pod that should run is ready",
        generation,
    ) {
        notes.push(Note::warning("Degraded", degraded.clone().unwrap_or_default()));
    }
    if raise(
        &mut status.conditions,
        SCALE_DOWN_BLOCKED,
        scale_down.as_deref(),
        "DecommissionRefused",
        "NotBlocked",
        "no scale-down is waiting",
        generation,
    ) {
        notes.push(Note::warning(
            "ScaleDownBlocked",
            scale_down.clone().unwrap_or_default(),
        ));
    }
    let blocked = (!change_blocked.is_empty()).then(|| change_blocked.join("; "));
    if raise(
        &mut status.conditions,
        SPEC_CHANGE_BLOCKED,
        blocked.as_deref(),
        "ImmutableField",
        "NotBlocked",
        "every field of the spec is applied",
        generation,
    ) {
        notes.push(Note::warning("SpecChangeBlocked", blocked.clone().unwrap_or_default()));
    }
    if pdbs {
        conditions::set(
            &mut status.conditions,
            DISRUPTION_BUDGETS,
            Some(true),
            "Applied",
            "a PodDisruptionBudget (maxUnavailable 1) guards each component",
            generation,
        );
    } else {
        let before = conditions::get(&status.conditions, DISRUPTION_BUDGETS).map(|c| c.reason.clone());
        conditions::set(
            &mut status.conditions,
            DISRUPTION_BUDGETS,
            Some(false),
            "PolicyV1NotServed",
            "the API server does not serve policy/v1 (Kubernetes before 1.21): no PodDisruptionBudgets were created, so node drains are not limited",
            generation,
        );
        if before.as_deref() != Some("PolicyV1NotServed") {
            notes.push(Note::warning(
                "DisruptionBudgetsUnavailable",
                "policy/v1 is not served: no PodDisruptionBudgets",
            ));
        }
    }
    status.observed_generation = generation;
    write_status(&api, &name, &status).await?;
    ctx.publish(sc, &notes).await;
    ctx.state
        .metrics
        .observe("StrataCluster", key_of(sc), condition_pairs(&status.conditions));
    let next = if sc.spec.brokers.autoscaling.is_some() {
        ctx.cfg.autoscale_interval
    } else if progressing {
        WHILE_PROGRESSING
    } else {
        ctx.cfg.resync
    };
    Ok(Action::requeue(next.min(ctx.cfg.resync)))
}

/// The bookie count to apply, why a scale-down is blocked (if it is), and what a
/// scale-down in progress is waiting for (if one is).
///
/// A count below what runs is reached safely, highest ordinals first:
/// 1. each bookie to remove is decommissioned through the cluster's admin API (its
///    ledgers re-replicated to the others; the cluster refuses when too few would remain);
/// 2. once every one is done — no ledger names it and it has unregistered — the
///    StatefulSet is lowered and its pods stop;
/// 3. once a pod is gone, its PVC is deleted (only if the cluster still says no ledger
///    names the bookie and it is not registered) and the decommission forgotten, so the
///    ordinal's identity can serve a new, empty bookie on a later scale-up.
///
/// `status.decommissioning` records the pods in flight, so every step resumes after an
/// operator restart. Raising the count again cancels the decommissions not yet finished.
#[allow(clippy::too_many_arguments)]
async fn scale_bookies(
    ctx: &Context,
    sc: &StrataCluster,
    pvcs: &Api<PersistentVolumeClaim>,
    live: Option<&StatefulSet>,
    url: &str,
    status: &mut StrataClusterStatus,
    notes: &mut Vec<Note>,
) -> Result<(i32, Option<String>, Option<String>), Error> {
    let spec = sc.spec.bookies.replicas;
    let name = sc.name_any();
    let ns = sc.namespace().unwrap_or_default();
    let sts = render::names::bookie(&name);
    let live_n = live.and_then(|s| s.spec.as_ref()?.replicas);
    let pods_left = live.and_then(|s| s.status.as_ref()).map_or(0, |st| st.replicas);
    let mut pending: Vec<String> = std::mem::take(&mut status.decommissioning);
    if let Some(cur) = live_n {
        for o in spec..cur {
            let pod = format!("{sts}-{o}");
            if !pending.contains(&pod) {
                pending.push(pod);
            }
        }
    }
    if pending.is_empty() {
        return Ok((spec, None, None));
    }
    let ordinal = |pod: &str| -> i32 { pod.rsplit('-').next().and_then(|o| o.parse().ok()).unwrap_or(i32::MAX) };
    pending.sort_by_key(|p| std::cmp::Reverse(ordinal(p)));
    let keep_live = live_n.unwrap_or(spec).max(spec);
    let admin = match crate::connect(ctx, url).await {
        Ok(a) => a,
        Err(e) => {
            status.decommissioning = pending;
            return Ok((
                keep_live,
                Some(format!(
                    "cannot reach the cluster at {url} to decommission bookies: {e}"
                )),
                None,
            ));
        }
    };
    let mut still: Vec<String> = Vec::new();
    let mut blocked: Option<String> = None;
    let mut progress: Vec<String> = Vec::new();
    let mut all_complete = true;
    for pod in pending {
        let o = ordinal(&pod);
        let identity = super::bookie_identity(&name, &ns, o);
        if o < spec {
            // The count went back up before this bookie was removed: it stays.
            match admin.cancel_decommission(&identity).await {
                Ok(()) => notes.push(Note::normal(
                    "DecommissionCancelled",
                    format!("bookie {pod} stays (spec.bookies.replicas is {spec}); its decommission is cancelled"),
                )),
                Err(e) => {
                    tracing::warn!(%pod, error = %e, "cannot cancel a bookie decommission; retrying");
                    still.push(pod);
                }
            }
            continue;
        }
        let pod_exists = pods_left > o || live_n.is_some_and(|n| n > o);
        if pod_exists {
            match admin.decommission_bookie(&identity).await {
                Ok(d) if d.complete() => {}
                Ok(d) => {
                    all_complete = false;
                    progress.push(format!("{pod} ({} ledgers to move)", d.remaining_ledgers));
                }
                Err(e) => {
                    all_complete = false;
                    blocked.get_or_insert(format!("decommissioning bookie {pod} ({identity}): {e}"));
                }
            }
            still.push(pod);
            continue;
        }
        // The pod is gone: its volume may go once the cluster confirms nothing needs it.
        match admin.decommission_status(&identity).await {
            Ok(d) if d.remaining_ledgers == 0 && !d.registered && d.state != "draining" => {
                let claim = format!("data-{pod}");
                match pvcs.delete(&claim, &Default::default()).await {
                    Ok(_) => notes.push(Note::normal(
                        "BookieRemoved",
                        format!("bookie {pod} was decommissioned and stopped; deleted its volume {claim}"),
                    )),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        still.push(pod);
                        return Err(e.into());
                    }
                }
                if d.state == "done"
                    && let Err(e) = admin.cancel_decommission(&identity).await
                {
                    tracing::warn!(%pod, error = %e, "cannot forget a finished decommission; retrying");
                    still.push(pod);
                }
            }
            Ok(d) => {
                // Should not happen (the pod stopped only after the decommission was
                // complete); keep the volume and say so.
                blocked.get_or_insert(format!(
                    "bookie {pod} is stopped but the cluster says {} ledgers name it (registered: {}); its volume data-{pod} is kept",
                    d.remaining_ledgers, d.registered
                ));
                still.push(pod);
            }
            Err(e) => {
                tracing::warn!(%pod, error = %e, "cannot read a decommission's state; retrying");
                still.push(pod);
            }
        }
    }
    still.sort_by_key(|p| ordinal(p));
    status.decommissioning = still;
    let to_remove = status
        .decommissioning
        .iter()
        .any(|p| ordinal(p) >= spec && live_n.is_some_and(|n| n > ordinal(p)));
    let n = if to_remove && !all_complete { keep_live } else { spec };
    let draining = (!progress.is_empty())
        .then(|| format!("decommissioning bookies before removing them: {}", progress.join(", ")))
        .or_else(|| {
            (!status.decommissioning.is_empty() && blocked.is_none())
                .then(|| format!("removing decommissioned bookies: {}", status.decommissioning.join(", ")))
        });
    Ok((n, blocked, draining))
}

/// The broker count the autoscaler asks for, and what it saw.
async fn autoscale_brokers(
    ctx: &Context,
    sc: &StrataCluster,
    a: &Autoscaling,
    live: Option<&Deployment>,
    url: &str,
    notes: &mut Vec<Note>,
) -> (i32, AutoscalerStatus) {
    let (min, max) = (a.min_replicas, a.max_replicas.max(a.min_replicas));
    let mut st = sc
        .status
        .as_ref()
        .and_then(|s| s.autoscaler.clone())
        .unwrap_or_default();
    let Some(current) = live.and_then(|d| d.spec.as_ref()?.replicas) else {
        st.desired_replicas = min;
        st.message = Some("brokers are not created yet: starting with minReplicas".into());
        return (min, st);
    };
    let current_clamped = current.clamp(min, max);
    let load = match crate::connect(ctx, url).await {
        Ok(admin) => admin.broker_loads().await,
        Err(e) => Err(e),
    };
    let load = match load {
        Ok(l) if !l.is_empty() => l.iter().sum::<f64>(),
        Ok(_) => {
            st.desired_replicas = current_clamped;
            st.message = Some("no broker has registered yet".into());
            return (current_clamped, st);
        }
        Err(e) => {
            st.desired_replicas = current_clamped;
            st.message = Some(format!(
                "cannot read the broker load at {url}: {e}; keeping {current_clamped}"
            ));
            return (current_clamped, st);
        }
    };
    let rec = autoscale::recommend(load, a.target_load, current_clamped, min, max);
    let window = Duration::from_secs(u64::from(a.stabilization_window_seconds));
    let decided = {
        let mut all = ctx.autoscale.lock().expect("autoscale");
        let h = all.entry(key_of(sc)).or_default();
        h.decide(ctx.started.elapsed(), window, rec, current_clamped)
    };
    st.load = Some((load * 10.0).round() / 10.0);
    st.recommended_replicas = Some(rec);
    st.desired_replicas = decided;
    st.message = None;
    if decided != current {
        st.last_scale_time = Some(Time(Timestamp::now()));
        notes.push(Note::normal(
            "Autoscaled",
            format!(
                "brokers {current} → {decided}: {load:.0} messages/s over all brokers, target {} per broker",
                a.target_load
            ),
        ));
    }
    (decided, st)
}
