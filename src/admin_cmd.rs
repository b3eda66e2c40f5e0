//! `strata admin`: tenants, namespaces, topics and subscriptions, over the Admin gRPC
//! service.

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use strata_proto::v1 as pb;
use tonic::transport::Channel;

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

fn explain(s: tonic::Status) -> anyhow::Error {
    let code = s
        .metadata()
        .get("strata-error-code")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .and_then(|c| pb::ErrorCode::try_from(c).ok())
        .map_or_else(|| format!("{:?}", s.code()), |c| c.as_str_name().to_string());
    anyhow::anyhow!("{code}: {}", s.message())
}

fn print_names(l: pb::NameList) {
    for n in l.names {
        println!("{n}");
    }
}

pub async fn run(a: AdminArgs) -> anyhow::Result<()> {
    let channel = match Channel::from_shared(a.url.clone())?.connect().await {
        Ok(c) => c,
        Err(e) => bail!(
            "cannot reach Strata at {}: {e}; is it running? (--url sets the address)",
            a.url
        ),
    };
    let mut c = pb::admin_client::AdminClient::new(channel);
    match a.command {
        AdminCommand::Tenants { op } => match op {
            TenantOp::Create { tenant } => {
                c.create_tenant(pb::TenantRequest { tenant }).await.map_err(explain)?;
            }
            TenantOp::Delete { tenant } => {
                c.delete_tenant(pb::TenantRequest { tenant }).await.map_err(explain)?;
            }
            TenantOp::List => print_names(c.list_tenants(pb::Empty {}).await.map_err(explain)?.into_inner()),
        },
        AdminCommand::Namespaces { op } => match op {
            NamespaceOp::Create { namespace } => {
                c.create_namespace(pb::NamespaceRequest { namespace })
                    .await
                    .map_err(explain)?;
            }
            NamespaceOp::Delete { namespace } => {
                c.delete_namespace(pb::NamespaceRequest { namespace })
                    .await
                    .map_err(explain)?;
            }
            NamespaceOp::List { tenant } => print_names(
                c.list_namespaces(pb::TenantRequest { tenant })
                    .await
                    .map_err(explain)?
                    .into_inner(),
            ),
        },
        AdminCommand::Topics { op } => match op {
            TopicOp::Create { topic, partitions } => {
                c.create_topic(pb::CreateTopicRequest { topic, partitions })
                    .await
                    .map_err(explain)?;
            }
            TopicOp::Delete { topic } => {
                c.delete_topic(pb::TopicRequest { topic }).await.map_err(explain)?;
            }
            TopicOp::List { namespace } => print_names(
                c.list_topics(pb::NamespaceRequest { namespace })
                    .await
                    .map_err(explain)?
                    .into_inner(),
            ),
            TopicOp::Stats { topic } => {
                let s = c
                    .get_topic_stats(pb::TopicRequest { topic })
                    .await
                    .map_err(explain)?
                    .into_inner();
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
            TopicOp::Unload { topic } => {
                c.unload_topic(pb::TopicRequest { topic }).await.map_err(explain)?;
            }
        },
        AdminCommand::Subscriptions { op } => match op {
            SubscriptionOp::Create {
                topic,
                subscription,
                initial_position,
            } => {
                let initial_position = match initial_position {
                    Position::Earliest => pb::InitialPosition::Earliest,
                    Position::Latest => pb::InitialPosition::Latest,
                } as i32;
                c.create_subscription(pb::SubscriptionRequest {
                    topic,
                    subscription,
                    initial_position,
                })
                .await
                .map_err(explain)?;
            }
            SubscriptionOp::Delete { topic, subscription } => {
                c.delete_subscription(pb::SubscriptionRequest {
                    topic,
                    subscription,
                    initial_position: 0,
                })
                .await
                .map_err(explain)?;
            }
            SubscriptionOp::List { topic } => print_names(
                c.list_subscriptions(pb::TopicRequest { topic })
                    .await
                    .map_err(explain)?
                    .into_inner(),
            ),
        },
    }
    Ok(())
}
