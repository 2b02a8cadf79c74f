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
use crate::util::blocking;

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
        format: SNAPSHOT_FORMAT.into(),
        format_version: 1,
        snapshot_id: id.to_string(),
        created_time: kafka_backup_format::rfc3339(crate::util::now_secs()),
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

/// The groups `patterns` name: a plain name must exist in the cluster, a pattern must match at
/// least one group.
pub fn resolve_groups(
    config: &ClientConfig,
    patterns: &[String],
    field: &str,
    timeout: Duration,
) -> Result<Vec<String>> {
    let consumer: BaseConsumer<KafkaContext> = kafka::create(config, "group reader")?;
    let known = kafka::consumer_groups(&consumer, timeout)?;
    let mut out = Vec::new();
    for p in patterns {
        let is_pattern = p.contains('*') || p.contains('?');
        let matched: Vec<&String> = known
            .iter()
            .filter(|g| crate::patterns::matches(p, g))
            .collect();
        if matched.is_empty() {
            return Err(Error::InvalidSpec {
                field: field.to_string(),
                message: if is_pattern {
                    format!("pattern '{p}' matches no consumer group")
                } else {
                    format!(
                        "unknown consumer group '{p}' (the cluster knows {} groups)",
                        known.len()
                    )
                },
            });
        }
        out.extend(matched.into_iter().cloned());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Refuses to move groups that have active members, naming them.
pub fn refuse_active(
    config: &ClientConfig,
    groups: &[String],
    field: &str,
    timeout: Duration,
) -> Result<()> {
    let active = active_groups(config, groups, timeout)?;
    if active.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidSpec {
        field: field.to_string(),
        message: format!(
            "consumer group{} {} {} active members; stop {} consumers first",
            if active.len() > 1 { "s" } else { "" },
            active.join(", "),
            if active.len() > 1 { "have" } else { "has" },
            if active.len() > 1 { "their" } else { "its" }
        ),
    })
}

/// Every partition of the topics matching `topics` (all non-internal topics when empty).
pub fn partitions_of(
    config: &ClientConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<(String, i32)>> {
    let consumer: BaseConsumer<KafkaContext> = kafka::create(config, "metadata")?;
    let all = kafka::list_topics(&consumer, timeout)?;
    let include: Vec<String> = if topics.is_empty() {
        vec!["*".into()]
    } else {
        topics.to_vec()
    };
    let names = crate::patterns::select(all.iter().map(|t| t.name.as_str()), &include, &[]);
    Ok(all
        .into_iter()
        .filter(|t| names.contains(&t.name))
        .flat_map(|t| t.partitions.into_iter().map(move |p| (t.name.clone(), p)))
        .collect())
}

/// The committed offsets of `group` as a map.
pub fn committed_map(
    config: &ClientConfig,
    group: &str,
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<BTreeMap<(String, i32), i64>> {
    Ok(
        kafka::committed_offsets(config, group, partitions, timeout)?
            .into_iter()
            .map(|c| ((c.topic, c.partition), c.offset))
            .collect(),
    )
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
    let snap: OffsetSnapshot = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Internal(format!("{}: not a snapshot: {e}", snapshot_path(id))))?;
    if snap.format != SNAPSHOT_FORMAT || snap.format_version > 1 {
        return Err(Error::Internal(format!(
            "{}: format {} version {} is not a snapshot this version reads",
            snapshot_path(id),
            snap.format,
            snap.format_version
        )));
    }
    Ok(snap)
}

/// `(id, size in bytes)` of every snapshot, by id.
pub async fn list_snapshots(repo: &Repository) -> Result<Vec<(String, u64)>> {
    let mut out: Vec<(String, u64)> = repo
        .list("offset-snapshots/")
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

/// One group's difference from a snapshot: `(topic, partition, snapshot offset, current offset)`.
pub type Difference = (String, i32, Option<i64>, Option<i64>);

/// How `group`'s committed offsets differ from `wanted` (empty when they match exactly).
pub fn differences(
    config: &ClientConfig,
    group: &str,
    wanted: &[PartitionOffset],
    timeout: Duration,
) -> Result<Vec<Difference>> {
    let parts: Vec<(String, i32)> = wanted
        .iter()
        .map(|o| (o.topic.clone(), o.partition))
        .collect();
    let now = committed_map(config, group, &parts, timeout)?;
    Ok(wanted
        .iter()
        .filter_map(|o| {
            let cur = now.get(&(o.topic.clone(), o.partition)).copied();
            (cur != Some(o.offset)).then(|| (o.topic.clone(), o.partition, Some(o.offset), cur))
        })
        .collect())
}

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

fn open_repo(
    storage: Option<&kafka_backup_api::storage::StorageSpec>,
    default_storage: Option<&kafka_backup_api::storage::StorageSpec>,
    secrets: &crate::secrets::SecretStore,
    options: &crate::storage::StorageOptions,
    why: &str,
) -> Result<Repository> {
    let (spec, field) = match (storage, default_storage) {
        (Some(s), _) => (s, "spec.storage"),
        (None, Some(d)) => (d, "default storage"),
        (None, None) => {
            return Err(Error::InvalidSpec {
                field: "spec.storage".into(),
                message: format!(
                    "is needed {why}; set it, or give a default storage (--default-storage)"
                ),
            });
        }
    };
    let storage = crate::storage::open(field, spec, secrets, options)?;
    Ok(Repository::new(
        storage,
        std::sync::Arc::new(crate::limits::CircuitBreaker::new("storage", None)),
        crate::limits::Backoff::default(),
    ))
}

fn now_id_suffix() -> String {
    // "<name>-YYYYMMDD-HHMMSS" without the name.
    kafka_backup_format::backup_id("x", crate::util::now_secs())[2..].to_string()
}

/// Runs a KafkaOffsetReset.
pub async fn reset(
    kor: &kafka_backup_api::offsets::KafkaOffsetReset,
    secrets: &crate::secrets::SecretStore,
    options: &crate::storage::StorageOptions,
    default_storage: Option<&kafka_backup_api::storage::StorageSpec>,
    timeout: Duration,
) -> Result<OffsetsReport> {
    use kafka_backup_api::restore::OffsetResetStrategy as S;
    let name = kor.metadata.name.clone().unwrap_or_default();
    crate::backup::check_name(&name)?;
    let spec = &kor.spec;
    let cfg = kafka::client_config("spec.kafkaCluster", &spec.kafka_cluster, secrets)?;
    let ts = match (spec.strategy, &spec.timestamp) {
        (S::Timestamp, None) => {
            return Err(Error::InvalidSpec {
                field: "spec.timestamp".into(),
                message: "is required for strategy timestamp (e.g. \"2024-12-01T12:00:00Z\")"
                    .into(),
            });
        }
        (S::Timestamp, Some(t)) => Some(crate::util::parse_time("spec.timestamp", t)?),
        _ => None,
    };
    // Fields of other strategies would be ignored: refuse them instead.
    let strategy_name = serde_json::to_value(spec.strategy)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let unused = |field: &str, used_by: &str| Error::InvalidSpec {
        field: format!("spec.{field}"),
        message: format!("is used only by strategy {used_by}, not {strategy_name}; remove it"),
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
        return Err(Error::InvalidSpec {
            field: "spec.snapshotId".into(),
            message: "is set but snapshotBeforeReset is false; set snapshotBeforeReset: true or remove it".into(),
        });
    }
    if spec.strategy == S::Offset && spec.offsets.is_empty() {
        return Err(Error::InvalidSpec {
            field: "spec.offsets".into(),
            message:
                "strategy offset needs the offset of each partition: [{topic, partition, offset}]"
                    .into(),
        });
    }
    // headerBased: the offset map of a restore of the backup, and the offsets the backup recorded.
    let mut header_based = None;
    if spec.strategy == S::HeaderBased {
        let backup_id = spec.backup_id.clone().ok_or_else(|| Error::InvalidSpec {
            field: "spec.backupId".into(),
            message: "is required for strategy headerBased".into(),
        })?;
        let repo = open_repo(
            spec.storage.as_ref(),
            default_storage,
            secrets,
            options,
            "for strategy headerBased",
        )?;
        let manifest = repo.find_manifest(&backup_id).await?;
        if let Some(sc) = &spec.source_cluster {
            let recorded = manifest
                .source_cluster_id
                .as_ref()
                .or(manifest.kafka_cluster_id.as_ref());
            if recorded.is_some_and(|r| r != sc) {
                return Err(Error::InvalidSpec {
                    field: "spec.sourceCluster".into(),
                    message: format!(
                        "'{sc}' does not match the cluster backup {backup_id} was taken from"
                    ),
                });
            }
        }
        let prefix = format!("{}/offset-maps/{backup_id}/", manifest.backup_name);
        let maps: Vec<String> = repo
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|m| {
                m.location
                    .filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect();
        let restore_name = match (&spec.restore_name, maps.as_slice()) {
            (Some(r), _) if maps.contains(r) => r.clone(),
            (Some(r), _) => {
                return Err(Error::InvalidSpec {
                    field: "spec.restoreName".into(),
                    message: format!(
                        "no restore '{r}' of backup {backup_id}; restores: {}",
                        maps.join(", ")
                    ),
                });
            }
            (None, [one]) => one.clone(),
            (None, []) => {
                return Err(Error::InvalidSpec {
                    field: "spec.backupId".into(),
                    message: format!(
                        "backup {backup_id} has not been restored, so there is no offset map to translate with"
                    ),
                });
            }
            (None, many) => {
                return Err(Error::InvalidSpec {
                    field: "spec.restoreName".into(),
                    message: format!(
                        "backup {backup_id} was restored several times; name one: {}",
                        many.join(", ")
                    ),
                });
            }
        };
        let bytes = repo.get(&format!("{prefix}{restore_name}.json")).await?;
        let map: crate::restore::OffsetMap = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("{prefix}{restore_name}.json: {e}")))?;
        header_based = Some((manifest, map));
    }

    let patterns = spec.consumer_groups.clone();
    let c2 = cfg.clone();
    let groups = blocking(move || {
        let g = resolve_groups(&c2, &patterns, "spec.consumerGroups", timeout)?;
        refuse_active(&c2, &g, "spec.consumerGroups", timeout)?;
        Ok(g)
    })
    .await?;
    let topics = spec.topics.clone();
    let c2 = cfg.clone();
    let all_parts = blocking(move || partitions_of(&c2, &topics, timeout)).await?;
    let by_time = match ts {
        Some(t) => {
            let c2 = cfg.clone();
            let p = all_parts.clone();
            blocking(move || offsets_for_time(&c2, &p, t, timeout)).await?
        }
        None => BTreeMap::new(),
    };
    let marks = if matches!(spec.strategy, S::Earliest | S::Latest | S::Offset) {
        kafka::watermarks_of(&cfg, all_parts.clone(), timeout).await?
    } else {
        BTreeMap::new()
    };

    // Snapshot first, so the move can be undone.
    let snapshot_id = if spec.snapshot_before_reset && !spec.dry_run {
        let id = spec
            .snapshot_id
            .clone()
            .unwrap_or_else(|| format!("{name}-{}", now_id_suffix()));
        check_snapshot_id("spec.snapshotId", &id)?;
        let repo = open_repo(
            spec.storage.as_ref(),
            default_storage,
            secrets,
            options,
            "for snapshotBeforeReset",
        )?;
        take_snapshot(&repo, &cfg, &id, &groups, &all_parts, timeout).await?;
        Some(id)
    } else {
        None
    };

    // Each group on its own, a few at a time; one group's failure does not stop the others.
    let header_based = std::sync::Arc::new(header_based);
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut set = tokio::task::JoinSet::new();
    for g in groups {
        let cfg = cfg.clone();
        let all_parts = all_parts.clone();
        let by_time = by_time.clone();
        let marks = marks.clone();
        let hb = header_based.clone();
        let fixed: Vec<(String, i32, i64)> = spec
            .offsets
            .iter()
            .map(|o| (o.topic.clone(), o.partition, o.offset))
            .collect();
        let strategy = spec.strategy;
        let dry_run = spec.dry_run;
        let topics_filter = spec.topics.clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let group = g.clone();
            let outcome = blocking(move || -> Result<Vec<OffsetChange>> {
                let current = committed_map(&cfg, &group, &all_parts, timeout)?;
                // Which partitions move: with a topic filter every matching partition, else those
                // the group has committed on.
                let scope: Vec<(String, i32)> = if topics_filter.is_empty() {
                    current.keys().cloned().collect()
                } else {
                    all_parts.clone()
                };
                let mut targets: BTreeMap<(String, i32), i64> = BTreeMap::new();
                match strategy {
                    S::Earliest => {
                        for k in &scope {
                            if let Some((l, _)) = marks.get(k) {
                                targets.insert(k.clone(), *l);
                            }
                        }
                    }
                    S::Latest => {
                        for k in &scope {
                            if let Some((_, h)) = marks.get(k) {
                                targets.insert(k.clone(), *h);
                            }
                        }
                    }
                    S::Timestamp => {
                        for k in &scope {
                            if let Some(o) = by_time.get(k) {
                                targets.insert(k.clone(), *o);
                            }
                        }
                    }
                    S::Offset => {
                        for (t, p, o) in &fixed {
                            let Some((low, high)) = marks.get(&(t.clone(), *p)) else {
                                return Err(Error::InvalidSpec {
                                    field: "spec.offsets".into(),
                                    message: format!("{t}/{p} is not a partition of the cluster"),
                                });
                            };
                            if o < low || o > high {
                                return Err(Error::InvalidSpec {
                                    field: "spec.offsets".into(),
                                    message: format!("offset {o} of {t}/{p} is outside the partition's range {low}..{high}"),
                                });
                            }
                            targets.insert((t.clone(), *p), *o);
                        }
                    }
                    S::HeaderBased => {
                        let Some((manifest, map)) = hb.as_ref() else {
                            return Err(Error::Internal("offset map missing".into()));
                        };
                        let recorded = manifest
                            .consumer_groups
                            .iter()
                            .find(|cg| cg.group_id == group)
                            .ok_or_else(|| Error::InvalidSpec {
                                field: "spec.consumerGroups".into(),
                                message: format!("group {group} had no committed offsets recorded in backup {}", manifest.backup_id),
                            })?;
                        for t in &map.topics {
                            for p in &t.partitions {
                                if let Some(c) = recorded.offsets.iter().find(|o| o.topic == t.source_topic && o.partition == p.partition) {
                                    targets.insert((t.target_topic.clone(), p.partition), p.translate(c.offset));
                                }
                            }
                        }
                    }
                }
                if targets.is_empty() {
                    return Err(Error::InvalidSpec {
                        field: "spec.consumerGroups".into(),
                        message: format!("group {group} has no committed offsets on the selected topics; name topics to move it"),
                    });
                }
                if !dry_run {
                    commit_offsets(&cfg, &group, &targets)?;
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
            })
            .await;
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
            Err(e) => GroupReport {
                group_id: g,
                outcome: "failure".into(),
                message: Some(e.to_string()),
                offsets: Vec::new(),
            },
        });
    }
    reports.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    Ok(OffsetsReport {
        operation: "reset".into(),
        name,
        snapshot_id,
        dry_run: spec.dry_run,
        groups: reports,
        verified: None,
    })
}

/// Runs a KafkaOffsetRollback: take a snapshot, roll back to one (then verify), or verify.
pub async fn rollback(
    korb: &kafka_backup_api::offsets::KafkaOffsetRollback,
    secrets: &crate::secrets::SecretStore,
    options: &crate::storage::StorageOptions,
    default_storage: Option<&kafka_backup_api::storage::StorageSpec>,
    timeout: Duration,
) -> Result<OffsetsReport> {
    use kafka_backup_api::offsets::RollbackOperation as Op;
    let name = korb.metadata.name.clone().unwrap_or_default();
    let spec = &korb.spec;
    check_snapshot_id("spec.snapshotId", &spec.snapshot_id)?;
    let cfg = kafka::client_config("spec.kafkaCluster", &spec.kafka_cluster, secrets)?;
    let repo = open_repo(
        spec.storage.as_ref(),
        default_storage,
        secrets,
        options,
        "to keep snapshots",
    )?;
    if !spec.topics.is_empty() && spec.operation != Op::Snapshot {
        return Err(Error::InvalidSpec {
            field: "spec.topics".into(),
            message: "is used only by operation snapshot; a rollback or verify covers what the snapshot holds".into(),
        });
    }
    let op_name = match spec.operation {
        Op::Rollback => "rollback",
        Op::Snapshot => "snapshot",
        Op::Verify => "verify",
    };
    if spec.operation == Op::Snapshot {
        if spec.consumer_groups.is_empty() {
            return Err(Error::InvalidSpec {
                field: "spec.consumerGroups".into(),
                message: "names the groups to snapshot (names or patterns, e.g. \"*\")".into(),
            });
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
        let snap = take_snapshot(&repo, &cfg, &spec.snapshot_id, &groups, &parts, timeout).await?;
        return Ok(OffsetsReport {
            operation: op_name.into(),
            name,
            snapshot_id: Some(snap.snapshot_id),
            dry_run: false,
            groups: snap
                .groups
                .into_iter()
                .map(|g| GroupReport {
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
                })
                .collect(),
            verified: None,
        });
    }
    let snap = load_snapshot(&repo, &spec.snapshot_id).await?;
    let chosen: Vec<GroupOffsets> = if spec.consumer_groups.is_empty() {
        snap.groups.clone()
    } else {
        let mut out = Vec::new();
        for p in &spec.consumer_groups {
            let m: Vec<&GroupOffsets> = snap
                .groups
                .iter()
                .filter(|g| crate::patterns::matches(p, &g.group_id))
                .collect();
            if m.is_empty() {
                return Err(Error::InvalidSpec {
                    field: "spec.consumerGroups".into(),
                    message: format!("'{p}' matches no group in snapshot {}", spec.snapshot_id),
                });
            }
            out.extend(m.into_iter().cloned());
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out.dedup_by(|a, b| a.group_id == b.group_id);
        out
    };
    if spec.operation == Op::Rollback {
        let names: Vec<String> = chosen.iter().map(|g| g.group_id.clone()).collect();
        let c2 = cfg.clone();
        blocking(move || refuse_active(&c2, &names, "spec.consumerGroups", timeout)).await?;
    }
    let mut reports = Vec::new();
    for g in &chosen {
        let cfg = cfg.clone();
        let group = g.clone();
        let op = spec.operation;
        let r = blocking(move || -> Result<(Vec<Difference>, bool)> {
            if op == Op::Rollback && !group.offsets.is_empty() {
                let targets: BTreeMap<(String, i32), i64> = group
                    .offsets
                    .iter()
                    .map(|o| ((o.topic.clone(), o.partition), o.offset))
                    .collect();
                commit_offsets(&cfg, &group.group_id, &targets)?;
            }
            let d = differences(&cfg, &group.group_id, &group.offsets, timeout)?;
            Ok((d, op == Op::Rollback))
        })
        .await;
        reports.push(match r {
            Ok((d, rolled)) => GroupReport {
                group_id: g.group_id.clone(),
                outcome: if !d.is_empty() {
                    "differs"
                } else if rolled {
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
            },
            Err(e) => GroupReport {
                group_id: g.group_id.clone(),
                outcome: "failure".into(),
                message: Some(e.to_string()),
                offsets: Vec::new(),
            },
        });
    }
    let verified = Some(
        reports
            .iter()
            .all(|r| r.outcome == "success" || r.outcome == "matches"),
    );
    Ok(OffsetsReport {
        operation: op_name.into(),
        name,
        snapshot_id: Some(spec.snapshot_id.clone()),
        dry_run: false,
        groups: reports,
        verified,
    })
}
