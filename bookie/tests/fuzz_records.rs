//! Property tests (bounded, in CI) of the on-disk record decoders: the record frame
//! shared by journals and entry logs, journal add records, entry log records and the
//! entry location index. Arbitrary bytes (what a damaged disk or a torn write leaves)
//! must give an error, never a panic or an out-of-bounds range; well-formed records must
//! round-trip whatever follows them; and any single flipped bit must be caught.

use bytes::Bytes;
use proptest::prelude::*;
use strata_bookie::entry_log::{Location, StoredEntry};
use strata_bookie::format::{FileKind, encode_record_frame, find_valid_record_after, parse_record};
use strata_bookie::journal::JournalAdd;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn record(kind: FileKind, fixed: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = encode_record_frame(kind, fixed, payload).to_vec();
    v.extend_from_slice(fixed);
    v.extend_from_slice(payload);
    v
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(buf in bytes(600), from in 0usize..600) {
        for kind in [FileKind::Journal, FileKind::EntryLog] {
            if let Ok((body, total)) = parse_record(kind, &buf) {
                prop_assert!(body.start <= body.end && body.end == total && total <= buf.len());
            }
            if let Some(at) = find_valid_record_after(kind, &buf, from.min(buf.len())) {
                prop_assert!(at < buf.len() && parse_record(kind, &buf[at..]).is_ok());
            }
        }
        let _ = JournalAdd::decode(Bytes::from(buf.clone()));
        let _ = StoredEntry::decode(Bytes::from(buf.clone()));
        let _ = Location::decode(&buf);
    }

    #[test]
    fn a_record_reads_back_whatever_follows_it(
        fixed in bytes(64),
        payload in bytes(512),
        tail in bytes(64),
        journal in any::<bool>(),
    ) {
        let kind = if journal { FileKind::Journal } else { FileKind::EntryLog };
        let mut r = record(kind, &fixed, &payload);
        let len = r.len();
        r.extend_from_slice(&tail);
        let (body, total) = parse_record(kind, &r).unwrap();
        prop_assert_eq!(total, len);
        let whole = [&fixed[..], &payload[..]].concat();
        prop_assert_eq!(&r[body], whole.as_slice());
    }

    #[test]
    fn any_flipped_bit_is_caught(
        fixed in bytes(32),
        payload in bytes(256),
        at in any::<proptest::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut r = record(FileKind::Journal, &fixed, &payload);
        let i = at.index(r.len());
        r[i] ^= 1 << bit;
        prop_assert!(parse_record(FileKind::Journal, &r).is_err(), "flip of bit {} at {} undetected", bit, i);
    }

    #[test]
    fn journal_and_entry_log_records_round_trip(
        ledger in any::<u64>(),
        entry in any::<u64>(),
        lac in any::<u64>(),
        checksum in any::<u32>(),
        payload in bytes(512),
    ) {
        let add = JournalAdd { ledger, entry, lac, checksum, payload: Bytes::from(payload.clone()) };
        let mut body = add.encode_fixed().to_vec();
        body.extend_from_slice(&payload);
        let back = JournalAdd::decode(Bytes::from(body)).unwrap();
        prop_assert_eq!((back.ledger, back.entry, back.lac, back.checksum), (ledger, entry, lac, checksum));
        prop_assert_eq!(&back.payload[..], &payload[..]);

        let mut body = ledger.to_le_bytes().to_vec();
        body.extend_from_slice(&entry.to_le_bytes());
        body.extend_from_slice(&checksum.to_le_bytes());
        body.extend_from_slice(&payload);
        let e = StoredEntry::decode(Bytes::from(body)).unwrap();
        prop_assert_eq!((e.ledger, e.entry, e.checksum), (ledger, entry, checksum));
        prop_assert_eq!(&e.payload[..], &payload[..]);
    }
}
