//! Corrupt and hostile input: every single-byte change and every truncation of a segment is an
//! error (never a panic, never different records), and lengths are checked before allocating.

mod common;

use common::{CODECS, encode, header, rec};
use kafka_backup_format::{
    BLOCK_HEADER_LEN, BlockHeader, CodecId, FLAG_ENCRYPTED, FormatError, HEADER_LEN,
    MAX_BLOCK_BYTES, Record, TRAILER_LEN, Trailer, block_crc, decode_block, decode_block_header,
    decode_header, decode_index, decode_segment, decode_trailer,
};

/// A small segment of a few blocks with keys, values and headers.
fn small_segment_records() -> Vec<Record> {
    let mut records: Vec<Record> = (0..6).map(|i| rec(i * 2 + 10, 1000 - i * 100)).collect();
    records[1].headers = vec![header("h", Some(b"v")), header("", None)];
    records[2].key = None;
    records[3].value = None;
    records
}

#[test]
fn every_single_byte_change_is_detected() {
    let records = small_segment_records();
    for codec in CODECS {
        let enc = encode(&records, codec, 120);
        assert!(enc.summary.blocks >= 2, "{codec}");
        assert_eq!(decode_segment(&enc.bytes).unwrap(), records);
        // Every value at every position of the structure (headers, index, trailer); payloads are
        // covered by CRC-32C, which detects any error within 32 bits, so single-bit flips and a
        // complement show it there.
        let trailer = decode_trailer(&enc.bytes[enc.bytes.len() - TRAILER_LEN..]).unwrap();
        let index = decode_index(
            &enc.bytes[trailer.index_position as usize..enc.bytes.len() - TRAILER_LEN],
            &trailer,
        )
        .unwrap();
        let structural = |pos: usize| {
            pos < HEADER_LEN
                || pos >= trailer.index_position as usize
                || index.iter().any(|e| {
                    (e.position as usize..e.position as usize + BLOCK_HEADER_LEN).contains(&pos)
                })
        };
        let all_values: Vec<u8> = (1..=255).collect();
        let some_values: Vec<u8> = vec![1, 2, 4, 8, 16, 32, 64, 128, 0xff, 0x55];
        let mut bytes = enc.bytes.clone();
        for pos in 0..bytes.len() {
            let original = bytes[pos];
            let values = if structural(pos) {
                &all_values
            } else {
                &some_values
            };
            for &x in values {
                bytes[pos] = original ^ x;
                if let Ok(got) = decode_segment(&bytes) {
                    panic!(
                        "{codec}: byte {pos} changed from {original:#04x} to {:#04x} decoded Ok ({} records, same: {})",
                        bytes[pos],
                        got.len(),
                        got == records
                    );
                }
            }
            bytes[pos] = original;
        }
    }
}

#[test]
fn every_truncation_and_extension_is_detected() {
    let records = small_segment_records();
    for codec in CODECS {
        let enc = encode(&records, codec, 120);
        for len in 0..enc.bytes.len() {
            assert!(
                decode_segment(&enc.bytes[..len]).is_err(),
                "{codec}: truncated to {len}"
            );
            // Also with the prefix cut off instead.
            assert!(
                decode_segment(&enc.bytes[enc.bytes.len() - len..]).is_err(),
                "{codec}: suffix {len}"
            );
        }
        let mut longer = enc.bytes.clone();
        longer.push(0);
        assert!(decode_segment(&longer).is_err());
        let mut longer = vec![0];
        longer.extend(&enc.bytes);
        assert!(decode_segment(&longer).is_err());
    }
}

#[test]
fn a_crc_error_names_the_block_and_its_position() {
    let records: Vec<Record> = (0..100).map(|i| rec(i, i)).collect();
    let enc = encode(&records, kafka_backup_format::Codec::None, 500);
    let mut bytes = enc.bytes.clone();
    // The payload of the third block.
    let third: usize = enc.chunks[..3].iter().map(Vec::len).sum();
    bytes[third + BLOCK_HEADER_LEN + 3] ^= 1;
    let err = decode_segment(&bytes).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "block 2 at byte {third}: block CRC mismatch (stored 0x"
        )),
        "{err}"
    );
    assert!(err.contains("computed 0x"), "{err}");
}

#[test]
fn wrong_magic_and_versions_have_clear_errors() {
    let enc = encode(
        &small_segment_records(),
        kafka_backup_format::Codec::None,
        1 << 20,
    );
    let mut bytes = enc.bytes.clone();
    bytes[0..4].copy_from_slice(b"PK\x03\x04");
    let err = decode_segment(&bytes).unwrap_err().to_string();
    assert!(
        err.contains("not a kafka-backup segment") && err.contains("KBS1"),
        "{err}"
    );

    let mut bytes = enc.bytes.clone();
    bytes[4] = 2;
    let err = decode_segment(&bytes).unwrap_err();
    assert!(
        matches!(err, FormatError::UnsupportedVersion { version: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("version 2 is not supported"),
        "{err}"
    );

    let mut bytes = enc.bytes.clone();
    let n = bytes.len();
    bytes[n - TRAILER_LEN + 24] = 7;
    let err = decode_segment(&bytes).unwrap_err().to_string();
    assert!(err.contains("trailer version 7"), "{err}");

    let mut bytes = enc.bytes.clone();
    bytes[n - 1] = b'X';
    let err = decode_segment(&bytes).unwrap_err().to_string();
    assert!(err.contains("KBSE"), "{err}");

    assert!(decode_header(b"KBS1").is_err());
    assert!(decode_header(b"KBS1\x01\x00\x00\x00").is_ok());
    assert!(decode_header(b"KBS1\x01\x00\x01\x00").is_err());
    assert!(matches!(
        decode_trailer(&[0; 31]),
        Err(FormatError::Truncated { .. })
    ));
    assert!(matches!(
        decode_trailer(&[0; 33]),
        Err(FormatError::Truncated { .. })
    ));
}

fn block_bytes(header: BlockHeader, payload: &[u8]) -> Vec<u8> {
    let mut b = header.encode().to_vec();
    b.extend_from_slice(payload);
    b
}

fn plain_header(record_count: u32, raw_len: u32, stored_len: u32) -> BlockHeader {
    BlockHeader {
        codec: CodecId::None,
        flags: 0,
        record_count,
        raw_len,
        stored_len,
        crc: 0,
        base_offset: 0,
    }
}

#[test]
fn hostile_block_headers_are_rejected_before_allocating() {
    // raw_len of 4 GiB - 1 with a tiny payload: rejected by the limit, not by an allocation.
    let h = plain_header(1, u32::MAX, 6);
    let err = decode_block(&block_bytes(h, &[0; 6])).unwrap_err();
    assert!(
        matches!(
            err,
            FormatError::LimitExceeded {
                what: "block raw_len",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("268435456"), "{err}");
    let h = plain_header(1, 6, u32::MAX);
    assert!(matches!(
        decode_block_header(&h.encode()),
        Err(FormatError::LimitExceeded {
            what: "block stored_len",
            ..
        })
    ));
    // Just within the limit, but the payload is not there: truncation, no allocation.
    let limit = MAX_BLOCK_BYTES as u32;
    let h = BlockHeader {
        codec: CodecId::Zstd,
        ..plain_header(1, limit, limit)
    };
    assert!(matches!(
        decode_block(&block_bytes(h, &[0; 10])),
        Err(FormatError::Truncated { .. })
    ));
    // A huge record count.
    let h = plain_header(u32::MAX, 100, 100);
    let err = decode_block(&block_bytes(h, &[0; 100])).unwrap_err();
    assert!(matches!(err, FormatError::LimitExceeded { .. }), "{err}");
    let h = plain_header(0, 100, 100);
    assert!(decode_block(&block_bytes(h, &[0; 100])).is_err());
    // A record count the bytes cannot hold, with a valid CRC: a parse error, not an allocation.
    let payload = [0u8; 100];
    let mut h = plain_header(100, 100, 100);
    h.crc = block_crc(&h, &payload);
    let err = decode_block(&block_bytes(h, &payload))
        .unwrap_err()
        .to_string();
    assert!(err.contains("record 1"), "{err}");
}

#[test]
fn hostile_lengths_inside_records_are_rejected() {
    // One record claiming a key of 2^62 bytes and 2^62 headers, with a valid CRC.
    let mut payload = vec![0u8, 0, 0]; // delta, timestamp, type
    payload.extend([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]); // key len (zig-zag)
    let mut h = plain_header(1, payload.len() as u32, payload.len() as u32);
    h.crc = block_crc(&h, &payload);
    let err = decode_block(&block_bytes(h, &payload))
        .unwrap_err()
        .to_string();
    assert!(err.contains("key") && err.contains("runs past"), "{err}");

    let mut payload = vec![0u8, 0, 0, 1, 1]; // null key, null value
    payload.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]); // header count 2^62
    let mut h = plain_header(1, payload.len() as u32, payload.len() as u32);
    h.crc = block_crc(&h, &payload);
    let err = decode_block(&block_bytes(h, &payload))
        .unwrap_err()
        .to_string();
    assert!(err.contains("header 0"), "{err}");
}

#[test]
fn encrypted_and_unknown_flags_are_refused() {
    let enc = encode(
        &small_segment_records(),
        kafka_backup_format::Codec::None,
        1 << 20,
    );
    let block = &enc.bytes[HEADER_LEN..enc.bytes.len() - TRAILER_LEN - 48];
    decode_block(block).unwrap();
    let mut b = block.to_vec();
    // The CRC covers the header, so each altered header gets its CRC recomputed: the flags
    // themselves must be refused, not the checksum.
    let with_flags = |b: &mut Vec<u8>, flags: u8| {
        b[5] = flags;
        b[20..24].copy_from_slice(&[0; 4]);
        let crc = crc32c::crc32c(b);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
    };
    with_flags(&mut b, FLAG_ENCRYPTED);
    let err = decode_block(&b).unwrap_err();
    assert!(matches!(err, FormatError::Encrypted));
    assert!(err.to_string().contains("no key was given"), "{err}");
    for flag in [2u8, 4, 0x80, 0x81] {
        with_flags(&mut b, flag);
        let err = decode_block(&b).unwrap_err().to_string();
        assert!(err.contains("unknown flag bits"), "{err}");
    }
    b[5] = 0;
    b[4] = 3;
    let err = decode_block(&b).unwrap_err().to_string();
    assert!(err.contains("unknown codec 3"), "{err}");
}

#[test]
fn hostile_trailers_and_indexes() {
    let t = Trailer {
        index_position: u64::MAX,
        block_count: u32::MAX,
        index_crc: 0,
        record_count: u64::MAX,
        version: 1,
    };
    // Overflowing positions are errors, not panics.
    assert!(t.index_range(100).is_err());
    assert!(decode_index(&[], &t).is_err());
    let t = Trailer {
        index_position: 40,
        block_count: 1,
        index_crc: crc32c::crc32c(&[0; 48]),
        record_count: 1,
        version: 1,
    };
    let err = decode_index(&[0; 48], &t).unwrap_err().to_string();
    assert!(err.contains("index entry 0"), "{err}");
    let mut bytes = b"KBS1\x01\x00\x00\x00".to_vec();
    bytes.extend([0u8; 24]);
    bytes.extend(&[0u8; 28]);
    bytes.extend(b"KBSE");
    assert!(decode_segment(&bytes).is_err());
}

/// Feeds `bytes` to a stream reader in chunks of `chunk`; the records, or the first error.
fn stream_decode(bytes: &[u8], chunk: usize) -> Result<Vec<Record>, FormatError> {
    let mut reader = kafka_backup_format::SegmentStreamReader::new();
    let mut records = Vec::new();
    for c in bytes.chunks(chunk) {
        reader.feed(c)?;
        while let Some(block) = reader.next_block()? {
            records.extend(block.records);
        }
    }
    let summary = reader.finish()?;
    assert_eq!(summary.records, records.len() as u64);
    Ok(records)
}

#[test]
fn the_stream_reader_detects_every_change_too() {
    let records = small_segment_records();
    for codec in CODECS {
        let enc = encode(&records, codec, 120);
        for chunk in [1, 7, 64, 100_000] {
            assert_eq!(stream_decode(&enc.bytes, chunk).unwrap(), records);
        }
        let mut bytes = enc.bytes.clone();
        for pos in 0..bytes.len() {
            let original = bytes[pos];
            for x in [1u8, 2, 3, 4, 8, 16, 32, 64, 128, 0xff] {
                bytes[pos] = original ^ x;
                assert!(
                    stream_decode(&bytes, 50).is_err(),
                    "{codec}: byte {pos} ^ {x:#04x}"
                );
            }
            bytes[pos] = original;
        }
        for len in 0..bytes.len() {
            assert!(
                stream_decode(&bytes[..len], 50).is_err(),
                "{codec}: truncated to {len}"
            );
        }
        // Garbage after the trailer is bounded and refused.
        let mut longer = bytes.clone();
        longer.extend(vec![0u8; 10_000]);
        let err = stream_decode(&longer, 4096).unwrap_err().to_string();
        assert!(err.contains("too many for their index"), "{err}");
    }
}
