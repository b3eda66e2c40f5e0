//! `strata admin`: the cluster, bundles, tenants, namespaces, topics and subscriptions,
//! through the SDK's admin client.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

#[derive(Args)]
pub struct AdminArgs {
    /// Broker (or any brokers of a cluster: http://b1:6650,b2:6650).
    #[arg(long, global = true, default_value = "http://127.0.0.1:6650", env = "STRATA_URL")]
    url: String,
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
    /// Topics: create (optionally partitioned), delete, list, stats, unload.
    Topics {
        #[command(subcommand)]
        op: TopicOp,
    },
    /// Subscriptions: create, delete, list.
    Subscriptions {
        #[command(subcommand)]
        op: SubscriptionOp,
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
    Delete { topic: String },
    /// Topics of a namespace (tenant/namespace), one per line.
    List { namespace: String },
    /// Entries, bytes, ledgers and per-subscription backlog, as JSON.
    Stats { topic: String },
    /// Close the topic on its broker; clients reconnect.
    Unload { topic: String },
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
    let client = strata_client::Client::connect(a.url.clone()).await.with_context(|| {
        format!(
            "cannot reach Strata at {}; is it running? (--url sets the address)",
            a.url
        )
    })?;
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
        },
        AdminCommand::Topics { op } => match op {
            TopicOp::Create { topic, partitions } => c.create_topic(&topic, partitions).await?,
            TopicOp::Delete { topic } => c.delete_topic(&topic).await?,
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
                    "storage_bytes": s.storage_bytes, "ledgers": s.ledgers, "subscriptions": subs});
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            TopicOp::Unload { topic } => c.unload_topic(&topic).await?,
        },
        AdminCommand::Subscriptions { op } => match op {
            SubscriptionOp::Create {
                topic,
                subscription,
                initial_position,
            } => {
                let initial = match initial_position {
                    Position::Earliest => strata_client::InitialPosition::Earliest,
                    Position::Latest => strata_client::InitialPosition::Latest,
                };
                c.create_subscription(&topic, &subscription, initial).await?
            }
            SubscriptionOp::Delete { topic, subscription } => c.delete_subscription(&topic, &subscription).await?,
            SubscriptionOp::List { topic } => print_names(c.list_subscriptions(&topic).await?),
        },
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
