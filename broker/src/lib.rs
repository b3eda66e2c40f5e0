//! Strata's broker. So far: the managed ledger, the storage of one topic as an ordered list
//! of replicated ledgers. Dispatch, cursors, ownership and the client-facing services build
//! on it (see the open issues).

pub mod cursor;
pub mod dispatch;
pub mod entry_format;
pub mod error;
pub mod managed_ledger;
pub mod subscription;
pub mod topic;

pub use error::{BrokerError, Result};
