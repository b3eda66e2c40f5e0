//! `strata admin`: tenants, namespaces, topics and subscriptions, through the SDK's admin
//! client.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

#[derive(Args)]
pub struct AdminArgs {
    /// Broker (or any broker of a cluster).
    #[arg(long, global = true, default_value = "http://127.0.0.1:6650", env = "STRATA_URL")]
    url: String,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
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
    Create { tenant: String },
    Delete { tenant: String },
    List,
}

#[derive(Subcommand)]
enum NamespaceOp {
    Create {
        namespace: String,
    },
    Delete {
        namespace: String,
    },
    /// Namespaces of a tenant.
    List {
        tenant: String,
    },
}

#[derive(Subcommand)]
enum TopicOp {
    Create {
        topic: String,
        /// Create a partitioned topic with this many partitions.
        #[arg(long, default_value_t = 0)]
        partitions: u32,
    },
    Delete {
        topic: String,
    },
    /// Topics of a namespace (tenant/namespace).
    List {
        namespace: String,
    },
    /// Entries, bytes, ledgers and per-subscription backlog, as JSON.
    Stats {
        topic: String,
    },
    /// Close the topic on its broker; clients reconnect.
    Unload {
        topic: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Position {
    Earliest,
    Latest,
}

#[derive(Subcommand)]
enum SubscriptionOp {
    Create {
        topic: String,
        subscription: String,
        #[arg(long, value_enum, default_value = "latest")]
        initial_position: Position,
    },
    Delete {
        topic: String,
        subscription: String,
    },
    List {
        topic: String,
    },
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
        AdminCommand::Tenants { op } => match op {
            TenantOp::Create { tenant } => c.create_tenant(&tenant).await?,
            TenantOp::Delete { tenant } => c.delete_tenant(&tenant).await?,
            TenantOp::List => print_names(c.list_tenants().await?),
        },
        AdminCommand::Namespaces { op } => match op {
            NamespaceOp::Create { namespace } => c.create_namespace(&namespace).await?,
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
