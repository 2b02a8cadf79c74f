//! Segment objects (format.md §2): header, blocks, index, trailer; the streaming writer and the
//! decoders.
//!
//! Integrity design: block payloads and the index are covered by CRC-32C; block headers are not,
//! but every field of a block header is cross-checked against the CRC-protected index entry (or,
//! for `raw_len`, `record_count` and `codec`, against what the payload decodes to). So no single
//! corrupted byte anywhere in a segment decodes to different records. Encrypted blocks are
//! authenticated too (AES-256-GCM over payload and header), so no deliberate change decodes
//! either without the key.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{Compressor, decompress};
use crate::crypto::{ENCRYPTION_OVERHEAD, EncryptionKey, NONCE_LEN, open_payload};
use crate::record::{Record, RecordRef, decode_records, encode_record, encoded_body_len};
use crate::wire::{le_i64, le_u16, le_u32, le_u64, uvarint_len};
use crate::{Codec, CodecId, FormatError, error::show_magic};

/// The segment format version this crate writes and reads.
pub const SEGMENT_VERSION: u16 = 1;
/// Readers refuse a block whose `raw_len` or `stored_len` is larger (format.md §3), so corrupt data
/// cannot make them allocate without bound. The writer never produces a larger block.
pub const MAX_BLOCK_BYTES: usize = 256 << 20;
/// The writer's default `block_bytes` (format.md §3).
pub const DEFAULT_BLOCK_BYTES: usize = 1 << 20;
/// The first block of a segment closes at this many raw bytes (or `block_bytes`, if smaller); each
/// later block may hold twice as many as the one before, up to `block_bytes` (format.md §3).
pub const FIRST_BLOCK_BYTES: usize = 16 << 10;
/// Length of the segment header.
pub const HEADER_LEN: usize = 8;
/// Length of a block header.
pub const BLOCK_HEADER_LEN: usize = 32;
/// Length of one index entry.
pub const INDEX_ENTRY_LEN: usize = 48;
/// Length of the trailer, the last bytes of a segment.
pub const TRAILER_LEN: usize = 32;

const HEADER_MAGIC: &[u8; 4] = b"KBS1";
const BLOCK_MAGIC: &[u8; 4] = b"KBBL";
const TRAILER_MAGIC: &[u8; 4] = b"KBSE";

/// Block flag bit 0: the payload is encrypted (format.md §2.5).
pub const FLAG_ENCRYPTED: u8 = 0x01;
/// Every flag bit this reader knows; any other bit set is an error.
const KNOWN_FLAGS: u8 = FLAG_ENCRYPTED;

// ---------------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------------

fn encode_header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(HEADER_MAGIC);
    h[4..6].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

/// Checks the first [`HEADER_LEN`] bytes of a segment (more may follow): magic, version, reserved.
pub fn decode_header(bytes: &[u8]) -> Result<(), FormatError> {
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::Truncated {
            what: "segment header",
            needed: HEADER_LEN as u64,
            available: bytes.len() as u64,
        });
    }
    if &bytes[0..4] != HEADER_MAGIC {
        return Err(FormatError::BadMagic {
            what: "segment header (not a kafka-backup segment)",
            found: show_magic(&bytes[0..4]),
            expected: "KBS1",
        });
    }
    let version = le_u16(bytes, 4);
    if version != SEGMENT_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: "segment header version",
            version: u64::from(version),
            supported: u64::from(SEGMENT_VERSION),
        });
    }
    let reserved = le_u16(bytes, 6);
    if reserved != 0 {
        return Err(FormatError::corrupt(format!(
            "segment header: reserved field is {reserved:#06x}, must be 0"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Block header
// ---------------------------------------------------------------------------------------------

/// The 32-byte header in front of every block's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    /// How the payload is compressed.
    pub codec: CodecId,
    /// Flag bits; only [`FLAG_ENCRYPTED`] is defined.
    pub flags: u8,
    /// Records in the block, at least 1.
    pub record_count: u32,
    /// Length of the records before compression.
    pub raw_len: u32,
    /// Length of the payload that follows the header.
    pub stored_len: u32,
    /// CRC-32C of the payload as stored.
    pub crc: u32,
    /// Offset of the block's first record.
    pub base_offset: i64,
}

impl BlockHeader {
    /// Header plus payload: how many bytes to read for the whole block.
    pub fn block_len(&self) -> u64 {
        BLOCK_HEADER_LEN as u64 + u64::from(self.stored_len)
    }

    /// Whether flag bit 0 is set.
    pub fn is_encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }

    /// The stored bytes.
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut h = [0u8; BLOCK_HEADER_LEN];
        h[0..4].copy_from_slice(BLOCK_MAGIC);
        h[4] = self.codec.to_byte();
        h[5] = self.flags;
        // 6..8 reserved, 0.
        h[8..12].copy_from_slice(&self.record_count.to_le_bytes());
        h[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        h[16..20].copy_from_slice(&self.stored_len.to_le_bytes());
        h[20..24].copy_from_slice(&self.crc.to_le_bytes());
        h[24..32].copy_from_slice(&self.base_offset.to_le_bytes());
        h
    }
}

/// Parses and checks a block header from the first [`BLOCK_HEADER_LEN`] bytes of `bytes` (more may
/// follow), including the reader limits of format.md §3. A streaming reader calls this to learn
/// how many payload bytes to read ([`BlockHeader::block_len`]).
pub fn decode_block_header(bytes: &[u8]) -> Result<BlockHeader, FormatError> {
    if bytes.len() < BLOCK_HEADER_LEN {
        return Err(FormatError::Truncated {
            what: "block header",
            needed: BLOCK_HEADER_LEN as u64,
            available: bytes.len() as u64,
        });
    }
    if &bytes[0..4] != BLOCK_MAGIC {
        return Err(FormatError::BadMagic {
            what: "block header",
            found: show_magic(&bytes[0..4]),
            expected: "KBBL",
        });
    }
    let codec = CodecId::from_byte(bytes[4]).ok_or_else(|| {
        FormatError::corrupt(format!(
            "block header: unknown codec {} (known: 0 none, 1 zstd, 2 lz4)",
            bytes[4]
        ))
    })?;
    let flags = bytes[5];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(FormatError::corrupt(format!(
            "block header: unknown flag bits {:#04x} (only bit 0, encrypted, is defined)",
            flags & !KNOWN_FLAGS
        )));
    }
    let reserved = le_u16(bytes, 6);
    if reserved != 0 {
        return Err(FormatError::corrupt(format!(
            "block header: reserved field is {reserved:#06x}, must be 0"
        )));
    }
    let header = BlockHeader {
        codec,
        flags,
        record_count: le_u32(bytes, 8),
        raw_len: le_u32(bytes, 12),
        stored_len: le_u32(bytes, 16),
        crc: le_u32(bytes, 20),
        base_offset: le_i64(bytes, 24),
    };
    for (what, value) in [
        ("block raw_len", header.raw_len),
        ("block stored_len", header.stored_len),
    ] {
        if value as usize > MAX_BLOCK_BYTES {
            return Err(FormatError::LimitExceeded {
                what,
                value: u64::from(value),
                limit: MAX_BLOCK_BYTES as u64,
            });
        }
    }
    if header.record_count == 0 {
        return Err(FormatError::corrupt("block header: record_count is 0"));
    }
    if header.record_count > header.raw_len {
        return Err(FormatError::LimitExceeded {
            what: "block record_count (bounded by raw_len)",
            value: u64::from(header.record_count),
            limit: u64::from(header.raw_len),
        });
    }
    Ok(header)
}

// ---------------------------------------------------------------------------------------------
// Blocks
// ---------------------------------------------------------------------------------------------

/// One decoded block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedBlock {
    /// Offset of the first record.
    pub base_offset: i64,
    /// The records, in offset order.
    pub records: Vec<Record>,
    /// Length of the records before compression.
    pub raw_len: u32,
    /// Length of the payload as stored.
    pub stored_len: u32,
    /// How the payload was compressed.
    pub codec: CodecId,
}

impl DecodedBlock {
    /// Checks the block against its index entry: what a reader that fetched the block by the
    /// index's position and length must do, since block headers carry no CRC of their own.
    /// `position` and `length` are checked by the caller, who knows where it read the block.
    pub fn check_against(&self, entry: &IndexEntry) -> Result<(), FormatError> {
        let (Some(first), Some(last)) = (self.records.first(), self.records.last()) else {
            return Err(FormatError::corrupt("block has no records"));
        };
        let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
        for r in &self.records {
            min_ts = min_ts.min(r.timestamp);
            max_ts = max_ts.max(r.timestamp);
        }
        let found = (
            self.records.len() as u64,
            first.offset,
            last.offset,
            min_ts,
            max_ts,
        );
        let indexed = (
            u64::from(entry.record_count),
            entry.first_offset,
            entry.last_offset,
            entry.min_timestamp,
            entry.max_timestamp,
        );
        if found != indexed {
            return Err(FormatError::corrupt(format!(
                "block does not match its index entry: (records, first offset, last offset, min timestamp, max timestamp) are {found:?} in the block, {indexed:?} in the index"
            )));
        }
        Ok(())
    }
}

/// Decodes one whole block (header and payload, nothing more): checks the limits and the CRC,
/// decompresses and parses every record. An encrypted block is refused
/// ([`FormatError::Encrypted`]): read it with [`decode_block_with`] and the key.
pub fn decode_block(bytes: &[u8]) -> Result<DecodedBlock, FormatError> {
    decode_block_with(bytes, None)
}

/// Like [`decode_block`], with the key of an encrypted backup: an encrypted block is
/// authenticated and decrypted before it is decompressed (format.md §2.5). Given a key, an
/// unencrypted block is refused ([`FormatError::NotEncrypted`]).
pub fn decode_block_with(
    bytes: &[u8],
    key: Option<&EncryptionKey>,
) -> Result<DecodedBlock, FormatError> {
    let header = decode_block_header(bytes)?;
    let len = header.block_len();
    if (bytes.len() as u64) < len {
        return Err(FormatError::Truncated {
            what: "block",
            needed: len,
            available: bytes.len() as u64,
        });
    }
    if bytes.len() as u64 > len {
        return Err(FormatError::corrupt(format!(
            "block: given {} bytes, but the header says the block is {len}",
            bytes.len()
        )));
    }
    let payload = &bytes[BLOCK_HEADER_LEN..];
    let computed = block_crc(&header, payload);
    if computed != header.crc {
        return Err(FormatError::CrcMismatch {
            what: "block",
            stored: header.crc,
            computed,
        });
    }
    let aad = BlockHeader { crc: 0, ..header }.encode();
    let compressed = open_payload(&aad, header.is_encrypted(), payload, key)?;
    let raw = decompress(header.codec, &compressed, header.raw_len as usize)?;
    let records = decode_records(&raw, header.base_offset, header.record_count)?;
    Ok(DecodedBlock {
        base_offset: header.base_offset,
        records,
        raw_len: header.raw_len,
        stored_len: header.stored_len,
        codec: header.codec,
    })
}

/// The CRC-32C a block header stores: over the 32-byte header with its crc field zeroed, then the
/// payload as stored, so a damaged header field (a shifted `base_offset`) is caught as surely as a
/// damaged payload.
pub fn block_crc(header: &BlockHeader, payload: &[u8]) -> u32 {
    let h = BlockHeader { crc: 0, ..*header }.encode();
    crc32c::crc32c_append(crc32c::crc32c(&h), payload)
}

// ---------------------------------------------------------------------------------------------
// Index and trailer
// ---------------------------------------------------------------------------------------------

/// One entry of the block index: where a block is and what it holds, so a reader can fetch only
/// the blocks it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IndexEntry {
    /// Byte offset of the block header from the start of the segment.
    pub position: u64,
    /// Block header plus payload.
    pub length: u32,
    /// Records in the block.
    pub record_count: u32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Smallest record timestamp in the block (timestamps are not ordered within a partition).
    pub min_timestamp: i64,
    /// Largest record timestamp in the block.
    pub max_timestamp: i64,
}

impl IndexEntry {
    /// The byte range of the block in the segment, for a ranged read.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.position..self.position + u64::from(self.length)
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.record_count.to_le_bytes());
        out.extend_from_slice(&self.first_offset.to_le_bytes());
        out.extend_from_slice(&self.last_offset.to_le_bytes());
        out.extend_from_slice(&self.min_timestamp.to_le_bytes());
        out.extend_from_slice(&self.max_timestamp.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Self {
        IndexEntry {
            position: le_u64(b, 0),
            length: le_u32(b, 8),
            record_count: le_u32(b, 12),
            first_offset: le_i64(b, 16),
            last_offset: le_i64(b, 24),
            min_timestamp: le_i64(b, 32),
            max_timestamp: le_i64(b, 40),
        }
    }
}

/// The last 32 bytes of a segment: where the index is and what it must contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Trailer {
    /// Byte offset of the index from the start of the segment.
    pub index_position: u64,
    /// Blocks in the segment (= index entries).
    pub block_count: u32,
    /// CRC-32C of the index bytes.
    pub index_crc: u32,
    /// Records in the segment.
    pub record_count: u64,
    /// Segment format version.
    pub version: u16,
}

impl Trailer {
    /// Length of the index in bytes.
    pub fn index_len(&self) -> u64 {
        u64::from(self.block_count) * INDEX_ENTRY_LEN as u64
    }

    /// The byte range of the index in a segment of `segment_size` bytes, checked to lie exactly
    /// between the blocks and the trailer: what a reader fetches after the trailer.
    pub fn index_range(&self, segment_size: u64) -> Result<std::ops::Range<u64>, FormatError> {
        let end = self.index_position.checked_add(self.index_len());
        if end.and_then(|e| e.checked_add(TRAILER_LEN as u64)) != Some(segment_size) {
            return Err(FormatError::corrupt(format!(
                "trailer: an index of {} blocks at byte {} does not end where the trailer starts (segment of {segment_size} bytes)",
                self.block_count, self.index_position
            )));
        }
        Ok(self.index_position..self.index_position + self.index_len())
    }

    fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut t = [0u8; TRAILER_LEN];
        t[0..8].copy_from_slice(&self.index_position.to_le_bytes());
        t[8..12].copy_from_slice(&self.block_count.to_le_bytes());
        t[12..16].copy_from_slice(&self.index_crc.to_le_bytes());
        t[16..24].copy_from_slice(&self.record_count.to_le_bytes());
        t[24..26].copy_from_slice(&self.version.to_le_bytes());
        // 26..28 reserved.
        t[28..32].copy_from_slice(TRAILER_MAGIC);
        t
    }
}

/// Parses the trailer: `bytes` must be exactly the last [`TRAILER_LEN`] bytes of the segment.
pub fn decode_trailer(bytes: &[u8]) -> Result<Trailer, FormatError> {
    if bytes.len() != TRAILER_LEN {
        return Err(FormatError::Truncated {
            what: "segment trailer (exactly the last 32 bytes)",
            needed: TRAILER_LEN as u64,
            available: bytes.len() as u64,
        });
    }
    if &bytes[28..32] != TRAILER_MAGIC {
        return Err(FormatError::BadMagic {
            what: "segment trailer (truncated or not a kafka-backup segment)",
            found: show_magic(&bytes[28..32]),
            expected: "KBSE",
        });
    }
    let version = le_u16(bytes, 24);
    if version != SEGMENT_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: "segment trailer version",
            version: u64::from(version),
            supported: u64::from(SEGMENT_VERSION),
        });
    }
    let reserved = le_u16(bytes, 26);
    if reserved != 0 {
        return Err(FormatError::corrupt(format!(
            "segment trailer: reserved field is {reserved:#06x}, must be 0"
        )));
    }
    let trailer = Trailer {
        index_position: le_u64(bytes, 0),
        block_count: le_u32(bytes, 8),
        index_crc: le_u32(bytes, 12),
        record_count: le_u64(bytes, 16),
        version,
    };
    if trailer.block_count == 0 {
        return Err(FormatError::corrupt(
            "segment trailer: block_count is 0 (a segment has at least one block)",
        ));
    }
    if trailer.record_count < u64::from(trailer.block_count) {
        return Err(FormatError::corrupt(format!(
            "segment trailer: {} records cannot fill {} blocks",
            trailer.record_count, trailer.block_count
        )));
    }
    if trailer.index_position < (HEADER_LEN + BLOCK_HEADER_LEN) as u64 {
        return Err(FormatError::corrupt(format!(
            "segment trailer: index_position {} leaves no room for a block",
            trailer.index_position
        )));
    }
    Ok(trailer)
}

/// Parses the index (`bytes` is exactly `index_position .. size - 32`), checks its CRC against the
/// trailer, and checks the entries are consistent: blocks back to back from the header to the
/// index, offsets increasing, record counts adding up to the trailer's.
pub fn decode_index(bytes: &[u8], trailer: &Trailer) -> Result<Vec<IndexEntry>, FormatError> {
    if bytes.len() as u64 != trailer.index_len() {
        return Err(FormatError::corrupt(format!(
            "index: {} bytes, but the trailer's {} blocks need {}",
            bytes.len(),
            trailer.block_count,
            trailer.index_len()
        )));
    }
    let computed = crc32c::crc32c(bytes);
    if computed != trailer.index_crc {
        return Err(FormatError::CrcMismatch {
            what: "index",
            stored: trailer.index_crc,
            computed,
        });
    }
    let entries: Vec<IndexEntry> = bytes
        .chunks_exact(INDEX_ENTRY_LEN)
        .map(IndexEntry::decode)
        .collect();
    let mut expected_position = HEADER_LEN as u64;
    let mut records: u64 = 0;
    let mut prev_last: Option<i64> = None;
    for (i, e) in entries.iter().enumerate() {
        let bad = |what: String| FormatError::corrupt(format!("index entry {i}: {what}"));
        if e.position != expected_position {
            return Err(bad(format!(
                "block position {} is not where the previous block ends ({expected_position})",
                e.position
            )));
        }
        let payload = u64::from(e.length).checked_sub(BLOCK_HEADER_LEN as u64);
        if payload.is_none_or(|p| p > MAX_BLOCK_BYTES as u64) {
            return Err(bad(format!("block length {} is out of range", e.length)));
        }
        if e.record_count == 0 {
            return Err(bad("record_count is 0".into()));
        }
        // Offsets strictly increase, so a block's offset span bounds its record count.
        let span = i128::from(e.last_offset) - i128::from(e.first_offset);
        if span < 0 || span < i128::from(e.record_count) - 1 {
            return Err(bad(format!(
                "{} records cannot have offsets {}..={}",
                e.record_count, e.first_offset, e.last_offset
            )));
        }
        if e.min_timestamp > e.max_timestamp {
            return Err(bad(format!(
                "min_timestamp {} is after max_timestamp {}",
                e.min_timestamp, e.max_timestamp
            )));
        }
        if let Some(prev) = prev_last
            && e.first_offset <= prev
        {
            return Err(bad(format!(
                "first offset {} does not follow the previous block's last offset {prev}",
                e.first_offset
            )));
        }
        prev_last = Some(e.last_offset);
        records += u64::from(e.record_count);
        expected_position = e.position + u64::from(e.length);
    }
    if expected_position != trailer.index_position {
        return Err(FormatError::corrupt(format!(
            "index: the blocks end at byte {expected_position}, but the index starts at {}",
            trailer.index_position
        )));
    }
    if records != trailer.record_count {
        return Err(FormatError::corrupt(format!(
            "index: blocks hold {records} records, the trailer says {}",
            trailer.record_count
        )));
    }
    Ok(entries)
}

/// The records a point-in-time restore takes, by timestamp: `from <= timestamp <= to`, both ends
/// inclusive, either open. Records the broker gave no timestamp (-1) count as older than any
/// time. Serialized as `{"fromMillis": .., "toMillis": ..}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeWindow {
    /// The earliest timestamp taken, in milliseconds since the Unix epoch.
    #[serde(
        rename = "fromMillis",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<i64>,
    /// The latest timestamp taken, in milliseconds since the Unix epoch.
    #[serde(rename = "toMillis", default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
}

impl TimeWindow {
    /// Every record with `timestamp <= to` (every record when `to` is `None`).
    pub fn until(to: Option<i64>) -> Self {
        TimeWindow { from: None, to }
    }

    /// Every record.
    pub fn is_all(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    /// Whether a record with this timestamp is taken.
    pub fn contains(&self, timestamp: i64) -> bool {
        self.from.is_none_or(|f| timestamp >= f) && self.to.is_none_or(|t| timestamp <= t)
    }

    /// Whether every record with a timestamp in `min..=max` is taken.
    pub fn covers(&self, min: i64, max: i64) -> bool {
        self.contains(min) && self.contains(max)
    }

    /// Whether no record with a timestamp in `min..=max` is taken.
    pub fn misses(&self, min: i64, max: i64) -> bool {
        self.to.is_some_and(|t| min > t) || self.from.is_some_and(|f| max < f)
    }
}

impl std::fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.from, self.to) {
            (None, None) => write!(f, "every record"),
            (None, Some(t)) => write!(f, "timestamp <= {t}"),
            (Some(from), None) => write!(f, "timestamp >= {from}"),
            (Some(from), Some(t)) => write!(f, "{from} <= timestamp <= {t}"),
        }
    }
}

/// The index entries whose blocks may hold a record with `offset >= min_offset` and a timestamp
/// in `window` (point-in-time restore).
///
/// Timestamps are not monotonic within a partition, so a block is selected unless its minimum
/// and maximum timestamps put it wholly outside the window; the restore still filters each record
/// itself.
pub fn blocks_for(index: &[IndexEntry], min_offset: i64, window: TimeWindow) -> Vec<&IndexEntry> {
    blocks_for_range(index, min_offset, i64::MAX, window)
}

/// Like [`blocks_for`], bounded above too: blocks that may hold a record with offset in
/// `min_offset..=max_offset` and a timestamp in `window`.
pub fn blocks_for_range(
    index: &[IndexEntry],
    min_offset: i64,
    max_offset: i64,
    window: TimeWindow,
) -> Vec<&IndexEntry> {
    index
        .iter()
        .filter(|e| e.last_offset >= min_offset && e.first_offset <= max_offset)
        .filter(|e| !window.misses(e.min_timestamp, e.max_timestamp))
        .collect()
}

/// Merges the byte ranges of the given blocks where they touch, so a reader makes one ranged read
/// per run of consecutive blocks. `blocks` must be in index order.
pub fn byte_ranges(blocks: &[&IndexEntry]) -> Vec<std::ops::Range<u64>> {
    let mut out: Vec<std::ops::Range<u64>> = Vec::new();
    for b in blocks {
        let r = b.range();
        match out.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.push(r),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Whole-segment decoding
// ---------------------------------------------------------------------------------------------

/// Decodes a whole segment held in memory, cross-checking header, every block, the index and the
/// trailer: index positions and lengths match the blocks actually found, counts, offsets and
/// timestamps match, offsets increase across blocks.
pub fn decode_segment(bytes: &[u8]) -> Result<Vec<Record>, FormatError> {
    decode_segment_with(bytes, None)
}

/// Like [`decode_segment`], with the key of an encrypted backup ([`decode_block_with`]).
pub fn decode_segment_with(
    bytes: &[u8],
    key: Option<&EncryptionKey>,
) -> Result<Vec<Record>, FormatError> {
    let mut records = Vec::new();
    walk_segment(bytes, key, |block| records.extend(block.records))?;
    Ok(records)
}

/// Verifies a whole segment like [`decode_segment`] without keeping the records, and returns what
/// its manifest entry should say (deep verification, format.md §7, compares the two).
pub fn verify_segment(bytes: &[u8]) -> Result<SegmentSummary, FormatError> {
    verify_segment_with(bytes, None)
}

/// Like [`verify_segment`], with the key of an encrypted backup ([`decode_block_with`]).
pub fn verify_segment_with(
    bytes: &[u8],
    key: Option<&EncryptionKey>,
) -> Result<SegmentSummary, FormatError> {
    walk_segment(bytes, key, |_| {})
}

fn walk_segment(
    bytes: &[u8],
    key: Option<&EncryptionKey>,
    mut on_block: impl FnMut(DecodedBlock),
) -> Result<SegmentSummary, FormatError> {
    let size = bytes.len();
    if size < HEADER_LEN + TRAILER_LEN {
        return Err(FormatError::Truncated {
            what: "segment",
            needed: (HEADER_LEN + TRAILER_LEN) as u64,
            available: size as u64,
        });
    }
    decode_header(bytes)?;
    let trailer = decode_trailer(&bytes[size - TRAILER_LEN..])?;
    let range = trailer.index_range(size as u64)?;
    // index_range checked the range ends at size - 32, so it is within `bytes`.
    let index = decode_index(&bytes[range.start as usize..range.end as usize], &trailer)?;
    let mut summary = SegmentSummary {
        size: size as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
        first_offset: index.first().map_or(0, |e| e.first_offset),
        last_offset: index.last().map_or(0, |e| e.last_offset),
        records: 0,
        min_timestamp: i64::MAX,
        max_timestamp: i64::MIN,
        raw_bytes: 0,
        blocks: trailer.block_count,
    };
    let mut pos = HEADER_LEN as u64;
    for (i, entry) in index.iter().enumerate() {
        let block =
            decode_block_at(bytes, pos, entry, key).map_err(|e| e.in_block(i as u64, pos))?;
        summary.records += block.records.len() as u64;
        summary.raw_bytes += u64::from(block.raw_len);
        summary.min_timestamp = summary.min_timestamp.min(entry.min_timestamp);
        summary.max_timestamp = summary.max_timestamp.max(entry.max_timestamp);
        on_block(block);
        pos += u64::from(entry.length);
    }
    // decode_index checked the entries tile the bytes from the header to the index and add up to
    // the trailer's count; each block was checked against its entry.
    Ok(summary)
}

/// Decodes the block that starts at `pos`, which must be where `entry` says and as long.
fn decode_block_at(
    bytes: &[u8],
    pos: u64,
    entry: &IndexEntry,
    key: Option<&EncryptionKey>,
) -> Result<DecodedBlock, FormatError> {
    let start = pos as usize;
    let header = decode_block_header(bytes.get(start..).unwrap_or(&[]))?;
    if header.block_len() != u64::from(entry.length) {
        return Err(FormatError::corrupt(format!(
            "block is {} bytes by its header, {} by the index",
            header.block_len(),
            entry.length
        )));
    }
    let end = start + entry.length as usize;
    let block_bytes = bytes.get(start..end).ok_or(FormatError::Truncated {
        what: "block",
        needed: u64::from(entry.length),
        available: (bytes.len().saturating_sub(start)) as u64,
    })?;
    if header.base_offset != entry.first_offset {
        return Err(FormatError::corrupt(format!(
            "base offset {} differs from the index's first offset {}",
            header.base_offset, entry.first_offset
        )));
    }
    let block = decode_block_with(block_bytes, key)?;
    block.check_against(entry)?;
    Ok(block)
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// What the writer produced: everything a manifest's segment entry records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Bytes emitted in total: the object's size.
    pub size: u64,
    /// SHA-256 of all emitted bytes, lower-case hex: the object's digest.
    pub sha256: String,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Records in the segment.
    pub records: u64,
    /// Smallest record timestamp.
    pub min_timestamp: i64,
    /// Largest record timestamp.
    pub max_timestamp: i64,
    /// Record bytes before compression, summed over the blocks.
    pub raw_bytes: u64,
    /// Number of blocks.
    pub blocks: u32,
}

/// Encodes one segment as a stream of byte chunks, so the engine can upload a segment while it
/// consumes, without holding it whole: write [`start`](Self::start), every chunk
/// [`push`](Self::push) and [`flush_block`](Self::flush_block) return, then
/// [`finish`](Self::finish), in order, as one object.
///
/// Records are encoded straight into the open block's buffer. A block closes when adding a record
/// would take it past its limit (so a block never exceeds it unless it holds a single larger
/// record), when it reaches the limit, or on [`flush_block`](Self::flush_block). The limit starts
/// at [`FIRST_BLOCK_BYTES`] and doubles with each block up to `block_bytes`: a point-in-time
/// restore reads whole blocks, and with doubling sizes the block straddling its bound is never
/// much larger than the part of the segment before it, so the bytes it reads beyond what it needs
/// stay proportional to what it needs (small segments, such as those of quiet partitions, are
/// all small blocks), while large segments keep large blocks.
/// A block that compression would not make smaller is stored uncompressed (codec 0), which every
/// reader accepts since the codec is per block.
///
/// With [`with_encryption`](Self::with_encryption) every block is encrypted after compression
/// (format.md §2.5).
pub struct SegmentWriter {
    codec: Codec,
    compressor: Option<Compressor>,
    encryption: Option<EncryptionKey>,
    block_bytes: usize,
    /// Where the open block closes: grows from [`FIRST_BLOCK_BYTES`] to `block_bytes`.
    block_limit: usize,
    /// Room for the block header, then the open block's records.
    raw: Vec<u8>,
    block: Option<OpenBlock>,
    index: Vec<IndexEntry>,
    started: bool,
    hasher: Sha256,
    emitted: u64,
    records: u64,
    first_offset: Option<i64>,
    last_offset: Option<i64>,
    min_timestamp: i64,
    max_timestamp: i64,
    raw_bytes: u64,
}

/// Bookkeeping of the block being filled.
struct OpenBlock {
    base_offset: i64,
    last_offset: i64,
    records: u32,
    min_timestamp: i64,
    max_timestamp: i64,
}

impl SegmentWriter {
    /// A writer compressing with `codec` and closing blocks at `block_bytes` raw bytes (clamped to
    /// `1..=MAX_BLOCK_BYTES`; [`DEFAULT_BLOCK_BYTES`] is the usual choice). An invalid codec level
    /// is reported by the first [`push`](Self::push); call [`Codec::validate`] earlier to fail
    /// sooner.
    pub fn new(codec: Codec, block_bytes: usize) -> Self {
        let block_bytes = block_bytes.clamp(1, MAX_BLOCK_BYTES);
        SegmentWriter {
            codec,
            compressor: None,
            encryption: None,
            block_bytes,
            block_limit: FIRST_BLOCK_BYTES.min(block_bytes),
            raw: Self::new_raw_buffer(block_bytes),
            block: None,
            index: Vec::new(),
            started: false,
            hasher: Sha256::new(),
            emitted: 0,
            records: 0,
            first_offset: None,
            last_offset: None,
            min_timestamp: i64::MAX,
            max_timestamp: i64::MIN,
            raw_bytes: 0,
        }
    }

    /// Encrypts every block with `key` (AES-256-GCM, a random nonce per block; format.md §2.5).
    /// Call before [`start`](Self::start). Blocks then hold at most `MAX_BLOCK_BYTES - 28` raw
    /// bytes, so the stored payload with its nonce and tag stays within the reader limit.
    pub fn with_encryption(mut self, key: EncryptionKey) -> Self {
        self.encryption = Some(key);
        self.block_bytes = self.block_bytes.min(self.max_raw_len());
        self.block_limit = self.block_limit.min(self.block_bytes);
        self
    }

    /// The largest `raw_len` a block of this writer may have.
    fn max_raw_len(&self) -> usize {
        match self.encryption {
            Some(_) => MAX_BLOCK_BYTES - ENCRYPTION_OVERHEAD,
            None => MAX_BLOCK_BYTES,
        }
    }

    fn new_raw_buffer(block_bytes: usize) -> Vec<u8> {
        // Room for a typical block; a larger one grows the buffer as needed.
        let mut raw = Vec::with_capacity(BLOCK_HEADER_LEN + block_bytes.min(DEFAULT_BLOCK_BYTES));
        raw.resize(BLOCK_HEADER_LEN, 0);
        raw
    }

    /// The segment header, the first bytes of the object. Returns it on the first call only (later
    /// calls return nothing), and must come before [`push`](Self::push).
    pub fn start(&mut self) -> Vec<u8> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        let header = encode_header().to_vec();
        self.emit(&header);
        header
    }

    /// Adds a record. Its offset must be greater than the previous record's. Returns a closed block
    /// to write out, if adding the record closed one.
    pub fn push(&mut self, rec: &RecordRef<'_>) -> Result<Option<Vec<u8>>, FormatError> {
        if !self.started {
            return Err(FormatError::WriterUsage(
                "start() must be called before push()",
            ));
        }
        if self.compressor.is_none() {
            self.compressor = Some(Compressor::new(self.codec)?);
        }
        if rec.offset < 0 {
            return Err(FormatError::NegativeOffset(rec.offset));
        }
        if let Some(previous) = self.last_offset
            && rec.offset <= previous
        {
            return Err(FormatError::OffsetOrder {
                previous,
                offset: rec.offset,
            });
        }
        let body_len = encoded_body_len(rec);
        // Alone in a block its delta is 0, one byte.
        let max = self.max_raw_len() as u64;
        if body_len + 1 > max {
            return Err(FormatError::RecordTooLarge {
                offset: rec.offset,
                len: body_len + 1,
                max,
            });
        }
        let mut closed = None;
        if let Some(open) = &self.block {
            let delta = (rec.offset - open.base_offset) as u64;
            let len = body_len + uvarint_len(delta) as u64;
            if self.buffered_bytes() as u64 + len > self.block_limit as u64 {
                closed = Some(self.close_block()?);
            }
        }
        self.append(rec, body_len);

        self.records += 1;
        self.first_offset.get_or_insert(rec.offset);
        self.last_offset = Some(rec.offset);
        self.min_timestamp = self.min_timestamp.min(rec.timestamp);
        self.max_timestamp = self.max_timestamp.max(rec.timestamp);

        // A full block closes now, unless one already closed in this call: then it closes on the
        // next push, flush or finish (one chunk per call).
        if closed.is_none() && self.buffered_bytes() >= self.block_limit {
            closed = Some(self.close_block()?);
        }
        Ok(closed)
    }

    /// Encodes `rec` (whose body takes `body_len` bytes) into the open block, opening one if none
    /// is.
    fn append(&mut self, rec: &RecordRef<'_>, body_len: u64) {
        let block = self.block.get_or_insert(OpenBlock {
            base_offset: rec.offset,
            last_offset: rec.offset,
            records: 0,
            min_timestamp: rec.timestamp,
            max_timestamp: rec.timestamp,
        });
        let delta = (rec.offset - block.base_offset) as u64;
        self.raw.reserve(body_len as usize + uvarint_len(delta));
        encode_record(&mut self.raw, rec, delta);
        block.records += 1;
        block.last_offset = rec.offset;
        block.min_timestamp = block.min_timestamp.min(rec.timestamp);
        block.max_timestamp = block.max_timestamp.max(rec.timestamp);
    }

    /// Closes the open block early (e.g. before a checkpoint, so everything pushed so far can be
    /// written out); `None` when it holds no records.
    pub fn flush_block(&mut self) -> Result<Option<Vec<u8>>, FormatError> {
        if !self.started {
            return Err(FormatError::WriterUsage(
                "start() must be called before flush_block()",
            ));
        }
        if self.block.is_none() {
            return Ok(None);
        }
        self.close_block().map(Some)
    }

    /// Records pushed so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Raw record bytes in the open block, not yet emitted.
    pub fn buffered_bytes(&self) -> usize {
        self.raw.len() - BLOCK_HEADER_LEN
    }

    /// Bytes returned so far by `start`, `push` and `flush_block`.
    pub fn emitted_bytes(&self) -> u64 {
        self.emitted
    }

    /// The last bytes of the object (the open block if any, the index and the trailer) and the
    /// summary of the whole object. Fails if no record was pushed: a segment is never empty.
    pub fn finish(mut self) -> Result<(Vec<u8>, SegmentSummary), FormatError> {
        if !self.started {
            return Err(FormatError::WriterUsage(
                "start() must be called before finish()",
            ));
        }
        let (Some(first_offset), Some(last_offset)) = (self.first_offset, self.last_offset) else {
            return Err(FormatError::WriterUsage(
                "finish() without any record: a segment holds at least one",
            ));
        };
        let mut out = match self.block {
            Some(_) => self.close_tail()?,
            None => Vec::new(),
        };
        let tail_start = out.len();
        let index_position = self.emitted;
        out.reserve(self.index.len() * INDEX_ENTRY_LEN + TRAILER_LEN);
        for e in &self.index {
            e.encode_into(&mut out);
        }
        let trailer = Trailer {
            index_position,
            // Four billion blocks would be needed to overflow this.
            block_count: u32::try_from(self.index.len()).map_err(|_| {
                FormatError::WriterUsage("more than 4294967295 blocks in one segment")
            })?,
            index_crc: crc32c::crc32c(&out[tail_start..]),
            record_count: self.records,
            version: SEGMENT_VERSION,
        };
        out.extend_from_slice(&trailer.encode());
        self.emit(&out[tail_start..]);
        let summary = SegmentSummary {
            size: self.emitted,
            sha256: hex::encode(self.hasher.finalize()),
            first_offset,
            last_offset,
            records: self.records,
            min_timestamp: self.min_timestamp,
            max_timestamp: self.max_timestamp,
            raw_bytes: self.raw_bytes,
            blocks: trailer.block_count,
        };
        Ok((out, summary))
    }

    /// Hashes and counts bytes handed to the caller.
    fn emit(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.emitted += bytes.len() as u64;
    }

    /// Compresses the open block, fills in its header, records its index entry and emits it.
    /// Closes the open block at the end of the segment as blocks that halve in size: each takes
    /// half of the records left (by bytes) until half would be less than [`FIRST_BLOCK_BYTES`],
    /// and the last takes the rest. The mirror of the doubling at the start: the newest records
    /// of a segment, those a restore from a recent time wants, sit in small blocks, so it reads
    /// little beyond them. The records are decoded from the open block and encoded again, each
    /// block with its own base offset; this happens once per segment, on at most `block_bytes`.
    fn close_tail(&mut self) -> Result<Vec<u8>, FormatError> {
        let Some(open) = self.block.as_ref() else {
            return Err(FormatError::WriterUsage("no open block to close"));
        };
        let half_of = |left: u64| {
            if left / 2 >= FIRST_BLOCK_BYTES as u64 {
                left / 2
            } else {
                u64::MAX
            }
        };
        if half_of(self.buffered_bytes() as u64) == u64::MAX {
            return self.close_block();
        }
        let records = decode_records(
            &self.raw[BLOCK_HEADER_LEN..],
            open.base_offset,
            open.records,
        )?;
        self.block = None;
        self.raw.truncate(BLOCK_HEADER_LEN);
        let sizes: Vec<u64> = records
            .iter()
            .map(|r| encoded_body_len(&r.as_record_ref()) + 1)
            .collect();
        let mut left: u64 = sizes.iter().sum();
        let mut target = half_of(left);
        let mut in_block = 0u64;
        let mut out = Vec::new();
        for (r, size) in records.iter().zip(sizes) {
            self.append(&r.as_record_ref(), size - 1);
            in_block += size;
            if in_block >= target {
                out.extend_from_slice(&self.close_block()?);
                left -= in_block;
                in_block = 0;
                target = half_of(left);
            }
        }
        if self.block.is_some() {
            out.extend_from_slice(&self.close_block()?);
        }
        Ok(out)
    }

    fn close_block(&mut self) -> Result<Vec<u8>, FormatError> {
        let Some(open) = self.block.take() else {
            return Err(FormatError::WriterUsage("no open block to close"));
        };
        self.block_limit = self.block_limit.saturating_mul(2).min(self.block_bytes);
        let compressor = match &mut self.compressor {
            Some(c) => c,
            None => self.compressor.insert(Compressor::new(self.codec)?),
        };
        let raw_len = self.raw.len() - BLOCK_HEADER_LEN;
        // An encrypted payload starts with its nonce: compress after room for it.
        let nonce_room = if self.encryption.is_some() {
            NONCE_LEN
        } else {
            0
        };
        let room = vec![0; BLOCK_HEADER_LEN + nonce_room];
        let (codec, mut out) = match compressor.compress(&self.raw[BLOCK_HEADER_LEN..], room)? {
            (Some(codec), out) if out.len() - BLOCK_HEADER_LEN - nonce_room < raw_len => {
                self.raw.truncate(BLOCK_HEADER_LEN);
                (codec, out)
            }
            // No compression, or it did not help: hand over the raw buffer itself, no copy
            // (beyond making room for the nonce when encrypting).
            _ => {
                let mut out =
                    std::mem::replace(&mut self.raw, Self::new_raw_buffer(self.block_bytes));
                out.splice(
                    BLOCK_HEADER_LEN..BLOCK_HEADER_LEN,
                    std::iter::repeat_n(0, nonce_room),
                );
                (CodecId::None, out)
            }
        };
        // Compression comes first; encryption adds its nonce and tag to what is stored.
        let stored_len = out.len() - BLOCK_HEADER_LEN
            + if self.encryption.is_some() {
                ENCRYPTION_OVERHEAD - NONCE_LEN
            } else {
                0
            };
        // push() keeps raw blocks within max_raw_len(), stored <= raw here, and encryption adds
        // its 28 bytes within MAX_BLOCK_BYTES, so these fit u32.
        let mut header = BlockHeader {
            codec,
            flags: if self.encryption.is_some() {
                FLAG_ENCRYPTED
            } else {
                0
            },
            record_count: open.records,
            raw_len: raw_len as u32,
            stored_len: stored_len as u32,
            crc: 0,
            base_offset: open.base_offset,
        };
        if let Some(key) = &self.encryption {
            // The header, crc field zeroed, is the associated data (format.md §2.5).
            key.seal(&header.encode(), &mut out, BLOCK_HEADER_LEN)?;
        }
        debug_assert_eq!(out.len() - BLOCK_HEADER_LEN, stored_len);
        header.crc = block_crc(&header, &out[BLOCK_HEADER_LEN..]);
        out[..BLOCK_HEADER_LEN].copy_from_slice(&header.encode());
        self.index.push(IndexEntry {
            position: self.emitted,
            length: out.len() as u32,
            record_count: open.records,
            first_offset: open.base_offset,
            last_offset: open.last_offset,
            min_timestamp: open.min_timestamp,
            max_timestamp: open.max_timestamp,
        });
        self.raw_bytes += raw_len as u64;
        self.emit(&out);
        Ok(out)
    }
}
