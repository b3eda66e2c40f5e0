//! Property tests (bounded, in CI) of what the broker decodes from storage: the entry
//! format of producer batches and the offloaded-ledger objects (index and data records).
//! Arbitrary bytes give an error, never a panic; any batch a producer could send, within
//! the limits, round-trips exactly.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use strata_broker::entry_format;
use strata_broker::offload::format::{Index, IndexBuilder, decode_records, put_record};
use strata_common::LedgerId;
use strata_proto::broker::v1::{StoredBatch, StoredMessage};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 5_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn message() -> impl Strategy<Value = StoredMessage> {
    (
        bytes(256),
        ".{0,32}",
        proptest::collection::btree_map(".{0,16}", ".{0,16}", 0..4),
        any::<u64>(),
    )
        .prop_map(|(payload, key, properties, event_time_ms)| StoredMessage {
            payload: payload.into(),
            key,
            properties: properties.into_iter().collect(),
            event_time_ms,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_entries_never_panic_the_batch_decoder(body in bytes(1024), header in any::<bool>()) {
        // With the right header, the protobuf decoder itself gets the garbage.
        let mut entry = if header { b"SB\x01\x00".to_vec() } else { Vec::new() };
        entry.extend_from_slice(&body);
        let _ = entry_format::decode(&Bytes::from(entry));
    }

    #[test]
    fn batches_round_trip(
        producer_name in ".{0,64}",
        sequence_id in any::<u64>(),
        publish_time_ms in any::<u64>(),
        messages in proptest::collection::vec(message(), 0..20),
    ) {
        let batch = StoredBatch { producer_name, sequence_id, publish_time_ms, messages };
        let entry = entry_format::encode(&batch);
        prop_assert_eq!(entry.len(), entry_format::encoded_len(&batch));
        prop_assert_eq!(entry_format::decode(&entry).unwrap(), batch);
    }

    #[test]
    fn arbitrary_offload_objects_never_panic(
        raw in 1u64..,
        index in bytes(512),
        data in bytes(512),
        first in any::<u64>(),
    ) {
        let ledger = LedgerId::new(raw).unwrap();
        if let Ok(i) = Index::decode(ledger, &index) {
            prop_assert_eq!(i.ledger, ledger);
        }
        let _ = decode_records(ledger, first, Bytes::from(data));
    }

    #[test]
    fn offloaded_records_round_trip_and_damage_is_caught(
        raw in 1u64..,
        payloads in proptest::collection::vec(bytes(128), 1..10),
        at in any::<proptest::sample::Index>(),
    ) {
        let ledger = LedgerId::new(raw).unwrap();
        let mut data = BytesMut::new();
        let mut index = IndexBuilder::new(ledger);
        for (i, p) in payloads.iter().enumerate() {
            put_record(&mut data, ledger, i as u64, p);
            index.push(p.len());
        }
        let i = Index::decode(ledger, &index.finish()).unwrap();
        prop_assert_eq!(i.entries(), payloads.len() as u64);
        let back = decode_records(ledger, 0, data.clone().freeze()).unwrap();
        let expected: Vec<(u64, Bytes)> =
            payloads.iter().enumerate().map(|(n, p)| (n as u64, Bytes::from(p.clone()))).collect();
        prop_assert_eq!(back, expected);
        let mut bad = data.to_vec();
        let k = at.index(bad.len());
        bad[k] ^= 0x01;
        prop_assert!(decode_records(ledger, 0, Bytes::from(bad)).is_err(), "flip at {} undetected", k);
    }
}
