//! `KafkaBackup`: what to back up, from where, to where, how often and how long to keep it.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, JobSettings, Phase, PodTemplate};
use crate::encryption::Encryption;
use crate::kafka::KafkaClusterSpec;
use crate::storage::StorageSpec;

/// A backup configuration for Kafka topics. Without `schedule` it runs once.
// kube's printcolumn(...) arguments repeat keys on purpose (one column each).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kafka.oso.sh",
    version = "v1alpha1",
    kind = "KafkaBackup",
    namespaced,
    shortname = "kb",
    category = "kafka-backup",
    status = "KafkaBackupStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(
        name = "Last Backup",
        type_ = "string",
        json_path = ".status.lastBackupId"
    ),
    printcolumn(
        name = "Last Time",
        type_ = "date",
        json_path = ".status.lastBackupTime"
    ),
    printcolumn(
        name = "Records",
        type_ = "integer",
        json_path = ".status.lastBackupRecords",
        priority = "1"
    ),
    printcolumn(name = "Next", type_ = "date", json_path = ".status.nextScheduledTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaBackupSpec {
    /// Standard 5-field cron expression; omit for a one-time backup. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in (e.g. `Europe/Berlin`); default UTC. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Cluster to back up.
    pub kafka_cluster: KafkaClusterSpec,
    /// Topic names and wildcard patterns (`*` matches any run of characters, `?` one character).
    #[schemars(length(min = 1))]
    pub topics: Vec<String>,
    /// Topic names and patterns to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_topics: Vec<String>,
    /// Where backups are written.
    pub storage: StorageSpec,
    /// Block compression (default zstd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Compression level: 1-22 for zstd (default 3), 1-12 for lz4 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<i32>,
    /// Encrypt record data at rest (AES-256-GCM per block, after compression) with a key from a
    /// Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// Restores of this backup add headers carrying each record's original offset, unless the
    /// KafkaRestore says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_offset_headers: Option<bool>,
    /// Name of the source cluster, recorded in the backup (for offset mapping on restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster_id: Option<String>,
    /// Seconds between checkpoints: data read is made durable in storage, then recorded as backed
    /// up, at least this often (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub checkpoint_interval_secs: Option<u64>,
    /// How many backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Throughput limits for the whole run, across all partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Stop calling a failing Kafka cluster or store for a while instead of hammering it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Container resources of the backup Job. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Job settings. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobSettings>,
    /// Pod settings. Operator-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

/// Block compression codecs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Lz4,
    None,
}

/// Retention of backups of one KafkaBackup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// Number of complete backups to keep; older ones are deleted with the data only they use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub backups: Option<u32>,
}

/// Throughput limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Maximum bytes of record data per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub bytes_per_second: Option<u64>,
    /// Maximum records per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub records_per_second: Option<u64>,
}

/// Circuit breaker settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Whether the breaker is active.
    #[serde(default)]
    pub enabled: bool,
    /// Consecutive failures that open the circuit (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub failure_threshold: Option<u32>,
    /// Seconds the circuit stays open before one probe call is let through (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub reset_timeout_secs: Option<u64>,
}

/// Observed state of a KafkaBackup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBackupStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_time: Option<String>,
    /// Bytes stored by the last backup (all segments it references).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_records: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_history: Vec<BackupHistoryEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One run in `status.backupHistory`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupHistoryEntry {
    pub backup_id: String,
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// `success` or `failure`.
    pub outcome: String,
}
