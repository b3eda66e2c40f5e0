//! Stable error codes shared by every Strata service.
//!
//! The numbers are part of the wire contract (`ErrorCode` in the .proto files): they are
//! never renumbered or reused. Unary RPCs carry the code in the gRPC status metadata under
//! [`ERROR_CODE_METADATA_KEY`]; streamed results carry it in a field.

use strata_proto::bookie::v1 as pb;

/// gRPC metadata key under which a failed unary RPC carries its numeric [`ErrorCode`].
pub const ERROR_CODE_METADATA_KEY: &str = "strata-error-code";

/// What went wrong, as a decision the caller can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Fenced,
    NoSuchLedger,
    NoSuchEntry,
    ReadOnly,
    TooLarge,
    BadChecksum,
    InvalidArgument,
    Unauthorized,
    IoError,
    ShuttingDown,
    NotEnoughBookies,
    LedgerClosed,
    MetadataError,
}

impl ErrorCode {
    /// The gRPC status code that best matches this error, for callers that only look there.
    pub fn grpc_code(self) -> tonic_code::Code {
        use tonic_code::Code;
        match self {
            ErrorCode::Fenced => Code::FailedPrecondition,
            ErrorCode::NoSuchLedger | ErrorCode::NoSuchEntry => Code::NotFound,
            ErrorCode::ReadOnly | ErrorCode::ShuttingDown => Code::Unavailable,
            ErrorCode::TooLarge => Code::ResourceExhausted,
            ErrorCode::BadChecksum => Code::DataLoss,
            ErrorCode::InvalidArgument => Code::InvalidArgument,
            ErrorCode::Unauthorized => Code::PermissionDenied,
            ErrorCode::IoError => Code::Internal,
            ErrorCode::NotEnoughBookies | ErrorCode::MetadataError => Code::Unavailable,
            ErrorCode::LedgerClosed => Code::FailedPrecondition,
        }
    }

    /// A short stable name, as printed by the CLI.
    pub fn name(self) -> &'static str {
        self.to_proto().as_str_name()
    }

    pub fn to_proto(self) -> pb::ErrorCode {
        match self {
            ErrorCode::Fenced => pb::ErrorCode::Fenced,
            ErrorCode::NoSuchLedger => pb::ErrorCode::NoSuchLedger,
            ErrorCode::NoSuchEntry => pb::ErrorCode::NoSuchEntry,
            ErrorCode::ReadOnly => pb::ErrorCode::ReadOnly,
            ErrorCode::TooLarge => pb::ErrorCode::TooLarge,
            ErrorCode::BadChecksum => pb::ErrorCode::BadChecksum,
            ErrorCode::InvalidArgument => pb::ErrorCode::InvalidArgument,
            ErrorCode::Unauthorized => pb::ErrorCode::Unauthorized,
            ErrorCode::IoError => pb::ErrorCode::IoError,
            ErrorCode::ShuttingDown => pb::ErrorCode::ShuttingDown,
            ErrorCode::NotEnoughBookies => pb::ErrorCode::NotEnoughBookies,
            ErrorCode::LedgerClosed => pb::ErrorCode::LedgerClosed,
            ErrorCode::MetadataError => pb::ErrorCode::MetadataError,
        }
    }

    /// Decodes a wire code; `Ok(None)` is success, `Err(raw)` an unknown number (a newer
    /// server), which callers should treat as a generic failure.
    pub fn from_wire(raw: i32) -> Result<Option<Self>, i32> {
        let code = pb::ErrorCode::try_from(raw).map_err(|_| raw)?;
        Ok(match code {
            pb::ErrorCode::Ok => None,
            pb::ErrorCode::Fenced => Some(ErrorCode::Fenced),
            pb::ErrorCode::NoSuchLedger => Some(ErrorCode::NoSuchLedger),
            pb::ErrorCode::NoSuchEntry => Some(ErrorCode::NoSuchEntry),
            pb::ErrorCode::ReadOnly => Some(ErrorCode::ReadOnly),
            pb::ErrorCode::TooLarge => Some(ErrorCode::TooLarge),
            pb::ErrorCode::BadChecksum => Some(ErrorCode::BadChecksum),
            pb::ErrorCode::InvalidArgument => Some(ErrorCode::InvalidArgument),
            pb::ErrorCode::Unauthorized => Some(ErrorCode::Unauthorized),
            pb::ErrorCode::IoError => Some(ErrorCode::IoError),
            pb::ErrorCode::ShuttingDown => Some(ErrorCode::ShuttingDown),
            pb::ErrorCode::NotEnoughBookies => Some(ErrorCode::NotEnoughBookies),
            pb::ErrorCode::LedgerClosed => Some(ErrorCode::LedgerClosed),
            pb::ErrorCode::MetadataError => Some(ErrorCode::MetadataError),
        })
    }

    /// Builds the gRPC status for a unary RPC failure.
    pub fn to_status(self, message: impl Into<String>) -> tonic_code::Status {
        let mut status = tonic_code::Status::new(self.grpc_code(), message);
        let value = (self.to_proto() as i32).to_string();
        if let Ok(v) = value.parse() {
            status.metadata_mut().insert(ERROR_CODE_METADATA_KEY, v);
        }
        status
    }

    /// Reads the Strata code back from a status, if the server put one there.
    pub fn from_status(status: &tonic_code::Status) -> Option<Self> {
        let raw = status.metadata().get(ERROR_CODE_METADATA_KEY)?;
        let raw: i32 = raw.to_str().ok()?.parse().ok()?;
        Self::from_wire(raw).ok().flatten()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// tonic's status types, re-exported under a private name so the mapping above reads clearly.
mod tonic_code {
    pub use tonic::{Code, Status};
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 13] = [
        ErrorCode::Fenced,
        ErrorCode::NoSuchLedger,
        ErrorCode::NoSuchEntry,
        ErrorCode::ReadOnly,
        ErrorCode::TooLarge,
        ErrorCode::BadChecksum,
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthorized,
        ErrorCode::IoError,
        ErrorCode::ShuttingDown,
        ErrorCode::NotEnoughBookies,
        ErrorCode::LedgerClosed,
        ErrorCode::MetadataError,
    ];

    #[test]
    fn wire_numbers_are_stable() {
        let numbers: Vec<i32> = ALL.iter().map(|c| c.to_proto() as i32).collect();
        assert_eq!(numbers, (1..=13).collect::<Vec<_>>());
    }

    #[test]
    fn status_round_trips_the_code() {
        for code in ALL {
            let status = code.to_status("x");
            assert_eq!(ErrorCode::from_status(&status), Some(code));
            assert_eq!(ErrorCode::from_wire(code.to_proto() as i32), Ok(Some(code)));
        }
        assert_eq!(ErrorCode::from_wire(0), Ok(None));
        assert_eq!(ErrorCode::from_wire(999), Err(999));
    }
}
