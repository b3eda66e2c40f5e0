//! Strata's broker: topics stored as managed ledgers ([`managed_ledger`]), subscriptions
//! ([`cursor`], [`dispatch`], [`subscription`]), the broker that loads owned topics
//! ([`broker`]) and the public gRPC services ([`service`]).

pub mod admin;
pub mod authz;
pub mod broker;
pub mod bundles;
pub mod cluster;
pub mod config;
pub mod cursor;
pub mod dedup;
pub mod dispatch;
mod entry_cache;
pub mod entry_format;
pub mod error;
pub mod managed_ledger;
pub mod metrics;
pub mod ns_policies;
pub mod offload;
pub mod owned_store;
pub mod policies;
pub mod rate;
pub mod service;
pub mod subscription;
pub mod topic;

pub use error::{BrokerError, Result};
