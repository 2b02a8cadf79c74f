//! Retention: keep the newest N complete backups of a name, delete the other manifests, then
//! collect the segments nothing references any more (docs/format.md §6).

use std::collections::HashSet;
use std::time::Duration;

use kafka_backup_format::manifest_path;
use serde::Serialize;

use crate::error::Result;
use crate::repo::Repository;

/// Segments younger than this are kept while another run of the name is unfinished: that run may
/// have stored them without having checkpointed them yet.
pub const GRACE_PERIOD: Duration = Duration::from_secs(3600);

/// What retention did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSummary {
    pub kept_backups: Vec<String>,
    pub deleted_backups: Vec<String>,
    pub deleted_segments: u64,
    pub deleted_bytes: u64,
}

/// Keeps the `keep` newest backups of `name` and deletes everything only older backups used.
/// Manifests go first: a crash in between leaves unreferenced segments, which the next collection
/// removes; it never leaves a manifest whose segments are gone.
pub async fn apply(repo: &Repository, name: &str, keep: usize) -> Result<RetentionSummary> {
    let ids = repo.backup_ids(name).await?;
    let split = ids.len().saturating_sub(keep);
    let (old, kept) = ids.split_at(split);
    for id in old {
        repo.delete(&manifest_path(name, id)).await?;
        tracing::info!(backup_id = %id, "retention: deleted backup");
    }
    let (deleted_segments, deleted_bytes) = collect_garbage(repo, name).await?;
    Ok(RetentionSummary {
        kept_backups: kept.to_vec(),
        deleted_backups: old.to_vec(),
        deleted_segments,
        deleted_bytes,
    })
}

/// Deletes the segments of `name` that no manifest and no checkpoint references. While an
/// unfinished run exists, segments younger than [`GRACE_PERIOD`] are kept as well.
pub async fn collect_garbage(repo: &Repository, name: &str) -> Result<(u64, u64)> {
    let mut live: HashSet<String> = HashSet::new();
    for id in repo.backup_ids(name).await? {
        let m = repo.manifest(name, &id).await?;
        live.extend(
            m.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .flat_map(|p| &p.segments)
                .map(|s| s.path.clone()),
        );
    }
    let checkpoints = repo.checkpoint_ids(name).await?;
    for id in &checkpoints {
        let c = repo.checkpoint(name, id).await?;
        live.extend(
            c.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .flat_map(|p| &p.segments)
                .map(|s| s.path.clone()),
        );
    }
    let now = chrono::Utc::now();
    let (mut count, mut bytes) = (0u64, 0u64);
    for meta in repo.segments(name).await? {
        let path = meta.location.to_string();
        if live.contains(&path) {
            continue;
        }
        let age = now
            .signed_duration_since(meta.last_modified)
            .to_std()
            .unwrap_or_default();
        if !checkpoints.is_empty() && age < GRACE_PERIOD {
            continue;
        }
        repo.delete(&path).await?;
        count += 1;
        bytes += meta.size;
    }
    if count > 0 {
        tracing::info!(
            segments = count,
            bytes,
            "retention: deleted unreferenced segments"
        );
    }
    Ok((count, bytes))
}
