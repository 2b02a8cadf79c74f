//! `KafkaRestore`: which backup to restore, where to, and how.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, JobSettings, Phase, PodTemplate};
use crate::encryption::Encryption;
use crate::kafka::KafkaClusterSpec;
use crate::storage::StorageSpec;

/// A restore of one backup into a Kafka cluster. Runs once.
// kube's printcolumn(...) arguments repeat keys on purpose (one column each).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kafka.oso.sh",
    version = "v1alpha1",
    kind = "KafkaRestore",
    namespaced,
    shortname = "kr",
    category = "kafka-backup",
    status = "KafkaRestoreStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backupId"),
    printcolumn(
        name = "Records",
        type_ = "integer",
        json_path = ".status.restoredRecords"
    ),
    printcolumn(
        name = "Completed",
        type_ = "date",
        json_path = ".status.completionTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaRestoreSpec {
    /// The backup to restore.
    #[schemars(length(min = 1))]
    pub backup_id: String,
    /// The cluster to restore into.
    pub target_cluster: KafkaClusterSpec,
    /// Where the backup is stored.
    pub storage: StorageSpec,
    /// The key of an encrypted backup: a restore of one needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Topics of the backup to restore (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Source topic name to target topic name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topic_mapping: BTreeMap<String, String>,
    /// Create missing target topics with the backup's partition count and topic configs.
    #[serde(default)]
    pub create_topics: bool,
    /// Replication factor of created topics (default: the broker's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub default_replication_factor: Option<i32>,
    /// What to do with a target partition that already holds records: `refuse` (default),
    /// `append` after them, or `purge` them first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_data: Option<ExistingData>,
    /// Point-in-time recovery: restore only records with timestamp <= the given time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pitr: Option<Pitr>,
    /// Add headers carrying each record's source offset, partition, timestamp and cluster id
    /// (default: what the backup's `includeOffsetHeaders` says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_original_offset_header: Option<bool>,
    /// Move consumer groups to the restored data after the restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_reset: Option<OffsetReset>,
    /// Snapshot the target groups' offsets before changing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// Container resources of the restore Job. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Job settings. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSettings>,
    /// Pod settings. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

/// Policy for target partitions that already hold records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExistingData {
    /// Stop with an error naming the topic (the default).
    #[default]
    Refuse,
    /// Write after the existing records.
    Append,
    /// Delete the existing records first (Kafka DeleteRecords up to the end offset).
    Purge,
}

/// Point-in-time recovery: restore the records with timestamp up to `timestamp` and, when a
/// start is set too, from `fromTimestamp` on. Both ends are inclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pitr {
    #[serde(default)]
    pub enabled: bool,
    /// Restore records up to this ISO 8601 / RFC 3339 time, e.g. `2024-12-01T12:00:00Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Restore records up to this time, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_millis: Option<i64>,
    /// Restore records from this ISO 8601 / RFC 3339 time on (default: from the oldest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_timestamp: Option<String>,
    /// Restore records from this time on, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_timestamp_millis: Option<i64>,
}

/// Consumer group offset reset after a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OffsetReset {
    #[serde(default)]
    pub enabled: bool,
    pub strategy: OffsetResetStrategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster: Option<String>,
    #[serde(default)]
    pub consumer_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// Offset reset strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OffsetResetStrategy {
    Earliest,
    Latest,
    Timestamp,
    Offset,
    HeaderBased,
}

/// Snapshot before the restore changes group offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollback {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

/// Observed state of a KafkaRestore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaRestoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_records: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restored_topics: Vec<RestoredTopic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_reset_status: Option<OffsetResetStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_snapshot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Records restored into one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredTopic {
    pub name: String,
    pub records: u64,
}

/// Outcome of the offset reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffsetResetStatus {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups_reset: Vec<String>,
}
