//! How a producer batch is stored as one ledger entry: a 4-byte header (magic `SB`,
//! format version, flags) followed by a protobuf `StoredBatch`.
//!
//! Invariants: decoding checks the header and the message count before use; a payload
//! that is not a Strata batch (a foreign or damaged entry) is an error, never a panic.

use crate::error::{BrokerError, Result};
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use strata_proto::broker::v1::StoredBatch;

const MAGIC: [u8; 2] = *b"SB";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4;
/// Most messages in one batch.
pub const MAX_BATCH_MESSAGES: usize = 100_000;

/// Encodes a batch into an entry payload.
pub fn encode(batch: &StoredBatch) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + batch.encoded_len());
    buf.put_slice(&MAGIC);
    buf.put_u8(VERSION);
    buf.put_u8(0); // flags (compression, later)
    batch.encode(&mut buf).expect("BytesMut grows");
    buf.freeze()
}

/// The length of [`encode`]'s output, without encoding.
pub fn encoded_len(batch: &StoredBatch) -> usize {
    HEADER_LEN + batch.encoded_len()
}

/// The encoded `StoredBatch` of an entry [`decode`] accepted (what follows the header).
pub fn body(entry: &Bytes) -> Bytes {
    entry.slice(HEADER_LEN.min(entry.len())..)
}

/// Decodes an entry payload.
pub fn decode(entry: &Bytes) -> Result<StoredBatch> {
    if entry.len() < HEADER_LEN || entry[..2] != MAGIC {
        return Err(BrokerError::Corruption("entry is not a Strata message batch".into()));
    }
    if entry[2] != VERSION {
        return Err(BrokerError::Corruption(format!(
            "message batch format {} is not supported (this build reads {VERSION})",
            entry[2]
        )));
    }
    let batch = StoredBatch::decode(entry.slice(HEADER_LEN..))
        .map_err(|e| BrokerError::Corruption(format!("undecodable message batch: {e}")))?;
    if batch.messages.len() > MAX_BATCH_MESSAGES {
        return Err(BrokerError::Corruption(format!(
            "message batch holds {} messages, over {MAX_BATCH_MESSAGES}",
            batch.messages.len()
        )));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::broker::v1::StoredMessage;

    #[test]
    fn round_trip_and_rejections() {
        let batch = StoredBatch {
            producer_name: "p".into(),
            sequence_id: 7,
            publish_time_ms: 1_700_000_000_000,
            messages: vec![
                StoredMessage {
                    payload: Bytes::from_static(b"hello"),
                    key: "k".into(),
                    properties: [("a".to_string(), "b".to_string())].into(),
                    event_time_ms: 5,
                },
                StoredMessage {
                    payload: Bytes::new(),
                    ..Default::default()
                },
            ],
        };
        let e = encode(&batch);
        assert_eq!(e.len(), encoded_len(&batch));
        assert_eq!(decode(&e).unwrap(), batch);
        assert!(decode(&Bytes::from_static(b"xx")).is_err());
        assert!(
            decode(&Bytes::from_static(b"SB\x09\x00"))
                .unwrap_err()
                .to_string()
                .contains("format 9")
        );
        let mut bad = e.to_vec();
        bad.truncate(bad.len() - 3);
        assert!(decode(&Bytes::from(bad)).is_err());
    }
}
