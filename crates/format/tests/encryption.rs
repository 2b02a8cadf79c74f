//! Encrypted segments (format.md §2.5): round trips for every codec and every way of reading,
//! stored bytes that never hold the plaintext, and every way of reading them without the right
//! key, or after a deliberate change, fails naming the block.

mod common;

use common::{CODECS, header, rec};
use kafka_backup_format::{
    BLOCK_HEADER_LEN, Codec, CodecId, ENCRYPTION_OVERHEAD, EncryptionKey, FLAG_ENCRYPTED,
    FormatError, HEADER_LEN, NONCE_LEN, Record, SegmentStreamReader, SegmentSummary, SegmentWriter,
    TRAILER_LEN, TimeWindow, blocks_for, decode_block, decode_block_header, decode_block_with,
    decode_index, decode_segment, decode_segment_with, decode_trailer, verify_segment,
    verify_segment_with,
};

const MARKER: &[u8] = b"PLAINTEXT-MARKER-0123456789";

fn key() -> EncryptionKey {
    EncryptionKey::new("orders-key-2024", &[0x42; 32])
}

/// Records whose key, value and a header value all hold the marker, some with null fields.
fn records() -> Vec<Record> {
    (0..60)
        .map(|i| {
            let mut r = rec(i * 3 + 100, 1_700_000_000_000 + i);
            r.value = Some([MARKER, format!(" value {i}").as_bytes()].concat());
            r.key = match i % 7 {
                0 => None,
                _ => Some([b"key-".as_slice(), MARKER].concat()),
            };
            r.headers = vec![header("h", Some(MARKER)), header("null", None)];
            if i % 11 == 0 {
                r.value = None;
            }
            r
        })
        .collect()
}

struct Encoded {
    bytes: Vec<u8>,
    chunks: Vec<Vec<u8>>,
    summary: SegmentSummary,
}

fn encode_encrypted(records: &[Record], codec: Codec, block_bytes: usize) -> Encoded {
    let mut w = SegmentWriter::new(codec, block_bytes).with_encryption(key());
    let mut chunks = vec![w.start()];
    for r in records {
        if let Some(block) = w.push(&r.as_record_ref()).unwrap() {
            chunks.push(block);
        }
    }
    let (tail, summary) = w.finish().unwrap();
    chunks.push(tail);
    Encoded {
        bytes: chunks.concat(),
        chunks,
        summary,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// (position, length) of every block, from the index.
fn blocks(bytes: &[u8]) -> Vec<(usize, usize)> {
    let trailer = decode_trailer(&bytes[bytes.len() - TRAILER_LEN..]).unwrap();
    let index = decode_index(
        &bytes[trailer.index_position as usize..bytes.len() - TRAILER_LEN],
        &trailer,
    )
    .unwrap();
    index
        .iter()
        .map(|e| (e.position as usize, e.length as usize))
        .collect()
}

/// Recomputes a block's CRC after a deliberate change, as someone altering the data would.
fn fix_crc(bytes: &mut [u8], pos: usize, len: usize) {
    let block = &mut bytes[pos..pos + len];
    block[20..24].copy_from_slice(&[0; 4]);
    let crc = crc32c::crc32c(block);
    block[20..24].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn round_trip_every_codec_and_every_reader() {
    let records = records();
    let k = key();
    for codec in CODECS {
        let enc = encode_encrypted(&records, codec, 700);
        assert!(
            enc.summary.blocks >= 3,
            "{codec}: {} blocks",
            enc.summary.blocks
        );
        assert_eq!(enc.summary.records, records.len() as u64);
        // Whole segment in memory.
        assert_eq!(
            decode_segment_with(&enc.bytes, Some(&k)).unwrap(),
            records,
            "{codec}"
        );
        assert_eq!(
            verify_segment_with(&enc.bytes, Some(&k)).unwrap(),
            enc.summary,
            "{codec}"
        );
        // Streamed, in odd chunk sizes.
        for chunk in [1, 7, 4096] {
            let mut reader = SegmentStreamReader::with_key(Some(k.clone()));
            let mut got = Vec::new();
            for c in enc.bytes.chunks(chunk) {
                reader.feed(c).unwrap();
                while let Some(b) = reader.next_block().unwrap() {
                    got.extend(b.records);
                }
            }
            assert_eq!(
                reader.finish().unwrap(),
                enc.summary,
                "{codec} chunk {chunk}"
            );
            assert_eq!(got, records, "{codec} chunk {chunk}");
        }
        // Block by block through the index, as a point-in-time restore reads.
        let trailer = decode_trailer(&enc.bytes[enc.bytes.len() - TRAILER_LEN..]).unwrap();
        let index = decode_index(
            &enc.bytes[trailer.index_position as usize..enc.bytes.len() - TRAILER_LEN],
            &trailer,
        )
        .unwrap();
        let mut got = Vec::new();
        for e in blocks_for(&index, 0, TimeWindow::default()) {
            let b = decode_block_with(
                &enc.bytes[e.range().start as usize..e.range().end as usize],
                Some(&k),
            )
            .unwrap();
            b.check_against(e).unwrap();
            got.extend(b.records);
        }
        assert_eq!(got, records, "{codec}");
        // Every emitted block is flagged, and its payload is nonce || ciphertext || tag.
        for chunk in &enc.chunks[1..enc.chunks.len() - 1] {
            let h = decode_block_header(chunk).unwrap();
            assert_eq!(h.flags, FLAG_ENCRYPTED, "{codec}");
            if h.codec == CodecId::None {
                assert_eq!(h.stored_len, h.raw_len + ENCRYPTION_OVERHEAD as u32);
            }
        }
    }
}

#[test]
fn stored_bytes_never_hold_the_plaintext_and_nonces_never_repeat() {
    let records = records();
    // Without compression the plaintext would be there in the clear...
    let mut w = SegmentWriter::new(Codec::None, 700);
    let mut plain = w.start();
    for r in &records {
        plain.extend(w.push(&r.as_record_ref()).unwrap().unwrap_or_default());
    }
    plain.extend(w.finish().unwrap().0);
    assert!(contains(&plain, MARKER));
    // ...and encrypted it is not, for any codec.
    let mut nonces = std::collections::HashSet::new();
    for codec in CODECS {
        for _ in 0..2 {
            let enc = encode_encrypted(&records, codec, 700);
            assert!(!contains(&enc.bytes, MARKER), "{codec}");
            assert!(!contains(&enc.bytes, b"PLAINTEXT"), "{codec}");
            for (pos, _) in blocks(&enc.bytes) {
                let nonce = &enc.bytes[pos + BLOCK_HEADER_LEN..pos + BLOCK_HEADER_LEN + NONCE_LEN];
                assert!(nonces.insert(nonce.to_vec()), "{codec}: a nonce repeated");
            }
        }
    }
}

#[test]
fn a_reader_without_the_key_refuses_encrypted_blocks_clearly() {
    let enc = encode_encrypted(&records(), Codec::Zstd { level: 3 }, 700);
    let err = decode_segment(&enc.bytes).unwrap_err();
    assert!(
        matches!(&err, FormatError::Block { index: 0, position, error }
            if *position == HEADER_LEN as u64 && matches!(**error, FormatError::Encrypted)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "block 0 at byte 8: block is encrypted (AES-256-GCM) and no key was given to read it"
    );
    assert!(verify_segment(&enc.bytes).is_err());
    let err = decode_block(&enc.chunks[1]).unwrap_err();
    assert!(matches!(err, FormatError::Encrypted), "{err}");
    let mut reader = SegmentStreamReader::new();
    reader.feed(&enc.bytes).unwrap();
    let err = reader.next_block().unwrap_err().to_string();
    assert!(
        err.starts_with("block 0 at byte 8: block is encrypted"),
        "{err}"
    );
}

#[test]
fn a_wrong_key_fails_authentication_naming_the_block_and_key_id() {
    let enc = encode_encrypted(&records(), Codec::Lz4 { level: 1 }, 700);
    let wrong = EncryptionKey::new("orders-key-2024", &[0x43; 32]);
    let err = decode_segment_with(&enc.bytes, Some(&wrong)).unwrap_err();
    assert!(
        matches!(&err, FormatError::Block { index: 0, error, .. } if matches!(**error, FormatError::Decrypt { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "block 0 at byte 8: AES-256-GCM authentication failed with key id 'orders-key-2024'"
        ),
        "{msg}"
    );
    assert!(!msg.contains("4343") && !msg.contains("4242"), "{msg}");
}

#[test]
fn a_flipped_ciphertext_byte_fails_authentication_naming_the_block() {
    let records = records();
    let enc = encode_encrypted(&records, Codec::None, 700);
    let k = key();
    let blocks = blocks(&enc.bytes);
    let (pos, len) = blocks[2];
    let payload = pos + BLOCK_HEADER_LEN;
    // Nonce, ciphertext and tag: each changed byte, with the CRC fixed up, is refused.
    for offset in [
        0,
        NONCE_LEN - 1,
        NONCE_LEN,
        NONCE_LEN + 17,
        len - BLOCK_HEADER_LEN - 1,
    ] {
        let mut bytes = enc.bytes.clone();
        bytes[payload + offset] ^= 0x01;
        // Left as it is, the CRC says the block is damaged...
        let err = decode_segment_with(&bytes, Some(&k))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("block 2 at byte {pos}: block CRC mismatch")),
            "{err}"
        );
        // ...and with the CRC recomputed, authentication does.
        fix_crc(&mut bytes, pos, len);
        let err = decode_segment_with(&bytes, Some(&k)).unwrap_err();
        assert!(
            matches!(&err, FormatError::Block { index: 2, error, .. } if matches!(**error, FormatError::Decrypt { .. })),
            "payload byte {offset}: {err:?}"
        );
        assert!(
            err.to_string().starts_with(&format!(
                "block 2 at byte {pos}: AES-256-GCM authentication failed"
            )),
            "{err}"
        );
        let mut reader = SegmentStreamReader::with_key(Some(k.clone()));
        reader.feed(&bytes).unwrap();
        let streamed = (|| {
            while reader.next_block()?.is_some() {}
            Ok::<(), FormatError>(())
        })();
        assert!(
            streamed
                .unwrap_err()
                .to_string()
                .starts_with(&format!("block 2 at byte {pos}: AES-256-GCM")),
        );
    }
}

#[test]
fn header_fields_are_authenticated_too() {
    let enc = encode_encrypted(&records(), Codec::None, 1 << 20);
    let k = key();
    let (pos, len) = blocks(&enc.bytes)[0];
    let block = &enc.bytes[pos..pos + len].to_vec();
    decode_block_with(block, Some(&k)).unwrap();
    // base_offset, record_count, raw_len and codec, each changed with the CRC recomputed.
    for (at, delta) in [(24usize, 1u8), (8, 1), (12, 1), (4, 2)] {
        let mut b = block.clone();
        b[at] = b[at].wrapping_add(delta);
        let len = b.len();
        fix_crc(&mut b, 0, len);
        let err = decode_block_with(&b, Some(&k)).unwrap_err();
        assert!(
            matches!(err, FormatError::Decrypt { .. }),
            "header byte {at}: {err}"
        );
    }
}

#[test]
fn every_single_byte_change_is_detected() {
    let records = records();
    let k = key();
    for codec in [Codec::None, Codec::Zstd { level: 3 }] {
        let enc = encode_encrypted(&records[..12], codec, 300);
        let mut bytes = enc.bytes.clone();
        for pos in 0..bytes.len() {
            for x in [0x01u8, 0x80, 0xff] {
                bytes[pos] ^= x;
                assert!(
                    decode_segment_with(&bytes, Some(&k)).is_err(),
                    "{codec}: byte {pos} ^ {x:#04x} decoded"
                );
                bytes[pos] ^= x;
            }
        }
    }
}

#[test]
fn a_reader_with_the_key_refuses_unencrypted_blocks() {
    let mut w = SegmentWriter::new(Codec::None, 1 << 20);
    let mut bytes = w.start();
    for r in records() {
        bytes.extend(w.push(&r.as_record_ref()).unwrap().unwrap_or_default());
    }
    bytes.extend(w.finish().unwrap().0);
    let err = decode_segment_with(&bytes, Some(&key()))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "block 0 at byte 8: block is not encrypted, but the backup is (key id 'orders-key-2024'): it was not written with the backup's key"
    );
}

#[test]
fn the_manifest_records_algorithm_key_id_and_key_check_never_the_key() {
    let info = key().info();
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "algorithm": "AES-256-GCM",
            "keyId": "orders-key-2024",
            "keyCheck": kafka_backup_format::key_check(&[0x42; 32]),
        })
    );
    assert!(!json.to_string().contains("4242"));
    // keyCheck as format.md §4 defines it.
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"kafka-backup key check v1\0");
    h.update([0x42u8; 32]);
    let digest = h.finalize();
    assert_eq!(json["keyCheck"], hex::encode(&digest[..16]));
    // A reader of a manifest without algorithm or keyCheck takes AES-256-GCM and no check.
    let read: kafka_backup_format::EncryptionInfo =
        serde_json::from_value(serde_json::json!({"keyId": "k"})).unwrap();
    assert_eq!(read.algorithm, "AES-256-GCM");
    assert_eq!(read.key_check, None);
}
