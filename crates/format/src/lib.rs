//! The on-storage format of kafka-backup: how segments, their block index and backup manifests are
//! encoded. Pure functions over bytes with no I/O (the one outside input: an encrypting writer's
//! nonces come from the operating system's random source), so every reader and writer of the
//! format shares one implementation that can be tested and fuzzed on its own. The contract is
//! `docs/format.md`.
//!
//! - Writing a segment: [`SegmentWriter`] turns records ([`RecordRef`], borrowed from the consumed
//!   message) into the chunks of one object, and summarises it for the manifest
//!   ([`SegmentSummary`], [`SegmentEntry::new`]).
//! - Reading everything: [`decode_segment`] on a segment in memory (or [`verify_segment`] to check
//!   it without keeping the records), or [`SegmentStreamReader`] block by block as it downloads.
//! - Reading some records: [`decode_trailer`] on the last [`TRAILER_LEN`] bytes, [`decode_index`]
//!   on [`Trailer::index_range`], [`blocks_for`] / [`byte_ranges`] to choose what to fetch, then
//!   [`decode_block`] and [`DecodedBlock::check_against`] on each block.
//! - Encryption (format.md §2.5): [`EncryptionKey`]; [`SegmentWriter::with_encryption`] writes
//!   encrypted blocks, the `_with` decoders and [`SegmentStreamReader::with_key`] read them.
//! - Manifests and checkpoints: [`Manifest`], [`Checkpoint`]; object paths: [`manifest_path`],
//!   [`checkpoint_path`], [`segment_path`], [`backup_id`] (and [`backup_name_of`] back).
//! - The other documents a repository holds: [`RestoreState`], [`OffsetMap`], [`OffsetSnapshot`],
//!   [`ProgressDocument`], at [`restore_state_path`], [`offset_map_path`], [`snapshot_path`],
//!   [`progress_path`]; [`RESERVED_NAMES`] are top-level folders that are not backup names.
//!
//! No function panics on any input: every decoder returns a [`FormatError`] that says what is
//! wrong and where, and allocation is bounded by the size of the input and [`MAX_BLOCK_BYTES`].
#![deny(missing_docs)]

mod codec;
mod crypto;
mod documents;
mod error;
mod lz4frame;
mod manifest;
mod paths;
mod record;
mod segment;
mod stream;
mod wire;

pub use codec::{Codec, CodecId};
pub use crypto::{
    ENCRYPTION_ALGORITHM, ENCRYPTION_OVERHEAD, EncryptionKey, KEY_LEN, NONCE_LEN, TAG_LEN,
    key_check,
};
pub use documents::{
    GroupOffsets, OFFSET_MAP_FORMAT, OFFSET_SNAPSHOT_FORMAT, OffsetMap, OffsetMapPartition,
    OffsetMapTopic, OffsetSnapshot, PROGRESS_FORMAT, PartitionOffset, ProgressDocument,
    RESTORE_STATE_FORMAT, RestoreProgress, RestoreState, extend_runs, partition_key,
};
pub use error::FormatError;
pub use manifest::{
    CHECKPOINT_FORMAT, Checkpoint, CheckpointState, CodecName, CompressionInfo, ConsumerGroupEntry,
    EncryptionInfo, Gap, GapReason, GroupOffset, MANIFEST_FORMAT, MANIFEST_FORMAT_VERSION,
    Manifest, PartitionEntry, SegmentEntry, TopicEntry, Totals,
};
pub use paths::{
    RESERVED_NAMES, SNAPSHOTS_PREFIX, SegmentPath, UtcDateTime, backup_id, backup_name_of,
    checkpoint_path, checkpoints_prefix, id_time_suffix, manifest_path, manifests_prefix,
    offset_map_path, offset_maps_prefix, parse_backup_id, parse_rfc3339, parse_segment_path,
    progress_path, restore_state_path, rfc3339, segment_path, segments_prefix, snapshot_path,
};
pub use record::{Header, NO_HEADERS, NoHeaders, Record, RecordHeaders, RecordRef, TimestampType};
pub use segment::{
    BLOCK_HEADER_LEN, BlockHeader, DEFAULT_BLOCK_BYTES, DecodedBlock, FIRST_BLOCK_BYTES,
    FLAG_ENCRYPTED, HEADER_LEN, INDEX_ENTRY_LEN, IndexEntry, MAX_BLOCK_BYTES, SEGMENT_VERSION,
    SegmentSummary, SegmentWriter, TRAILER_LEN, TimeWindow, Trailer, block_crc, blocks_for,
    blocks_for_range, byte_ranges, decode_block, decode_block_header, decode_block_with,
    decode_header, decode_index, decode_segment, decode_segment_with, decode_trailer,
    verify_segment, verify_segment_with,
};
pub use stream::SegmentStreamReader;
