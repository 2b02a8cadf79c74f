//! Offset snapshots in a repository (format.md §12): the committed offsets of consumer groups at
//! one moment, stored immutably at `offset-snapshots/<snapshotId>.json` so a later rollback can
//! put them back exactly. Taken by restores before an offset reset and by the offsets operations.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_backup_format::{
    GroupOffsets, OffsetSnapshot, PartitionOffset, SNAPSHOTS_PREFIX, snapshot_path,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::util::Timeout;

use crate::error::{Error, Result};
use crate::kafka::{self, KafkaContext};
use crate::repo::Repository;
use crate::util::blocking;

/// Takes a snapshot of `groups`' committed offsets on `partitions` and stores it under `id`;
/// refuses to replace an existing snapshot.
pub async fn take_snapshot(
    repo: &Repository,
    config: &ClientConfig,
    id: &str,
    groups: &[String],
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<OffsetSnapshot> {
    // The cluster the offsets belong to, so a rollback into another cluster can be noticed.
    let cfg = config.clone();
    let cluster_id = tokio::task::spawn_blocking(move || -> Result<Option<String>> {
        let c: BaseConsumer<KafkaContext> = kafka::create(&cfg, "metadata")?;
        Ok(c.client().fetch_cluster_id(Timeout::After(timeout)))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    let cfg = config.clone();
    let names = groups.to_vec();
    let parts = partitions.to_vec();
    let committed = blocking(move || {
        let client: BaseConsumer<KafkaContext> = kafka::create(&cfg, "offset reader")?;
        kafka::committed_offsets_of_groups(&client, &names, &parts, timeout)
    })
    .await?;
    let mut by_group: BTreeMap<String, Vec<PartitionOffset>> = BTreeMap::new();
    for c in committed {
        by_group.entry(c.group).or_default().push(PartitionOffset {
            topic: c.topic,
            partition: c.partition,
            offset: c.offset,
            metadata: c.metadata,
        });
    }
    // Every group asked for has an entry, with or without offsets, in the order given.
    let out: Vec<GroupOffsets> = groups
        .iter()
        .map(|g| GroupOffsets {
            group_id: g.clone(),
            offsets: by_group.remove(g).unwrap_or_default(),
        })
        .collect();
    let snapshot = OffsetSnapshot {
        snapshot_id: id.to_string(),
        created_time: kafka_backup_format::rfc3339(crate::util::now_secs()),
        cluster_id,
        groups: out,
    };
    let body = Bytes::from(snapshot.to_json());
    match repo.put(&snapshot_path(id), body, true).await {
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

/// Reads snapshot `id`, or an error naming it and the location.
pub async fn load_snapshot(repo: &Repository, id: &str) -> Result<OffsetSnapshot> {
    let bytes = match repo.get(&snapshot_path(id)).await {
        Ok(b) => b,
        Err(Error::Storage {
            source: object_store::Error::NotFound { .. },
            ..
        }) => {
            let known = list_snapshots(repo)
                .await?
                .into_iter()
                .map(|s| s.0)
                .collect::<Vec<_>>();
            return Err(Error::InvalidSpec {
                field: "snapshotId".into(),
                message: format!(
                    "snapshot '{id}' not found at {}{}",
                    repo.description(),
                    if known.is_empty() {
                        "; there are no snapshots".to_string()
                    } else {
                        format!("; nearest: {}", crate::nearest(id, &known, 5).join(", "))
                    }
                ),
            });
        }
        Err(e) => return Err(e),
    };
    OffsetSnapshot::from_json(&bytes).map_err(|source| Error::Format {
        object: format!("{}/{}", repo.description(), snapshot_path(id)),
        source,
    })
}

/// `(id, size in bytes)` of every snapshot, by id.
pub async fn list_snapshots(repo: &Repository) -> Result<Vec<(String, u64)>> {
    let mut out: Vec<(String, u64)> = repo
        .list(SNAPSHOTS_PREFIX)
        .await?
        .into_iter()
        .filter_map(|m| {
            m.location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .map(|id| (id.to_string(), m.size))
        })
        .collect();
    out.sort();
    Ok(out)
}
