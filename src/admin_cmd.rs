//! `strata admin`: the cluster, bundles, tenants, namespaces, topics and subscriptions,
//! through the SDK's admin client.

use clap::{Args, Subcommand, ValueEnum};

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    conn: crate::conn_args::ConnArgs,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Brokers (with their load and owned bundles), bookies and the leader.
    Cluster {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Namespace bundles (hash ranges, the unit of ownership): list, unload, split.
    Bundles {
        #[command(subcommand)]
        op: BundleOp,
    },
    /// Tenants: create, delete, list.
    Tenants {
        #[command(subcommand)]
        op: TenantOp,
    },
    /// Namespaces (tenant/namespace): create, delete, list.
    Namespaces {
        #[command(subcommand)]
        op: NamespaceOp,
    },
    /// Topics: create (optionally partitioned), delete, list, stats, unload, partitions, policies.
    Topics {
        #[command(subcommand)]
        op: TopicOp,
    },
    /// Subscriptions: create, delete, list, reset.
    Subscriptions {
        #[command(subcommand)]
        op: SubscriptionOp,
    },
    /// Bookies: list (with state and ledger counts), decommission.
    Bookies {
        #[command(subcommand)]
        op: BookieOp,
    },
    /// Ledgers: those awaiting re-replication.
    Ledgers {
        #[command(subcommand)]
        op: LedgerOp,
    },
    /// Permissions (when the brokers have auth on): grant, revoke, list what roles may do.
    Permissions {
        #[command(subcommand)]
        op: PermissionOp,
    },
}

/// The resource of a permission command: exactly one of the three.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct ResourceArgs {
    /// A tenant (the grant covers its namespaces and topics).
    #[arg(long)]
    tenant: Option<String>,
    /// A namespace, tenant/namespace (the grant covers its topics).
    #[arg(long)]
    namespace: Option<String>,
    /// A topic (for a partitioned topic, the grant covers its partitions).
    #[arg(long)]
    topic: Option<String>,
}

impl ResourceArgs {
    fn resource(self) -> strata_client::Resource {
        use strata_client::Resource;
        match (self.tenant, self.namespace, self.topic) {
            (Some(t), _, _) => Resource::Tenant(t),
            (_, Some(n), _) => Resource::Namespace(n),
            (_, _, Some(t)) => Resource::Topic(t),
            _ => unreachable!("clap requires one of --tenant, --namespace, --topic"),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ActionArg {
    /// Look topics up and publish.
    Produce,
    /// Look topics up, subscribe, manage subscriptions, read stats.
    Consume,
    /// Everything on the resource and below, including grants below it.
    Admin,
}

impl From<ActionArg> for strata_client::AuthAction {
    fn from(a: ActionArg) -> Self {
        match a {
            ActionArg::Produce => Self::Produce,
            ActionArg::Consume => Self::Consume,
            ActionArg::Admin => Self::Admin,
        }
    }
}

#[derive(Subcommand)]
enum PermissionOp {
    /// Let a role produce, consume or administer a tenant, namespace or topic (adds to
    /// what the role already has there). Needs admin on the resource above it.
    Grant {
        #[command(flatten)]
        on: ResourceArgs,
        /// The role: a token's subject (`sub`).
        #[arg(long)]
        role: String,
        /// Comma-separated: produce, consume, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        actions: Vec<ActionArg>,
    },
    /// Take actions from a role (every action when --actions is not given).
    Revoke {
        #[command(flatten)]
        on: ResourceArgs,
        #[arg(long)]
        role: String,
        /// Comma-separated: produce, consume, admin.
        #[arg(long, value_delimiter = ',')]
        actions: Vec<ActionArg>,
    },
    /// Roles granted something on the resource itself, one per line: role, then actions.
    List {
        #[command(flatten)]
        on: ResourceArgs,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BookieOp {
    /// Registered bookies, and lost ones ledgers still name: state, ledgers, free space.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drain a bookie: it stops taking writes, its ledgers are re-replicated to other
    /// bookies, and once no ledger names it, it unregisters (then stop it and delete its
    /// data). Waits and reports progress unless --no-wait; safe to run again, and the
    /// decommission goes on if this command is interrupted.
    Decommission {
        /// The bookie's address, as `bookies list` shows it.
        address: String,
        /// Start (or show) it and return at once.
        #[arg(long)]
        no_wait: bool,
        /// Stop a decommission that is still draining (the bookie takes writes again), or
        /// forget a finished one so its address can serve a new, empty bookie.
        #[arg(long, conflicts_with = "no_wait")]
        cancel: bool,
        /// Give up waiting after this many seconds (exit 1; the decommission goes on).
        #[arg(long)]
        timeout_secs: Option<u64>,
    },
}

#[derive(Subcommand)]
enum LedgerOp {
    /// Ledgers naming a lost or decommissioning bookie, awaiting re-replication.
    UnderReplicated {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TenantOp {
    /// Create a tenant (`public` exists from the start).
    Create { tenant: String },
    /// Delete a tenant that has no namespaces left.
    Delete { tenant: String },
    /// Every tenant, one per line.
    List,
}

#[derive(Subcommand)]
enum BundleOp {
    /// Bundles of a namespace (tenant/namespace) and their owners.
    List { namespace: String },
    /// Close a bundle's topics on their owner; they move to the least loaded broker.
    Unload {
        namespace: String,
        /// The range, as listed: 0x00000000_0x40000000.
        bundle: String,
    },
    /// Split a bundle into two halves (its topics are unloaded and reassigned).
    Split { namespace: String, bundle: String },
}

#[derive(Subcommand)]
enum NamespaceOp {
    /// Create a namespace (tenant/namespace) of an existing tenant.
    Create {
        namespace: String,
        /// Bundles to start with (default: the broker's default_bundles, 4).
        #[arg(long)]
        bundles: Option<u32>,
    },
    /// Delete a namespace that has no topics left.
    Delete { namespace: String },
    /// Namespaces of a tenant, one per line.
    List { tenant: String },
    /// The namespace's own policies, as JSON (an absent field: the brokers' setting).
    GetPolicies { namespace: String },
    /// Replace the namespace's limits and rates: one not given goes back to the brokers'
    /// setting. Loaded topics take them at once.
    SetPolicies {
        namespace: String,
        #[command(flatten)]
        policies: NamespacePolicyArgs,
    },
}

/// The limits and rates of `namespaces set-policies` (rates per second, 0 unlimited).
#[derive(Args)]
struct NamespacePolicyArgs {
    /// Each topic's publish rate (per partition), its producers together.
    #[arg(long)]
    publish_rate_per_topic_msgs: Option<u64>,
    #[arg(long)]
    publish_rate_per_topic_bytes: Option<u64>,
    /// Each producer's publish rate.
    #[arg(long)]
    publish_rate_per_producer_msgs: Option<u64>,
    #[arg(long)]
    publish_rate_per_producer_bytes: Option<u64>,
    /// Each subscription's dispatch rate, its consumers together.
    #[arg(long)]
    dispatch_rate_per_subscription_msgs: Option<u64>,
    #[arg(long)]
    dispatch_rate_per_subscription_bytes: Option<u64>,
    /// Topics of the namespace, each partition counting one (0 unlimited).
    #[arg(long)]
    max_topics: Option<u64>,
    #[arg(long)]
    max_producers_per_topic: Option<u64>,
    #[arg(long)]
    max_subscriptions_per_topic: Option<u64>,
    #[arg(long)]
    max_consumers_per_subscription: Option<u64>,
}

impl NamespacePolicyArgs {
    fn policies(self) -> strata_client::NamespacePolicies {
        strata_client::NamespacePolicies {
            publish_rate_per_topic_msgs: self.publish_rate_per_topic_msgs,
            publish_rate_per_topic_bytes: self.publish_rate_per_topic_bytes,
            publish_rate_per_producer_msgs: self.publish_rate_per_producer_msgs,
            publish_rate_per_producer_bytes: self.publish_rate_per_producer_bytes,
            dispatch_rate_per_subscription_msgs: self.dispatch_rate_per_subscription_msgs,
            dispatch_rate_per_subscription_bytes: self.dispatch_rate_per_subscription_bytes,
            max_topics: self.max_topics,
            max_producers_per_topic: self.max_producers_per_topic,
            max_subscriptions_per_topic: self.max_subscriptions_per_topic,
            max_consumers_per_subscription: self.max_consumers_per_subscription,
        }
    }
}

fn print_namespace_policies(p: &strata_client::NamespacePolicies) -> anyhow::Result<()> {
    let mut v = serde_json::Map::new();
    for (k, x) in [
        ("publish_rate_per_topic_msgs", p.publish_rate_per_topic_msgs),
        ("publish_rate_per_topic_bytes", p.publish_rate_per_topic_bytes),
        ("publish_rate_per_producer_msgs", p.publish_rate_per_producer_msgs),
        ("publish_rate_per_producer_bytes", p.publish_rate_per_producer_bytes),
        (
            "dispatch_rate_per_subscription_msgs",
            p.dispatch_rate_per_subscription_msgs,
        ),
        (
            "dispatch_rate_per_subscription_bytes",
            p.dispatch_rate_per_subscription_bytes,
        ),
        ("max_topics", p.max_topics),
        ("max_producers_per_topic", p.max_producers_per_topic),
        ("max_subscriptions_per_topic", p.max_subscriptions_per_topic),
        ("max_consumers_per_subscription", p.max_consumers_per_subscription),
    ] {
        if let Some(x) = x {
            v.insert(k.into(), x.into());
        }
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

#[derive(Subcommand)]
enum TopicOp {
    /// Create a topic, or a partitioned topic with --partitions N.
    Create {
        topic: String,
        /// Create a partitioned topic with this many partitions.
        #[arg(long, default_value_t = 0)]
        partitions: u32,
    },
    /// Delete a topic (every partition of a partitioned one) with its data and subscriptions.
    Delete {
        topic: String,
        /// Also while clients are connected (they are disconnected).
        #[arg(long)]
        force: bool,
    },
    /// Topics of a namespace (tenant/namespace), one per line.
    List { namespace: String },
    /// Entries, bytes, ledgers and per-subscription backlog, as JSON.
    Stats { topic: String },
    /// Close the topic on its broker; clients reconnect.
    Unload { topic: String },
    /// Grow a partitioned topic to N partitions (partitions never shrink).
    UpdatePartitions {
        topic: String,
        #[arg(long)]
        partitions: u32,
    },
    /// The topic's own policies, as JSON (an absent field: the broker's default applies).
    GetPolicies { topic: String },
    /// Replace the topic's policies: a policy not given goes back to the broker's default.
    SetPolicies {
        topic: String,
        /// Keep acknowledged messages this long, in seconds (-1 forever, 0 not at all).
        #[arg(long, allow_hyphen_values = true)]
        retention_time_secs: Option<i64>,
        /// Keep at most this many bytes of acknowledged messages (-1 no limit, 0 none).
        #[arg(long, allow_hyphen_values = true)]
        retention_bytes: Option<i64>,
        /// Offload closed ledgers while more than this many bytes stay on bookies (-1
        /// never by size, 0 every closed ledger).
        #[arg(long, allow_hyphen_values = true)]
        offload_threshold_bytes: Option<i64>,
        /// Offload ledgers closed this many seconds ago (-1 never by age).
        #[arg(long, allow_hyphen_values = true)]
        offload_threshold_secs: Option<i64>,
        /// Delete bookie copies this many seconds after their offload was verified.
        #[arg(long, allow_hyphen_values = true)]
        offload_deletion_lag_secs: Option<i64>,
    },
    /// Offload every closed ledger to object storage now (whatever the thresholds), and
    /// wait until done (prints the status as JSON).
    Offload {
        topic: String,
        /// Return once the request is recorded instead of waiting.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (the offload goes on).
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
    },
    /// The topic's offload, as JSON: each ledger's state and objects, bytes on bookies
    /// and in object storage, the last error.
    OffloadStatus { topic: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum SubType {
    Exclusive,
    Failover,
    Shared,
    KeyShared,
}

impl From<SubType> for strata_client::SubscriptionType {
    fn from(t: SubType) -> Self {
        match t {
            SubType::Exclusive => Self::Exclusive,
            SubType::Failover => Self::Failover,
            SubType::Shared => Self::Shared,
            SubType::KeyShared => Self::KeyShared,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Position {
    Earliest,
    Latest,
}

#[derive(Subcommand)]
enum SubscriptionOp {
    /// Create a durable subscription so messages are kept for it before any consumer comes.
    Create {
        topic: String,
        subscription: String,
        #[arg(long, value_enum, default_value = "latest")]
        initial_position: Position,
        /// Start at the first message stored at or after this time (milliseconds since the
        /// Unix epoch) instead of --initial-position.
        #[arg(long)]
        start_time_ms: Option<u64>,
        /// The subscription's type; consumers must use the same.
        #[arg(long = "type", value_enum, default_value = "exclusive")]
        sub_type: SubType,
    },
    /// Move a subscription to a time or a message id; its consumers reconnect there.
    Reset {
        topic: String,
        subscription: String,
        /// The first message stored at or after this time (milliseconds since the Unix epoch).
        #[arg(long, conflicts_with = "message_id", required_unless_present = "message_id")]
        time_ms: Option<u64>,
        /// The first message of this id's entry, written as consumers print it:
        /// LEDGER:ENTRY:BATCH_INDEX:PARTITION (partition -1 for a non-partitioned topic), or
        /// LEDGER:ENTRY.
        #[arg(long)]
        message_id: Option<strata_client::MessageId>,
    },
    /// Delete a subscription (it must have no connected consumer).
    Delete { topic: String, subscription: String },
    /// Subscriptions of a topic, one per line.
    List { topic: String },
}

fn print_names(names: Vec<String>) {
    for n in names {
        println!("{n}");
    }
}

pub async fn run(a: AdminArgs) -> anyhow::Result<()> {
    let client = a.conn.connect().await?;
    let c = client.admin();
    match a.command {
        AdminCommand::Cluster { json } => print_cluster(c.cluster().await?, json)?,
        AdminCommand::Bundles { op } => match op {
            BundleOp::List { namespace } => {
                for b in c.list_bundles(&namespace).await? {
                    let owner = if b.owner.is_empty() { "-" } else { b.owner.as_str() };
                    println!("{}\t{owner}", b.range);
                }
            }
            BundleOp::Unload { namespace, bundle } => c.unload_bundle(&namespace, &bundle).await?,
            BundleOp::Split { namespace, bundle } => c.split_bundle(&namespace, &bundle).await?,
        },
        AdminCommand::Permissions { op } => match op {
            PermissionOp::Grant { on, role, actions } => {
                let actions: Vec<_> = actions.into_iter().map(Into::into).collect();
                c.grant_permission(&on.resource(), &role, &actions).await?
            }
            PermissionOp::Revoke { on, role, actions } => {
                let actions: Vec<_> = actions.into_iter().map(Into::into).collect();
                c.revoke_permission(&on.resource(), &role, &actions).await?
            }
            PermissionOp::List { on, json } => {
                let list = c.permissions(&on.resource()).await?;
                let names = |p: &strata_client::Permission| -> Vec<String> {
                    p.actions().map(|a| a.as_str_name().to_lowercase()).collect()
                };
                if json {
                    let v: Vec<serde_json::Value> = list
                        .iter()
                        .map(|p| serde_json::json!({"role": p.role, "actions": names(p)}))
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    for p in &list {
                        println!("{}\t{}", p.role, names(p).join(","));
                    }
                }
            }
        },
        AdminCommand::Tenants { op } => match op {
            TenantOp::Create { tenant } => c.create_tenant(&tenant).await?,
            TenantOp::Delete { tenant } => c.delete_tenant(&tenant).await?,
            TenantOp::List => print_names(c.list_tenants().await?),
        },
        AdminCommand::Namespaces { op } => match op {
            NamespaceOp::Create { namespace, bundles } => {
                c.create_namespace_with_bundles(&namespace, bundles.unwrap_or(0))
                    .await?
            }
            NamespaceOp::Delete { namespace } => c.delete_namespace(&namespace).await?,
            NamespaceOp::List { tenant } => print_names(c.list_namespaces(&tenant).await?),
            NamespaceOp::GetPolicies { namespace } => {
                print_namespace_policies(&c.namespace_policies(&namespace).await?)?
            }
            NamespaceOp::SetPolicies { namespace, policies } => {
                c.set_namespace_policies(&namespace, policies.policies()).await?
            }
        },
        AdminCommand::Topics { op } => match op {
            TopicOp::Create { topic, partitions } => c.create_topic(&topic, partitions).await?,
            TopicOp::Delete { topic, force } => c.delete_topic_with(&topic, force).await?,
            TopicOp::List { namespace } => print_names(c.list_topics(&namespace).await?),
            TopicOp::Stats { topic } => {
                let s = c.topic_stats(&topic).await?;
                let subs: Vec<serde_json::Value> = s
                    .subscriptions
                    .iter()
                    .map(|x| {
                        serde_json::json!({"name": x.name, "type": x.r#type,
                            "backlog_entries": x.backlog_entries, "consumers": x.consumers})
                    })
                    .collect();
                let v = serde_json::json!({"topic": s.topic, "partitions": s.partitions, "entries": s.entries,
                    "storage_bytes": s.storage_bytes, "ledgers": s.ledgers, "producers": s.producers,
                    "bookie_bytes": s.bookie_bytes, "offloaded_bytes": s.offloaded_bytes,
                    "subscriptions": subs});
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            TopicOp::Unload { topic } => c.unload_topic(&topic).await?,
            TopicOp::UpdatePartitions { topic, partitions } => c.update_partitions(&topic, partitions).await?,
            TopicOp::GetPolicies { topic } => {
                let p = c.topic_policies(&topic).await?;
                let mut v = serde_json::Map::new();
                if let Some(x) = p.retention_time_secs {
                    v.insert("retention_time_secs".into(), x.into());
                }
                if let Some(x) = p.retention_bytes {
                    v.insert("retention_bytes".into(), x.into());
                }
                for (k, x) in [
                    ("offload_threshold_bytes", p.offload_threshold_bytes),
                    ("offload_threshold_secs", p.offload_threshold_secs),
                    ("offload_deletion_lag_secs", p.offload_deletion_lag_secs),
                ] {
                    if let Some(x) = x {
                        v.insert(k.into(), x.into());
                    }
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            TopicOp::SetPolicies {
                topic,
                retention_time_secs,
                retention_bytes,
                offload_threshold_bytes,
                offload_threshold_secs,
                offload_deletion_lag_secs,
            } => {
                let p = strata_client::TopicPolicies {
                    retention_time_secs,
                    retention_bytes,
                    offload_threshold_bytes,
                    offload_threshold_secs,
                    offload_deletion_lag_secs,
                };
                c.set_topic_policies(&topic, p).await?
            }
            TopicOp::Offload {
                topic,
                no_wait,
                timeout_secs,
            } => {
                let mut s = c.offload_topic(&topic).await?;
                if !no_wait {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
                    loop {
                        // Done once nothing is pending and no run is under way; a failure
                        // is reported (the broker keeps retrying with backoff).
                        if !s.running && s.pending_ledgers == 0 {
                            break;
                        }
                        if !s.last_error.is_empty() && !s.running {
                            println!("{}", offload_json(&s)?);
                            anyhow::bail!(
                                "offload of {topic} failed (the broker retries with backoff): {}",
                                s.last_error
                            );
                        }
                        if std::time::Instant::now() >= deadline {
                            println!("{}", offload_json(&s)?);
                            anyhow::bail!(
                                "offload of {topic} not done after {timeout_secs} s ({} ledgers pending); it goes on",
                                s.pending_ledgers
                            );
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                        s = c.offload_status(&topic).await?;
                    }
                }
                println!("{}", offload_json(&s)?);
            }
            TopicOp::OffloadStatus { topic } => {
                let s = c.offload_status(&topic).await?;
                println!("{}", offload_json(&s)?);
            }
        },
        AdminCommand::Subscriptions { op } => match op {
            SubscriptionOp::Create {
                topic,
                subscription,
                initial_position,
                start_time_ms,
                sub_type,
            } => {
                let start = match (start_time_ms, initial_position) {
                    (Some(ms), _) => strata_client::SubscriptionStart::Time(ms),
                    (None, Position::Earliest) => strata_client::SubscriptionStart::Earliest,
                    (None, Position::Latest) => strata_client::SubscriptionStart::Latest,
                };
                c.create_subscription_with(&topic, &subscription, sub_type.into(), start)
                    .await?
            }
            SubscriptionOp::Reset {
                topic,
                subscription,
                time_ms,
                message_id,
            } => {
                let to = match (time_ms, message_id) {
                    (Some(ms), _) => strata_client::ResetTo::Time(ms),
                    (None, Some(id)) => strata_client::ResetTo::Message(id),
                    (None, None) => anyhow::bail!("give --time-ms or --message-id"),
                };
                c.reset_subscription(&topic, &subscription, to).await?
            }
            SubscriptionOp::Delete { topic, subscription } => c.delete_subscription(&topic, &subscription).await?,
            SubscriptionOp::List { topic } => print_names(c.list_subscriptions(&topic).await?),
        },
        AdminCommand::Bookies { op } => match op {
            BookieOp::List { json } => print_bookies(c.bookies().await?, json)?,
            BookieOp::Decommission {
                address,
                no_wait,
                cancel,
                timeout_secs,
            } => {
                if cancel {
                    let s = c.cancel_decommission(&address).await?;
                    println!("decommission of {} cancelled (state {})", s.address, s.state);
                } else {
                    decommission(&c, &address, no_wait, timeout_secs).await?;
                }
            }
        },
        AdminCommand::Ledgers { op } => match op {
            LedgerOp::UnderReplicated { json } => {
                let ledgers = c.under_replicated_ledgers().await?;
                if json {
                    let v: Vec<serde_json::Value> = ledgers
                        .iter()
                        .map(|l| {
                            serde_json::json!({"ledger": l.ledger_id, "bookies": l.bookies,
                                "since_ms": l.since_ms, "worker": l.worker})
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else if ledgers.is_empty() {
                    println!("no under-replicated ledgers");
                } else {
                    let now = now_ms();
                    for l in ledgers {
                        println!(
                            "ledger {}  bookies {}  for {}s  {}",
                            l.ledger_id,
                            l.bookies.join(","),
                            now.saturating_sub(l.since_ms) / 1000,
                            if l.worker.is_empty() {
                                "waiting".to_string()
                            } else {
                                format!("copying ({})", l.worker)
                            }
                        );
                    }
                }
            }
        },
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts a decommission and, unless `no_wait`, reports progress until it is done.
async fn decommission(
    c: &strata_client::Admin,
    address: &str,
    no_wait: bool,
    timeout_secs: Option<u64>,
) -> anyhow::Result<()> {
    let mut s = c.decommission_bookie(address).await?;
    println!(
        "decommissioning {address}: {} ({} ledger(s) name it)",
        s.state, s.remaining_ledgers
    );
    if no_wait {
        return Ok(());
    }
    let deadline = timeout_secs.map(|t| tokio::time::Instant::now() + std::time::Duration::from_secs(t));
    let mut shown = s.remaining_ledgers;
    while s.state != "done" || s.registered {
        if s.state == "none" {
            anyhow::bail!("the decommission of {address} was cancelled");
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            anyhow::bail!(
                "{address} still named by {} ledger(s) after {}s; the decommission goes on (run this again to follow it)",
                s.remaining_ledgers,
                timeout_secs.unwrap_or_default()
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        s = c.decommission_status(address).await?;
        if s.remaining_ledgers != shown {
            shown = s.remaining_ledgers;
            println!("  {shown} ledger(s) still name {address}");
        }
    }
    println!(
        "{address} is decommissioned: no ledger names it and it has unregistered; stop it and delete its data directory"
    );
    Ok(())
}

fn print_bookies(bookies: Vec<strata_client::BookieStatus>, json: bool) -> anyhow::Result<()> {
    if json {
        let v: Vec<serde_json::Value> = bookies
            .iter()
            .map(|b| {
                serde_json::json!({"address": b.address, "state": b.state, "registered": b.registered,
                    "ledgers": b.ledgers, "read_only": b.read_only, "read_only_reason": b.read_only_reason,
                    "free_bytes": b.free_bytes, "total_bytes": b.total_bytes, "version": b.version,
                    "lost_since_ms": b.lost_since_ms})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let now = now_ms();
    for b in bookies {
        let extra = match b.state.as_str() {
            "lost" if b.lost_since_ms > 0 => format!("  missing for {}s", now.saturating_sub(b.lost_since_ms) / 1000),
            _ if b.registered => format!("  free {} of {} MiB", b.free_bytes >> 20, b.total_bytes >> 20),
            _ => String::new(),
        };
        println!("{}  {}  ledgers {}{extra}", b.address, b.state, b.ledgers);
    }
    Ok(())
}

fn print_cluster(info: strata_client::ClusterInfo, json: bool) -> anyhow::Result<()> {
    if json {
        let brokers: Vec<serde_json::Value> = info
            .brokers
            .iter()
            .map(|b| {
                serde_json::json!({"address": b.address, "url": b.url, "leader": b.leader, "bundles": b.bundles,
                    "topics": b.topics, "producers": b.producers, "consumers": b.consumers,
                    "msg_rate_in": b.msg_rate_in, "msg_rate_out": b.msg_rate_out, "version": b.version})
            })
            .collect();
        let bookies: Vec<serde_json::Value> = info
            .bookies
            .iter()
            .map(|b| {
                serde_json::json!({"address": b.address, "read_only": b.read_only, "free_bytes": b.free_bytes,
                    "total_bytes": b.total_bytes, "version": b.version})
            })
            .collect();
        let v = serde_json::json!({"leader": info.leader, "brokers": brokers, "bookies": bookies});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "BROKERS ({}), leader {}",
        info.brokers.len(),
        if info.leader.is_empty() { "-" } else { &info.leader }
    );
    for b in &info.brokers {
        println!(
            "  {}{}  bundles {}  topics {}  producers {}  consumers {}  in {:.0} msg/s  out {:.0} msg/s",
            b.address,
            if b.leader { " (leader)" } else { "" },
            b.bundles.len(),
            b.topics,
            b.producers,
            b.consumers,
            b.msg_rate_in,
            b.msg_rate_out
        );
        for bundle in &b.bundles {
            println!("    {bundle}");
        }
    }
    println!("BOOKIES ({})", info.bookies.len());
    for b in &info.bookies {
        println!(
            "  {}{}  free {} of {} MiB",
            b.address,
            if b.read_only { " (read-only)" } else { "" },
            b.free_bytes >> 20,
            b.total_bytes >> 20
        );
    }
    Ok(())
}

/// An offload status as pretty JSON (the CLI's output of `topics offload[-status]`).
fn offload_json(s: &strata_client::OffloadStatus) -> anyhow::Result<String> {
    let ledgers: Vec<serde_json::Value> = s
        .ledgers
        .iter()
        .map(|l| {
            let mut v = serde_json::json!({"topic": l.topic, "ledger": l.ledger, "entries": l.entries,
                "bytes": l.bytes, "state": l.state});
            if !l.data_object.is_empty() {
                v["data_object"] = l.data_object.clone().into();
                v["index_object"] = l.index_object.clone().into();
                v["data_object_bytes"] = l.data_object_bytes.into();
            }
            v
        })
        .collect();
    let v = serde_json::json!({"topic": s.topic, "enabled": s.enabled, "url": s.url, "running": s.running,
        "pending_ledgers": s.pending_ledgers, "offloaded_ledgers": s.offloaded_ledgers,
        "offloaded_bytes": s.offloaded_bytes, "bookie_bytes": s.bookie_bytes,
        "last_error": s.last_error, "last_error_ms": s.last_error_ms,
        "consecutive_failures": s.consecutive_failures, "next_retry_ms": s.next_retry_ms,
        "last_read_error": s.last_read_error, "last_read_error_ms": s.last_read_error_ms,
        "ledgers": ledgers});
    Ok(serde_json::to_string_pretty(&v)?)
}
