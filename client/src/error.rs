//! Errors of the SDK: a broker's stable [`ErrorCode`] with its message, or a local cause
//! (connection, timeout, closed handle, bad argument).

use strata_proto::v1 as pb;

/// The public error codes of `strata.proto`, stable across versions.
pub use strata_proto::v1::ErrorCode;

/// Result of SDK calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
///
/// ```
/// use strata_client::{Error, ErrorCode};
/// let e = Error::Broker { code: ErrorCode::ConsumerBusy, message: "subscription s has a consumer".into() };
/// assert_eq!(e.code(), Some(ErrorCode::ConsumerBusy));
/// assert!(!e.is_retriable());
/// assert!(e.to_string().starts_with("CONSUMER_BUSY"));
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The broker refused the request; `code` says why and `message` what to do.
    #[error("{}: {message}", code.as_str_name())]
    Broker { code: ErrorCode, message: String },
    /// No connection to the broker could be made.
    #[error("cannot connect to {url}: {message}")]
    Connect { url: String, message: String },
    /// The connection failed during a call.
    #[error("connection error: {0}")]
    Transport(String),
    /// The operation did not finish in time (send timeout, operation timeout).
    #[error("timed out: {0}")]
    Timeout(String),
    /// The producer, consumer or reader was closed.
    #[error("{0} is closed")]
    Closed(&'static str),
    /// An argument is invalid; the message names it.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A resent batch had been stored before (deduplication) so long ago that the broker
    /// no longer knows its message ids. The messages *are* stored, once: do not resend.
    #[error("already stored by an earlier send; its message id is no longer known")]
    StoredEarlier,
}

impl Error {
    /// The broker's error code, if the broker refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying (after a reconnect, with backoff) can succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Broker { code, .. } => matches!(
                code,
                ErrorCode::NotOwner | ErrorCode::ServiceNotReady | ErrorCode::StorageError
            ),
            Error::Connect { .. } | Error::Transport(_) | Error::Timeout(_) => true,
            Error::Closed(_) | Error::InvalidArgument(_) | Error::StoredEarlier => false,
        }
    }

    pub(crate) fn from_wire(e: &pb::Error) -> Self {
        Error::Broker {
            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
            message: e.message.clone(),
        }
    }

    /// From a gRPC status: the `strata-error-code` metadata when the broker set it.
    pub(crate) fn from_status(s: &tonic::Status) -> Self {
        let code = s
            .metadata()
            .get("strata-error-code")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .and_then(|c| ErrorCode::try_from(c).ok());
        match code {
            Some(code) => Error::Broker {
                code,
                message: s.message().to_string(),
            },
            None if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown => {
                Error::Transport(s.message().to_string())
            }
            None => Error::Broker {
                code: ErrorCode::Unspecified,
                message: format!("{:?}: {}", s.code(), s.message()),
            },
        }
    }
}
