//! The offsets operations: KafkaOffsetReset (move consumer groups to new offsets) and
//! KafkaOffsetRollback (snapshot group offsets, put a snapshot back, or compare with one). They
//! work on the shared layers: [`crate::groups`] in Kafka, [`crate::snapshots`] in the repository.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_backup_api::offsets::{
    KafkaOffsetReset, KafkaOffsetResetSpec, KafkaOffsetRollback, RollbackOperation,
};
use kafka_backup_api::restore::OffsetResetStrategy as S;
use kafka_backup_api::storage::StorageSpec;
use kafka_backup_format::{
    Manifest, OffsetMap, id_time_suffix, offset_map_path, offset_maps_prefix,
};
use rdkafka::config::ClientConfig;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::groups::{
    Difference, committed_map, differences, offsets_for_time, partitions_of, refuse_active,
    resolve_groups,
};
use crate::kafka;
use crate::names::{check_name, check_snapshot_id, invalid};
use crate::repo::Repository;
use crate::secrets::SecretStore;
use crate::snapshots::take_snapshot;
use crate::storage::StorageOptions;
use crate::util::{blocking, now_secs, parse_time};

// Kept here too, where callers of the offsets operations found them before the shared layers
// were split out.
pub use crate::groups::commit_offsets;
pub use crate::snapshots::{list_snapshots, load_snapshot};
pub use kafka_backup_format::{GroupOffsets, OffsetSnapshot, PartitionOffset};

/// What an offsets operation did, per group.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetsReport {
    pub operation: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    pub dry_run: bool,
    pub groups: Vec<GroupReport>,
    /// For verify (and after a rollback): every group matches the snapshot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

impl OffsetsReport {
    /// Whether any group failed (or, for verify, differs).
    pub fn failed(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.outcome == "failure" || g.outcome == "differs")
    }
}

/// One group in an [`OffsetsReport`].
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupReport {
    pub group_id: String,
    /// `success`, `failure`, `planned` (dry run), `matches` or `differs` (verify).
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub offsets: Vec<OffsetChange>,
}

/// One partition of a group: where it was and where it is (or would be) now.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetChange {
    pub topic: String,
    pub partition: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    pub to: Option<i64>,
}

/// Runs a KafkaOffsetReset: check the spec, find the groups and what the strategy needs, take
/// the snapshot asked for, then move each group on its own.
pub async fn reset(
    kor: &KafkaOffsetReset,
    secrets: &SecretStore,
    options: &StorageOptions,
    default_storage: Option<&StorageSpec>,
    timeout: Duration,
) -> Result<OffsetsReport> {
    let name = kor.metadata.name.clone().unwrap_or_default();
    check_name(&name)?;
    let spec = &kor.spec;
    let cfg = kafka::client_config("spec.kafkaCluster", &spec.kafka_cluster, secrets)?;
    let ts = check_reset_spec(spec)?;
    let open = |why: &str| {
        Repository::open_or_default(
            spec.storage.as_ref(),
            default_storage,
            why,
            secrets,
            options,
        )
    };
    let header_based = match spec.strategy {
        S::HeaderBased => Some(offset_map_for(spec, &open("for strategy headerBased")?).await?),
        _ => None,
    };
    let inputs = reset_inputs(&cfg, spec, ts, header_based, timeout).await?;
    // Snapshot first, so the move can be undone.
    let snapshot_id = if spec.snapshot_before_reset && !spec.dry_run {
        let id = spec
            .snapshot_id
            .clone()
            .unwrap_or_else(|| format!("{name}-{}", id_time_suffix(now_secs())));
        check_snapshot_id("spec.snapshotId", &id)?;
        let repo = open("for snapshotBeforeReset")?;
        take_snapshot(
            &repo,
            &cfg,
            &id,
            &inputs.groups,
            &inputs.partitions,
            timeout,
        )
        .await?;
        Some(id)
    } else {
        None
    };
    let groups = reset_groups(&cfg, spec, Arc::new(inputs), timeout).await?;
    Ok(OffsetsReport {
        operation: "reset".into(),
        name,
        snapshot_id,
        dry_run: spec.dry_run,
        groups,
        verified: None,
    })
}

/// Checks the fields of a reset spec against its strategy: fields of other strategies would be
/// ignored, so they are refused. Returns the time of strategy `timestamp` (ms).
fn check_reset_spec(spec: &KafkaOffsetResetSpec) -> Result<Option<i64>> {
    let ts = match (spec.strategy, &spec.timestamp) {
        (S::Timestamp, None) => {
            return Err(invalid(
                "spec.timestamp",
                "is required for strategy timestamp (e.g. \"2024-12-01T12:00:00Z\")",
            ));
        }
        (S::Timestamp, Some(t)) => Some(parse_time("spec.timestamp", t)?),
        _ => None,
    };
    let strategy_name = serde_json::to_value(spec.strategy)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let unused = |field: &str, used_by: &str| {
        invalid(
            &format!("spec.{field}"),
            format!("is used only by strategy {used_by}, not {strategy_name}; remove it"),
        )
    };
    if spec.timestamp.is_some() && spec.strategy != S::Timestamp {
        return Err(unused("timestamp", "timestamp"));
    }
    if !spec.offsets.is_empty() && spec.strategy != S::Offset {
        return Err(unused("offsets", "offset"));
    }
    if spec.strategy != S::HeaderBased {
        for (set, field) in [
            (spec.backup_id.is_some(), "backupId"),
            (spec.restore_name.is_some(), "restoreName"),
            (spec.source_cluster.is_some(), "sourceCluster"),
        ] {
            if set {
                return Err(unused(field, "headerBased"));
            }
        }
    }
    if spec.snapshot_id.is_some() && !spec.snapshot_before_reset {
        return Err(invalid(
            "spec.snapshotId",
            "is set but snapshotBeforeReset is false; set snapshotBeforeReset: true or remove it",
        ));
    }
    if spec.strategy == S::Offset && spec.offsets.is_empty() {
        return Err(invalid(
            "spec.offsets",
            "strategy offset needs the offset of each partition: [{topic, partition, offset}]",
        ));
    }
    Ok(ts)
}

/// For strategy headerBased: the backup's manifest (the offsets it recorded) and the offset map
/// of the restore of it that `spec` names (or its only one).
async fn offset_map_for(
    spec: &KafkaOffsetResetSpec,
    repo: &Repository,
) -> Result<(Manifest, OffsetMap)> {
    let backup_id = spec
        .backup_id
        .clone()
        .ok_or_else(|| invalid("spec.backupId", "is required for strategy headerBased"))?;
    let manifest = repo.find_manifest(&backup_id).await?;
    if let Some(sc) = &spec.source_cluster {
        let recorded = manifest
            .source_cluster_id
            .as_ref()
            .or(manifest.kafka_cluster_id.as_ref());
        if recorded.is_some_and(|r| r != sc) {
            return Err(invalid(
                "spec.sourceCluster",
                format!("'{sc}' does not match the cluster backup {backup_id} was taken from"),
            ));
        }
    }
    let maps = repo
        .json_names(&offset_maps_prefix(&manifest.backup_name, &backup_id))
        .await?;
    let restore_name = match (&spec.restore_name, maps.as_slice()) {
        (Some(r), _) if maps.contains(r) => r.clone(),
        (Some(r), _) => {
            return Err(invalid(
                "spec.restoreName",
                format!(
                    "no restore '{r}' of backup {backup_id}; restores: {}",
                    maps.join(", ")
                ),
            ));
        }
        (None, [one]) => one.clone(),
        (None, []) => {
            return Err(invalid(
                "spec.backupId",
                format!(
                    "backup {backup_id} has not been restored, so there is no offset map to translate with"
                ),
            ));
        }
        (None, many) => {
            return Err(invalid(
                "spec.restoreName",
                format!(
                    "backup {backup_id} was restored several times; name one: {}",
                    many.join(", ")
                ),
            ));
        }
    };
    let path = offset_map_path(&manifest.backup_name, &backup_id, &restore_name);
    let bytes = repo.get(&path).await?;
    let map = OffsetMap::from_json(&bytes).map_err(|source| Error::Format {
        object: format!("{}/{path}", repo.description()),
        source,
    })?;
    Ok((manifest, map))
}

/// What every group of a reset is moved with: the groups, the partitions in scope and the
/// offsets the strategy reads (by time, watermarks, or an offset map).
struct ResetInputs {
    groups: Vec<String>,
    partitions: Vec<(String, i32)>,
    by_time: BTreeMap<(String, i32), i64>,
    marks: BTreeMap<(String, i32), (i64, i64)>,
    header_based: Option<(Manifest, OffsetMap)>,
}

async fn reset_inputs(
    cfg: &ClientConfig,
    spec: &KafkaOffsetResetSpec,
    ts: Option<i64>,
    header_based: Option<(Manifest, OffsetMap)>,
    timeout: Duration,
) -> Result<ResetInputs> {
    let (c2, patterns, topics) = (
        cfg.clone(),
        spec.consumer_groups.clone(),
        spec.topics.clone(),
    );
    let (groups, partitions) = blocking(move || {
        let g = resolve_groups(&c2, &patterns, "spec.consumerGroups", timeout)?;
        refuse_active(&c2, &g, "spec.consumerGroups", timeout)?;
        Ok((g, partitions_of(&c2, &topics, timeout)?))
    })
    .await?;
    let by_time = match ts {
        Some(t) => {
            let (c2, p) = (cfg.clone(), partitions.clone());
            blocking(move || offsets_for_time(&c2, &p, t, timeout)).await?
        }
        None => BTreeMap::new(),
    };
    let marks = if matches!(spec.strategy, S::Earliest | S::Latest | S::Offset) {
        kafka::watermarks_of(cfg, partitions.clone(), timeout).await?
    } else {
        BTreeMap::new()
    };
    Ok(ResetInputs {
        groups,
        partitions,
        by_time,
        marks,
        header_based,
    })
}

/// Moves each group on its own, a few at a time; one group's failure does not stop the others.
async fn reset_groups(
    cfg: &ClientConfig,
    spec: &KafkaOffsetResetSpec,
    inputs: Arc<ResetInputs>,
    timeout: Duration,
) -> Result<Vec<GroupReport>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(8));
    let mut set = tokio::task::JoinSet::new();
    for g in inputs.groups.clone() {
        let (cfg, spec, inputs, sem) = (cfg.clone(), spec.clone(), inputs.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let group = g.clone();
            let outcome =
                blocking(move || reset_group(&cfg, &spec, &inputs, &group, timeout)).await;
            (g, outcome)
        });
    }
    let mut reports = Vec::new();
    while let Some(r) = set.join_next().await {
        let (g, outcome) = r.map_err(|e| Error::Internal(e.to_string()))?;
        reports.push(match outcome {
            Ok(offsets) => GroupReport {
                group_id: g,
                outcome: if spec.dry_run { "planned" } else { "success" }.into(),
                message: None,
                offsets,
            },
            Err(e) => failed(g, e),
        });
    }
    reports.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    Ok(reports)
}

/// Moves one group (blocking): where each partition goes, then the commit (unless a dry run).
fn reset_group(
    cfg: &ClientConfig,
    spec: &KafkaOffsetResetSpec,
    inputs: &ResetInputs,
    group: &str,
    timeout: Duration,
) -> Result<Vec<OffsetChange>> {
    let current = committed_map(cfg, group, &inputs.partitions, timeout)?;
    // Which partitions move: with a topic filter every matching partition, else those the group
    // has committed on.
    let scope: Vec<(String, i32)> = if spec.topics.is_empty() {
        current.keys().cloned().collect()
    } else {
        inputs.partitions.clone()
    };
    let targets = reset_targets(spec, inputs, group, &scope)?;
    if targets.is_empty() {
        return Err(invalid(
            "spec.consumerGroups",
            format!(
                "group {group} has no committed offsets on the selected topics; name topics to move it"
            ),
        ));
    }
    if !spec.dry_run {
        commit_offsets(cfg, group, &targets)?;
    }
    Ok(targets
        .into_iter()
        .map(|((topic, partition), to)| OffsetChange {
            from: current.get(&(topic.clone(), partition)).copied(),
            topic,
            partition,
            to: Some(to),
        })
        .collect())
}

/// Where the strategy moves `group` on the partitions of `scope` (strategy offset and
/// headerBased name their partitions themselves).
fn reset_targets(
    spec: &KafkaOffsetResetSpec,
    inputs: &ResetInputs,
    group: &str,
    scope: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), i64>> {
    let from_scope = |pick: &dyn Fn(&(String, i32)) -> Option<i64>| -> BTreeMap<_, _> {
        scope
            .iter()
            .filter_map(|k| pick(k).map(|o| (k.clone(), o)))
            .collect()
    };
    Ok(match spec.strategy {
        S::Earliest => from_scope(&|k| inputs.marks.get(k).map(|m| m.0)),
        S::Latest => from_scope(&|k| inputs.marks.get(k).map(|m| m.1)),
        S::Timestamp => from_scope(&|k| inputs.by_time.get(k).copied()),
        S::Offset => fixed_offsets(spec, &inputs.marks)?,
        S::HeaderBased => {
            let Some((manifest, map)) = inputs.header_based.as_ref() else {
                return Err(Error::Internal("offset map missing".into()));
            };
            translated_offsets(manifest, map, group)?
        }
    })
}

/// Strategy offset: the offsets the spec names, each within its partition's range.
fn fixed_offsets(
    spec: &KafkaOffsetResetSpec,
    marks: &BTreeMap<(String, i32), (i64, i64)>,
) -> Result<BTreeMap<(String, i32), i64>> {
    let mut targets = BTreeMap::new();
    for o in &spec.offsets {
        let (t, p, o) = (&o.topic, o.partition, o.offset);
        let Some((low, high)) = marks.get(&(t.clone(), p)) else {
            return Err(invalid(
                "spec.offsets",
                format!("{t}/{p} is not a partition of the cluster"),
            ));
        };
        if o < *low || o > *high {
            return Err(invalid(
                "spec.offsets",
                format!("offset {o} of {t}/{p} is outside the partition's range {low}..{high}"),
            ));
        }
        targets.insert((t.clone(), p), o);
    }
    Ok(targets)
}

/// Strategy headerBased: the offsets the backup recorded for `group`, translated through the
/// restore's offset map.
fn translated_offsets(
    manifest: &Manifest,
    map: &OffsetMap,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>> {
    let recorded = manifest
        .consumer_groups
        .iter()
        .find(|cg| cg.group_id == group)
        .ok_or_else(|| {
            invalid(
                "spec.consumerGroups",
                format!(
                    "group {group} had no committed offsets recorded in backup {}",
                    manifest.backup_id
                ),
            )
        })?;
    let mut targets = BTreeMap::new();
    for t in &map.topics {
        for p in &t.partitions {
            if let Some(c) = recorded
                .offsets
                .iter()
                .find(|o| o.topic == t.source_topic && o.partition == p.partition)
            {
                targets.insert((t.target_topic.clone(), p.partition), p.translate(c.offset));
            }
        }
    }
    Ok(targets)
}

fn failed(group_id: String, e: Error) -> GroupReport {
    GroupReport {
        group_id,
        outcome: "failure".into(),
        message: Some(e.to_string()),
        offsets: Vec::new(),
    }
}

fn operation_name(op: RollbackOperation) -> &'static str {
    match op {
        RollbackOperation::Rollback => "rollback",
        RollbackOperation::Snapshot => "snapshot",
        RollbackOperation::Verify => "verify",
    }
}

/// Runs a KafkaOffsetRollback: take a snapshot, roll back to one (then verify), or verify.
pub async fn rollback(
    korb: &KafkaOffsetRollback,
    secrets: &SecretStore,
    options: &StorageOptions,
    default_storage: Option<&StorageSpec>,
    timeout: Duration,
) -> Result<OffsetsReport> {
    use RollbackOperation as Op;
    let name = korb.metadata.name.clone().unwrap_or_default();
    let spec = &korb.spec;
    check_snapshot_id("spec.snapshotId", &spec.snapshot_id)?;
    let cfg = kafka::client_config("spec.kafkaCluster", &spec.kafka_cluster, secrets)?;
    let repo = Repository::open_or_default(
        spec.storage.as_ref(),
        default_storage,
        "to keep snapshots",
        secrets,
        options,
    )?;
    if !spec.topics.is_empty() && spec.operation != Op::Snapshot {
        return Err(invalid(
            "spec.topics",
            "is used only by operation snapshot; a rollback or verify covers what the snapshot holds",
        ));
    }
    if spec.operation == Op::Snapshot {
        return snapshot_now(korb, &repo, &cfg, timeout).await;
    }
    let snap = load_snapshot(&repo, &spec.snapshot_id).await?;
    let chosen = chosen_groups(&snap, &spec.consumer_groups)?;
    if spec.operation == Op::Rollback {
        let names: Vec<String> = chosen.iter().map(|g| g.group_id.clone()).collect();
        let c2 = cfg.clone();
        blocking(move || refuse_active(&c2, &names, "spec.consumerGroups", timeout)).await?;
    }
    let mut reports = Vec::new();
    for g in chosen {
        reports.push(roll_back_group(&cfg, g, spec.operation == Op::Rollback, timeout).await);
    }
    let verified = Some(
        reports
            .iter()
            .all(|r| r.outcome == "success" || r.outcome == "matches"),
    );
    Ok(OffsetsReport {
        operation: operation_name(spec.operation).into(),
        name,
        snapshot_id: Some(spec.snapshot_id.clone()),
        dry_run: false,
        groups: reports,
        verified,
    })
}

/// Operation snapshot: the groups and topics the spec names, snapshotted now.
async fn snapshot_now(
    korb: &KafkaOffsetRollback,
    repo: &Repository,
    cfg: &ClientConfig,
    timeout: Duration,
) -> Result<OffsetsReport> {
    let spec = &korb.spec;
    if spec.consumer_groups.is_empty() {
        return Err(invalid(
            "spec.consumerGroups",
            "names the groups to snapshot (names or patterns, e.g. \"*\")",
        ));
    }
    let (patterns, topics, c2) = (
        spec.consumer_groups.clone(),
        spec.topics.clone(),
        cfg.clone(),
    );
    let (groups, parts) = blocking(move || {
        Ok((
            resolve_groups(&c2, &patterns, "spec.consumerGroups", timeout)?,
            partitions_of(&c2, &topics, timeout)?,
        ))
    })
    .await?;
    let snap = take_snapshot(repo, cfg, &spec.snapshot_id, &groups, &parts, timeout).await?;
    let group_report = |g: GroupOffsets| GroupReport {
        group_id: g.group_id,
        outcome: "success".into(),
        message: None,
        offsets: g
            .offsets
            .into_iter()
            .map(|o| OffsetChange {
                topic: o.topic,
                partition: o.partition,
                from: None,
                to: Some(o.offset),
            })
            .collect(),
    };
    Ok(OffsetsReport {
        operation: operation_name(spec.operation).into(),
        name: korb.metadata.name.clone().unwrap_or_default(),
        snapshot_id: Some(snap.snapshot_id),
        dry_run: false,
        groups: snap.groups.into_iter().map(group_report).collect(),
        verified: None,
    })
}

/// The groups of `snap` that `patterns` name (all when empty), by id; each pattern must match.
fn chosen_groups(snap: &OffsetSnapshot, patterns: &[String]) -> Result<Vec<GroupOffsets>> {
    if patterns.is_empty() {
        return Ok(snap.groups.clone());
    }
    let mut out = Vec::new();
    for p in patterns {
        let m: Vec<&GroupOffsets> = snap
            .groups
            .iter()
            .filter(|g| crate::patterns::matches(p, &g.group_id))
            .collect();
        if m.is_empty() {
            return Err(invalid(
                "spec.consumerGroups",
                format!("'{p}' matches no group in snapshot {}", snap.snapshot_id),
            ));
        }
        out.extend(m.into_iter().cloned());
    }
    out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    out.dedup_by(|a, b| a.group_id == b.group_id);
    Ok(out)
}

/// Puts one group back to its snapshot offsets (when `roll_back`), then compares.
async fn roll_back_group(
    cfg: &ClientConfig,
    group: GroupOffsets,
    roll_back: bool,
    timeout: Duration,
) -> GroupReport {
    let (cfg, g) = (cfg.clone(), group.clone());
    let r = blocking(move || -> Result<Vec<Difference>> {
        if roll_back && !g.offsets.is_empty() {
            let targets: BTreeMap<(String, i32), i64> = g
                .offsets
                .iter()
                .map(|o| ((o.topic.clone(), o.partition), o.offset))
                .collect();
            commit_offsets(&cfg, &g.group_id, &targets)?;
        }
        differences(&cfg, &g.group_id, &g.offsets, timeout)
    })
    .await;
    let d = match r {
        Ok(d) => d,
        Err(e) => return failed(group.group_id, e),
    };
    GroupReport {
        group_id: group.group_id,
        outcome: if !d.is_empty() {
            "differs"
        } else if roll_back {
            "success"
        } else {
            "matches"
        }
        .into(),
        message: (!d.is_empty())
            .then(|| format!("{} partitions differ from the snapshot", d.len())),
        offsets: d
            .into_iter()
            .map(|(topic, partition, want, now)| OffsetChange {
                topic,
                partition,
                from: now,
                to: want,
            })
            .collect(),
    }
}
