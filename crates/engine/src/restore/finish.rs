//! After every record is delivered: check each target partition ends where the records say,
//! store the offset map, move the consumer groups, and mark the restore completed.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_backup_api::restore::OffsetResetStrategy;
use kafka_backup_format::{
    OffsetMap, OffsetMapTopic, RestoreProgress, RestoreState, offset_map_path, partition_key,
    restore_state_path, rfc3339,
};

use super::plan::{Plan, TargetRange, offset_table};
use super::produce::PartitionMaps;
use super::target::Target;
use super::{GroupReset, GroupTargetOffset, OffsetResetSummary};
use crate::error::{Error, Result};
use crate::groups;
use crate::repo::Repository;
use crate::snapshots::take_snapshot;
use crate::util::{blocking, now_secs};

/// Where each restored target partition is now, checked against what the restore wrote: a
/// partition that ends elsewhere was written to by someone else during the restore.
pub(super) async fn check_ends(
    target: &Target,
    state: &RestoreState,
    maps: &PartitionMaps,
) -> Result<BTreeMap<(String, i32), TargetRange>> {
    let parts: Vec<(String, i32)> = maps.keys().map(|(_, t, p)| (t.clone(), *p)).collect();
    let now = target.offsets(&parts, &Default::default()).await?;
    let mut ranges = BTreeMap::new();
    for ((_, topic, p), m) in maps {
        let key = (topic.clone(), *p);
        let (low, end) = now.get(&key).copied().unwrap_or_default();
        if end != m.target_end_offset {
            return Err(Error::Internal(format!(
                "target {topic}/{p} ends at {end} but the restore wrote up to {}: the topic was written to during the restore",
                m.target_end_offset
            )));
        }
        let start = state
            .target_start_offsets
            .get(&partition_key(topic, *p))
            .copied()
            .ok_or_else(|| {
                Error::Internal(format!("restore state has no start for {topic}/{p}"))
            })?;
        ranges.insert(key, TargetRange { low, start, end });
    }
    Ok(ranges)
}

/// Stores the offset map of the restore next to the backup; returns its path.
pub(super) async fn store_offset_map(
    repo: &Repository,
    plan: &Plan,
    source_cluster_id: Option<String>,
    maps: &PartitionMaps,
) -> Result<String> {
    let mut by_topic: BTreeMap<(String, String), Vec<_>> = BTreeMap::new();
    for ((src, target, _), m) in maps {
        by_topic
            .entry((src.clone(), target.clone()))
            .or_default()
            .push(m.clone());
    }
    let offset_map = OffsetMap {
        backup_id: plan.backup_id.clone(),
        restore_name: plan.name().to_string(),
        source_cluster_id,
        topics: by_topic
            .into_iter()
            .map(|((source_topic, target_topic), mut partitions)| {
                partitions.sort_by_key(|p| p.partition);
                OffsetMapTopic {
                    source_topic,
                    target_topic,
                    partitions,
                }
            })
            .collect(),
    };
    let path = offset_map_path(&plan.backup_name, &plan.backup_id, plan.name());
    repo.put(&path, Bytes::from(offset_map.to_json()), false)
        .await?;
    Ok(path)
}

/// Moves the plan's groups as the offset table says for the restored `ranges`, after the
/// snapshot the plan asks for; a group without an offset to move to is left alone, with a
/// warning.
pub(super) async fn reset_groups(
    repo: &Repository,
    target: &Target,
    plan: &Plan,
    strategy: OffsetResetStrategy,
    ranges: &BTreeMap<(String, i32), TargetRange>,
    maps: &PartitionMaps,
    warnings: &mut Vec<String>,
) -> Result<OffsetResetSummary> {
    target.refuse_active(&plan.groups).await?;
    let restored: Vec<(String, i32)> = ranges.keys().cloned().collect();
    if let Some(id) = &plan.request.rollback_id {
        take_snapshot(
            repo,
            &target.kafka,
            id,
            &plan.groups,
            &restored,
            target.timeout,
        )
        .await?;
        tracing::info!(snapshot_id = %id, groups = plan.groups.len(), "snapshot of group offsets taken before the reset");
    }
    let by_time = match plan.request.reset.as_ref().and_then(|r| r.time) {
        Some(ts) => target.offsets_for_time(restored, ts).await?,
        None => BTreeMap::new(),
    };
    // The offset map says where each restored record landed.
    let translate = |p: &super::plan::PlannedPartition, _: &TargetRange, c: i64| {
        maps.get(&(
            p.source_topic.clone(),
            p.target_topic.clone(),
            p.source.partition,
        ))
        .map(|m| m.translate(c))
    };
    let mut results = Vec::new();
    for (g, offsets) in offset_table(plan, strategy, ranges, &by_time, &translate) {
        if offsets.is_empty() {
            warnings.push(format!(
                "group {g} had no committed offset on the restored topics; left unchanged"
            ));
            continue;
        }
        let (cfg, group, to_commit) = (target.kafka.clone(), g.clone(), offsets.clone());
        blocking(move || groups::commit_offsets(&cfg, &group, &to_commit)).await?;
        tracing::info!(group = %g, partitions = offsets.len(), "group offsets reset");
        results.push(group_reset(g, offsets));
    }
    Ok(OffsetResetSummary {
        strategy,
        phase: "Completed".into(),
        groups: results,
    })
}

/// A group's row of the offset table as the summary shows it.
pub(super) fn group_reset(group_id: String, offsets: BTreeMap<(String, i32), i64>) -> GroupReset {
    GroupReset {
        group_id,
        offsets: offsets
            .into_iter()
            .map(|((topic, partition), offset)| GroupTargetOffset {
                topic,
                partition,
                offset,
            })
            .collect(),
    }
}

/// Writes the restore's state (`completed` once everything is done): a restart reads it.
pub(super) async fn store_state(
    repo: &Repository,
    plan: &Plan,
    state: &mut RestoreState,
    progress: RestoreProgress,
) -> Result<()> {
    state.state = progress;
    if progress == RestoreProgress::Completed {
        state.completion_time = Some(rfc3339(now_secs()));
    }
    let path = restore_state_path(&plan.backup_name, plan.name());
    repo.put(&path, Bytes::from(state.to_json()), false).await
}
