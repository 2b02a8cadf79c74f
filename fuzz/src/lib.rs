//! What the fuzz targets check, shared by the libFuzzer targets (`fuzz_targets/`) and the stable
//! `replay` harness (`src/bin/replay.rs`).
//!
//! Every check panics when a property is broken; any panic inside the decoders is a bug too.
//! Properties, beyond "never panics":
//! - the in-memory decoder, the verifier and the streaming decoder agree on every input (all fail,
//!   or all succeed with the same records and summary);
//! - whatever decodes re-encodes to a segment that decodes to the same records;
//! - records built from arbitrary bytes round-trip through the writer for every codec, and partial
//!   reads through the index find every record they should.
//!
//! Random bytes almost never carry valid CRCs, which would keep a fuzzer at the CRC checks; so the
//! segment and block checks also run on a copy whose CRCs were recomputed ([`fix_crcs`]), to reach
//! decompression and record parsing.

use kafka_backup_format::{
    Checkpoint, Codec, DecodedBlock, FormatError, Header, Manifest, Record, SegmentStreamReader,
    SegmentSummary, SegmentWriter, TRAILER_LEN, TimestampType, blocks_for, decode_block,
    decode_index, decode_segment, decode_trailer, verify_segment,
};

/// Decodes a segment three ways and checks they agree, on the input and on a CRC-fixed copy.
pub fn check_segment(data: &[u8]) {
    check_segment_once(data);
    if let Some(fixed) = fix_crcs(data) {
        check_segment_once(&fixed);
    }
}

fn check_segment_once(data: &[u8]) {
    let decoded = decode_segment(data);
    let verified = verify_segment(data);
    let chunk = if data.len() < 2048 { 1 } else { 1024 };
    let streamed = stream_decode(data, chunk);
    let streamed_whole = stream_decode(data, data.len().max(1));
    match (&decoded, &verified, &streamed, &streamed_whole) {
        (Ok(records), Ok(summary), Ok((s_records, s_summary)), Ok((w_records, w_summary))) => {
            assert_eq!(records, s_records, "stream decoder disagrees");
            assert_eq!(records, w_records, "stream decoder (one chunk) disagrees");
            assert_eq!(summary, s_summary, "stream summary disagrees");
            assert_eq!(summary, w_summary, "stream summary (one chunk) disagrees");
            assert_eq!(summary.records, records.len() as u64);
            assert!(records.windows(2).all(|w| w[0].offset < w[1].offset));
            reencode(records);
        }
        (Err(_), Err(_), Err(_), Err(_)) => {}
        _ => panic!(
            "decoders disagree: decode_segment {:?}, verify_segment {:?}, streamed {:?}, streamed whole {:?}",
            decoded.as_ref().map(Vec::len),
            verified.as_ref().map(|s| s.records),
            streamed.as_ref().map(|s| s.0.len()),
            streamed_whole.as_ref().map(|s| s.0.len()),
        ),
    }
}

/// Decodes a segment fed in chunks of `chunk` bytes.
pub fn stream_decode(
    data: &[u8],
    chunk: usize,
) -> Result<(Vec<Record>, SegmentSummary), FormatError> {
    let mut reader = SegmentStreamReader::new();
    let mut records = Vec::new();
    for c in data.chunks(chunk) {
        reader.feed(c)?;
        while let Some(block) = reader.next_block()? {
            records.extend(block.records);
        }
    }
    let summary = reader.finish()?;
    Ok((records, summary))
}

/// Decodes one block, on the input and on a copy with its CRC recomputed.
pub fn check_block(data: &[u8]) {
    check_block_once(data);
    if data.len() >= 32 {
        let mut fixed = data.to_vec();
        fixed[20..24].copy_from_slice(&[0; 4]);
        let crc = crc32c::crc32c(&fixed);
        fixed[20..24].copy_from_slice(&crc.to_le_bytes());
        check_block_once(&fixed);
    }
}

fn check_block_once(data: &[u8]) {
    let Ok(block) = decode_block(data) else {
        return;
    };
    let DecodedBlock {
        base_offset,
        records,
        raw_len,
        stored_len,
        ..
    } = &block;
    assert!(!records.is_empty());
    assert_eq!(records[0].offset, *base_offset);
    assert!(records.windows(2).all(|w| w[0].offset < w[1].offset));
    assert_eq!(*stored_len as usize + 32, data.len());
    assert!(records.len() <= *raw_len as usize);
    reencode(records);
}

/// Parses manifest and checkpoint JSON; whatever parses must survive a round trip.
pub fn check_manifest(data: &[u8]) {
    if let Ok(m) = Manifest::from_json(data) {
        let again = Manifest::from_json(&m.to_json()).expect("a written manifest parses");
        assert_eq!(again, m);
    }
    if let Ok(c) = Checkpoint::from_json(data) {
        let again = Checkpoint::from_json(&c.to_json()).expect("a written checkpoint parses");
        assert_eq!(again, c);
    }
}

/// Builds records from the bytes, writes them with a codec and block size also taken from the
/// bytes, and checks every way of reading them back.
pub fn check_roundtrip(data: &[u8]) {
    let Some((records, codec, block_bytes)) = records_from_bytes(data) else {
        return;
    };
    let (bytes, summary, chunks) = write_segment(&records, codec, block_bytes);
    assert_eq!(summary.size, bytes.len() as u64);
    assert_eq!(
        decode_segment(&bytes).expect("written segment decodes"),
        records
    );
    assert_eq!(
        verify_segment(&bytes).expect("written segment verifies"),
        summary
    );
    let (streamed, s_summary) = stream_decode(&bytes, 97).expect("written segment streams");
    assert_eq!(streamed, records);
    assert_eq!(s_summary, summary);
    for chunk in &chunks[1..chunks.len() - 1] {
        decode_block(chunk).expect("every emitted block decodes alone");
    }
    // Partial reads: the blocks chosen from the index hold every wanted record.
    let trailer = decode_trailer(&bytes[bytes.len() - TRAILER_LEN..]).expect("trailer");
    let range = trailer
        .index_range(bytes.len() as u64)
        .expect("index range");
    let index =
        decode_index(&bytes[range.start as usize..range.end as usize], &trailer).expect("index");
    let mut src = ByteSource::new(data);
    for _ in 0..3 {
        let min_offset = records[src.below(records.len() as u64) as usize].offset;
        let max_ts = if src.byte() & 1 == 0 {
            None
        } else {
            Some(records[src.below(records.len() as u64) as usize].timestamp)
        };
        let wanted = |r: &Record| r.offset >= min_offset && max_ts.is_none_or(|t| r.timestamp <= t);
        let mut got = Vec::new();
        for e in blocks_for(&index, min_offset, max_ts) {
            let r = e.range();
            let block =
                decode_block(&bytes[r.start as usize..r.end as usize]).expect("indexed block");
            block.check_against(e).expect("block matches index");
            got.extend(block.records.into_iter().filter(|r| wanted(r)));
        }
        let expected: Vec<Record> = records.iter().filter(|r| wanted(r)).cloned().collect();
        assert_eq!(
            got, expected,
            "partial read from {min_offset} up to ts {max_ts:?}"
        );
    }
}

/// Re-encodes decoded records: the result must decode to the same records.
fn reencode(records: &[Record]) {
    if records.first().is_some_and(|r| r.offset < 0) {
        return; // readers accept negative offsets, the writer does not
    }
    let (bytes, _, _) = write_segment(records, Codec::Zstd { level: 1 }, 4096);
    assert_eq!(
        decode_segment(&bytes).expect("re-encoded segment decodes"),
        records
    );
}

/// Writes `records` as one segment: the object, its summary and the emitted chunks.
pub fn write_segment(
    records: &[Record],
    codec: Codec,
    block_bytes: usize,
) -> (Vec<u8>, SegmentSummary, Vec<Vec<u8>>) {
    let mut w = SegmentWriter::new(codec, block_bytes);
    let mut chunks = vec![w.start()];
    for r in records {
        if let Some(block) = w.push(&r.as_record_ref()).expect("valid record") {
            chunks.push(block);
        }
    }
    let (tail, summary) = w.finish().expect("finish");
    chunks.push(tail);
    (chunks.concat(), summary, chunks)
}

/// Recomputes the CRC of every block found from the start and of the index, so mutated segments
/// get past the checksums. `None` when the input does not look like a segment at all.
pub fn fix_crcs(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 8 + 32 || &data[..4] != b"KBS1" {
        return None;
    }
    let mut d = data.to_vec();
    let mut pos = 8usize;
    while pos + 32 <= d.len() && &d[pos..pos + 4] == b"KBBL" {
        let stored = u32::from_le_bytes(d[pos + 16..pos + 20].try_into().ok()?) as usize;
        let end = pos.checked_add(32)?.checked_add(stored)?;
        if end > d.len() {
            break;
        }
        d[pos + 20..pos + 24].copy_from_slice(&[0; 4]);
        let crc = crc32c::crc32c(&d[pos..end]);
        d[pos + 20..pos + 24].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
    let trailer = d.len().checked_sub(TRAILER_LEN)?;
    if trailer >= pos {
        let crc = crc32c::crc32c(&d[pos..trailer]);
        d[trailer + 12..trailer + 16].copy_from_slice(&crc.to_le_bytes());
    }
    (d != data).then_some(d)
}

/// Reads structured values from fuzz input, giving zeros once it runs out.
pub struct ByteSource<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteSource<'a> {
    /// A source over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        ByteSource { data, pos: 0 }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next byte, 0 past the end.
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = end;
        &self.data[start..end]
    }

    /// A little-endian u64 from the next 8 bytes.
    pub fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for i in 0..8 {
            v |= u64::from(self.byte()) << (8 * i);
        }
        v
    }

    /// A value below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.u64() % n.max(1)
    }
}

const CODECS: [Codec; 6] = [
    Codec::None,
    Codec::Zstd { level: 1 },
    Codec::Zstd { level: 3 },
    Codec::Zstd { level: 19 },
    Codec::Lz4 { level: 1 },
    Codec::Lz4 { level: 9 },
];

/// Records, a codec and a block size built from arbitrary bytes; `None` when there are too few.
pub fn records_from_bytes(data: &[u8]) -> Option<(Vec<Record>, Codec, usize)> {
    let mut src = ByteSource::new(data);
    let codec = CODECS[src.byte() as usize % CODECS.len()];
    let block_bytes = 1 + (usize::from(src.byte()) << 4 | usize::from(src.byte()));
    let mut offset = (src.u64() >> 20) as i64;
    let mut records = Vec::new();
    while !src.is_empty() && records.len() < 2000 {
        let kind = src.byte();
        if !records.is_empty() {
            let step = match kind & 3 {
                0 | 1 => 1,
                2 => 1 + i64::from(src.byte()),
                _ => 1 + (src.u64() >> 24) as i64,
            };
            offset = offset.checked_add(step)?;
        }
        let timestamp = match (kind >> 2) & 3 {
            0 => -1,
            1 => 1_700_000_000_000 + i64::from(src.byte()) * 1000,
            2 => src.u64() as i64,
            _ => 1_700_000_000_000 - i64::from(src.byte()) * 7,
        };
        let timestamp_type = match (kind >> 4) % 3 {
            0 => TimestampType::CreateTime,
            1 => TimestampType::LogAppendTime,
            _ => TimestampType::NotAvailable,
        };
        let bytes_opt = |src: &mut ByteSource<'_>| {
            let len = src.byte();
            (len != 255).then(|| src.take(usize::from(len)).to_vec())
        };
        let key = bytes_opt(&mut src);
        let value = bytes_opt(&mut src);
        let headers = (0..(kind >> 6))
            .map(|_| {
                let name_len = usize::from(src.byte() % 8);
                Header {
                    key: String::from_utf8_lossy(src.take(name_len)).into_owned(),
                    value: bytes_opt(&mut src),
                }
            })
            .collect();
        records.push(Record {
            offset,
            timestamp,
            timestamp_type,
            key,
            value,
            headers,
        });
    }
    (!records.is_empty()).then_some((records, codec, block_bytes))
}

/// Small valid inputs for each target, so fuzzing starts from real structures.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut n = 0u64;
    for codec in CODECS {
        for block_bytes in [64usize, 512, 1 << 20] {
            let records: Vec<Record> = (0..12)
                .map(|i| Record {
                    offset: 100 + i * 3,
                    timestamp: 1_700_000_000_000 - i * 1000 + (i % 3) * 5000,
                    timestamp_type: TimestampType::CreateTime,
                    key: (i % 4 != 0).then(|| format!("key-{i}").into_bytes()),
                    value: (i % 5 != 0)
                        .then(|| format!("value {i} value value value").into_bytes()),
                    headers: if i % 3 == 0 {
                        vec![
                            Header {
                                key: "h".into(),
                                value: Some(b"x".to_vec()),
                            },
                            Header {
                                key: String::new(),
                                value: None,
                            },
                        ]
                    } else {
                        vec![]
                    },
                })
                .collect();
            let (bytes, _, chunks) = write_segment(&records, codec, block_bytes);
            out.push(("decode_segment", bytes));
            for chunk in &chunks[1..chunks.len() - 1] {
                out.push(("decode_block", chunk.clone()));
            }
            n += 1;
            let mut seed = vec![n as u8, 0, 40];
            seed.extend((0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
            out.push(("roundtrip", seed));
        }
    }
    out.push(("manifest", doc_manifest_example().into_bytes()));
    // A checkpoint: the example's fields under the checkpoint's format, plus its own.
    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&doc_manifest_example()) {
        v["format"] = "kafka-backup-checkpoint".into();
        v["state"] = "running".into();
        v["topics"][0]["partitions"][0]["targetOffset"] = 1000.into();
        v["topics"][0]["partitions"][0]["nextOffset"] = 1000.into();
        out.push(("manifest", v.to_string().into_bytes()));
    }
    out
}

/// The manifest example of docs/format.md, read from the document so it stays in step.
pub fn doc_manifest_example() -> String {
    let doc = include_str!("../../docs/format.md");
    doc.split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap_or("{}")
        .to_owned()
}
