//! The plan of a restore: from the spec, the backup's manifest and the restore's previous state
//! (if it ran before), what to read, where to write it and which group offsets to commit. Pure:
//! no Kafka, no storage. The run, its dry run and the operator's checks all start from it, so a
//! dry run shows what the run does, and a spec the operator accepts is one the run accepts.

use std::collections::{BTreeMap, BTreeSet};

use kafka_backup_api::restore::{ExistingData, KafkaRestoreSpec, OffsetResetStrategy, Pitr};
use kafka_backup_format::{
    Manifest, PartitionEntry, RestoreProgress, RestoreState, TimeWindow, TopicEntry, partition_key,
};

use crate::error::{Error, Result};
use crate::names::{check_name, check_snapshot_id, invalid};
use crate::util::parse_time;

/// What the spec asks for, checked on its own (no manifest needed): the first half of a plan,
/// and what the operator checks before it starts a Job.
#[derive(Clone, Debug)]
pub struct Request {
    /// The restore's name (`metadata.name`).
    pub name: String,
    /// The offset reset, when `spec.offsetReset` is enabled.
    pub reset: Option<ResetRequest>,
    /// The snapshot taken before the reset, when `spec.rollback` is enabled.
    pub rollback_id: Option<String>,
    /// The records restored, by timestamp.
    pub window: TimeWindow,
    /// Settings that were given but have no effect, said in the summary.
    pub warnings: Vec<String>,
}

/// The enabled `spec.offsetReset`.
#[derive(Clone, Debug)]
pub struct ResetRequest {
    /// How the new offsets are chosen.
    pub strategy: OffsetResetStrategy,
    /// For strategy timestamp: the time (ms).
    pub time: Option<i64>,
}

impl Request {
    /// Checks `spec` (of a restore named `name`): each field alone and the fields together.
    pub fn new(name: Option<&str>, spec: &KafkaRestoreSpec) -> Result<Self> {
        let name = name.ok_or_else(|| invalid("metadata.name", "is required"))?;
        check_name(name)?;
        if spec.backup_id.trim().is_empty() {
            return Err(invalid("spec.backupId", "is required"));
        }
        let reset = reset_request(spec)?;
        let rollback_id = rollback_id(name, spec, reset.is_some())?;
        if spec.default_replication_factor.is_some() && !spec.create_topics {
            return Err(invalid(
                "spec.defaultReplicationFactor",
                "is used only for topics the restore creates; set createTopics: true or remove it",
            ));
        }
        if spec.default_replication_factor.is_some_and(|r| r < 1) {
            return Err(invalid(
                "spec.defaultReplicationFactor",
                "must be 1 or more (omit it for the broker's default)",
            ));
        }
        Ok(Request {
            name: name.to_string(),
            reset,
            rollback_id,
            window: pitr_window(spec.pitr.as_ref())?,
            warnings: unused_settings(spec),
        })
    }
}

fn reset_request(spec: &KafkaRestoreSpec) -> Result<Option<ResetRequest>> {
    let Some(o) = spec.offset_reset.as_ref().filter(|o| o.enabled) else {
        return Ok(None);
    };
    let time = match o.strategy {
        OffsetResetStrategy::Timestamp => {
            let ts = o.timestamp.as_deref().ok_or_else(|| {
                invalid(
                    "spec.offsetReset.timestamp",
                    "is required for strategy timestamp (e.g. \"2024-12-01T12:00:00Z\")",
                )
            })?;
            Some(parse_time("spec.offsetReset.timestamp", ts)?)
        }
        _ => None,
    };
    Ok(Some(ResetRequest {
        strategy: o.strategy,
        time,
    }))
}

fn rollback_id(name: &str, spec: &KafkaRestoreSpec, reset: bool) -> Result<Option<String>> {
    match spec.rollback.as_ref().filter(|r| r.enabled) {
        Some(_) if !reset => Err(invalid(
            "spec.rollback",
            "snapshots the groups offsetReset changes; enable offsetReset too, or remove rollback",
        )),
        Some(r) => {
            let id = r
                .snapshot_id
                .clone()
                .unwrap_or_else(|| format!("{name}-pre-restore"));
            check_snapshot_id("spec.rollback.snapshotId", &id)?;
            Ok(Some(id))
        }
        None => Ok(None),
    }
}

/// Settings that have no effect. The CRD reference's own full example sets some of them, so they
/// are accepted, and the summary says they were not used.
fn unused_settings(spec: &KafkaRestoreSpec) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(o) = spec.offset_reset.as_ref().filter(|o| o.enabled)
        && o.timestamp.is_some()
        && o.strategy != OffsetResetStrategy::Timestamp
    {
        warnings.push(
            "spec.offsetReset.timestamp is used only by strategy timestamp; not used".to_string(),
        );
    }
    if let Some(o) = &spec.offset_reset
        && !o.enabled
    {
        warnings.push("spec.offsetReset is not enabled; no consumer group is changed".to_string());
    }
    if let Some(r) = &spec.rollback
        && !r.enabled
        && r.snapshot_id.is_some()
    {
        warnings.push("spec.rollback is not enabled; no snapshot is taken".to_string());
    }
    let unused = spec.storage.unused_blocks();
    if !unused.is_empty() {
        warnings.push(format!(
            "spec.storage: {} set but storageType is {}; not used",
            unused.join(", "),
            spec.storage.storage_type.as_str()
        ));
    }
    warnings
}

/// The time window `pitr` names; every record when it is absent or disabled.
pub fn pitr_window(pitr: Option<&Pitr>) -> Result<TimeWindow> {
    let Some(p) = pitr.filter(|p| p.enabled) else {
        if let Some(p) = pitr {
            let set = [
                ("timestamp", p.timestamp.is_some()),
                ("timestampMillis", p.timestamp_millis.is_some()),
                ("fromTimestamp", p.from_timestamp.is_some()),
                ("fromTimestampMillis", p.from_timestamp_millis.is_some()),
            ];
            if let Some((field, _)) = set.iter().find(|(_, is_set)| *is_set) {
                return Err(invalid(
                    "spec.pitr.enabled",
                    format!(
                        "is false but {field} is set; set enabled: true to restore by time, or remove {field}"
                    ),
                ));
            }
        }
        return Ok(TimeWindow::default());
    };
    let one = |text: &Option<String>, millis: Option<i64>, name: &str| -> Result<Option<i64>> {
        match (text, millis) {
            (Some(_), Some(_)) => Err(invalid(
                "spec.pitr",
                format!("set either {name} or {name}Millis, not both"),
            )),
            (None, None) => Ok(None),
            (None, Some(ms)) => Ok(Some(ms)),
            (Some(ts), None) => parse_time(&format!("spec.pitr.{name}"), ts).map(Some),
        }
    };
    let window = TimeWindow {
        from: one(&p.from_timestamp, p.from_timestamp_millis, "fromTimestamp")?,
        to: one(&p.timestamp, p.timestamp_millis, "timestamp")?,
    };
    if window.is_all() {
        return Err(invalid(
            "spec.pitr",
            "enabled needs timestamp (e.g. \"2024-12-01T12:00:00Z\") or timestampMillis, \
             and/or fromTimestamp or fromTimestampMillis",
        ));
    }
    if let (Some(from), Some(to)) = (window.from, window.to)
        && from > to
    {
        let field = if p.from_timestamp.is_some() {
            "spec.pitr.fromTimestamp"
        } else {
            "spec.pitr.fromTimestampMillis"
        };
        return Err(invalid(
            field,
            format!(
                "is after the end of the window ({from} ms > {to} ms); the start must be at or before timestamp"
            ),
        ));
    }
    Ok(window)
}

/// One source partition and the target partition it is restored into.
#[derive(Clone, Debug)]
pub struct PlannedPartition {
    /// The topic in the backup.
    pub source_topic: String,
    /// The topic written to.
    pub target_topic: String,
    /// The partition as the manifest lists it (segments to read).
    pub source: PartitionEntry,
    /// Records to write: an upper bound from the manifest (segments straddling the window
    /// counted whole) until a dry run counts them exactly; a run reports what it wrote.
    pub records: u64,
}

impl PlannedPartition {
    /// The target partition, as `(topic, partition)`.
    pub fn target(&self) -> (String, i32) {
        (self.target_topic.clone(), self.source.partition)
    }
}

/// A restore, planned: everything decided before Kafka or storage is touched again.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The checked spec.
    pub request: Request,
    /// The backup restored.
    pub backup_id: String,
    /// Its name: where the restore's own objects go.
    pub backup_name: String,
    /// Whether records carry the source-position headers.
    pub include_headers: bool,
    /// The cluster id written into the source-position headers.
    pub cluster_label: String,
    /// The partitions to restore, topic by topic in manifest order.
    pub partitions: Vec<PlannedPartition>,
    /// Target topics with their source topic (partition count and configs, for creating them).
    pub topics: Vec<(String, TopicEntry)>,
    /// Create target topics that do not exist (else refuse).
    pub create_topics: bool,
    /// Replication factor of created topics (the broker's default when absent).
    pub replication: Option<i32>,
    /// What to do with records already in a target partition.
    pub existing: ExistingData,
    /// The groups whose offsets move after the restore, with what the backup recorded.
    pub groups: Vec<String>,
    /// The offsets the backup recorded: (group, source topic, partition) to the next offset.
    pub committed: BTreeMap<(String, String, i32), i64>,
    /// The state of an earlier run of this restore: this run continues it.
    pub previous: Option<RestoreState>,
}

impl Plan {
    /// Plans restoring `manifest` as `spec` (checked into `request`) asks, continuing
    /// `previous` when this restore ran before.
    pub fn new(
        spec: &KafkaRestoreSpec,
        request: Request,
        manifest: &Manifest,
        previous: Option<RestoreState>,
    ) -> Result<Self> {
        let selected = select_topics(spec, manifest)?;
        let target_of = |t: &str| {
            spec.topic_mapping
                .get(t)
                .cloned()
                .unwrap_or_else(|| t.to_string())
        };
        let groups = groups_to_reset(spec, manifest, &selected)?;
        let include_headers = spec
            .include_original_offset_header
            .unwrap_or(manifest.include_offset_headers);
        let mut partitions = Vec::new();
        for t in &selected {
            for p in &t.partitions {
                partitions.push(PlannedPartition {
                    source_topic: t.name.clone(),
                    target_topic: target_of(&t.name),
                    source: p.clone(),
                    records: upper_bound(p, request.window),
                });
            }
        }
        let plan = Plan {
            backup_id: manifest.backup_id.clone(),
            backup_name: manifest.backup_name.clone(),
            include_headers,
            cluster_label: manifest
                .source_cluster_id
                .clone()
                .or_else(|| manifest.kafka_cluster_id.clone())
                .unwrap_or_default(),
            topics: selected
                .iter()
                .map(|t| (target_of(&t.name), (*t).clone()))
                .collect(),
            create_topics: spec.create_topics,
            replication: spec.default_replication_factor,
            existing: spec.existing_data.unwrap_or_default(),
            committed: recorded_offsets(manifest, &groups, &partitions),
            groups,
            partitions,
            previous,
            request,
        };
        if let Some(st) = &plan.previous {
            plan.check_restart(st)?;
        }
        Ok(plan)
    }

    /// The restore's name.
    pub fn name(&self) -> &str {
        &self.request.name
    }

    /// The time window restored.
    pub fn window(&self) -> TimeWindow {
        self.request.window
    }

    /// Every target partition, in plan order.
    pub fn targets(&self) -> Vec<(String, i32)> {
        self.partitions
            .iter()
            .map(PlannedPartition::target)
            .collect()
    }

    /// Records to write in all.
    pub fn records(&self) -> u64 {
        self.partitions.iter().map(|p| p.records).sum()
    }

    /// The target topics that do not exist yet and are to be created, with their source topic;
    /// refuses a missing topic without `createTopics` and one with too few partitions.
    /// `existing` maps the target topics that exist to their partition count.
    pub fn topics_to_create(
        &self,
        existing: &BTreeMap<String, usize>,
    ) -> Result<Vec<(String, TopicEntry)>> {
        let mut to_create = Vec::new();
        for (target, t) in &self.topics {
            match existing.get(target) {
                Some(&n) if (n as i32) < t.partition_count => {
                    return Err(invalid(
                        "spec.targetCluster",
                        format!(
                            "target topic {target} has {n} partitions but the backup of {} has {}; add partitions or restore into a new topic",
                            t.name, t.partition_count
                        ),
                    ));
                }
                Some(_) => {}
                None if self.create_topics => to_create.push((target.clone(), t.clone())),
                None => {
                    return Err(invalid(
                        "spec.createTopics",
                        format!(
                            "target topic {target} does not exist; set createTopics: true to create it"
                        ),
                    ));
                }
            }
        }
        Ok(to_create)
    }

    /// Whether a restart of this restore may go on: same backup, not completed, and the same
    /// records (`window`) written the same way (`include_headers`) into the same target
    /// partitions, or what it counts as already written would not describe what is there.
    fn check_restart(&self, st: &RestoreState) -> Result<()> {
        let name = self.name();
        if st.backup_id != self.backup_id {
            return Err(invalid(
                "metadata.name",
                format!(
                    "restore '{name}' already restored backup {}; use another name to restore {}",
                    st.backup_id, self.backup_id
                ),
            ));
        }
        if st.state == RestoreProgress::Completed {
            return Err(invalid(
                "metadata.name",
                format!(
                    "restore '{name}' of {} already completed at {}; use another name to restore again",
                    st.backup_id,
                    st.completion_time.as_deref().unwrap_or("?")
                ),
            ));
        }
        if let Some(w) = st.window
            && w != self.window()
        {
            return Err(invalid(
                "spec.pitr",
                format!(
                    "restore '{name}' was started for {w} and this spec asks for {}; a restart must \
                     restore the same records, so restore with the original pitr or use another name",
                    self.window()
                ),
            ));
        }
        if let Some(was) = st.include_original_offset_header
            && was != self.include_headers
        {
            return Err(invalid(
                "spec.includeOriginalOffsetHeader",
                format!(
                    "restore '{name}' was started {} the source-position headers and this spec \
                     restores {} them; a restart must write the rest the same way, so set \
                     includeOriginalOffsetHeader: {was} or use another name",
                    if was { "with" } else { "without" },
                    if self.include_headers {
                        "with"
                    } else {
                        "without"
                    },
                ),
            ));
        }
        self.check_same_targets(st)
    }

    /// The same target partitions, or the starts recorded do not describe what is there.
    fn check_same_targets(&self, st: &RestoreState) -> Result<()> {
        let planned: BTreeSet<String> = self
            .partitions
            .iter()
            .map(|p| partition_key(&p.target_topic, p.source.partition))
            .collect();
        let started: BTreeSet<String> = st.target_start_offsets.keys().cloned().collect();
        if planned == started {
            return Ok(());
        }
        let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
            a.difference(b)
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(invalid(
            "spec.topicMapping",
            format!(
                "restore '{}' was started for other target partitions (only then: [{}]; only now: [{}]); \
                 a restart must restore the same topics into the same targets, so use the original topics \
                 and topicMapping, or another name",
                self.name(),
                only(&started, &planned),
                only(&planned, &started)
            ),
        ))
    }
}

/// The manifest's topics `spec.topics` selects (all when empty), checking `spec.topics` and
/// `spec.topicMapping` name topics of the backup and map no two onto one target.
fn select_topics<'m>(
    spec: &KafkaRestoreSpec,
    manifest: &'m Manifest,
) -> Result<Vec<&'m TopicEntry>> {
    let available: Vec<&str> = manifest.topics.iter().map(|t| t.name.as_str()).collect();
    for t in &spec.topics {
        if !available.contains(&t.as_str()) {
            return Err(invalid(
                "spec.topics",
                format!(
                    "'{t}' is not in backup {}; it holds: {}",
                    manifest.backup_id,
                    available.join(", ")
                ),
            ));
        }
    }
    let selected: Vec<&TopicEntry> = manifest
        .topics
        .iter()
        .filter(|t| spec.topics.is_empty() || spec.topics.contains(&t.name))
        .collect();
    for source in spec.topic_mapping.keys() {
        if !selected.iter().any(|t| &t.name == source) {
            return Err(invalid(
                &format!("spec.topicMapping.{source}"),
                format!("'{source}' is not among the topics being restored"),
            ));
        }
    }
    let mut targets: Vec<&str> = selected
        .iter()
        .map(|t| spec.topic_mapping.get(&t.name).unwrap_or(&t.name).as_str())
        .collect();
    targets.sort();
    if targets.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(
            "spec.topicMapping",
            "maps two source topics to the same target topic",
        ));
    }
    Ok(selected)
}

/// The groups to move after the restore: those `spec.offsetReset` names, or those the backup
/// recorded on the restored topics.
fn groups_to_reset(
    spec: &KafkaRestoreSpec,
    manifest: &Manifest,
    selected: &[&TopicEntry],
) -> Result<Vec<String>> {
    let Some(o) = spec.offset_reset.as_ref().filter(|o| o.enabled) else {
        return Ok(Vec::new());
    };
    if let Some(sc) = &o.source_cluster {
        let recorded = manifest
            .source_cluster_id
            .as_ref()
            .or(manifest.kafka_cluster_id.as_ref());
        if recorded.is_some_and(|r| r != sc) {
            return Err(invalid(
                "spec.offsetReset.sourceCluster",
                format!(
                    "'{sc}' does not match the cluster backup {} was taken from ('{}')",
                    manifest.backup_id,
                    recorded.map(String::as_str).unwrap_or_default()
                ),
            ));
        }
    }
    let groups: Vec<String> = if o.consumer_groups.is_empty() {
        manifest
            .consumer_groups
            .iter()
            .filter(|g| {
                g.offsets
                    .iter()
                    .any(|off| selected.iter().any(|t| t.name == off.topic))
            })
            .map(|g| g.group_id.clone())
            .collect()
    } else {
        o.consumer_groups.clone()
    };
    if groups.is_empty() {
        return Err(invalid(
            "spec.offsetReset.consumerGroups",
            format!(
                "names no group and backup {} recorded none on the restored topics",
                manifest.backup_id
            ),
        ));
    }
    Ok(groups)
}

/// The offsets the backup recorded for `groups` on the planned partitions.
fn recorded_offsets(
    manifest: &Manifest,
    groups: &[String],
    partitions: &[PlannedPartition],
) -> BTreeMap<(String, String, i32), i64> {
    let mut out = BTreeMap::new();
    for cg in manifest
        .consumer_groups
        .iter()
        .filter(|cg| groups.contains(&cg.group_id))
    {
        for p in partitions {
            if let Some(off) = cg
                .offsets
                .iter()
                .find(|o| o.topic == p.source_topic && o.partition == p.source.partition)
            {
                out.insert(
                    (
                        cg.group_id.clone(),
                        p.source_topic.clone(),
                        p.source.partition,
                    ),
                    off.offset,
                );
            }
        }
    }
    out
}

/// Records of `p` within `window`, from the manifest alone: segments that straddle the window
/// count whole.
fn upper_bound(p: &PartitionEntry, window: TimeWindow) -> u64 {
    p.segments
        .iter()
        .filter(|s| !window.misses(s.min_timestamp, s.max_timestamp))
        .map(|s| s.records)
        .sum()
}

/// A group's new offsets: `(target topic, partition)` to the offset.
pub type GroupOffsets = BTreeMap<(String, i32), i64>;

/// The first run's start of each target partition (see [`starts`]).
pub type Starts = BTreeMap<String, i64>;

/// Target partitions whose existing records are purged: `(topic, partition, up to offset)`.
pub type Purge = Vec<(String, i32, i64)>;

/// Where a restore leaves a target partition, which is what its offset reset works from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetRange {
    /// The log start offset (after any purge).
    pub low: i64,
    /// Where the restored records start.
    pub start: i64,
    /// The end offset after the restore.
    pub end: i64,
}

/// Where the target partitions will be, for a dry run: each starts where the target ends now
/// (or where the earlier run of this restore started it) and ends after its records; a purge
/// moves the log start to the end.
pub fn projected_ranges(
    plan: &Plan,
    marks: &BTreeMap<(String, i32), (i64, i64)>,
) -> BTreeMap<(String, i32), TargetRange> {
    plan.partitions
        .iter()
        .map(|p| {
            let key = p.target();
            let (low, high) = marks.get(&key).copied().unwrap_or((0, 0));
            let previous = plan.previous.as_ref().and_then(|st| {
                st.target_start_offsets
                    .get(&partition_key(&key.0, key.1))
                    .copied()
            });
            let purged = previous.is_none() && plan.existing == ExistingData::Purge && high > low;
            let start = previous.unwrap_or(high);
            let range = TargetRange {
                low: if purged { high } else { low },
                start,
                end: start + p.records as i64,
            };
            (key, range)
        })
        .collect()
}

/// Where the offset reset moves each group, by target partition: the one table both the dry
/// run and the run use.
///
/// `ranges` says where each target partition is after the restore; `by_time` holds the offsets
/// strategy timestamp found (a dry run has none: the records are not there to look up);
/// `position` gives, for a planned partition, its range and a source offset a group committed,
/// the target offset of the first restored record at or after it (strategy headerBased: the run
/// knows it from its offset map, a dry run counts the records before it).
pub fn offset_table(
    plan: &Plan,
    strategy: OffsetResetStrategy,
    ranges: &BTreeMap<(String, i32), TargetRange>,
    by_time: &BTreeMap<(String, i32), i64>,
    position: &dyn Fn(&PlannedPartition, &TargetRange, i64) -> Option<i64>,
) -> Vec<(String, GroupOffsets)> {
    plan.groups
        .iter()
        .map(|g| {
            let mut offsets = BTreeMap::new();
            for p in &plan.partitions {
                let key = p.target();
                let Some(range) = ranges.get(&key) else {
                    continue;
                };
                let committed = plan
                    .committed
                    .get(&(g.clone(), p.source_topic.clone(), p.source.partition))
                    .copied();
                let target = match strategy {
                    OffsetResetStrategy::Earliest => Some(range.low),
                    OffsetResetStrategy::Latest => Some(range.end),
                    OffsetResetStrategy::Timestamp => by_time.get(&key).copied(),
                    OffsetResetStrategy::Offset => committed.map(|c| c.clamp(range.low, range.end)),
                    OffsetResetStrategy::HeaderBased => {
                        committed.and_then(|c| position(p, range, c))
                    }
                };
                if let Some(t) = target {
                    offsets.insert(key, t);
                }
            }
            (g.clone(), offsets)
        })
        .collect()
}

/// What the run writes: each target partition's start (kept from an earlier run, else where it
/// ends now) and the partitions whose existing records are purged first. Refuses a target that
/// holds records under `existingData: refuse`.
pub fn starts(plan: &Plan, marks: &BTreeMap<(String, i32), (i64, i64)>) -> Result<(Starts, Purge)> {
    if let Some(st) = &plan.previous {
        return Ok((st.target_start_offsets.clone(), Vec::new()));
    }
    let mut starts = BTreeMap::new();
    let mut to_purge = Vec::new();
    for p in &plan.partitions {
        let (target, partition) = p.target();
        let (low, high) = mark(marks, &target, partition)?;
        if high > low {
            match plan.existing {
                ExistingData::Refuse => {
                    return Err(invalid(
                        "spec.existingData",
                        format!(
                            "target topic {target} partition {partition} already holds records (offsets {low}..{high}); set existingData: append to write after them or purge to delete them first"
                        ),
                    ));
                }
                ExistingData::Append => {}
                ExistingData::Purge => to_purge.push((target.clone(), partition, high)),
            }
        }
        starts.insert(partition_key(&target, partition), high);
    }
    Ok((starts, to_purge))
}

/// One target partition to restore.
#[derive(Clone, Debug)]
pub struct Task {
    /// What to read and where to write it.
    pub partition: PlannedPartition,
    /// The target offset of the first restored record.
    pub target_start: i64,
    /// Records an earlier run already wrote: read again (for the offset map) but not sent.
    pub already_written: i64,
}

/// The partitions to restore, each with where it starts and how much an earlier run already
/// wrote there (the target's end now minus its start). Refuses a target that someone else wrote
/// to, since what this restore wrote can then no longer be told apart.
pub fn tasks(
    plan: &Plan,
    starts: &BTreeMap<String, i64>,
    marks: &BTreeMap<(String, i32), (i64, i64)>,
) -> Result<Vec<Task>> {
    let mut tasks = Vec::new();
    for p in &plan.partitions {
        let (target, partition) = p.target();
        let key = partition_key(&target, partition);
        let Some(&start) = starts.get(&key) else {
            return Err(Error::Internal(format!(
                "restore state has no start offset for {key}"
            )));
        };
        let (_, high) = mark(marks, &target, partition)?;
        let written = high - start;
        let n = p.records;
        if written < 0 || written as u64 > n {
            return Err(invalid(
                "spec.targetCluster",
                format!(
                    "target {key} ends at offset {high}, but this restore started it at {start} and has {n} records to write: the target was changed by someone else; restore under a new name into a fresh topic"
                ),
            ));
        }
        tasks.push(Task {
            partition: p.clone(),
            target_start: start,
            already_written: written,
        });
    }
    Ok(tasks)
}

fn mark(
    marks: &BTreeMap<(String, i32), (i64, i64)>,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64)> {
    marks
        .get(&(topic.to_string(), partition))
        .copied()
        .ok_or_else(|| Error::Internal(format!("no offsets of target {topic}/{partition}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_backup_api::restore::OffsetResetStrategy as S;
    use kafka_backup_format::{OffsetMapPartition, extend_runs};

    #[test]
    fn pitr_names_a_window_with_one_time_per_end() {
        // (enabled, fromTimestamp, fromTimestampMillis, timestamp, timestampMillis)
        let pitr = |enabled, from: Option<&str>, from_ms, to: Option<&str>, to_ms| Pitr {
            enabled,
            from_timestamp: from.map(str::to_string),
            from_timestamp_millis: from_ms,
            timestamp: to.map(str::to_string),
            timestamp_millis: to_ms,
        };
        let w = |from, to| TimeWindow { from, to };
        assert_eq!(pitr_window(None).expect("none"), w(None, None));
        let noon = Some("2024-12-01T12:00:00Z");
        let ok = [
            (
                pitr(true, None, None, noon, None),
                w(None, Some(1_733_054_400_000)),
            ),
            (
                pitr(
                    true,
                    None,
                    None,
                    Some("2024-12-01T12:00:00.123+01:00"),
                    None,
                ),
                w(None, Some(1_733_050_800_123)),
            ),
            (pitr(true, None, None, None, Some(5)), w(None, Some(5))),
            (
                pitr(true, noon, None, None, None),
                w(Some(1_733_054_400_000), None),
            ),
            (pitr(true, None, Some(7), None, None), w(Some(7), None)),
            (
                pitr(true, None, Some(7), None, Some(9)),
                w(Some(7), Some(9)),
            ),
            (
                pitr(true, None, Some(7), None, Some(7)),
                w(Some(7), Some(7)),
            ),
        ];
        for (p, want) in ok {
            assert_eq!(pitr_window(Some(&p)).expect("valid"), want, "{p:?}");
        }
        // Each error starts with the field and holds what names the problem.
        let bad = [
            (
                pitr(true, None, None, None, None),
                "spec.pitr:",
                "enabled needs timestamp",
            ),
            (
                pitr(true, None, None, Some("x"), Some(1)),
                "spec.pitr:",
                "not both",
            ),
            (
                pitr(true, None, None, Some("yesterday"), None),
                "spec.pitr.timestamp:",
                "yesterday",
            ),
            (
                pitr(false, None, None, None, Some(1)),
                "spec.pitr.enabled:",
                "timestampMillis",
            ),
            (
                pitr(true, Some("x"), Some(1), None, None),
                "spec.pitr:",
                "either fromTimestamp or fromTimestampMillis",
            ),
            (
                pitr(true, Some("soon"), None, None, None),
                "spec.pitr.fromTimestamp:",
                "soon",
            ),
            (
                pitr(true, None, Some(7), None, Some(6)),
                "spec.pitr.fromTimestampMillis:",
                "7 ms > 6 ms",
            ),
            (
                pitr(false, noon, None, None, None),
                "spec.pitr.enabled:",
                "fromTimestamp",
            ),
        ];
        for (p, field, says) in bad {
            let e = pitr_window(Some(&p)).expect_err("invalid").to_string();
            assert!(e.starts_with(field) && e.contains(says), "{p:?}: {e}");
        }
    }

    /// A plan of one partition holding records at source offsets `sources`, restored into a
    /// target that holds `existing` records (offsets `low..high`), for group `g` that committed
    /// `committed`.
    fn plan(sources: &[i64], existing: ExistingData, committed: i64) -> Plan {
        let request = Request {
            name: "r".into(),
            reset: None,
            rollback_id: None,
            window: TimeWindow::default(),
            warnings: Vec::new(),
        };
        let source = PartitionEntry {
            partition: 0,
            start_offset: 0,
            end_offset: sources.last().map_or(0, |l| l + 1),
            records: sources.len() as u64,
            min_timestamp: None,
            max_timestamp: None,
            gaps: Vec::new(),
            segments: Vec::new(),
            target_offset: None,
            next_offset: None,
        };
        Plan {
            request,
            backup_id: "b-20241201-120000".into(),
            backup_name: "b".into(),
            include_headers: false,
            cluster_label: String::new(),
            partitions: vec![PlannedPartition {
                source_topic: "src".into(),
                target_topic: "dst".into(),
                source,
                records: sources.len() as u64,
            }],
            topics: Vec::new(),
            create_topics: false,
            replication: None,
            existing,
            groups: vec!["g".into()],
            committed: [(("g".to_string(), "src".to_string(), 0), committed)].into(),
            previous: None,
        }
    }

    /// The dry run's table, from the target's offsets before the restore and a count of the
    /// restored records before each committed offset, equals the run's, from the target's
    /// offsets after the restore and the offset map it wrote: for every strategy, committed
    /// offsets inside, between and past the restored records, and every existingData.
    #[test]
    fn dry_run_and_run_compute_the_same_offsets() {
        // Source offsets with a compaction gap (5..8) and a committed offset past the end.
        let sources = [0, 1, 2, 3, 4, 8, 9];
        let (low, high) = (3, 10);
        for existing in [ExistingData::Append, ExistingData::Purge] {
            for committed in [0, 3, 5, 9, 10, 1000] {
                let plan = plan(&sources, existing, committed);
                let key = ("dst".to_string(), 0);
                // Dry run: offsets now, records counted before each committed offset.
                let marks = [(key.clone(), (low, high))].into();
                let projected = projected_ranges(&plan, &marks);
                let count = |_: &PlannedPartition, r: &TargetRange, c: i64| {
                    Some(r.start + sources.iter().filter(|s| **s < c).count() as i64)
                };
                // Run: the records written after `high`, the offset map, offsets after.
                let mut runs = Vec::new();
                for (i, s) in sources.iter().enumerate() {
                    extend_runs(&mut runs, *s, high + i as i64);
                }
                let map = OffsetMapPartition {
                    partition: 0,
                    runs,
                    target_end_offset: high + sources.len() as i64,
                };
                let after_low = if existing == ExistingData::Purge {
                    high
                } else {
                    low
                };
                let observed = [(
                    key.clone(),
                    TargetRange {
                        low: after_low,
                        start: high,
                        end: map.target_end_offset,
                    },
                )]
                .into();
                let translate =
                    |_: &PlannedPartition, _: &TargetRange, c: i64| Some(map.translate(c));
                for strategy in [S::Earliest, S::Latest, S::Offset, S::HeaderBased] {
                    let none = BTreeMap::new();
                    let dry = offset_table(&plan, strategy, &projected, &none, &count);
                    let run = offset_table(&plan, strategy, &observed, &none, &translate);
                    assert_eq!(dry, run, "{strategy:?} {existing:?} committed {committed}");
                }
                // Strategy offset stays within what the target holds.
                let run = offset_table(&plan, S::Offset, &observed, &BTreeMap::new(), &translate);
                let moved = run[0].1[&key];
                assert!(
                    (after_low..=map.target_end_offset).contains(&moved),
                    "{moved}"
                );
            }
        }
    }
}
