//! Strata's shared domain types: identifiers as validated newtypes and the stable error
//! codes every service reports, with their conversions to and from the wire types.
//!
//! Invariants: a value of these types is always valid (constructors validate); nothing here
//! does I/O.

pub mod error_code;
pub mod ids;
pub mod metrics;
pub mod topic;

pub use error_code::ErrorCode;
pub use ids::{EntryId, IdError, LedgerId};
pub use topic::{MessageId, NameError, Position, SubscriptionName, TopicName};
