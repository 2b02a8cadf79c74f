//! The one error type of the crate.
//!
//! Every message says what is wrong and where, so an operator reading a failed restore or verify can
//! tell a corrupt object from a bug: decoding errors are wrapped in [`FormatError::Block`] and
//! [`FormatError::Record`] as they travel outwards, which prefixes the position.

/// Why encoding or decoding failed.
///
/// Decoding errors mean the bytes are not a valid object of this format (corruption, truncation, or
/// a newer version); encoding errors mean the caller broke a rule of the format (offsets not
/// increasing, a record too large for a block, an invalid compression level).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The leading or trailing magic bytes are not the expected ones: not this kind of object at all.
    #[error("{what}: bad magic {found}, expected {expected:?}")]
    BadMagic {
        /// The structure whose magic was checked.
        what: &'static str,
        /// The bytes found, rendered as text.
        found: String,
        /// The magic this reader expects.
        expected: &'static str,
    },
    /// A version number this reader does not know: written by a newer kafka-backup.
    #[error(
        "{what} {version} is not supported: this reader reads version {supported} (written by a newer kafka-backup?)"
    )]
    UnsupportedVersion {
        /// The versioned structure and field.
        what: &'static str,
        /// The version found.
        version: u64,
        /// The version this reader reads.
        supported: u64,
    },
    /// The data ends before a structure that must be there.
    #[error("{what}: truncated: needs {needed} bytes, only {available} available")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes the structure needs.
        needed: u64,
        /// Bytes that were there.
        available: u64,
    },
    /// A checksum does not match: the bytes changed after they were written.
    #[error("{what} CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    CrcMismatch {
        /// What the CRC covers.
        what: &'static str,
        /// The CRC recorded by the writer.
        stored: u32,
        /// The CRC of the bytes as read.
        computed: u32,
    },
    /// The block is encrypted (flag bit 0, format.md §2.5) and the reader was given no key. A
    /// reader of a backup names the manifest's key id before it gets here.
    #[error("block is encrypted (AES-256-GCM) and no key was given to read it")]
    Encrypted,
    /// The reader holds the backup's key but the block is not encrypted: a block written without
    /// the key, which an encrypted backup never holds.
    #[error(
        "block is not encrypted, but the backup is (key id '{key_id}'): it was not written with the backup's key"
    )]
    NotEncrypted {
        /// The id of the key the reader holds.
        key_id: String,
    },
    /// AES-256-GCM authentication of an encrypted block failed: its payload or header was altered,
    /// or the key is not the one it was written with.
    #[error(
        "AES-256-GCM authentication failed with key id '{key_id}': the block was altered, or it was not encrypted with this key"
    )]
    Decrypt {
        /// The id of the key tried.
        key_id: String,
    },
    /// Key bytes of the wrong length (the value itself is never shown).
    #[error("an AES-256 key is 32 bytes, not {len}")]
    InvalidKey {
        /// The length given.
        len: usize,
    },
    /// Encrypting a block failed (no random nonce could be had).
    #[error("encryption failed: {message}")]
    Encrypt {
        /// What failed.
        message: String,
    },
    /// A length or count is beyond what a reader accepts (format.md §3), rejected before allocating.
    #[error("{what}: {value} exceeds the limit of {limit}")]
    LimitExceeded {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The largest value accepted.
        limit: u64,
    },
    /// Any other inconsistency in the bytes, described in the message.
    #[error("{0}")]
    Corrupt(String),
    /// An error inside one block of a segment: names the block (counted from 0) and where it starts.
    #[error("block {index} at byte {position}: {error}")]
    Block {
        /// Index of the block in the segment, from 0.
        index: u64,
        /// Byte offset of the block header from the start of the segment.
        position: u64,
        /// What is wrong with it.
        error: Box<FormatError>,
    },
    /// An error inside one record of a block: names the record (counted from 0) and where it starts
    /// in the block's decompressed record bytes.
    #[error("record {index} at byte {position} of the block's records: {error}")]
    Record {
        /// Index of the record in the block, from 0.
        index: u64,
        /// Byte offset of the record in the decompressed records of the block.
        position: u64,
        /// What is wrong with it.
        error: Box<FormatError>,
    },
    /// The compressed payload could not be decompressed.
    #[error("{codec} decompression failed: {message}")]
    Decompress {
        /// The codec of the block.
        codec: &'static str,
        /// What the decompressor reported.
        message: String,
    },
    /// Compression failed (an allocation failure in the codec library: not expected in practice).
    #[error("{codec} compression failed: {message}")]
    Compress {
        /// The codec of the writer.
        codec: &'static str,
        /// What the compressor reported.
        message: String,
    },
    /// A compression level outside the codec's range.
    #[error("invalid {codec} compression level {level}: accepted levels are {range}")]
    InvalidLevel {
        /// The codec.
        codec: &'static str,
        /// The level asked for.
        level: i64,
        /// The accepted range, e.g. `1..=22`.
        range: &'static str,
    },
    /// The writer was given a record whose offset does not follow the previous one.
    #[error("offsets must increase: record offset {offset} follows offset {previous}")]
    OffsetOrder {
        /// The offset of the previous record.
        previous: i64,
        /// The offset of the refused record.
        offset: i64,
    },
    /// The writer was given a record with a negative offset (Kafka offsets are never negative, and
    /// segment paths could not sort one).
    #[error("record offset {0} is negative")]
    NegativeOffset(i64),
    /// A single record too large for any block (format.md §3).
    #[error(
        "record at offset {offset} encodes to {len} bytes, more than the {max} bytes a block may hold"
    )]
    RecordTooLarge {
        /// The offset of the record.
        offset: i64,
        /// Its encoded size.
        len: u64,
        /// The block limit.
        max: u64,
    },
    /// The segment writer was used out of order (see [`crate::SegmentWriter`]).
    #[error("segment writer: {0}")]
    WriterUsage(&'static str),
    /// A manifest or checkpoint that is not valid JSON of the expected shape.
    #[error("invalid {what} JSON: {error}")]
    Json {
        /// `manifest` or `checkpoint`.
        what: &'static str,
        /// What the parser reported, with line and column.
        error: serde_json::Error,
    },
    /// A JSON document whose `format` field says it is something else.
    #[error("not a kafka-backup {what}: \"format\" is {found}, expected \"{expected}\"")]
    WrongDocument {
        /// `manifest` or `checkpoint`.
        what: &'static str,
        /// The `format` found, as JSON (or `missing`).
        found: String,
        /// The `format` expected.
        expected: &'static str,
    },
}

impl FormatError {
    /// Wraps an error with the block it happened in.
    pub(crate) fn in_block(self, index: u64, position: u64) -> Self {
        FormatError::Block {
            index,
            position,
            error: Box::new(self),
        }
    }

    pub(crate) fn corrupt(msg: impl Into<String>) -> Self {
        FormatError::Corrupt(msg.into())
    }
}

/// Renders magic bytes for an error message: as text when printable, else as hex.
pub(crate) fn show_magic(bytes: &[u8]) -> String {
    if bytes.iter().all(|b| b.is_ascii_graphic()) {
        format!("{:?}", String::from_utf8_lossy(bytes))
    } else {
        format!("0x{}", hex::encode(bytes))
    }
}
