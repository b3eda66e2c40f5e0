//! Tiered offload of closed ledgers to object storage (DESIGN.md §3 "Offload").
//!
//! Built so far: [`format`], the layout of an offloaded ledger's data and index objects,
//! with its checks. The uploader, reads of offloaded ranges and the offload policies are
//! not built yet (docs/storage.md says so); nothing reaches this module from a user path.

pub mod format;
