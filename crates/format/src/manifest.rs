//! Manifests (format.md §4) and checkpoints (§5) as serde types.
//!
//! The `format` and `formatVersion` fields are not struct fields: [`Manifest::to_json`] always
//! writes the current ones and [`Manifest::from_json`] checks them before anything else, so a
//! document of another kind or a newer version fails with an error that says so, rather than with
//! a confusing message about some field. Unknown fields are ignored (§4), optional fields are
//! omitted when absent.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Codec, FormatError, SegmentSummary};

/// The manifest format version this crate writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// The `format` field of a manifest.
pub const MANIFEST_FORMAT: &str = "kafka-backup-manifest";
/// The `format` field of a checkpoint.
pub const CHECKPOINT_FORMAT: &str = "kafka-backup-checkpoint";

/// The record of one complete backup: what it covers and every segment needed to restore it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `<name>-<YYYYMMDD>-<HHMMSS>` ([`crate::backup_id`]).
    pub backup_id: String,
    /// The KafkaBackup's `metadata.name`.
    pub backup_name: String,
    /// The backup this one continued from, whose segments it may reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_backup_id: Option<String>,
    /// A user-given name of the source cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster_id: Option<String>,
    /// The cluster id Kafka reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_cluster_id: Option<String>,
    /// When the run started, RFC 3339 UTC ([`crate::rfc3339`]); retention orders backups by it.
    pub start_time: String,
    /// When the run completed, RFC 3339 UTC.
    pub completion_time: String,
    /// The writing program and its version, for diagnosis.
    #[serde(default)]
    pub tool: String,
    /// The codec configured for this run's segments (blocks record their own codec).
    #[serde(default)]
    pub compression: CompressionInfo,
    /// Whether restores were configured to add the original offset as a header.
    #[serde(default)]
    pub include_offset_headers: bool,
    /// Present when the segments are encrypted (format.md §2.5): with which key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// The backed-up topics.
    pub topics: Vec<TopicEntry>,
    /// Committed offsets of the consumer groups on the backed-up topics.
    #[serde(default)]
    pub consumer_groups: Vec<ConsumerGroupEntry>,
    /// Sums over the topics, for listings.
    #[serde(default)]
    pub totals: Totals,
}

/// One backed-up topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicEntry {
    /// The topic name.
    pub name: String,
    /// Kafka's topic id, to tell a recreated topic of the same name apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partitions the topic had, so a restore can recreate it.
    pub partition_count: i32,
    /// Its replication factor, likewise.
    #[serde(default)]
    pub replication_factor: i32,
    /// Topic configs that were not defaults, likewise.
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// The backed-up partitions.
    pub partitions: Vec<PartitionEntry>,
}

/// One backed-up partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionEntry {
    /// The partition number.
    pub partition: i32,
    /// Where the backed-up history of the partition begins.
    pub start_offset: i64,
    /// Exclusive end: the high watermark captured when the run started.
    pub end_offset: i64,
    /// Records stored for the partition.
    pub records: u64,
    /// Smallest record timestamp; absent without records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_timestamp: Option<i64>,
    /// Largest record timestamp; absent without records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timestamp: Option<i64>,
    /// Offset ranges known to be missing for a reason other than compaction or transactions.
    #[serde(default)]
    pub gaps: Vec<Gap>,
    /// Every segment needed to restore the partition, in offset order.
    #[serde(default)]
    pub segments: Vec<SegmentEntry>,
    /// Checkpoints only: the high watermark the running backup goes up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_offset: Option<i64>,
    /// Checkpoints only: the next offset to read. Everything below it (down to where this run
    /// started) is in the listed segments or holds no committed record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<i64>,
}

/// A range `[from, to)` of offsets the backup is known to miss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// First missing offset.
    pub from: i64,
    /// End of the range, exclusive.
    pub to: i64,
    /// Why the records are missing.
    pub reason: GapReason,
}

/// Why a [`Gap`] exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GapReason {
    /// The broker's log start offset had passed the range: retention deleted it first.
    LogStart,
    /// A reason added by a newer writer (same major version): readers treat it as missing data.
    #[serde(other)]
    Unknown,
}

/// One segment object, as the writer summarised it ([`SegmentEntry::new`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentEntry {
    /// The object path relative to the repository ([`crate::segment_path`]).
    pub path: String,
    /// The object's size in bytes.
    pub size: u64,
    /// SHA-256 of the object, lower-case hex.
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
    /// Record bytes before compression.
    pub raw_bytes: u64,
    /// Number of blocks.
    pub blocks: u32,
}

impl SegmentEntry {
    /// The entry for a segment stored at `path`, from what its writer reported.
    pub fn new(path: impl Into<String>, summary: &SegmentSummary) -> Self {
        SegmentEntry {
            path: path.into(),
            size: summary.size,
            sha256: summary.sha256.clone(),
            first_offset: summary.first_offset,
            last_offset: summary.last_offset,
            records: summary.records,
            min_timestamp: summary.min_timestamp,
            max_timestamp: summary.max_timestamp,
            raw_bytes: summary.raw_bytes,
            blocks: summary.blocks,
        }
    }

    /// Whether a decoded segment matches this entry in everything but the path (deep verification
    /// compares [`crate::verify_segment`]'s result with the entry).
    pub fn matches(&self, summary: &SegmentSummary) -> bool {
        *self == SegmentEntry::new(self.path.clone(), summary)
    }
}

/// Committed offsets of one consumer group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerGroupEntry {
    /// The group id.
    pub group_id: String,
    /// Its committed offsets on the backed-up topics.
    pub offsets: Vec<GroupOffset>,
}

/// One committed offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset the group will read, as Kafka stores it.
    pub offset: i64,
    /// The commit metadata string, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// Sums over a manifest, so listings need not add up every partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Totals {
    /// Topics backed up.
    pub topics: u64,
    /// Partitions backed up.
    pub partitions: u64,
    /// Records stored.
    pub records: u64,
    /// Segments referenced.
    pub segments: u64,
    /// Bytes of all referenced segments.
    pub stored_bytes: u64,
    /// Record bytes before compression.
    pub raw_bytes: u64,
    /// Bytes of the segments this run wrote (the others come from earlier backups).
    pub uploaded_bytes: u64,
}

/// The configured compression, as written in the manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionInfo {
    /// `none`, `zstd` or `lz4`.
    pub codec: CodecName,
    /// The level, absent for `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i64>,
}

/// The codec names used in JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    /// No compression.
    #[default]
    None,
    /// Zstandard.
    Zstd,
    /// LZ4 frames.
    Lz4,
}

impl From<Codec> for CompressionInfo {
    fn from(codec: Codec) -> Self {
        match codec {
            Codec::None => CompressionInfo {
                codec: CodecName::None,
                level: None,
            },
            Codec::Zstd { level } => CompressionInfo {
                codec: CodecName::Zstd,
                level: Some(i64::from(level)),
            },
            Codec::Lz4 { level } => CompressionInfo {
                codec: CodecName::Lz4,
                level: Some(i64::from(level)),
            },
        }
    }
}

impl CompressionInfo {
    /// The codec with its level (zstd defaults to 3, lz4 to 1 when absent), validated.
    pub fn to_codec(&self) -> Result<Codec, FormatError> {
        let bad =
            |codec: &'static str, range: &'static str, level: i64| FormatError::InvalidLevel {
                codec,
                level,
                range,
            };
        let codec = match self.codec {
            CodecName::None => Codec::None,
            CodecName::Zstd => {
                let level = self.level.unwrap_or(3);
                Codec::Zstd {
                    level: i32::try_from(level).map_err(|_| bad("zstd", "1..=22", level))?,
                }
            }
            CodecName::Lz4 => {
                let level = self.level.unwrap_or(1);
                Codec::Lz4 {
                    level: u32::try_from(level).map_err(|_| bad("lz4", "1..=12", level))?,
                }
            }
        };
        codec.validate()?;
        Ok(codec)
    }
}

/// How the segments of a backup are encrypted (format.md §2.5, §4): every block of every segment
/// the manifest lists, with one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionInfo {
    /// `AES-256-GCM`, the only algorithm of format version 1; readers refuse any other.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// Identifies the key; a reader without it fails naming this id.
    pub key_id: String,
    /// The key check value ([`crate::key_check`]): tells the right key from a wrong one before
    /// any block is read. Absent, a wrong key shows as blocks failing authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_check: Option<String>,
}

fn default_algorithm() -> String {
    crate::ENCRYPTION_ALGORITHM.to_owned()
}

/// The progress of a run that has not completed, from which a killed run resumes (§5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The run's backup id, kept on resume.
    pub backup_id: String,
    /// The KafkaBackup's `metadata.name`.
    pub backup_name: String,
    /// Always [`CheckpointState::Running`].
    #[serde(default)]
    pub state: CheckpointState,
    /// When the run started, RFC 3339 UTC.
    pub start_time: String,
    /// When this checkpoint was written, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_time: Option<String>,
    /// As in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_backup_id: Option<String>,
    /// As in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster_id: Option<String>,
    /// As in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_cluster_id: Option<String>,
    /// As in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// As in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionInfo>,
    /// As in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_offset_headers: Option<bool>,
    /// As in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// Topics with, per partition, `targetOffset`, `nextOffset` and the segments completely
    /// stored so far.
    pub topics: Vec<TopicEntry>,
}

/// The state of a checkpointed run: only running runs have checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckpointState {
    /// The run has not completed.
    #[default]
    Running,
}

/// Adds `format` and `formatVersion` in front of a document's own fields.
#[derive(Serialize)]
struct Tagged<'a, T> {
    format: &'static str,
    #[serde(rename = "formatVersion")]
    format_version: u32,
    #[serde(flatten)]
    inner: &'a T,
}

/// Just the fields that say what a document is, read before the rest.
#[derive(Deserialize)]
struct Probe {
    format: Option<serde_json::Value>,
    #[serde(rename = "formatVersion")]
    format_version: Option<serde_json::Value>,
}

/// What a JSON document of the repository is: how its reader names it and checks its tag.
pub(crate) struct DocumentKind {
    /// The name in messages (`manifest`, `restore state`).
    pub what: &'static str,
    /// The `format` field it is written with.
    pub format: &'static str,
    /// How errors name its `formatVersion` field.
    pub version_field: &'static str,
    /// Whether a document without `format` and `formatVersion` reads as this kind: for kinds
    /// first written without the tag, whose path alone said what they were.
    pub untagged_reads: bool,
}

const MANIFEST: DocumentKind = DocumentKind {
    what: "manifest",
    format: MANIFEST_FORMAT,
    version_field: "manifest formatVersion",
    untagged_reads: false,
};
const CHECKPOINT: DocumentKind = DocumentKind {
    what: "checkpoint",
    format: CHECKPOINT_FORMAT,
    version_field: "checkpoint formatVersion",
    untagged_reads: false,
};

pub(crate) fn to_json<T: Serialize>(format: &'static str, inner: &T) -> Vec<u8> {
    let tagged = Tagged {
        format,
        format_version: MANIFEST_FORMAT_VERSION,
        inner,
    };
    // These types serialize to JSON without fail: string map keys, no custom serializers.
    serde_json::to_vec_pretty(&tagged).expect("document types always serialize to JSON")
}

pub(crate) fn from_json<T: DeserializeOwned>(
    kind: &DocumentKind,
    bytes: &[u8],
) -> Result<T, FormatError> {
    let what = kind.what;
    let json = |error| FormatError::Json { what, error };
    let probe: Probe = serde_json::from_slice(bytes).map_err(json)?;
    if kind.untagged_reads && probe.format.is_none() && probe.format_version.is_none() {
        return serde_json::from_slice(bytes).map_err(json);
    }
    match &probe.format {
        Some(serde_json::Value::String(s)) if s == kind.format => {}
        other => {
            return Err(FormatError::WrongDocument {
                what,
                found: other
                    .as_ref()
                    .map_or_else(|| "missing".to_owned(), |v| v.to_string()),
                expected: kind.format,
            });
        }
    }
    let version_what = kind.version_field;
    match &probe.format_version {
        Some(v) if v.as_u64() == Some(u64::from(MANIFEST_FORMAT_VERSION)) => {}
        Some(v)
            if v.as_u64()
                .is_some_and(|n| n > u64::from(MANIFEST_FORMAT_VERSION)) =>
        {
            return Err(FormatError::UnsupportedVersion {
                what: version_what,
                version: v.as_u64().unwrap_or_default(),
                supported: u64::from(MANIFEST_FORMAT_VERSION),
            });
        }
        other => {
            return Err(FormatError::corrupt(format!(
                "{version_what} is {}, expected {MANIFEST_FORMAT_VERSION}",
                other
                    .as_ref()
                    .map_or_else(|| "missing".to_owned(), |v| v.to_string())
            )));
        }
    }
    serde_json::from_slice(bytes).map_err(json)
}

impl Manifest {
    /// The manifest as pretty-printed UTF-8 JSON, with the current `format` and `formatVersion`.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(MANIFEST_FORMAT, self)
    }

    /// Parses a manifest. Refuses a document whose `format` is not a manifest's and a newer
    /// `formatVersion`, naming what was found; ignores unknown fields.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FormatError> {
        from_json(&MANIFEST, bytes)
    }
}

impl Checkpoint {
    /// The checkpoint as pretty-printed UTF-8 JSON, with `format` and `formatVersion`.
    pub fn to_json(&self) -> Vec<u8> {
        to_json(CHECKPOINT_FORMAT, self)
    }

    /// Parses a checkpoint, with the same checks as [`Manifest::from_json`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, FormatError> {
        from_json(&CHECKPOINT, bytes)
    }
}
