//! Consumer group offsets: snapshots of what groups have committed, and moving groups to new
//! offsets. A snapshot is immutable and lives in the storage location at
//! `offset-snapshots/<snapshotId>.json`, so a later rollback can restore it exactly.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kafka::{self, KafkaContext};
use crate::repo::Repository;

/// The `format` tag of a snapshot document.
pub const SNAPSHOT_FORMAT: &str = "kafka-backup-offset-snapshot";

/// Committed offsets of consumer groups at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetSnapshot {
    pub format: String,
    pub format_version: u32,
    pub snapshot_id: String,
    /// RFC 3339 UTC.
    pub created_time: String,
    /// The cluster id Kafka reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    pub groups: Vec<GroupOffsets>,
}

/// One group's committed offsets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupOffsets {
    pub group_id: String,
    pub offsets: Vec<PartitionOffset>,
}

/// One committed offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// Where snapshot `id` is stored.
pub fn snapshot_path(id: &str) -> String {
    format!("offset-snapshots/{id}.json")
}

/// Checks a snapshot id: it becomes an object name.
pub fn check_snapshot_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec {
            field: field.to_string(),
            message: format!(
                "'{id}' is not a valid snapshot id: use letters, digits, '-', '_' and '.'"
            ),
        })
    }
}

/// Groups among `groups` that have active members, for refusing to move them.
pub fn active_groups(
    config: &ClientConfig,
    groups: &[String],
    timeout: Duration,
) -> Result<Vec<String>> {
    let consumer: BaseConsumer<KafkaContext> = kafka::create(config, "group reader")?;
    let mut active = Vec::new();
    for g in groups {
        let list = consumer
            .fetch_group_list(Some(g), Timeout::After(timeout))
            .map_err(|source| Error::Kafka {
                operation: format!("describing consumer group {g}"),
                source,
            })?;
        if list
            .groups()
            .iter()
            .any(|d| d.name() == g && !d.members().is_empty())
        {
            active.push(g.clone());
        }
    }
    Ok(active)
}

/// Takes a snapshot of `groups`' committed offsets on `partitions` and stores it under `id`;
/// refuses to replace an existing snapshot.
pub async fn take_snapshot(
    repo: &Repository,
    config: &ClientConfig,
    id: &str,
    groups: &[String],
    partitions: &[(String, i32)],
    cluster_id: Option<String>,
    timeout: Duration,
) -> Result<OffsetSnapshot> {
    let mut out = Vec::new();
    for g in groups {
        let cfg = config.clone();
        let group = g.clone();
        let parts = partitions.to_vec();
        let committed = tokio::task::spawn_blocking(move || {
            kafka::committed_offsets(&cfg, &group, &parts, timeout)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        out.push(GroupOffsets {
            group_id: g.clone(),
            offsets: committed
                .into_iter()
                .map(|c| PartitionOffset {
                    topic: c.topic,
                    partition: c.partition,
                    offset: c.offset,
                    metadata: c.metadata,
                })
                .collect(),
        });
    }
    let snapshot = OffsetSnapshot {
        format: SNAPSHOT_FORMAT.into(),
        format_version: 1,
        snapshot_id: id.to_string(),
        created_time: kafka_backup_format::rfc3339(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        ),
        cluster_id,
        groups: out,
    };
    let body = serde_json::to_vec_pretty(&snapshot).map_err(|e| Error::Internal(e.to_string()))?;
    match repo.put(&snapshot_path(id), Bytes::from(body), true).await {
        Ok(()) => Ok(snapshot),
        Err(Error::Storage {
            source:
                object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
            ..
        }) => Err(Error::InvalidSpec {
            field: "snapshotId".into(),
            message: format!(
                "snapshot '{id}' already exists at {}; snapshots are immutable, choose another id",
                repo.description()
            ),
        }),
        Err(e) => Err(e),
    }
}

/// Commits `offsets` (topic, partition) -> offset for `group`, without joining it.
pub fn commit_offsets(
    config: &ClientConfig,
    group: &str,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<()> {
    let mut cfg = config.clone();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer<KafkaContext> = kafka::create(&cfg, "offset writer")?;
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in offsets {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))
            .map_err(|source| Error::Kafka {
                operation: format!("committing offsets of group {group}"),
                source,
            })?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(|source| Error::Kafka {
            operation: format!("committing offsets of group {group}"),
            source,
        })
}

/// The first offset of each partition whose record timestamp is >= `ts` (ms), or the end offset
/// when every record is older.
pub fn offsets_for_time(
    config: &ClientConfig,
    partitions: &[(String, i32)],
    ts: i64,
    timeout: Duration,
) -> Result<BTreeMap<(String, i32), i64>> {
    let consumer: BaseConsumer<KafkaContext> = kafka::create(config, "offset lookup")?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition_offset(t, *p, Offset::Offset(ts))
            .map_err(|source| Error::Kafka {
                operation: "looking up offsets by time".into(),
                source,
            })?;
    }
    let found = consumer
        .offsets_for_times(tpl, Timeout::After(timeout))
        .map_err(|source| Error::Kafka {
            operation: "looking up offsets by time".into(),
            source,
        })?;
    let mut out = BTreeMap::new();
    for e in found.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) if o >= 0 => o,
            // No record at or after the time: the end of the partition.
            _ => kafka::watermarks(&consumer, e.topic(), e.partition(), timeout)?.1,
        };
        out.insert((e.topic().to_string(), e.partition()), offset);
    }
    Ok(out)
}
