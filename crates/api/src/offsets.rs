//! `KafkaOffsetReset` and `KafkaOffsetRollback`: moving consumer groups, and snapshots of where
//! they were so a move can be undone.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, JobSettings, Phase, PodTemplate};
use crate::kafka::KafkaClusterSpec;
use crate::restore::OffsetResetStrategy;
use crate::storage::StorageSpec;

/// Moves consumer groups to new offsets. Runs once.
// kube's printcolumn(...) arguments repeat keys on purpose (one column each).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kafka.oso.sh",
    version = "v1alpha1",
    kind = "KafkaOffsetReset",
    namespaced,
    shortname = "kor",
    category = "kafka-backup",
    status = "KafkaOffsetResetStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(name = "Dry Run", type_ = "boolean", json_path = ".spec.dryRun"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaOffsetResetSpec {
    /// The cluster whose groups move.
    pub kafka_cluster: KafkaClusterSpec,
    /// Group names or wildcard patterns (`*`, `?`).
    #[schemars(length(min = 1))]
    pub consumer_groups: Vec<String>,
    /// Only these topics (names or patterns); default: every topic the group has committed on, or
    /// for `offset`, the partitions listed in `offsets`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Where to move the groups.
    pub strategy: OffsetResetStrategy,
    /// For `timestamp`: ISO 8601 time; groups move to the first record at or after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// For `offset`: the offset of each partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<PartitionOffsetSpec>,
    /// For `headerBased`: the backup whose restore's offset map translates the groups' committed
    /// source offsets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_id: Option<String>,
    /// For `headerBased`: which restore of that backup (default: its only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_name: Option<String>,
    /// For `headerBased`: must name the cluster the backup was taken from, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster: Option<String>,
    /// Where backups and snapshots are stored (needed by `headerBased` and snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Compute and report the new offsets without committing them.
    #[serde(default)]
    pub dry_run: bool,
    /// Store a snapshot of the groups' offsets before moving them.
    #[serde(default)]
    pub snapshot_before_reset: bool,
    /// Id of that snapshot (default `<metadata.name>-<YYYYMMDD>-<HHMMSS>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// Container resources of the Job. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Job settings. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSettings>,
    /// Pod settings. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

/// One partition's target offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartitionOffsetSpec {
    pub topic: String,
    #[schemars(range(min = 0))]
    pub partition: i32,
    #[schemars(range(min = 0))]
    pub offset: i64,
}

/// Observed state of a KafkaOffsetReset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaOffsetResetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The outcome for one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupResult {
    pub group_id: String,
    /// `success`, `failure` or `planned` (dry run).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
}

/// Snapshots group offsets, restores a snapshot exactly, or checks the groups still match it.
// kube's printcolumn(...) arguments repeat keys on purpose (one column each).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kafka.oso.sh",
    version = "v1alpha1",
    kind = "KafkaOffsetRollback",
    namespaced,
    shortname = "korb",
    category = "kafka-backup",
    status = "KafkaOffsetRollbackStatus",
    printcolumn(name = "Operation", type_ = "string", json_path = ".spec.operation"),
    printcolumn(name = "Snapshot", type_ = "string", json_path = ".spec.snapshotId"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Verified", type_ = "boolean", json_path = ".status.verified"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaOffsetRollbackSpec {
    /// The cluster whose groups are snapshotted or rolled back.
    pub kafka_cluster: KafkaClusterSpec,
    /// What to do (default `rollback`).
    #[serde(default)]
    pub operation: RollbackOperation,
    /// The snapshot to take, restore or compare with.
    #[schemars(length(min = 1))]
    pub snapshot_id: String,
    /// Groups (names or patterns): to snapshot, or to take from the snapshot (default: all in it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumer_groups: Vec<String>,
    /// For `snapshot`: only these topics (names or patterns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// Where snapshots are stored (default: the operator's or CLI's default storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageSpec>,
    /// Container resources of the Job. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Job settings. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSettings>,
    /// Pod settings. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

/// Operations of a KafkaOffsetRollback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RollbackOperation {
    #[default]
    Rollback,
    Snapshot,
    Verify,
}

/// Observed state of a KafkaOffsetRollback.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaOffsetRollbackStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupResult>,
    /// For `verify`: whether every group matches the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
