//! Property tests: arbitrary records round-trip with any codec and block size; arbitrary changes to
//! a segment are errors, never panics and never different records; arbitrary bytes never panic.

mod common;

use common::{CODECS, encode};
use kafka_backup_format::{
    Codec, Header, Manifest, Record, TimestampType, decode_block, decode_segment, verify_segment,
};
use proptest::prelude::*;

fn timestamp_type() -> impl Strategy<Value = TimestampType> {
    prop_oneof![
        Just(TimestampType::CreateTime),
        Just(TimestampType::LogAppendTime),
        Just(TimestampType::NotAvailable),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..max))
}

fn header() -> impl Strategy<Value = Header> {
    (".{0,8}", bytes(40)).prop_map(|(key, value)| Header { key, value })
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(-1i64),
        any::<i64>(),
        1_600_000_000_000i64..1_800_000_000_000
    ]
}

/// Up to 60 records with increasing offsets (gaps of any size that fits), from any start.
fn records() -> impl Strategy<Value = Vec<Record>> {
    let one = (
        prop_oneof![Just(1i64), 1i64..1000, 1i64..(1 << 40)],
        timestamp(),
        timestamp_type(),
        bytes(64),
        bytes(600),
        proptest::collection::vec(header(), 0..4),
    );
    (0i64..(1 << 50), proptest::collection::vec(one, 1..60)).prop_map(|(start, parts)| {
        let mut offset = start;
        parts
            .into_iter()
            .enumerate()
            .map(
                |(i, (step, timestamp, timestamp_type, key, value, headers))| {
                    if i > 0 {
                        offset += step;
                    }
                    Record {
                        offset,
                        timestamp,
                        timestamp_type,
                        key,
                        value,
                        headers,
                    }
                },
            )
            .collect()
    })
}

fn codec() -> impl Strategy<Value = Codec> {
    proptest::sample::select(CODECS.to_vec())
}

proptest! {
    #[test]
    fn arbitrary_records_round_trip(records in records(), codec in codec(), block_bytes in 1usize..4000) {
        let enc = encode(&records, codec, block_bytes);
        prop_assert_eq!(decode_segment(&enc.bytes).unwrap(), records);
        prop_assert_eq!(verify_segment(&enc.bytes).unwrap(), enc.summary);
    }

    #[test]
    fn arbitrary_records_round_trip_encrypted(
        records in records(),
        codec in codec(),
        block_bytes in 1usize..4000,
        key in any::<[u8; 32]>(),
        flip in any::<(usize, u8)>(),
    ) {
        let key = kafka_backup_format::EncryptionKey::new("k", &key);
        let mut w = kafka_backup_format::SegmentWriter::new(codec, block_bytes)
            .with_encryption(key.clone());
        let mut bytes = w.start();
        for r in &records {
            bytes.extend(w.push(&r.as_record_ref()).unwrap().unwrap_or_default());
        }
        let (tail, summary) = w.finish().unwrap();
        bytes.extend(tail);
        prop_assert_eq!(
            kafka_backup_format::decode_segment_with(&bytes, Some(&key)).unwrap(),
            records
        );
        prop_assert_eq!(
            kafka_backup_format::verify_segment_with(&bytes, Some(&key)).unwrap(),
            summary
        );
        prop_assert!(decode_segment(&bytes).is_err());
        // Any changed byte is an error, never other records.
        let (pos, x) = (flip.0 % bytes.len(), flip.1.max(1));
        bytes[pos] ^= x;
        prop_assert!(kafka_backup_format::decode_segment_with(&bytes, Some(&key)).is_err());
    }

    #[test]
    fn any_single_byte_change_is_an_error(
        records in records(),
        codec in codec(),
        block_bytes in 1usize..2000,
        position in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut bytes = encode(&records, codec, block_bytes).bytes;
        let pos = position.index(bytes.len());
        bytes[pos] ^= xor;
        prop_assert!(decode_segment(&bytes).is_err(), "byte {} ^ {:#04x} decoded", pos, xor);
    }

    #[test]
    fn random_changes_never_panic_nor_alter_records(
        records in records(),
        codec in codec(),
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode(&records, codec, 500).bytes;
        for (i, b) in changes {
            let pos = i.index(bytes.len());
            bytes[pos] = b;
        }
        if let Ok(got) = decode_segment(&bytes) {
            prop_assert_eq!(got, records.clone());
        }
        let cut = cut.index(bytes.len());
        let _ = decode_segment(&bytes[..cut]);
        let _ = decode_block(&bytes[8.min(cut)..cut]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_segment(&bytes);
        let _ = decode_block(&bytes);
        let _ = Manifest::from_json(&bytes);
        let mut prefixed = b"KBS1\x01\x00\x00\x00KBBL".to_vec();
        prefixed.extend(&bytes);
        let _ = decode_segment(&prefixed);
        let _ = decode_block(&prefixed[8..]);
    }
}
