//! Encoding then decoding gives back exactly the records, for every codec, with every corner of the
//! record encoding; partial reads through the index find the right blocks.

mod common;

use common::{CODECS, Encoded, Rng, encode, header, rec};
use kafka_backup_format::{
    BLOCK_HEADER_LEN, Codec, CodecId, DEFAULT_BLOCK_BYTES, FIRST_BLOCK_BYTES, FormatError,
    HEADER_LEN, IndexEntry, MAX_BLOCK_BYTES, NO_HEADERS, Record, RecordRef, SegmentEntry,
    SegmentWriter, TRAILER_LEN, TimeWindow, TimestampType, blocks_for, blocks_for_range,
    byte_ranges, decode_block, decode_block_header, decode_header, decode_index, decode_segment,
    decode_trailer, verify_segment,
};
use sha2::{Digest, Sha256};

/// Records exercising every corner of the record encoding.
fn corner_cases() -> Vec<Record> {
    let mut records = Vec::new();
    let mut offset = 0i64;
    let mut next = |step: i64| {
        offset += step;
        offset
    };
    let many_headers: Vec<_> = (0..300)
        .map(|i| header(&format!("h{i}"), (i % 3 != 0).then_some(&b"v"[..])))
        .collect();
    let cases = [
        // Null key, null value (tombstone).
        (
            None,
            None,
            vec![],
            TimestampType::CreateTime,
            1_733_050_800_000,
        ),
        // Empty (non-null) key and value.
        (
            Some(vec![]),
            Some(vec![]),
            vec![],
            TimestampType::LogAppendTime,
            0,
        ),
        // Headers with null values, empty names, duplicate names.
        (
            Some(b"k".to_vec()),
            Some(b"v".to_vec()),
            vec![
                header("a", None),
                header("", Some(b"empty name")),
                header("dup", Some(b"1")),
                header("dup", Some(b"2")),
                header("dup", None),
                header("", None),
                header("unicode ✓", Some(b"")),
            ],
            TimestampType::NotAvailable,
            -1,
        ),
        (
            None,
            Some(vec![7; 1000]),
            many_headers,
            TimestampType::CreateTime,
            i64::MAX,
        ),
        (
            Some(vec![0xff; 63]),
            Some(vec![0; 64]),
            vec![],
            TimestampType::CreateTime,
            i64::MIN,
        ),
        (
            Some(vec![1; 127]),
            Some(vec![2; 128]),
            vec![],
            TimestampType::CreateTime,
            -2,
        ),
        (
            Some(vec![1; 8191]),
            Some(vec![2; 8192]),
            vec![],
            TimestampType::LogAppendTime,
            63,
        ),
        (
            None,
            None,
            vec![header("x", Some(&[0; 16384]))],
            TimestampType::CreateTime,
            -64,
        ),
        (None, None, vec![], TimestampType::CreateTime, -65),
        (None, None, vec![], TimestampType::NotAvailable, 64),
    ];
    let steps = [0, 1, 1, 5, 1000, 1, 1 << 31, 1 << 40, 1, 127];
    for ((key, value, headers, timestamp_type, timestamp), step) in cases.into_iter().zip(steps) {
        records.push(Record {
            offset: next(step),
            timestamp,
            timestamp_type,
            key,
            value,
            headers,
        });
    }
    records
}

fn assert_round_trip(records: &[Record], codec: Codec, block_bytes: usize) -> Encoded {
    let enc = encode(records, codec, block_bytes);
    let decoded = decode_segment(&enc.bytes)
        .unwrap_or_else(|e| panic!("{codec} block_bytes {block_bytes}: {e}"));
    assert_eq!(decoded, records, "{codec} block_bytes {block_bytes}");
    let summary = verify_segment(&enc.bytes).unwrap();
    assert_eq!(
        summary, enc.summary,
        "verify_segment agrees with the writer"
    );
    assert!(SegmentEntry::new("p", &summary).matches(&enc.summary));
    enc
}

#[test]
fn corner_cases_round_trip_with_every_codec() {
    let records = corner_cases();
    for codec in CODECS {
        for block_bytes in [1, 100, 10_000, 1 << 20] {
            let enc = assert_round_trip(&records, codec, block_bytes);
            if block_bytes == 1 {
                assert_eq!(enc.summary.blocks as usize, records.len());
            }
        }
    }
}

#[test]
fn offsets_near_the_top_of_i64() {
    let records = vec![
        rec(0, 5),
        rec(1, 5),
        rec(i64::MAX - 1, -1),
        rec(i64::MAX, 0),
    ];
    for codec in CODECS {
        assert_round_trip(&records, codec, 1 << 20);
    }
    // One block with a delta of i64::MAX.
    let records = vec![rec(0, 0), rec(i64::MAX, 0)];
    let enc = assert_round_trip(&records, Codec::None, 1 << 20);
    assert_eq!(enc.summary.blocks, 1);
}

#[test]
fn ten_thousand_records_across_many_blocks() {
    let mut rng = Rng(42);
    let mut offset = 100;
    let records: Vec<Record> = (0..10_000)
        .map(|i| {
            offset += 1 + (rng.below(10) == 0) as i64 * rng.below(50) as i64;
            let mut r = rec(offset, 1_700_000_000_000 + rng.below(1_000_000) as i64);
            if i % 7 == 0 {
                let len = rng.below(2000) as usize;
                r.value = Some(rng.bytes(len));
            }
            if i % 11 == 0 {
                r.headers = vec![header("trace", Some(&rng.bytes(16))), header("n", None)];
            }
            r
        })
        .collect();
    for codec in CODECS {
        let enc = assert_round_trip(&records, codec, 64 << 10);
        assert!(
            enc.summary.blocks > 10,
            "{codec}: {} blocks",
            enc.summary.blocks
        );
        assert_eq!(enc.summary.records, 10_000);
        assert_eq!(enc.summary.first_offset, records[0].offset);
        assert_eq!(enc.summary.last_offset, records[9_999].offset);
        let min = records.iter().map(|r| r.timestamp).min().unwrap();
        let max = records.iter().map(|r| r.timestamp).max().unwrap();
        assert_eq!(
            (enc.summary.min_timestamp, enc.summary.max_timestamp),
            (min, max)
        );
    }
}

#[test]
fn blocks_respect_block_bytes_and_large_records_stand_alone() {
    let block_bytes = 4096;
    let mut records: Vec<Record> = (0..200).map(|i| rec(i, i)).collect();
    // Records larger than block_bytes, between small ones and back to back.
    for (i, len) in [
        (50usize, 10_000usize),
        (51, 5_000),
        (120, 4096),
        (199, 100_000),
    ] {
        records[i].value = Some(vec![i as u8; len]);
    }
    for codec in CODECS {
        let enc = assert_round_trip(&records, codec, block_bytes);
        for e in &enc.index() {
            let block = enc.block(e);
            if block.records.len() > 1 {
                assert!(
                    block.raw_len as usize <= block_bytes,
                    "{codec}: multi-record block of {} bytes",
                    block.raw_len
                );
            }
            for r in &block.records {
                if r.value.as_ref().is_some_and(|v| v.len() >= block_bytes) {
                    assert_eq!(
                        block.records.len(),
                        1,
                        "{codec}: a large record shares its block"
                    );
                }
            }
        }
    }
}

#[test]
fn blocks_grow_from_the_first_block_size_to_block_bytes_and_halve_at_the_end() {
    // About 3 MiB of ~1 KiB records: the ramp 16, 32, ... 512 KiB, then 1 MiB blocks, then what
    // is left in halves.
    let mut rng = Rng(7);
    let records: Vec<Record> = (0..3000)
        .map(|i| {
            let mut r = rec(i, i);
            r.value = Some((0..1000).map(|_| rng.below(256) as u8).collect());
            r
        })
        .collect();
    let enc = assert_round_trip(&records, Codec::None, DEFAULT_BLOCK_BYTES);
    let raw: Vec<usize> = enc
        .index()
        .iter()
        .map(|e| enc.block(e).raw_len as usize)
        .collect();
    // The chunks between the header and the last are the blocks push() closed; the last chunk
    // holds the blocks finish() closed, then the index and the trailer.
    let pushed = enc.chunks.len() - 2;
    let mut limit = FIRST_BLOCK_BYTES;
    for (i, &len) in raw[..pushed].iter().enumerate() {
        assert!(
            len <= limit,
            "block {i} holds {len} bytes, over {limit}: {raw:?}"
        );
        // Closed within one record of its limit.
        assert!(
            len + 1100 > limit,
            "block {i} closed early at {len} of {limit}: {raw:?}"
        );
        limit = (limit * 2).min(DEFAULT_BLOCK_BYTES);
    }
    // 16 KiB doubled six times is 1 MiB: the seventh block is the first full-size one.
    assert!(pushed >= 7, "{raw:?}");
    assert!(raw[6] + 1100 > DEFAULT_BLOCK_BYTES, "{raw:?}");
    // The tail: each block holds half of what is left, within a record, until half would be
    // under the first block's size; the last holds the rest.
    let tail = &raw[pushed..];
    assert!(tail.len() >= 3, "{raw:?}");
    for (i, &len) in tail.iter().enumerate() {
        let left: usize = tail[i..].iter().sum();
        if i + 1 < tail.len() {
            assert!(left / 2 >= FIRST_BLOCK_BYTES, "{tail:?}");
            assert!(len >= left / 2 && len < left / 2 + 1100, "{tail:?}");
        } else {
            assert!(left < 2 * FIRST_BLOCK_BYTES + 1100, "{tail:?}");
        }
    }
}

#[test]
fn the_tail_of_a_small_segment_halves_and_keeps_every_record() {
    // 100 KiB of small records with timestamps out of order: one open block at finish, split
    // into halves; every codec round-trips them, with index entries that cover every offset.
    let records: Vec<Record> = (0..1000)
        .map(|i| {
            let mut r = rec(i * 3, (i * 7919) % 1000);
            r.value = Some(vec![b'v'; 90]);
            r
        })
        .collect();
    for codec in CODECS {
        let enc = assert_round_trip(&records, codec, DEFAULT_BLOCK_BYTES);
        let index = enc.index();
        let raw: Vec<usize> = index
            .iter()
            .map(|e| enc.block(e).raw_len as usize)
            .collect();
        // The ramp closed 16, 32 KiB blocks; the rest (about 52 KiB) halves into 26 + 26.
        assert!(raw.len() >= 4, "{codec:?}: {raw:?}");
        assert!(
            *raw.last().expect("blocks") < 2 * FIRST_BLOCK_BYTES,
            "{raw:?}"
        );
        let mut next = 0;
        for e in &index {
            assert_eq!(e.first_offset, next * 3, "{codec:?}");
            next += i64::from(e.record_count);
        }
        assert_eq!(next, 1000);
    }
}

#[test]
fn every_chunk_is_a_block_and_the_summary_hashes_all_emitted_bytes() {
    let records: Vec<Record> = (0..500).map(|i| rec(i * 2, 1000 - i)).collect();
    for codec in CODECS {
        let enc = encode(&records, codec, 2000);
        assert_eq!(enc.summary.size, enc.bytes.len() as u64);
        assert_eq!(enc.summary.sha256, hex::encode(Sha256::digest(&enc.bytes)));
        assert_eq!(enc.summary.sha256.len(), 64);
        assert!(
            enc.summary
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // First chunk is the header; the middle ones are whole blocks.
        assert_eq!(enc.chunks[0].len(), HEADER_LEN);
        decode_header(&enc.chunks[0]).unwrap();
        for chunk in &enc.chunks[1..enc.chunks.len() - 1] {
            decode_block(chunk).unwrap();
        }
        let raw: u64 = enc.chunks[1..enc.chunks.len() - 1]
            .iter()
            .map(|c| u64::from(decode_block_header(c).unwrap().raw_len))
            .sum::<u64>();
        assert!(raw <= enc.summary.raw_bytes);
    }
}

#[test]
fn flush_block_closes_the_open_block() {
    let mut w = SegmentWriter::new(Codec::Zstd { level: 3 }, 1 << 20);
    let mut bytes = w.start();
    assert!(w.flush_block().unwrap().is_none(), "nothing to flush yet");
    for i in 0..10 {
        assert!(w.push(&rec(i, i).as_record_ref()).unwrap().is_none());
    }
    assert!(w.buffered_bytes() > 0);
    let block = w.flush_block().unwrap().expect("a block");
    assert_eq!(w.buffered_bytes(), 0);
    assert_eq!(decode_block(&block).unwrap().records.len(), 10);
    bytes.extend(block);
    assert!(w.flush_block().unwrap().is_none());
    assert_eq!(w.emitted_bytes(), bytes.len() as u64);
    for i in 10..15 {
        assert!(w.push(&rec(i, i).as_record_ref()).unwrap().is_none());
    }
    let (tail, summary) = w.finish().unwrap();
    bytes.extend(tail);
    assert_eq!(summary.blocks, 2);
    assert_eq!(decode_segment(&bytes).unwrap().len(), 15);
}

#[test]
fn writer_refuses_misuse() {
    let r0 = rec(5, 0);
    let mut w = SegmentWriter::new(Codec::None, 100);
    assert!(matches!(
        w.push(&r0.as_record_ref()),
        Err(FormatError::WriterUsage(_))
    ));
    w.start();
    assert!(w.start().is_empty(), "the header is returned once");
    w.push(&r0.as_record_ref()).unwrap();
    for offset in [5, 4, 0] {
        let err = w.push(&rec(offset, 0).as_record_ref()).unwrap_err();
        assert!(
            matches!(err, FormatError::OffsetOrder { previous: 5, .. }),
            "{err}"
        );
    }
    let mut w = SegmentWriter::new(Codec::None, 100);
    w.start();
    assert!(matches!(
        w.push(&rec(-1, 0).as_record_ref()),
        Err(FormatError::NegativeOffset(-1))
    ));
    let err = w.finish().unwrap_err().to_string();
    assert!(err.contains("at least one"), "{err}");

    let mut w = SegmentWriter::new(Codec::Zstd { level: 23 }, 100);
    w.start();
    let err = w.push(&r0.as_record_ref()).unwrap_err().to_string();
    assert!(err.contains("23") && err.contains("1..=22"), "{err}");

    // A record that cannot fit any block.
    let huge = vec![0u8; MAX_BLOCK_BYTES];
    let mut w = SegmentWriter::new(Codec::None, 100);
    w.start();
    let r = RecordRef {
        offset: 0,
        timestamp: 0,
        timestamp_type: TimestampType::CreateTime,
        key: None,
        value: Some(&huge),
        headers: NO_HEADERS,
    };
    assert!(matches!(
        w.push(&r),
        Err(FormatError::RecordTooLarge { offset: 0, .. })
    ));
}

#[test]
fn borrowed_headers_encode_like_owned_ones() {
    let value = b"payload".as_slice();
    let hs: [(&str, Option<&[u8]>); 3] = [("a", Some(b"1")), ("a", None), ("", Some(b""))];
    let borrowed = RecordRef {
        offset: 3,
        timestamp: 9,
        timestamp_type: TimestampType::LogAppendTime,
        key: None,
        value: Some(value),
        headers: &hs,
    };
    let mut w = SegmentWriter::new(Codec::Lz4 { level: 3 }, 1 << 20);
    let mut bytes = w.start();
    w.push(&borrowed).unwrap();
    let slice: &[(&str, Option<&[u8]>)] = &hs;
    w.push(&RecordRef {
        offset: 4,
        headers: &slice,
        ..borrowed
    })
    .unwrap();
    let (tail, _) = w.finish().unwrap();
    bytes.extend(tail);
    let decoded = decode_segment(&bytes).unwrap();
    let expected_headers = vec![
        header("a", Some(b"1")),
        header("a", None),
        header("", Some(b"")),
    ];
    assert_eq!(decoded[0].headers, expected_headers);
    assert_eq!(decoded[1].headers, expected_headers);
    assert_eq!(decoded[1].value.as_deref(), Some(value));
    assert_eq!(decoded[0].key, None);
}

#[test]
fn incompressible_blocks_are_stored_uncompressed() {
    let mut rng = Rng(7);
    let records: Vec<Record> = (0..20)
        .map(|i| Record {
            value: Some(rng.bytes(3000)),
            ..rec(i, i)
        })
        .collect();
    for codec in [Codec::Zstd { level: 3 }, Codec::Lz4 { level: 1 }] {
        let enc = assert_round_trip(&records, codec, 10_000);
        for chunk in &enc.chunks[1..enc.chunks.len() - 1] {
            let h = decode_block_header(chunk).unwrap();
            assert_eq!(h.codec, CodecId::None, "{codec}");
            assert_eq!(h.raw_len, h.stored_len);
        }
    }
    // Compressible data is compressed.
    let records: Vec<Record> = (0..200).map(|i| rec(i, i)).collect();
    let enc = encode(&records, Codec::Zstd { level: 3 }, 1 << 20);
    assert_eq!(
        decode_block_header(&enc.chunks[1]).unwrap().codec,
        CodecId::Zstd
    );
    let enc = encode(&records, Codec::Lz4 { level: 12 }, 1 << 20);
    assert_eq!(
        decode_block_header(&enc.chunks[1]).unwrap().codec,
        CodecId::Lz4
    );
}

/// Reads a segment the way a point-in-time restore does: trailer, index, then chosen blocks only.
fn partial_read(
    bytes: &[u8],
    min_offset: i64,
    window: TimeWindow,
) -> (Vec<IndexEntry>, Vec<Record>) {
    let size = bytes.len();
    let trailer = decode_trailer(&bytes[size - TRAILER_LEN..]).unwrap();
    let range = trailer.index_range(size as u64).unwrap();
    let index = decode_index(&bytes[range.start as usize..range.end as usize], &trailer).unwrap();
    let chosen: Vec<IndexEntry> = blocks_for(&index, min_offset, window)
        .into_iter()
        .copied()
        .collect();
    let mut records = Vec::new();
    for e in &chosen {
        let r = e.range();
        let block = decode_block(&bytes[r.start as usize..r.end as usize]).unwrap();
        block.check_against(e).unwrap();
        records.extend(block.records);
    }
    (chosen, records)
}

#[test]
fn blocks_for_matches_brute_force_with_out_of_order_timestamps() {
    let mut rng = Rng(99);
    // Timestamps jump around: producers set them, so they are not monotonic.
    let records: Vec<Record> = (0..3000)
        .map(|i| {
            rec(
                i * 3,
                1_000_000 + rng.below(100_000) as i64 - if i % 97 == 0 { 500_000 } else { 0 },
            )
        })
        .collect();
    let enc = encode(&records, Codec::Zstd { level: 1 }, 4096);
    let all = decode_segment(&enc.bytes).unwrap();
    let trailer = decode_trailer(&enc.bytes[enc.bytes.len() - TRAILER_LEN..]).unwrap();
    let index = decode_index(
        &enc.bytes[trailer.index_position as usize..enc.bytes.len() - TRAILER_LEN],
        &trailer,
    )
    .unwrap();
    assert!(index.len() > 20);
    for _ in 0..200 {
        let min_offset = rng.below(9500) as i64 - 100;
        let to = (rng.below(4) != 0).then(|| 400_000 + rng.below(800_000) as i64);
        let from = (rng.below(3) == 0).then(|| 400_000 + rng.below(800_000) as i64);
        let window = TimeWindow { from, to };
        let (chosen, got) = partial_read(&enc.bytes, min_offset, window);
        let wanted = |r: &Record| r.offset >= min_offset && window.contains(r.timestamp);
        // Brute force: the blocks holding any record that satisfies both bounds must be chosen.
        let holds_wanted = |e: &IndexEntry| {
            all.iter()
                .filter(|r| r.offset >= e.first_offset && r.offset <= e.last_offset)
                .any(&wanted)
        };
        let needed: Vec<IndexEntry> = index.iter().filter(|e| holds_wanted(e)).copied().collect();
        assert!(
            needed.iter().all(|e| chosen.contains(e)),
            "min_offset {min_offset} window {window:?}"
        );
        // The index keeps only the minimum and maximum timestamps of a block, so a block whose
        // early record (below min_offset) is the only one in the window is chosen too; nothing
        // else is.
        for e in &chosen {
            assert!(
                e.last_offset >= min_offset && !window.misses(e.min_timestamp, e.max_timestamp)
            );
        }
        // With no offset bound and one end of the window open, the choice is exact: the blocks
        // holding any record in the window. With both ends it may also take a block whose
        // timestamps surround the window without any falling in it.
        let ts_only: Vec<IndexEntry> = blocks_for(&index, i64::MIN, window)
            .into_iter()
            .copied()
            .collect();
        let brute: Vec<IndexEntry> = index
            .iter()
            .filter(|e| {
                all.iter()
                    .filter(|r| r.offset >= e.first_offset && r.offset <= e.last_offset)
                    .any(|r| window.contains(r.timestamp))
            })
            .copied()
            .collect();
        if from.is_none() || to.is_none() {
            assert_eq!(ts_only, brute, "window {window:?}");
        } else {
            assert!(
                brute.iter().all(|e| ts_only.contains(e)),
                "window {window:?}"
            );
        }
        let expected: Vec<&Record> = all.iter().filter(|r| wanted(r)).collect();
        let filtered: Vec<&Record> = got.iter().filter(|r| wanted(r)).collect();
        assert_eq!(filtered, expected);
    }
    // Ranges bounded above, and byte-range merging.
    let some = blocks_for_range(&index, 3000, 3100, TimeWindow::default());
    assert!(!some.is_empty());
    assert!(
        some.iter()
            .all(|e| e.last_offset >= 3000 && e.first_offset <= 3100)
    );
    let all_blocks = blocks_for(&index, i64::MIN, TimeWindow::default());
    assert_eq!(all_blocks.len(), index.len());
    let ranges = byte_ranges(&all_blocks);
    assert_eq!(ranges, vec![HEADER_LEN as u64..trailer.index_position]);
    let alternate: Vec<&IndexEntry> = index.iter().step_by(2).collect();
    assert_eq!(byte_ranges(&alternate).len(), alternate.len());
    assert!(blocks_for(&index, i64::MAX, TimeWindow::default()).is_empty());
    assert!(blocks_for(&index, 0, TimeWindow::until(Some(i64::MIN))).is_empty());
    let future = TimeWindow {
        from: Some(i64::MAX),
        to: None,
    };
    assert!(blocks_for(&index, 0, future).is_empty());
}

#[test]
fn a_window_covers_misses_or_straddles_a_range() {
    let w = TimeWindow {
        from: Some(10),
        to: Some(20),
    };
    assert!(w.contains(10) && w.contains(20) && !w.contains(9) && !w.contains(21));
    assert!(w.covers(10, 20) && w.covers(12, 15));
    assert!(!w.covers(9, 15) && !w.covers(15, 21));
    assert!(w.misses(0, 9) && w.misses(21, 30) && w.misses(-1, -1));
    assert!(!w.misses(0, 10) && !w.misses(20, 30) && !w.misses(0, 30));
    let all = TimeWindow::default();
    assert!(all.is_all() && all.covers(-1, i64::MAX) && !all.misses(i64::MIN, i64::MAX));
    let until = TimeWindow::until(Some(5));
    assert!(until.covers(-1, 5) && until.misses(6, 9) && !until.misses(-1, 6));
    let since = TimeWindow {
        from: Some(5),
        to: None,
    };
    assert!(since.covers(5, i64::MAX) && since.misses(-1, 4) && !since.misses(4, 5));
    // As messages show it, and as a restore records it.
    assert_eq!(
        [all, until, since, w].map(|w| w.to_string()),
        [
            "every record",
            "timestamp <= 5",
            "timestamp >= 5",
            "10 <= timestamp <= 20"
        ]
    );
    assert_eq!(
        serde_json::to_string(&w).unwrap(),
        r#"{"fromMillis":10,"toMillis":20}"#
    );
    assert_eq!(
        serde_json::to_string(&since).unwrap(),
        r#"{"fromMillis":5}"#
    );
    assert_eq!(serde_json::from_str::<TimeWindow>("{}").unwrap(), all);
}

#[test]
fn block_positions_in_index_are_the_emitted_positions() {
    let records: Vec<Record> = (0..300).map(|i| rec(i, i)).collect();
    let enc = encode(&records, Codec::Lz4 { level: 1 }, 1000);
    let trailer = decode_trailer(&enc.bytes[enc.bytes.len() - TRAILER_LEN..]).unwrap();
    let index = decode_index(
        &enc.bytes[trailer.index_position as usize..enc.bytes.len() - TRAILER_LEN],
        &trailer,
    )
    .unwrap();
    let mut pos = HEADER_LEN as u64;
    let blocks = &enc.chunks[1..enc.chunks.len() - 1];
    // The tail holds the last block, then index and trailer.
    let tail_block = decode_block_header(&enc.chunks[enc.chunks.len() - 1]).unwrap();
    assert_eq!(index.len(), blocks.len() + 1);
    for (e, chunk) in index.iter().zip(blocks) {
        assert_eq!(e.position, pos);
        assert_eq!(e.length as usize, chunk.len());
        assert!(e.length as usize > BLOCK_HEADER_LEN);
        pos += chunk.len() as u64;
    }
    assert_eq!(index.last().unwrap().position, pos);
    assert_eq!(
        u64::from(index.last().unwrap().length),
        tail_block.block_len()
    );
}

#[test]
fn the_stream_reader_agrees_with_the_writer() {
    let records: Vec<Record> = (0..2000).map(|i| rec(i * 5, i % 17)).collect();
    for codec in CODECS {
        let enc = encode(&records, codec, 3000);
        for chunk in [1, 13, 4096, 1 << 20] {
            let mut reader = kafka_backup_format::SegmentStreamReader::new();
            let mut got = Vec::new();
            for c in enc.bytes.chunks(chunk) {
                reader.feed(c).unwrap();
                while let Some(block) = reader.next_block().unwrap() {
                    got.extend(block.records);
                }
            }
            assert_eq!(
                reader.finish().unwrap(),
                enc.summary,
                "{codec} chunk {chunk}"
            );
            assert_eq!(got, records);
        }
    }
}
