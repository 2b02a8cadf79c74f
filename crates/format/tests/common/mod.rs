//! Helpers shared by the integration tests: record builders and a one-call segment encoder.
#![allow(dead_code)]

use kafka_backup_format::{
    Codec, DecodedBlock, Header, IndexEntry, Record, SegmentSummary, SegmentWriter, TRAILER_LEN,
    TimestampType, decode_block, decode_index, decode_trailer,
};

/// Every codec and level the tests cover.
pub const CODECS: [Codec; 6] = [
    Codec::None,
    Codec::Zstd { level: 1 },
    Codec::Zstd { level: 3 },
    Codec::Zstd { level: 22 },
    Codec::Lz4 { level: 1 },
    Codec::Lz4 { level: 12 },
];

/// A record with the given offset and timestamp, and a small deterministic key and value.
pub fn rec(offset: i64, timestamp: i64) -> Record {
    Record {
        offset,
        timestamp,
        timestamp_type: TimestampType::CreateTime,
        key: Some(format!("key-{offset}").into_bytes()),
        value: Some(
            format!("value of record {offset}, with some repeated text text text").into_bytes(),
        ),
        headers: vec![],
    }
}

pub fn header(key: &str, value: Option<&[u8]>) -> Header {
    Header {
        key: key.to_owned(),
        value: value.map(<[u8]>::to_vec),
    }
}

/// The output of encoding a segment: the whole object, the chunks in emission order, the summary.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub chunks: Vec<Vec<u8>>,
    pub summary: SegmentSummary,
}

impl Encoded {
    /// The segment's block index, through its trailer.
    pub fn index(&self) -> Vec<IndexEntry> {
        let trailer = decode_trailer(&self.bytes[self.bytes.len() - TRAILER_LEN..]).unwrap();
        let range = trailer.index_range(self.bytes.len() as u64).unwrap();
        decode_index(
            &self.bytes[range.start as usize..range.end as usize],
            &trailer,
        )
        .unwrap()
    }

    /// The block `e` points at, decoded.
    pub fn block(&self, e: &IndexEntry) -> DecodedBlock {
        decode_block(&self.bytes[e.range().start as usize..e.range().end as usize]).unwrap()
    }
}

/// Encodes `records` as one segment, checking the writer's counters along the way.
pub fn encode(records: &[Record], codec: Codec, block_bytes: usize) -> Encoded {
    let mut w = SegmentWriter::new(codec, block_bytes);
    let mut chunks = vec![w.start()];
    for r in records {
        if let Some(block) = w.push(&r.as_record_ref()).unwrap() {
            chunks.push(block);
        }
        let emitted: usize = chunks.iter().map(Vec::len).sum();
        assert_eq!(w.emitted_bytes(), emitted as u64);
    }
    assert_eq!(w.records(), records.len() as u64);
    let (tail, summary) = w.finish().unwrap();
    chunks.push(tail);
    let bytes = chunks.concat();
    Encoded {
        bytes,
        chunks,
        summary,
    }
}

/// A deterministic pseudo-random generator (xorshift), so tests need no extra dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
