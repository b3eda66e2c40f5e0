//! The bookie's error type: one variant per decision a caller makes, each mapping to one
//! stable wire [`ErrorCode`].

use strata_common::ErrorCode;

/// Everything that can go wrong in the bookie, as a caller sees it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BookieError {
    #[error("ledger {0} is fenced: its writer was replaced by a recovery")]
    Fenced(u64),
    #[error("no such ledger {0} on this bookie")]
    NoSuchLedger(u64),
    #[error("no such entry {1} in ledger {0} on this bookie")]
    NoSuchEntry(u64, u64),
    #[error("bookie is read-only: {0}")]
    ReadOnly(String),
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("checksum mismatch for ledger {ledger} entry {entry}: sent {sent:#010x}, payload has {actual:#010x}")]
    BadChecksum {
        ledger: u64,
        entry: u64,
        sent: u32,
        actual: u32,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("writer token does not match the token ledger {0} was created with")]
    Unauthorized(u64),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("corruption: {0}")]
    Corruption(String),
    #[error("bookie is shutting down")]
    ShuttingDown,
    /// Fewer writable bookies than needed (ledger client).
    #[error("not enough writable bookies: {needed} needed, {available} available")]
    NotEnoughBookies { needed: usize, available: usize },
    /// The ledger is closed (ledger client).
    #[error("ledger {0} is closed")]
    LedgerClosed(u64),
    /// The writer stopped after a bookie refused one of its entries for good (ledger
    /// client); appends after that entry cannot complete in this ledger.
    #[error("ledger {0} stopped taking appends: {1}")]
    LedgerStopped(u64, String),
    /// The metadata store failed (ledger client).
    #[error("metadata store: {0}")]
    Metadata(String),
    /// An error a remote bookie reported (client side).
    #[error("bookie replied {code}: {message}")]
    Remote { code: ErrorCode, message: String },
    /// The connection to a bookie failed (client side).
    #[error("transport: {0}")]
    Transport(String),
}

impl BookieError {
    /// The stable wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            BookieError::Fenced(_) => ErrorCode::Fenced,
            BookieError::NoSuchLedger(_) => ErrorCode::NoSuchLedger,
            BookieError::NoSuchEntry(..) => ErrorCode::NoSuchEntry,
            BookieError::ReadOnly(_) => ErrorCode::ReadOnly,
            BookieError::TooLarge { .. } => ErrorCode::TooLarge,
            BookieError::BadChecksum { .. } => ErrorCode::BadChecksum,
            BookieError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            BookieError::Unauthorized(_) => ErrorCode::Unauthorized,
            BookieError::Io(_) | BookieError::Corruption(_) => ErrorCode::IoError,
            BookieError::ShuttingDown => ErrorCode::ShuttingDown,
            BookieError::Remote { code, .. } => *code,
            BookieError::Transport(_) => ErrorCode::IoError,
            BookieError::NotEnoughBookies { .. } => ErrorCode::NotEnoughBookies,
            BookieError::LedgerClosed(_) | BookieError::LedgerStopped(..) => ErrorCode::LedgerClosed,
            BookieError::Metadata(_) => ErrorCode::MetadataError,
        }
    }

    pub(crate) fn io(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        BookieError::Io(format!("{context}: {e}"))
    }
}

/// The one conversion of bookie errors into gRPC statuses.
impl From<BookieError> for tonic::Status {
    fn from(e: BookieError) -> Self {
        e.code().to_status(e.to_string())
    }
}

impl From<rocksdb::Error> for BookieError {
    fn from(e: rocksdb::Error) -> Self {
        BookieError::Io(format!("index (RocksDB): {e}"))
    }
}

pub type Result<T, E = BookieError> = std::result::Result<T, E>;
