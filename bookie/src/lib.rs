//! Strata's bookie: a storage node that keeps ledger entries durable, and its gRPC service.
//!
//! Layers, bottom up: [`format`] (file and record framing) → [`journal`] (write-ahead log,
//! group commit), [`entry_log`] (entry storage), [`index`] (RocksDB), [`write_cache`] →
//! [`storage`] (the engine) → [`service`] (gRPC) and [`client`]. [`inspect`] reads the
//! files offline. [`autorecovery`] re-replicates the ledgers of lost and decommissioned
//! bookies.
//!
//! The durability contract (DESIGN.md §5): an add is acknowledged only after its journal
//! record is fdatasynced; every byte served was checked against the checksum written with
//! it; a torn journal tail is truncated on restart, any other damage stops the bookie.

pub mod autorecovery;
pub mod client;
pub mod config;
pub mod direct;
pub mod entry_log;
pub mod error;
pub mod format;
pub mod index;
pub mod inspect;
pub mod journal;
pub mod ledger;
pub mod registration;
pub mod service;
pub mod storage;
pub mod write_cache;

pub use config::BookieConfig;
pub use error::{BookieError, Result};
pub use service::{run, run_with_metrics, run_with_store};
pub use storage::Storage;
