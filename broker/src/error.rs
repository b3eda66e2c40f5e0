//! The broker's error type: one variant per decision a caller makes.

use strata_bookie::BookieError;
use strata_common::ErrorCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Another broker took the topic over (its recovery fenced our ledger, or changed the
    /// topic's ledger list); stop serving it.
    #[error("topic {0} is now owned elsewhere: {1}")]
    Fenced(String, String),
    /// The topic was closed (shutdown, unload).
    #[error("topic {0} is closed")]
    Closed(String),
    /// The topic does not exist (and auto-creation is off).
    #[error("topic {0} does not exist and auto-creation is off; create it with `strata admin topics create {0}`")]
    TopicNotFound(String),
    /// The subscription exists with another type.
    #[error("{0}")]
    SubscriptionTypeMismatch(String),
    /// A consumer-side rule was broken (busy exclusive subscription, unknown message id).
    #[error("{0}")]
    Dispatch(#[from] crate::dispatch::DispatchError),
    /// The topic, namespace or tenant does not exist; the message says how to create it.
    #[error("not found: {0}")]
    NotFound(String),
    /// The tenant, namespace, topic or subscription already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Still has children (namespaces, topics, connected consumers).
    #[error("{0}")]
    NotEmpty(String),
    /// Another broker owns the topic.
    #[error("this broker does not own topic {0}; look it up again")]
    NotOwner(String),
    /// The broker cannot serve now (shutting down, no metadata session, no broker to
    /// assign a bundle to); retry with backoff.
    #[error("service not ready: {0}")]
    Unavailable(String),
    /// A message or batch is over the size limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// Bad input from a caller; the message names it.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A producer with this name is already connected to the topic.
    #[error("{0}")]
    ProducerBusy(String),
    /// The caller's role may not do this (auth on); the message names role, action and
    /// resource.
    #[error("{0}")]
    PermissionDenied(String),
    /// A configured limit (producers, subscriptions, consumers, topics) is reached; the
    /// message names the limit and its setting.
    #[error("{0}")]
    LimitExceeded(String),
    /// The metadata store failed; retry.
    #[error("metadata store: {0}")]
    Metadata(String),
    /// Stored metadata could not be decoded.
    #[error("corrupt metadata: {0}")]
    Corruption(String),
    /// Object storage failed, or offloaded data failed its checks; the message names the
    /// object (and the ledger and entry for damaged data).
    #[error("offload: {0}")]
    Offload(String),
    /// The ledger layer failed.
    #[error("storage: {0}")]
    Storage(#[from] BookieError),
}

impl BrokerError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::Fenced(..) => ErrorCode::Fenced,
            BrokerError::Closed(_) => ErrorCode::LedgerClosed,
            BrokerError::NotFound(_) | BrokerError::TopicNotFound(_) => ErrorCode::NoSuchLedger,
            BrokerError::SubscriptionTypeMismatch(_) | BrokerError::Dispatch(_) => ErrorCode::InvalidArgument,
            BrokerError::NotOwner(_) => ErrorCode::Fenced,
            BrokerError::Unavailable(_) => ErrorCode::MetadataError,
            BrokerError::AlreadyExists(_) | BrokerError::NotEmpty(_) => ErrorCode::InvalidArgument,
            BrokerError::InvalidArgument(_)
            | BrokerError::ProducerBusy(_)
            | BrokerError::LimitExceeded(_)
            | BrokerError::PermissionDenied(_) => ErrorCode::InvalidArgument,
            BrokerError::TooLarge { .. } => ErrorCode::TooLarge,
            BrokerError::Metadata(_) => ErrorCode::MetadataError,
            BrokerError::Corruption(_) | BrokerError::Offload(_) => ErrorCode::IoError,
            BrokerError::Storage(e) => e.code(),
        }
    }
}

impl From<strata_meta::MetaError> for BrokerError {
    fn from(e: strata_meta::MetaError) -> Self {
        BrokerError::Metadata(e.to_string())
    }
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
