//! The JSON documents a repository holds besides manifests and checkpoints (format.md §10-§13):
//! restore states, offset maps, offset snapshots and progress documents.
//!
//! Like manifests, each is written with `format` and `formatVersion` in front of its own fields
//! ([`RestoreState::to_json`] and the like) and checked by its reader before anything else. Restore
//! states and offset maps were first written without the two fields: a document that lacks both
//! still reads as the kind its path says, while one that names another kind or a newer version is
//! refused with an error that says so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::{DocumentKind, from_json, to_json};
use crate::{FormatError, TimeWindow};

/// The `format` field of a restore state.
pub const RESTORE_STATE_FORMAT: &str = "kafka-backup-restore-state";
/// The `format` field of an offset map.
pub const OFFSET_MAP_FORMAT: &str = "kafka-backup-offset-map";
/// The `format` field of an offset snapshot.
pub const OFFSET_SNAPSHOT_FORMAT: &str = "kafka-backup-offset-snapshot";
/// The `format` field of a progress document.
pub const PROGRESS_FORMAT: &str = "kafka-backup-progress";

const RESTORE_STATE: DocumentKind = DocumentKind {
    what: "restore state",
    format: RESTORE_STATE_FORMAT,
    version_field: "restore state formatVersion",
    untagged_reads: true,
};
const OFFSET_MAP: DocumentKind = DocumentKind {
    what: "offset map",
    format: OFFSET_MAP_FORMAT,
    version_field: "offset map formatVersion",
    untagged_reads: true,
};
const OFFSET_SNAPSHOT: DocumentKind = DocumentKind {
    what: "offset snapshot",
    format: OFFSET_SNAPSHOT_FORMAT,
    version_field: "offset snapshot formatVersion",
    untagged_reads: false,
};
const PROGRESS: DocumentKind = DocumentKind {
    what: "progress document",
    format: PROGRESS_FORMAT,
    version_field: "progress document formatVersion",
    untagged_reads: true,
};

/// The durable record of one restore, next to the backup (§10): where each target partition
/// started, so a restarted restore knows what it already wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreState {
    /// The KafkaRestore's `metadata.name`.
    pub restore_name: String,
    /// The backup being restored.
    pub backup_id: String,
    /// Whether the restore finished: a completed restore is not run again under its name.
    pub state: RestoreProgress,
    /// RFC 3339 UTC.
    pub start_time: String,
    /// RFC 3339 UTC, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// `"<target topic>/<partition>"` ([`partition_key`]) to the target's end offset before
    /// anything was written.
    pub target_start_offsets: BTreeMap<String, i64>,
    /// The time window the restore started with: a restart must restore the same records, or
    /// what it counts as already written would not match what is there. Absent in states
    /// written before windows were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeWindow>,
    /// Whether the records carry the source-position headers, so a restart writes the rest the
    /// same way. Absent in states written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_original_offset_header: Option<bool>,
}

/// The `state` of a [`RestoreState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RestoreProgress {
    /// Records may still be missing; a restart continues.
    Running,
    /// Every record was written and the offsets reset: nothing is left to do.
    Completed,
}

/// How a target partition is named in a [`RestoreState`]: `"<topic>/<partition>"`.
pub fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// How source offsets map to target offsets after a restore (§11), as runs: `count` consecutive
/// restored records whose source offsets are `source..source+count` landed at
/// `target..target+count`. A later `headerBased` offset reset translates with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetMap {
    /// The backup restored.
    pub backup_id: String,
    /// The KafkaRestore's `metadata.name`.
    pub restore_name: String,
    /// As in the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster_id: Option<String>,
    /// One entry per restored topic.
    pub topics: Vec<OffsetMapTopic>,
}

/// See [`OffsetMap`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetMapTopic {
    /// The topic in the backup.
    pub source_topic: String,
    /// The topic written to.
    pub target_topic: String,
    /// By partition number.
    pub partitions: Vec<OffsetMapPartition>,
}

/// See [`OffsetMap`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetMapPartition {
    /// Source and target partition (a restore keeps partition numbers).
    pub partition: i32,
    /// `[sourceStart, targetStart, count]` triples, in offset order.
    pub runs: Vec<[i64; 3]>,
    /// Target end offset after the restore.
    pub target_end_offset: i64,
}

impl OffsetMapPartition {
    /// The target offset of the first restored record whose source offset is `>= source`, or the
    /// end of the restored data when there is none: where a consumer that had committed `source`
    /// ("next to read") resumes.
    pub fn translate(&self, source: i64) -> i64 {
        for [s, t, n] in &self.runs {
            if source < s + n {
                return if source <= *s { *t } else { t + (source - s) };
            }
        }
        self.target_end_offset
    }
}

/// Appends a record's source offset and the target offset it landed at to `runs`, extending
/// the last run when both continue it, so a map stays as small as the gaps allow.
pub fn extend_runs(runs: &mut Vec<[i64; 3]>, source: i64, target: i64) {
    if let Some(last) = runs.last_mut()
        && last[0] + last[2] == source
        && last[1] + last[2] == target
    {
        last[2] += 1;
        return;
    }
    runs.push([source, target, 1]);
}

/// Committed offsets of consumer groups at one moment (§12), kept so a later rollback can put
/// them back exactly. Immutable once written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetSnapshot {
    /// Its name, also in its path.
    pub snapshot_id: String,
    /// RFC 3339 UTC.
    pub created_time: String,
    /// The cluster id Kafka reports, so a rollback into another cluster can be noticed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Every group asked for, with or without offsets, in the order asked.
    pub groups: Vec<GroupOffsets>,
}

/// One group's committed offsets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupOffsets {
    /// The consumer group.
    pub group_id: String,
    /// Its committed offsets.
    pub offsets: Vec<PartitionOffset>,
}

/// One committed offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The next offset the group reads.
    pub offset: i64,
    /// The metadata committed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// How far a running Job's worker is (§13), rewritten every few seconds while it runs and
/// deleted at the end, so the operator can show progress without reaching Kafka or storage
/// credentials of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressDocument {
    /// When this document was written (RFC 3339).
    pub updated: String,
    /// Records done so far.
    pub records: u64,
    /// Bytes done so far.
    pub bytes: u64,
    /// What "done" is for a backup: offsets passed of all there are to read; for a restore:
    /// records written of all to write.
    pub done: u64,
    /// What `done` counts towards.
    pub total: u64,
}

impl ProgressDocument {
    /// Percent done, 0-100.
    pub fn percent(&self) -> u64 {
        (self.done.min(self.total) * 100)
            .checked_div(self.total)
            .unwrap_or(0)
    }
}

macro_rules! json_document {
    ($ty:ty, $kind:expr, $name:literal) => {
        impl $ty {
            #[doc = concat!("The ", $name, " as pretty-printed UTF-8 JSON, with `format` and `formatVersion`.")]
            pub fn to_json(&self) -> Vec<u8> {
                to_json($kind.format, self)
            }

            #[doc = concat!("Parses a ", $name, ", refusing another kind of document and a newer version.")]
            pub fn from_json(bytes: &[u8]) -> Result<Self, FormatError> {
                from_json(&$kind, bytes)
            }
        }
    };
}

json_document!(RestoreState, RESTORE_STATE, "restore state");
json_document!(OffsetMap, OFFSET_MAP, "offset map");
json_document!(OffsetSnapshot, OFFSET_SNAPSHOT, "offset snapshot");
json_document!(ProgressDocument, PROGRESS, "progress document");

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> RestoreState {
        RestoreState {
            restore_name: "r".into(),
            backup_id: "b-20241201-120000".into(),
            state: RestoreProgress::Running,
            start_time: "2024-12-01T12:00:00Z".into(),
            completion_time: None,
            target_start_offsets: [("t/0".to_string(), 5)].into(),
            window: Some(TimeWindow::until(Some(9))),
            include_original_offset_header: Some(true),
        }
    }

    #[test]
    fn documents_round_trip_with_their_tag() {
        let s = state();
        let text = String::from_utf8(s.to_json()).expect("utf-8");
        assert!(
            text.contains("\"format\": \"kafka-backup-restore-state\""),
            "{text}"
        );
        assert!(text.contains("\"state\": \"running\""), "{text}");
        assert_eq!(RestoreState::from_json(text.as_bytes()).expect("reads"), s);
        let p = ProgressDocument {
            updated: "2024-12-01T12:00:00Z".into(),
            records: 1,
            bytes: 2,
            done: 3,
            total: 4,
        };
        assert_eq!(ProgressDocument::from_json(&p.to_json()).expect("reads"), p);
    }

    #[test]
    fn untagged_states_and_maps_written_before_tags_still_read() {
        let old_state = br#"{"restoreName":"r","backupId":"b-20241201-120000","state":"completed",
            "startTime":"2024-12-01T12:00:00Z","completionTime":"2024-12-01T12:01:00Z",
            "targetStartOffsets":{"t/0":0}}"#;
        let s = RestoreState::from_json(old_state).expect("old state reads");
        assert_eq!(s.state, RestoreProgress::Completed);
        assert_eq!(s.window, None);
        let old_map = br#"{"backupId":"b-20241201-120000","restoreName":"r","topics":[
            {"sourceTopic":"a","targetTopic":"b","partitions":[
            {"partition":0,"runs":[[40,0,60]],"targetEndOffset":60}]}]}"#;
        let m = OffsetMap::from_json(old_map).expect("old map reads");
        assert_eq!(m.topics[0].partitions[0].translate(55), 15);
        let old_progress = br#"{"updated":"x","records":1,"bytes":2,"done":3,"total":4}"#;
        assert_eq!(
            ProgressDocument::from_json(old_progress)
                .expect("old progress reads")
                .percent(),
            75
        );
    }

    #[test]
    fn other_documents_and_newer_versions_are_refused() {
        let snapshot = OffsetSnapshot {
            snapshot_id: "s".into(),
            created_time: "t".into(),
            cluster_id: None,
            groups: Vec::new(),
        };
        let e = RestoreState::from_json(&snapshot.to_json()).expect_err("not a state");
        assert!(
            e.to_string().contains("kafka-backup-offset-snapshot"),
            "{e}"
        );
        let newer = String::from_utf8(state().to_json())
            .expect("utf-8")
            .replace("\"formatVersion\": 1", "\"formatVersion\": 2");
        let e = RestoreState::from_json(newer.as_bytes()).expect_err("newer");
        assert!(
            e.to_string().contains("restore state formatVersion 2"),
            "{e}"
        );
        // Snapshots always carried their tag: one without it is not a snapshot.
        let untagged = br#"{"snapshotId":"s","createdTime":"t","groups":[]}"#;
        assert!(OffsetSnapshot::from_json(untagged).is_err());
    }

    #[test]
    fn runs_are_compact_and_translate_committed_offsets() {
        let mut runs = Vec::new();
        // Source offsets 0..5 and 8..10 (a compaction gap) land at 100..107.
        for (i, s) in [0, 1, 2, 3, 4, 8, 9].iter().enumerate() {
            extend_runs(&mut runs, *s, 100 + i as i64);
        }
        assert_eq!(runs, vec![[0, 100, 5], [8, 105, 2]]);
        let m = OffsetMapPartition {
            partition: 0,
            runs,
            target_end_offset: 107,
        };
        assert_eq!(m.translate(0), 100);
        assert_eq!(m.translate(3), 103);
        // Committed 5 ("next to read"): the first restored record at or after it is source 8.
        assert_eq!(m.translate(5), 105);
        assert_eq!(m.translate(9), 106);
        assert_eq!(m.translate(10), 107);
        assert_eq!(m.translate(1000), 107);
    }
}
