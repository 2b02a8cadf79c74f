//! Reading a whole segment as it streams in, from the start, without holding it whole or knowing its
//! size first (format.md §2.4: "a reader that wants everything streams the segment from the start").

use sha2::{Digest, Sha256};

use crate::segment::{
    BLOCK_HEADER_LEN, HEADER_LEN, INDEX_ENTRY_LEN, IndexEntry, TRAILER_LEN, decode_block_header,
    decode_block_with, decode_header, decode_index, decode_trailer,
};
use crate::{DecodedBlock, EncryptionKey, FormatError, SegmentSummary};

const BLOCK_MAGIC: &[u8; 4] = b"KBBL";

/// Decodes a segment from its bytes fed in order, in chunks of any size: yields each block as soon
/// as it is complete, then checks the index and trailer against the blocks seen.
///
/// The blocks end where the bytes stop starting with a block magic (the index that follows starts
/// with the first block's position, 8, never `KBBL`). Each yielded block has passed its CRC; the
/// segment as a whole is valid only once [`finish`](Self::finish) succeeds, so a restore must
/// treat a `finish` error as the failure of the whole segment.
///
/// ```
/// # use kafka_backup_format::*;
/// # let mut w = SegmentWriter::new(Codec::None, 1 << 20);
/// # let mut object = w.start();
/// # let rec = Record { offset: 7, timestamp: 1, timestamp_type: TimestampType::CreateTime,
/// #     key: None, value: Some(b"v".to_vec()), headers: vec![] };
/// # w.push(&rec.as_record_ref()).unwrap();
/// # object.extend(w.finish().unwrap().0);
/// let mut reader = SegmentStreamReader::new();
/// let mut records = Vec::new();
/// for chunk in object.chunks(5) {
///     reader.feed(chunk)?;
///     while let Some(block) = reader.next_block()? {
///         records.extend(block.records);
///     }
/// }
/// let summary = reader.finish()?;
/// assert_eq!(summary.records, records.len() as u64);
/// # Ok::<(), FormatError>(())
/// ```
pub struct SegmentStreamReader {
    /// Bytes received and not yet consumed start at `buf[start]`.
    buf: Vec<u8>,
    start: usize,
    /// Segment position of `buf[start]`.
    position: u64,
    state: State,
    /// Index entries rebuilt from the blocks decoded so far.
    seen: Vec<IndexEntry>,
    hasher: Sha256,
    size: u64,
    raw_bytes: u64,
    /// The key of an encrypted backup.
    key: Option<EncryptionKey>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    Blocks,
    /// The rest is index and trailer, from `tail_position`.
    Tail,
}

impl Default for SegmentStreamReader {
    fn default() -> Self {
        Self::new()
    }
}

impl SegmentStreamReader {
    /// A reader at the start of a segment.
    pub fn new() -> Self {
        SegmentStreamReader {
            buf: Vec::new(),
            start: 0,
            position: 0,
            state: State::Header,
            seen: Vec::new(),
            hasher: Sha256::new(),
            size: 0,
            raw_bytes: 0,
            key: None,
        }
    }

    /// A reader of a segment of an encrypted backup, which decrypts each block with `key` (and
    /// refuses unencrypted ones, as [`crate::decode_block_with`] does); `None` reads as
    /// [`new`](Self::new) does.
    pub fn with_key(key: Option<EncryptionKey>) -> Self {
        SegmentStreamReader { key, ..Self::new() }
    }

    /// Adds the next bytes of the segment. Fails once the bytes after the last block are longer
    /// than any index and trailer for the blocks seen could be, so a corrupt stream is not
    /// buffered without bound.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), FormatError> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        // Drop consumed bytes once they are the larger part, so each byte is moved O(1) times.
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        self.check_tail_len()
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.position += n as u64;
    }

    fn check_tail_len(&self) -> Result<(), FormatError> {
        if self.state != State::Tail {
            return Ok(());
        }
        let max = self.seen.len() * INDEX_ENTRY_LEN + TRAILER_LEN;
        if self.pending().len() > max {
            return Err(FormatError::corrupt(format!(
                "segment: more than {max} bytes follow the {} blocks at byte {}, too many for their index and trailer",
                self.seen.len(),
                self.position
            )));
        }
        Ok(())
    }

    /// The next complete block, `None` until more bytes are fed (or after the last block).
    pub fn next_block(&mut self) -> Result<Option<DecodedBlock>, FormatError> {
        if self.state == State::Header {
            if self.pending().len() < HEADER_LEN {
                return Ok(None);
            }
            decode_header(self.pending())?;
            self.consume(HEADER_LEN);
            self.state = State::Blocks;
        }
        if self.state == State::Tail {
            return Ok(None);
        }
        let pending = self.pending();
        if pending.len() < BLOCK_MAGIC.len() {
            return Ok(None);
        }
        if &pending[..BLOCK_MAGIC.len()] != BLOCK_MAGIC {
            if self.seen.is_empty() {
                // Let the block header decoder say what is wrong.
                return Err(decode_block_header(pending)
                    .err()
                    .unwrap_or_else(|| FormatError::corrupt("segment: no block"))
                    .in_block(0, self.position));
            }
            self.state = State::Tail;
            self.check_tail_len()?;
            return Ok(None);
        }
        let index = self.seen.len() as u64;
        let position = self.position;
        if pending.len() < BLOCK_HEADER_LEN {
            return Ok(None);
        }
        let header = decode_block_header(pending).map_err(|e| e.in_block(index, position))?;
        let len = header.block_len() as usize;
        if pending.len() < len {
            return Ok(None);
        }
        let block = decode_block_with(&pending[..len], self.key.as_ref())
            .map_err(|e| e.in_block(index, position))?;
        if let Some(prev) = self.seen.last()
            && block.base_offset <= prev.last_offset
        {
            return Err(FormatError::corrupt(format!(
                "base offset {} does not follow the previous block's last offset {}",
                block.base_offset, prev.last_offset
            ))
            .in_block(index, position));
        }
        let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
        for r in &block.records {
            min_ts = min_ts.min(r.timestamp);
            max_ts = max_ts.max(r.timestamp);
        }
        self.seen.push(IndexEntry {
            position,
            length: len as u32,
            record_count: block.records.len() as u32,
            first_offset: block.base_offset,
            last_offset: block.records.last().map_or(block.base_offset, |r| r.offset),
            min_timestamp: min_ts,
            max_timestamp: max_ts,
        });
        self.raw_bytes += u64::from(block.raw_len);
        self.consume(len);
        Ok(Some(block))
    }

    /// Call after feeding every byte and taking every block: checks the index and trailer against
    /// the blocks seen, and returns the summary of the whole segment (as its manifest entry should
    /// say, SHA-256 included).
    pub fn finish(mut self) -> Result<SegmentSummary, FormatError> {
        // Blocks still buffered are decoded and checked too, even if the caller did not take them.
        while self.next_block()?.is_some() {}
        if self.state != State::Tail {
            return Err(FormatError::Truncated {
                what: "segment (stream ended inside a block or before the index)",
                needed: self.pending().len() as u64 + 1,
                available: self.pending().len() as u64,
            });
        }
        let tail = self.pending();
        if tail.len() < TRAILER_LEN {
            return Err(FormatError::Truncated {
                what: "segment trailer",
                needed: TRAILER_LEN as u64,
                available: tail.len() as u64,
            });
        }
        let (index_bytes, trailer_bytes) = tail.split_at(tail.len() - TRAILER_LEN);
        let trailer = decode_trailer(trailer_bytes)?;
        if trailer.index_position != self.position {
            return Err(FormatError::corrupt(format!(
                "segment trailer: index_position {} but the blocks end at byte {}",
                trailer.index_position, self.position
            )));
        }
        let index = decode_index(index_bytes, &trailer)?;
        if let Some((i, (indexed, found))) = index
            .iter()
            .zip(&self.seen)
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            return Err(FormatError::corrupt(format!(
                "block {i} at byte {}: the block ({found:?}) does not match its index entry ({indexed:?})",
                found.position
            )));
        }
        if index.len() != self.seen.len() {
            return Err(FormatError::corrupt(format!(
                "index lists {} blocks, the segment holds {}",
                index.len(),
                self.seen.len()
            )));
        }
        Ok(SegmentSummary {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
            first_offset: self.seen.first().map_or(0, |e| e.first_offset),
            last_offset: self.seen.last().map_or(0, |e| e.last_offset),
            records: trailer.record_count,
            min_timestamp: self.seen.iter().map(|e| e.min_timestamp).min().unwrap_or(0),
            max_timestamp: self.seen.iter().map(|e| e.max_timestamp).max().unwrap_or(0),
            raw_bytes: self.raw_bytes,
            blocks: trailer.block_count,
        })
    }
}
