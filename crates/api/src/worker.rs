//! What a Job's worker (`kafka-backup worker`) tells the operator.
//!
//! - At the end, a [`WorkerResult`] in the container's termination message
//!   (`/dev/termination-log`, at most 4096 bytes: lists are cut to fit and `truncated` is set).
//! - While it runs, a [`WorkerProgress`] document in the run's storage, rewritten every few
//!   seconds at the path the operator chose (`KAFKA_BACKUP_PROGRESS_PATH`), deleted at the end.
//!
//! Neither ever holds a Secret value: only counts, ids, names and error messages, and error
//! messages of this project never include Secret values.

use serde::{Deserialize, Serialize};

use crate::offsets::GroupResult;
use crate::restore::{OffsetResetStatus, RestoredTopic};

/// Kubernetes keeps at most this many bytes of a termination message.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// The environment variable holding the resource (JSON: apiVersion, kind, metadata, spec) a Job
/// runs. It holds references to Secrets, never their values.
pub const MANIFEST_ENV: &str = "KAFKA_BACKUP_MANIFEST";
/// Where the worker writes its [`WorkerResult`].
pub const RESULT_FILE_ENV: &str = "KAFKA_BACKUP_RESULT_FILE";
/// The storage path of the run's [`WorkerProgress`] document.
pub const PROGRESS_PATH_ENV: &str = "KAFKA_BACKUP_PROGRESS_PATH";

/// The outcome of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResult {
    /// `success` or `failure`.
    pub outcome: String,
    /// For a failure: the error, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a failure: whether the spec or its inputs were at fault (the worker's exit code 2).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bad_input: bool,
    pub start_time: String,
    pub completion_time: String,
    /// KafkaBackup: the backup written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// Records: in the backup, restored, or 0.
    #[serde(default)]
    pub records: u64,
    /// Bytes: stored by the backup, or restored.
    #[serde(default)]
    pub bytes: u64,
    /// KafkaRestore: records per target topic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored_topics: Vec<RestoredTopic>,
    /// KafkaRestore: the consumer group offset reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_reset_status: Option<OffsetResetStatus>,
    /// KafkaRestore, KafkaOffsetReset: the snapshot taken before offsets were changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Offset kinds: the outcome per group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupResult>,
    /// KafkaOffsetRollback verify (and rollback): whether every group matches the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// Lists were cut to fit the termination message; the full result is in the run's output.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl WorkerResult {
    /// The result as JSON of at most [`TERMINATION_MESSAGE_LIMIT`] bytes: the longest lists are
    /// cut (and `truncated` set) until it fits, and a long error message is shortened.
    pub fn to_termination_message(&self) -> String {
        let mut r = self.clone();
        loop {
            let text = serde_json::to_string(&r).unwrap_or_default();
            if text.len() <= TERMINATION_MESSAGE_LIMIT {
                return text;
            }
            r.truncated = true;
            if r.groups.len() > 1 || r.restored_topics.len() > 1 {
                if r.groups.len() >= r.restored_topics.len() {
                    r.groups.truncate(r.groups.len() / 2);
                } else {
                    r.restored_topics.truncate(r.restored_topics.len() / 2);
                }
                continue;
            }
            if let Some(status) = r.offset_reset_status.as_mut()
                && status.groups_reset.len() > 1
            {
                status.groups_reset.truncate(status.groups_reset.len() / 2);
                continue;
            }
            if let Some(e) = r.error.as_mut()
                && e.len() > 512
            {
                let mut cut = 512;
                while !e.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.truncate(cut);
                e.push('…');
                continue;
            }
            r.groups.clear();
            r.restored_topics.clear();
            r.offset_reset_status = None;
            return serde_json::to_string(&r).unwrap_or_default();
        }
    }
}

/// How far a running worker is: a document of the storage format (format.md §13), so its
/// type, path and tag live with the other stored documents.
pub use kafka_backup_format::ProgressDocument as WorkerProgress;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_results_are_cut_to_the_termination_message_limit() {
        let r = WorkerResult {
            outcome: "success".into(),
            restored_topics: (0..500)
                .map(|i| RestoredTopic {
                    name: format!("a-rather-long-topic-name-number-{i}"),
                    records: i,
                })
                .collect(),
            ..WorkerResult::default()
        };
        let text = r.to_termination_message();
        assert!(text.len() <= TERMINATION_MESSAGE_LIMIT, "{}", text.len());
        let back: WorkerResult = serde_json::from_str(&text).expect("parses");
        assert!(back.truncated);
        assert!(!back.restored_topics.is_empty());
        assert_eq!(back.restored_topics[0], r.restored_topics[0]);
    }

    #[test]
    fn short_results_are_kept_whole() {
        let r = WorkerResult {
            outcome: "failure".into(),
            error: Some("spec.backupId: no backup 'x'".into()),
            bad_input: true,
            ..WorkerResult::default()
        };
        let back: WorkerResult = serde_json::from_str(&r.to_termination_message()).expect("parses");
        assert_eq!(back, r);
    }
}
