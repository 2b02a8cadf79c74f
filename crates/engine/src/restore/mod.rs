//! Restoring a backup into a Kafka cluster: same partition, same order, same key, value, headers
//! and timestamp for every record; optionally only those at or before a point in time.
//!
//! Exactness: records go through an idempotent producer, one partition in order. A restore records
//! where each target partition ended before it wrote anything; when it runs again after a crash it
//! reads the target's actual end offsets, so it knows exactly how many records already landed and
//! continues after them. Nothing is duplicated and nothing skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_backup_api::restore::{ExistingData, KafkaRestore, OffsetResetStrategy};
use kafka_backup_format::{
    EncryptionKey, IndexEntry, PartitionEntry, Record, SegmentEntry, TRAILER_LEN, TimeWindow,
    TimestampType, blocks_for, decode_block_with, decode_index, decode_trailer, rfc3339,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::encryption::{self, KeyOverride, Purpose};
use crate::error::{Error, Result};
use crate::kafka::{self, KafkaContext};
use crate::limits::{Backoff, CircuitBreaker};
use crate::repo::Repository;
use crate::secrets::SecretStore;
use crate::storage::{self, StorageOptions};
use crate::util::{blocking, now_secs, parse_time};

/// Header names added by `includeOriginalOffsetHeader`; values are decimal ASCII (the cluster id
/// is the backup's `sourceClusterId`, else the Kafka cluster id it recorded).
pub const HEADER_SOURCE_OFFSET: &str = "kafka-backup.source.offset";
/// See [`HEADER_SOURCE_OFFSET`].
pub const HEADER_SOURCE_PARTITION: &str = "kafka-backup.source.partition";
/// See [`HEADER_SOURCE_OFFSET`].
pub const HEADER_SOURCE_TIMESTAMP: &str = "kafka-backup.source.timestamp";
/// See [`HEADER_SOURCE_OFFSET`].
pub const HEADER_SOURCE_CLUSTER: &str = "kafka-backup.source.cluster";

/// Largest byte range fetched at once when reading blocks: bounds memory per partition.
const READ_CHUNK: u64 = 8 << 20;

/// Records waiting for delivery, in KiB and in number, shared by the workers' producers: bounds
/// memory (librdkafka keeps a few hundred bytes per queued record besides its key and value).
const PRODUCER_BUFFER_KIB: usize = 32 << 10;
/// See [`PRODUCER_BUFFER_KIB`].
const PRODUCER_BUFFER_RECORDS: usize = 200_000;

/// Tuning of a restore beyond the spec.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// Partitions restored at once.
    pub workers: usize,
    /// Time limit of Kafka metadata and admin requests.
    pub kafka_timeout: Duration,
    /// How storage is reached.
    pub storage: StorageOptions,
    /// Retry policy of storage calls.
    pub backoff: Backoff,
    /// Set to `true` to stop; a later run with the same name resumes.
    pub stop: Option<watch::Receiver<bool>>,
    /// The encryption key from outside the spec (the CLI's `KAFKA_BACKUP_ENCRYPTION_KEY`): used
    /// instead of the Secret `spec.encryption.keySecret` names, and enough on its own.
    pub encryption_key: Option<KeyOverride>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            dry_run: false,
            workers: 4,
            kafka_timeout: Duration::from_secs(30),
            storage: StorageOptions::default(),
            backoff: Backoff::default(),
            stop: None,
            encryption_key: None,
        }
    }
}

/// Live counters of a restore.
#[derive(Debug, Default)]
pub struct Progress {
    pub target_records: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
}

/// What a restore did (or, in a dry run, would do).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSummary {
    pub restore_name: String,
    pub backup_id: String,
    pub storage: String,
    pub dry_run: bool,
    pub resumed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pitr_timestamp_millis: Option<i64>,
    /// The start of the point-in-time window, when `spec.pitr` sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pitr_from_timestamp_millis: Option<i64>,
    pub restored_records: u64,
    pub restored_topics: Vec<RestoredTopicSummary>,
    pub topics_created: Vec<String>,
    /// Bytes read from storage (manifest, indexes and blocks), for point-in-time restores that
    /// read only the blocks they need.
    pub stored_bytes_read: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset_map: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset_reset: Option<OffsetResetSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_snapshot_id: Option<String>,
    pub duration_secs: f64,
    pub warnings: Vec<String>,
}

/// What the offset reset did (or, in a dry run, would do).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetResetSummary {
    pub strategy: OffsetResetStrategy,
    /// `Planned` (dry run) or `Completed`.
    pub phase: String,
    pub groups: Vec<GroupReset>,
}

/// One group's new offsets.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupReset {
    pub group_id: String,
    pub offsets: Vec<GroupTargetOffset>,
}

/// One partition's new offset.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupTargetOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Per topic part of [`RestoreSummary`].
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoredTopicSummary {
    pub source: String,
    pub name: String,
    pub partitions: Vec<RestoredPartitionSummary>,
    pub records: u64,
}

/// Per partition part of [`RestoreSummary`].
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoredPartitionSummary {
    pub partition: i32,
    /// Records within the point-in-time bound (all records without one).
    pub records: u64,
    /// Target offsets the records occupy: `[first, end)`.
    pub target_start_offset: i64,
    pub target_end_offset: i64,
}

/// The durable record of one restore, next to the backup: where each target partition started, so
/// a restarted restore knows what it already wrote. `<name>/restores/<restore-name>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreState {
    pub restore_name: String,
    pub backup_id: String,
    pub state: String,
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// `"<target topic>/<partition>"` to the target's end offset before anything was written.
    pub target_start_offsets: BTreeMap<String, i64>,
    /// The time window the restore started with: a restart must restore the same records, or
    /// what it counts as already written would not match what is there. Absent in states
    /// written before windows were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeWindow>,
    /// Whether the records carry the source-position headers, so a restart writes the rest the
    /// same way. Absent in states written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_original_offset_header: Option<bool>,
}

impl RestoreState {
    /// Whether a restart of this restore may go on: same backup, not completed, and the same
    /// records (`window`) written the same way (`include_headers`) into the same target
    /// partitions (`planned`, as [`partition_key`]s), or what it counts as already written would
    /// not describe what is there.
    fn check_restart(
        &self,
        name: &str,
        backup_id: &str,
        window: TimeWindow,
        include_headers: bool,
        planned: &BTreeSet<String>,
    ) -> Result<()> {
        if self.backup_id != backup_id {
            return Err(invalid(
                "metadata.name",
                format!(
                    "restore '{name}' already restored backup {}; use another name to restore {}",
                    self.backup_id, backup_id
                ),
            ));
        }
        if self.state == "completed" {
            return Err(invalid(
                "metadata.name",
                format!(
                    "restore '{name}' of {} already completed at {}; use another name to restore again",
                    self.backup_id,
                    self.completion_time.as_deref().unwrap_or("?")
                ),
            ));
        }
        if let Some(w) = self.window
            && w != window
        {
            return Err(invalid(
                "spec.pitr",
                format!(
                    "restore '{name}' was started for {w} and this spec asks for {}; a restart must \
                     restore the same records, so restore with the original pitr or use another name",
                    window
                ),
            ));
        }
        if let Some(was) = self.include_original_offset_header
            && was != include_headers
        {
            return Err(invalid(
                "spec.includeOriginalOffsetHeader",
                format!(
                    "restore '{name}' was started {} the source-position headers and this spec \
                     restores {} them; a restart must write the rest the same way, so set \
                     includeOriginalOffsetHeader: {was} or use another name",
                    if was { "with" } else { "without" },
                    if include_headers { "with" } else { "without" },
                ),
            ));
        }
        // The same target partitions, or the starts recorded do not describe what is there.
        let started: BTreeSet<String> = self.target_start_offsets.keys().cloned().collect();
        if *planned != started {
            let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
                a.difference(b)
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(invalid(
                "spec.topicMapping",
                format!(
                    "restore '{name}' was started for other target partitions (only then: [{}]; only now: [{}]); \
                     a restart must restore the same topics into the same targets, so use the original topics \
                     and topicMapping, or another name",
                    only(&started, planned),
                    only(planned, &started)
                ),
            ));
        }
        Ok(())
    }
}

/// How a target partition is named in a [`RestoreState`]: `"<topic>/<partition>"`.
fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// How source offsets map to target offsets, as runs: `count` consecutive restored records whose
/// source offsets are `source..source+count` landed at `target..target+count`.
/// `<name>/offset-maps/<backupId>/<restore-name>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetMap {
    pub backup_id: String,
    pub restore_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster_id: Option<String>,
    pub topics: Vec<OffsetMapTopic>,
}

/// See [`OffsetMap`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetMapTopic {
    pub source_topic: String,
    pub target_topic: String,
    pub partitions: Vec<OffsetMapPartition>,
}

/// See [`OffsetMap`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OffsetMapPartition {
    pub partition: i32,
    /// `[sourceStart, targetStart, count]` triples, in offset order.
    pub runs: Vec<[i64; 3]>,
    /// Target end offset after the restore.
    pub target_end_offset: i64,
}

impl OffsetMapPartition {
    /// The target offset of the first restored record whose source offset is `>= source`, or the
    /// end of the restored data when there is none: where a consumer that had committed `source`
    /// ("next to read") resumes.
    pub fn translate(&self, source: i64) -> i64 {
        for [s, t, n] in &self.runs {
            if source < s + n {
                return if source <= *s { *t } else { t + (source - s) };
            }
        }
        self.target_end_offset
    }
}

/// Appends a record's source offset to the runs.
fn extend_runs(runs: &mut Vec<[i64; 3]>, source: i64, target: i64) {
    if let Some(last) = runs.last_mut()
        && last[0] + last[2] == source
        && last[1] + last[2] == target
    {
        last[2] += 1;
        return;
    }
    runs.push([source, target, 1]);
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The time window `pitr` names; every record when it is absent or disabled.
pub fn pitr_window(pitr: Option<&kafka_backup_api::restore::Pitr>) -> Result<TimeWindow> {
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

struct Settings {
    kafka: ClientConfig,
    repo: Repository,
    /// The key of an encrypted backup.
    key: Option<EncryptionKey>,
    window: TimeWindow,
    create_topics: bool,
    replication: Option<i32>,
    existing: ExistingData,
}

/// Offset maps by (source topic, target topic, partition).
type PartitionMaps = BTreeMap<(String, String, i32), OffsetMapPartition>;

/// One target partition to restore.
#[derive(Clone, Debug)]
struct Task {
    source_topic: String,
    target_topic: String,
    source: PartitionEntry,
    target_start: i64,
    already_written: i64,
    /// Records planned: exact, or an upper bound under a point in time (segments straddling it
    /// counted whole).
    planned: u64,
}

/// Restores the backup `kr` names.
pub async fn run(
    kr: &KafkaRestore,
    secrets: &SecretStore,
    options: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let name = kr
        .metadata
        .name
        .clone()
        .ok_or_else(|| invalid("metadata.name", "is required"))?;
    crate::backup::check_name(&name)?;
    let spec = &kr.spec;
    if spec.backup_id.trim().is_empty() {
        return Err(invalid("spec.backupId", "is required"));
    }
    let reset = spec.offset_reset.as_ref().filter(|o| o.enabled);
    let reset_time = match reset {
        Some(o) if o.strategy == OffsetResetStrategy::Timestamp => {
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
    let rollback_id = match spec.rollback.as_ref().filter(|r| r.enabled) {
        Some(_) if reset.is_none() => {
            return Err(invalid(
                "spec.rollback",
                "snapshots the groups offsetReset changes; enable offsetReset too, or remove rollback",
            ));
        }
        Some(r) => {
            let id = r
                .snapshot_id
                .clone()
                .unwrap_or_else(|| format!("{name}-pre-restore"));
            crate::offsets::check_snapshot_id("spec.rollback.snapshotId", &id)?;
            Some(id)
        }
        None => None,
    };
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
    let window = pitr_window(spec.pitr.as_ref())?;
    let mut warnings = Vec::new();
    // The CRD reference's own full example sets these where they have no effect, so they are
    // accepted, and the summary says they were not used.
    if let Some(o) = reset
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
    let kafka_cfg = kafka::client_config("spec.targetCluster", &spec.target_cluster, secrets)?;
    let storage = storage::open("spec.storage", &spec.storage, secrets, &options.storage)?;
    let repo = Repository::new(
        storage,
        Arc::new(CircuitBreaker::new("storage", None)),
        options.backoff.clone(),
    );
    let mut s = Settings {
        kafka: kafka_cfg,
        repo,
        key: None,
        window,
        create_topics: spec.create_topics,
        replication: spec.default_replication_factor,
        existing: spec.existing_data.unwrap_or_default(),
    };

    let manifest = s.repo.find_manifest(&spec.backup_id).await?;
    s.key = encryption::key_for_reading(
        &manifest,
        spec.encryption.as_ref(),
        secrets,
        options.encryption_key.as_ref(),
        Purpose::Restore,
    )?;
    if let (Some(o), None) = (&options.encryption_key, &manifest.encryption) {
        warnings.push(format!(
            "{} is set but backup {} is not encrypted; not used",
            o.source, manifest.backup_id
        ));
    }
    let s = s;
    // Topics to restore and where to.
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
    let selected: Vec<&kafka_backup_format::TopicEntry> = manifest
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
    let target_of = |t: &str| {
        spec.topic_mapping
            .get(t)
            .cloned()
            .unwrap_or_else(|| t.to_string())
    };
    let mut targets: Vec<String> = selected.iter().map(|t| target_of(&t.name)).collect();
    targets.sort();
    if targets.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(
            "spec.topicMapping",
            "maps two source topics to the same target topic",
        ));
    }

    // Groups to move after the restore: named, or those the backup recorded on these topics.
    let groups: Vec<String> = match reset {
        Some(o) => {
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
            let g: Vec<String> = if o.consumer_groups.is_empty() {
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
            if g.is_empty() {
                return Err(invalid(
                    "spec.offsetReset.consumerGroups",
                    format!(
                        "names no group and backup {} recorded none on the restored topics",
                        manifest.backup_id
                    ),
                ));
            }
            g
        }
        None => Vec::new(),
    };
    let cfg = s.kafka.clone();
    let timeout = options.kafka_timeout;
    tokio::task::spawn_blocking(move || kafka::probe(&cfg, timeout))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    {
        let (cfg, g) = (s.kafka.clone(), groups.clone());
        blocking(move || {
            crate::offsets::refuse_active(&cfg, &g, "spec.offsetReset.consumerGroups", timeout)
        })
        .await?;
    }

    let include_headers = spec
        .include_original_offset_header
        .unwrap_or(manifest.include_offset_headers);

    // The restore's own record: present means this is a restart of the same restore.
    let state_path = format!("{}/restores/{name}.json", manifest.backup_name);
    let previous_state: Option<RestoreState> =
        match s.repo.get(&state_path).await {
            Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                Error::Internal(format!("{state_path} is not a restore state: {e}"))
            })?),
            Err(Error::Storage {
                source: object_store::Error::NotFound { .. },
                ..
            }) => None,
            Err(e) => return Err(e),
        };
    if let Some(st) = &previous_state {
        let planned = selected
            .iter()
            .flat_map(|t| {
                let target = target_of(&t.name);
                t.partitions
                    .iter()
                    .map(move |p| partition_key(&target, p.partition))
            })
            .collect();
        st.check_restart(
            &name,
            &manifest.backup_id,
            s.window,
            include_headers,
            &planned,
        )?;
    }
    let resumed = previous_state.is_some();

    // Target topics: exist with enough partitions, or are created.
    let existing = {
        let (cfg, names) = (s.kafka.clone(), targets.clone());
        blocking(move || {
            let c: BaseConsumer<KafkaContext> = kafka::create(&cfg, "metadata")?;
            kafka::named_topics(&c, &names, timeout)
        })
        .await?
    };
    let mut to_create = Vec::new();
    for t in &selected {
        let target = target_of(&t.name);
        match existing.iter().find(|e| e.name == target) {
            Some(e) if (e.partitions.len() as i32) < t.partition_count => {
                return Err(invalid(
                    "spec.targetCluster",
                    format!(
                        "target topic {target} has {} partitions but the backup of {} has {}; add partitions or restore into a new topic",
                        e.partitions.len(),
                        t.name,
                        t.partition_count
                    ),
                ));
            }
            Some(_) => {}
            None if s.create_topics => to_create.push((target, *t)),
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

    // Records within the bound, per partition. A dry run counts exactly, reading the indexes and
    // the blocks that straddle the bound (partitions concurrently); a restore reads those once,
    // to restore them, so it plans with the manifest's upper bound and reports the exact counts
    // it wrote.
    let plan: Vec<(String, String, PartitionEntry, u64)> = {
        use futures::{StreamExt, TryStreamExt};
        let (repo, key, window) = (&s.repo, s.key.as_ref(), s.window);
        futures::stream::iter(
            selected
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (*t, p))),
        )
        .map(|(t, p)| async move {
            let n = count_records(repo, key, p, window, options.dry_run).await?;
            Ok::<_, Error>((t.name.clone(), target_of(&t.name), p.clone(), n))
        })
        .buffered(16)
        .try_collect()
        .await?
    };
    let summarize = |written: &BTreeMap<(String, i32), (i64, i64)>| -> Vec<RestoredTopicSummary> {
        selected
            .iter()
            .map(|t| {
                let target = target_of(&t.name);
                let partitions: Vec<RestoredPartitionSummary> = plan
                    .iter()
                    .filter(|(src, _, _, _)| *src == t.name)
                    .map(|(_, tgt, p, n)| {
                        let (a, b, records) = match written.get(&(tgt.clone(), p.partition)) {
                            Some(&(a, b)) => (a, b, (b - a) as u64),
                            None => (0, *n as i64, *n),
                        };
                        RestoredPartitionSummary {
                            partition: p.partition,
                            records,
                            target_start_offset: a,
                            target_end_offset: b,
                        }
                    })
                    .collect();
                RestoredTopicSummary {
                    source: t.name.clone(),
                    records: partitions.iter().map(|p| p.records).sum(),
                    name: target,
                    partitions,
                }
            })
            .collect()
    };

    if options.dry_run {
        let topics = summarize(&BTreeMap::new());
        let mut planned = Vec::new();
        if let Some(o) = reset {
            for g in &groups {
                let mut offsets = Vec::new();
                for (src, target, p, n) in &plan {
                    let exists = existing.iter().find(|e| &e.name == target);
                    let (low, high) = if exists.is_some() {
                        kafka::watermarks_of(&s.kafka, vec![(target.clone(), p.partition)], timeout)
                            .await?
                            .into_values()
                            .next()
                            .unwrap_or((0, 0))
                    } else {
                        (0, 0)
                    };
                    let committed = manifest
                        .consumer_groups
                        .iter()
                        .find(|cg| &cg.group_id == g)
                        .and_then(|cg| {
                            cg.offsets
                                .iter()
                                .find(|off| &off.topic == src && off.partition == p.partition)
                        })
                        .map(|off| off.offset);
                    let target_offset = match o.strategy {
                        OffsetResetStrategy::Earliest => Some(low),
                        OffsetResetStrategy::Latest => Some(high + *n as i64),
                        OffsetResetStrategy::Timestamp => None,
                        OffsetResetStrategy::Offset => committed,
                        OffsetResetStrategy::HeaderBased => match committed {
                            Some(c) => Some(
                                high + count_before(&s.repo, s.key.as_ref(), p, s.window, c).await?
                                    as i64,
                            ),
                            None => None,
                        },
                    };
                    if let Some(offset) = target_offset {
                        offsets.push(GroupTargetOffset {
                            topic: target.clone(),
                            partition: p.partition,
                            offset,
                        });
                    }
                }
                planned.push(GroupReset {
                    group_id: g.clone(),
                    offsets,
                });
            }
        }
        return Ok(RestoreSummary {
            restore_name: name,
            backup_id: manifest.backup_id.clone(),
            storage: s.repo.description().to_string(),
            dry_run: true,
            resumed,
            pitr_timestamp_millis: s.window.to,
            pitr_from_timestamp_millis: s.window.from,
            restored_records: topics.iter().map(|t| t.records).sum(),
            restored_topics: topics,
            topics_created: to_create.iter().map(|(t, _)| t.clone()).collect(),
            stored_bytes_read: s.repo.bytes_read(),
            offset_map: None,
            offset_reset: reset.map(|o| OffsetResetSummary {
                strategy: o.strategy,
                phase: "Planned".into(),
                groups: planned,
            }),
            rollback_snapshot_id: rollback_id,
            duration_secs: started.elapsed().as_secs_f64(),
            warnings,
        });
    }

    // Create missing topics with the backup's partition count and configs.
    let mut created = std::collections::BTreeSet::new();
    if !to_create.is_empty() {
        let admin: AdminClient<KafkaContext> = kafka::create(&s.kafka, "admin")?;
        let news: Vec<NewTopic<'_>> = to_create
            .iter()
            .map(|(target, t)| {
                let mut n = NewTopic::new(
                    target,
                    t.partition_count,
                    TopicReplication::Fixed(s.replication.unwrap_or(-1)),
                );
                for (k, v) in &t.configs {
                    n = n.set(k, v);
                }
                n
            })
            .collect();
        let results = admin
            .create_topics(
                news.iter(),
                &AdminOptions::new().operation_timeout(Some(timeout)),
            )
            .await
            .map_err(|source| Error::Kafka {
                operation: "creating topics".into(),
                source,
            })?;
        for r in results {
            match r {
                Ok(topic) => {
                    created.insert(topic);
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(Error::Kafka {
                        operation: format!("creating topic {topic}"),
                        source: rdkafka::error::KafkaError::AdminOp(code),
                    });
                }
            }
        }
        wait_for_topics(
            &s.kafka,
            &to_create
                .iter()
                .map(|(t, e)| (t.clone(), e.partition_count))
                .collect::<Vec<_>>(),
            timeout,
        )
        .await?;
        tracing::info!(topics = ?to_create.iter().map(|(t, _)| t).collect::<Vec<_>>(), "created target topics");
    }

    // Where each target partition starts, and what is already there.
    // Topics this run created are empty: asking for their offsets would only wait out the
    // moments before their partitions' leaders start answering (about a second), which the
    // producer rides out by itself. A record written there meanwhile by someone else is caught
    // by the end-offset check after the restore.
    let mut marks = kafka::watermarks_of(
        &s.kafka,
        plan.iter()
            .filter(|(_, t, _, _)| !created.contains(t))
            .map(|(_, t, p, _)| (t.clone(), p.partition))
            .collect(),
        timeout,
    )
    .await?;
    for (_, t, p, _) in plan.iter().filter(|(_, t, _, _)| created.contains(t)) {
        marks.insert((t.clone(), p.partition), (0, 0));
    }
    let mut state = match previous_state {
        Some(st) => st,
        None => {
            let mut starts = BTreeMap::new();
            let mut to_purge = Vec::new();
            for (_, target, p, _) in &plan {
                let (low, high) = marks[&(target.clone(), p.partition)];
                if high > low {
                    match s.existing {
                        ExistingData::Refuse => {
                            return Err(invalid(
                                "spec.existingData",
                                format!(
                                    "target topic {target} partition {} already holds records (offsets {low}..{high}); set existingData: append to write after them or purge to delete them first",
                                    p.partition
                                ),
                            ));
                        }
                        ExistingData::Append => {}
                        ExistingData::Purge => to_purge.push((target.clone(), p.partition, high)),
                    }
                }
                starts.insert(partition_key(target, p.partition), high);
            }
            if !to_purge.is_empty() {
                purge(&s.kafka, &to_purge, timeout).await?;
                warnings.push(format!(
                    "purged existing records from {} partitions",
                    to_purge.len()
                ));
            }
            let st = RestoreState {
                restore_name: name.clone(),
                backup_id: manifest.backup_id.clone(),
                state: "running".into(),
                start_time: rfc3339(now_secs()),
                completion_time: None,
                target_start_offsets: starts,
                window: Some(s.window),
                include_original_offset_header: Some(include_headers),
            };
            s.repo
                .put(
                    &state_path,
                    Bytes::from(serde_json::to_vec_pretty(&st).unwrap_or_default()),
                    false,
                )
                .await?;
            st
        }
    };

    let mut tasks = Vec::new();
    for (src, target, p, n) in &plan {
        let key = partition_key(target, p.partition);
        let Some(&start) = state.target_start_offsets.get(&key) else {
            return Err(Error::Internal(format!(
                "restore state has no start offset for {key}"
            )));
        };
        let (_, high) = marks[&(target.clone(), p.partition)];
        let written = high - start;
        if written < 0 || written as u64 > *n {
            return Err(invalid(
                "spec.targetCluster",
                format!(
                    "target {key} ends at offset {high}, but this restore started it at {start} and has {n} records to write: the target was changed by someone else; restore under a new name into a fresh topic"
                ),
            ));
        }
        tasks.push(Task {
            source_topic: src.clone(),
            target_topic: target.clone(),
            source: p.clone(),
            target_start: start,
            already_written: written,
            planned: *n,
        });
    }
    progress
        .target_records
        .store(plan.iter().map(|(_, _, _, n)| *n).sum(), Ordering::Relaxed);

    let cluster_label = manifest
        .source_cluster_id
        .clone()
        .or_else(|| manifest.kafka_cluster_id.clone())
        .unwrap_or_default();

    // One idempotent producer per worker; a partition is restored by one worker, so its records
    // go through one producer, in order. librdkafka sends one partition per produce request and
    // at most five requests in flight per connection, so with many partitions a single producer
    // leaves the broker idle between round trips; a producer per worker multiplies that window.
    let workers = options.workers.max(1);
    let mut pcfg = s.kafka.clone();
    pcfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.size", (1 << 20).to_string())
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "300000")
        .set(
            "queue.buffering.max.messages",
            (PRODUCER_BUFFER_RECORDS / workers).max(1000).to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            (PRODUCER_BUFFER_KIB / workers).max(1 << 10).to_string(),
        );
    let mut producers: Vec<Arc<ThreadedProducer<DeliveryContext>>> = Vec::with_capacity(workers);
    for _ in 0..workers {
        producers.push(Arc::new(
            pcfg.create_with_context(DeliveryContext::default())
                .map_err(|source| Error::Kafka {
                    operation: "creating the producer".into(),
                    source,
                })?,
        ));
    }
    let queue = Arc::new(Mutex::new(tasks));
    let maps: Arc<Mutex<PartitionMaps>> = Arc::default();
    let mut set = tokio::task::JoinSet::new();
    for producer in &producers {
        let queue = queue.clone();
        let repo = s.repo.clone();
        let key = s.key.clone();
        let producer = producer.clone();
        let progress = progress.clone();
        let maps = maps.clone();
        let window = s.window;
        let cluster_label = cluster_label.clone();
        let stop = options.stop.clone();
        set.spawn(async move {
            loop {
                let task = queue.lock().ok().and_then(|mut q| q.pop());
                let Some(task) = task else { return Ok(()) };
                let map = restore_partition(
                    &repo,
                    key.as_ref(),
                    &producer,
                    &task,
                    window,
                    include_headers,
                    &cluster_label,
                    &progress,
                    stop.clone(),
                )
                .await?;
                // The plan counted segments straddling a point in time whole.
                let written = (map.target_end_offset - task.target_start) as u64;
                progress
                    .target_records
                    .fetch_sub(task.planned.saturating_sub(written), Ordering::Relaxed);
                if let Ok(mut m) = maps.lock() {
                    m.insert(
                        (
                            task.source_topic.clone(),
                            task.target_topic.clone(),
                            task.source.partition,
                        ),
                        map,
                    );
                }
            }
        });
    }
    let mut failure = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.unwrap_or_else(|e| Err(Error::Internal(e.to_string()))) {
            failure.get_or_insert(e);
        }
    }
    let flushed = {
        let ps = producers.clone();
        blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(300);
            Ok(ps
                .iter()
                .try_for_each(|p| p.flush(deadline.saturating_duration_since(Instant::now()))))
        })
        .await?
    };
    if let Some(e) = failure {
        return Err(e);
    }
    flushed.map_err(|source| Error::Kafka {
        operation: "flushing restored records".into(),
        source,
    })?;
    if let Some(e) = producers.iter().find_map(|p| p.context().first_failure()) {
        return Err(Error::Kafka {
            operation: "producing restored records".into(),
            source: e,
        });
    }

    // Every partition must now end exactly where the records say.
    let maps = std::mem::take(
        &mut *maps
            .lock()
            .map_err(|_| Error::Internal("offset maps poisoned".into()))?,
    );
    let ends = kafka::watermarks_of(
        &s.kafka,
        maps.keys().map(|(_, t, p)| (t.clone(), *p)).collect(),
        timeout,
    )
    .await?;
    let mut written = BTreeMap::new();
    for ((_, target, p), m) in &maps {
        let end = ends[&(target.clone(), *p)].1;
        if end != m.target_end_offset {
            return Err(Error::Internal(format!(
                "target {target}/{p} ends at {end} but the restore wrote up to {}: the topic was written to during the restore",
                m.target_end_offset
            )));
        }
        let start = state.target_start_offsets[&format!("{target}/{p}")];
        written.insert((target.clone(), *p), (start, end));
    }

    // The offset map, next to the backup, then the state marked complete.
    let mut by_topic: BTreeMap<(String, String), Vec<OffsetMapPartition>> = BTreeMap::new();
    for ((src, target, _), m) in maps {
        by_topic.entry((src, target)).or_default().push(m);
    }
    let offset_map = OffsetMap {
        backup_id: manifest.backup_id.clone(),
        restore_name: name.clone(),
        source_cluster_id: manifest.source_cluster_id.clone(),
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
    let map_path = format!(
        "{}/offset-maps/{}/{name}.json",
        manifest.backup_name, manifest.backup_id
    );
    s.repo
        .put(
            &map_path,
            Bytes::from(serde_json::to_vec_pretty(&offset_map).unwrap_or_default()),
            false,
        )
        .await?;
    let mut offset_reset = None;
    if let Some(o) = reset {
        {
            let (cfg, g) = (s.kafka.clone(), groups.clone());
            blocking(move || {
                crate::offsets::refuse_active(&cfg, &g, "spec.offsetReset.consumerGroups", timeout)
            })
            .await?;
        }
        let restored: Vec<(String, i32)> = written.keys().cloned().collect();
        if let Some(id) = &rollback_id {
            crate::offsets::take_snapshot(&s.repo, &s.kafka, id, &groups, &restored, timeout)
                .await?;
            tracing::info!(snapshot_id = %id, groups = groups.len(), "snapshot of group offsets taken before the reset");
        }
        let by_time = match reset_time {
            Some(ts) => {
                let cfg = s.kafka.clone();
                let parts = restored.clone();
                tokio::task::spawn_blocking(move || {
                    crate::offsets::offsets_for_time(&cfg, &parts, ts, timeout)
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))??
            }
            None => BTreeMap::new(),
        };
        // Log start offsets now (a purge moved them), for `earliest` and clamping.
        let lows = kafka::watermarks_of(&s.kafka, restored.clone(), timeout).await?;
        let mut results = Vec::new();
        for g in &groups {
            let mut offsets = BTreeMap::new();
            for (src_topic, target_topic, m) in offset_map.topics.iter().flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (&t.source_topic, &t.target_topic, p))
            }) {
                let key = (target_topic.clone(), m.partition);
                let (_, end) = written[&key];
                let low = lows.get(&key).map(|(l, _)| *l).unwrap_or(0);
                let committed = manifest
                    .consumer_groups
                    .iter()
                    .find(|cg| &cg.group_id == g)
                    .and_then(|cg| {
                        cg.offsets
                            .iter()
                            .find(|off| &off.topic == src_topic && off.partition == m.partition)
                    })
                    .map(|off| off.offset);
                let target = match o.strategy {
                    OffsetResetStrategy::Earliest => Some(low),
                    OffsetResetStrategy::Latest => Some(end),
                    OffsetResetStrategy::Timestamp => by_time.get(&key).copied(),
                    OffsetResetStrategy::Offset => committed.map(|c| c.clamp(low, end)),
                    OffsetResetStrategy::HeaderBased => committed.map(|c| m.translate(c)),
                };
                if let Some(t) = target {
                    offsets.insert(key, t);
                }
            }
            if offsets.is_empty() {
                warnings.push(format!(
                    "group {g} had no committed offset on the restored topics; left unchanged"
                ));
                continue;
            }
            let cfg = s.kafka.clone();
            let group = g.clone();
            let to_commit = offsets.clone();
            tokio::task::spawn_blocking(move || {
                crate::offsets::commit_offsets(&cfg, &group, &to_commit)
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
            tracing::info!(group = %g, partitions = offsets.len(), "group offsets reset");
            results.push(GroupReset {
                group_id: g.clone(),
                offsets: offsets
                    .into_iter()
                    .map(|((topic, partition), offset)| GroupTargetOffset {
                        topic,
                        partition,
                        offset,
                    })
                    .collect(),
            });
        }
        offset_reset = Some(OffsetResetSummary {
            strategy: o.strategy,
            phase: "Completed".into(),
            groups: results,
        });
    }

    state.state = "completed".into();
    state.completion_time = Some(rfc3339(now_secs()));
    s.repo
        .put(
            &state_path,
            Bytes::from(serde_json::to_vec_pretty(&state).unwrap_or_default()),
            false,
        )
        .await?;

    let topics = summarize(&written);
    Ok(RestoreSummary {
        restore_name: name,
        backup_id: manifest.backup_id.clone(),
        storage: s.repo.description().to_string(),
        dry_run: false,
        resumed,
        pitr_timestamp_millis: s.window.to,
        pitr_from_timestamp_millis: s.window.from,
        restored_records: topics.iter().map(|t| t.records).sum(),
        restored_topics: topics,
        topics_created: to_create.iter().map(|(t, _)| t.clone()).collect(),
        stored_bytes_read: s.repo.bytes_read(),
        offset_map: Some(map_path),
        offset_reset,
        rollback_snapshot_id: rollback_id,
        duration_secs: started.elapsed().as_secs_f64(),
        warnings,
    })
}

/// Records of `p` within the bound whose source offset is below `before`: how many restored
/// records precede a consumer that committed `before`.
async fn count_before(
    repo: &Repository,
    key: Option<&EncryptionKey>,
    p: &PartitionEntry,
    window: TimeWindow,
    before: i64,
) -> Result<u64> {
    let mut n = 0u64;
    for seg in &p.segments {
        if seg.first_offset >= before {
            break;
        }
        if seg.last_offset < before && window.covers(seg.min_timestamp, seg.max_timestamp) {
            n += seg.records;
            continue;
        }
        for_each_block(repo, key, seg, window, |records| {
            n += records.iter().filter(|r| r.offset < before).count() as u64;
            Ok(())
        })
        .await?;
    }
    Ok(n)
}

async fn wait_for_topics(
    cfg: &ClientConfig,
    topics: &[(String, i32)],
    timeout: Duration,
) -> Result<()> {
    let cfg = cfg.clone();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let c: BaseConsumer<KafkaContext> = kafka::create(&cfg, "metadata")?;
        let deadline = Instant::now() + timeout;
        loop {
            let ready = topics.iter().all(|(t, n)| {
                c.fetch_metadata(Some(t), Duration::from_secs(5))
                    .ok()
                    .and_then(|md| {
                        md.topics().first().map(|mt| {
                            mt.error().is_none()
                                && mt.partitions().len() == *n as usize
                                && mt.partitions().iter().all(|p| p.leader() >= 0)
                        })
                    })
                    .unwrap_or(false)
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Internal(format!(
                    "created topics not ready within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

async fn purge(cfg: &ClientConfig, parts: &[(String, i32, i64)], timeout: Duration) -> Result<()> {
    let admin: AdminClient<KafkaContext> = kafka::create(cfg, "admin")?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (t, p, end) in parts {
        tpl.add_partition_offset(t, *p, rdkafka::Offset::Offset(*end))
            .map_err(|source| Error::Kafka {
                operation: "planning the purge".into(),
                source,
            })?;
    }
    admin
        .delete_records(&tpl, &AdminOptions::new().operation_timeout(Some(timeout)))
        .await
        .map_err(|source| Error::Kafka {
            operation: "purging existing records".into(),
            source,
        })?;
    Ok(())
}

/// Records of `p` within the bound. Exact (`exact`): whole segments from the manifest, whole
/// blocks from the index, and blocks that straddle the bound read and counted. Otherwise an upper
/// bound from the manifest alone: segments that straddle the bound count whole.
async fn count_records(
    repo: &Repository,
    key: Option<&EncryptionKey>,
    p: &PartitionEntry,
    window: TimeWindow,
    exact: bool,
) -> Result<u64> {
    let mut n = 0u64;
    for seg in &p.segments {
        if window.misses(seg.min_timestamp, seg.max_timestamp) {
            continue;
        }
        if !exact || window.covers(seg.min_timestamp, seg.max_timestamp) {
            n += seg.records;
            continue;
        }
        // Blocks wholly within the window count from the index; only blocks that straddle one
        // of its ends are read.
        let index = segment_index(repo, seg).await?;
        n += index
            .iter()
            .filter(|e| window.covers(e.min_timestamp, e.max_timestamp))
            .map(|e| u64::from(e.record_count))
            .sum::<u64>();
        let straddling: Vec<&IndexEntry> = index
            .iter()
            .filter(|e| {
                !window.covers(e.min_timestamp, e.max_timestamp)
                    && !window.misses(e.min_timestamp, e.max_timestamp)
            })
            .collect();
        read_blocks(repo, key, seg, &index, &straddling, window, |records| {
            n += records.len() as u64;
            Ok(())
        })
        .await?;
    }
    Ok(n)
}

/// The block index of `seg`: its trailer, then the index the trailer points to.
async fn segment_index(repo: &Repository, seg: &SegmentEntry) -> Result<Vec<IndexEntry>> {
    let corrupt = |source| Error::Format {
        object: format!("{}/{}", repo.description(), seg.path),
        source,
    };
    let tail = repo
        .get_range(
            &seg.path,
            seg.size.saturating_sub(TRAILER_LEN as u64)..seg.size,
        )
        .await?;
    let trailer = decode_trailer(&tail).map_err(corrupt)?;
    let index_range = trailer.index_range(seg.size).map_err(corrupt)?;
    let index_bytes = repo.get_range(&seg.path, index_range).await?;
    decode_index(&index_bytes, &trailer).map_err(corrupt)
}

/// Calls `f` with the records of each block of `seg` that may hold records in `window` (every
/// block when it is open), filtered to the window, in order. Reads only those blocks' byte
/// ranges, at most [`READ_CHUNK`] at a time. Blocks of an encrypted backup are decrypted with
/// `key`.
async fn for_each_block<F>(
    repo: &Repository,
    key: Option<&EncryptionKey>,
    seg: &SegmentEntry,
    window: TimeWindow,
    f: F,
) -> Result<()>
where
    F: FnMut(Vec<Record>) -> Result<()>,
{
    if window.misses(seg.min_timestamp, seg.max_timestamp) {
        return Ok(());
    }
    let index = segment_index(repo, seg).await?;
    let selected: Vec<&IndexEntry> = blocks_for(&index, i64::MIN, window);
    read_blocks(repo, key, seg, &index, &selected, window, f).await
}

/// Calls `f` with the records of each of the `selected` blocks of `seg` (in index order),
/// filtered to `window`, reading consecutive blocks together, at most [`READ_CHUNK`] at a time.
async fn read_blocks<F>(
    repo: &Repository,
    key: Option<&EncryptionKey>,
    seg: &SegmentEntry,
    index: &[IndexEntry],
    selected: &[&IndexEntry],
    window: TimeWindow,
    mut f: F,
) -> Result<()>
where
    F: FnMut(Vec<Record>) -> Result<()>,
{
    let corrupt = |source| Error::Format {
        object: format!("{}/{}", repo.description(), seg.path),
        source,
    };
    // Group consecutive blocks into reads of at most READ_CHUNK bytes.
    let mut i = 0;
    while i < selected.len() {
        let start = selected[i].position;
        let mut end = selected[i].position + selected[i].length as u64;
        let mut j = i + 1;
        while j < selected.len()
            && selected[j].position == end
            && end + selected[j].length as u64 - start <= READ_CHUNK
        {
            end += selected[j].length as u64;
            j += 1;
        }
        let bytes = repo.get_range(&seg.path, start..end).await?;
        for e in &selected[i..j] {
            let from = (e.position - start) as usize;
            let to = from + e.length as usize;
            // Errors name the block: its number in the segment and where it starts.
            let in_block = |error| kafka_backup_format::FormatError::Block {
                index: index.partition_point(|x| x.position < e.position) as u64,
                position: e.position,
                error: Box::new(error),
            };
            let block = decode_block_with(&bytes[from..to], key)
                .and_then(|b| b.check_against(e).map(|()| b))
                .map_err(|error| corrupt(in_block(error)))?;
            let records: Vec<Record> = if window.is_all() {
                block.records
            } else {
                block
                    .records
                    .into_iter()
                    .filter(|r| window.contains(r.timestamp))
                    .collect()
            };
            if !records.is_empty() {
                f(records)?;
            }
        }
        i = j;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn restore_partition(
    repo: &Repository,
    key: Option<&EncryptionKey>,
    producer: &ThreadedProducer<DeliveryContext>,
    task: &Task,
    window: TimeWindow,
    include_headers: bool,
    cluster_label: &str,
    progress: &Progress,
    stop: Option<watch::Receiver<bool>>,
) -> Result<OffsetMapPartition> {
    let mut idx: i64 = 0;
    let mut runs = Vec::new();
    let partition = task.source.partition;
    for seg in &task.source.segments {
        if stop.as_ref().is_some_and(|s| *s.borrow()) {
            return Err(Error::Interrupted);
        }
        for_each_block(repo, key, seg, window, |records| {
            for r in records {
                extend_runs(&mut runs, r.offset, task.target_start + idx);
                if idx >= task.already_written {
                    send(
                        producer,
                        &task.target_topic,
                        partition,
                        &r,
                        include_headers,
                        cluster_label,
                    )?;
                    progress.records.fetch_add(1, Ordering::Relaxed);
                    progress.bytes.fetch_add(
                        (r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len))
                            as u64,
                        Ordering::Relaxed,
                    );
                }
                idx += 1;
            }
            match producer.context().first_failure() {
                Some(e) => Err(Error::Kafka {
                    operation: format!("producing to {}/{partition}", task.target_topic),
                    source: e,
                }),
                None => Ok(()),
            }
        })
        .await?;
    }
    Ok(OffsetMapPartition {
        partition,
        runs,
        target_end_offset: task.target_start + idx,
    })
}

fn send(
    producer: &ThreadedProducer<DeliveryContext>,
    topic: &str,
    partition: i32,
    r: &Record,
    include_headers: bool,
    cluster: &str,
) -> Result<()> {
    let extra = if include_headers { 4 } else { 0 };
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + extra);
    for h in &r.headers {
        headers = headers.insert(Header {
            key: &h.key,
            value: h.value.as_ref(),
        });
    }
    if include_headers {
        for (k, v) in [
            (HEADER_SOURCE_OFFSET, r.offset.to_string()),
            (HEADER_SOURCE_PARTITION, partition.to_string()),
            (HEADER_SOURCE_TIMESTAMP, r.timestamp.to_string()),
            (HEADER_SOURCE_CLUSTER, cluster.to_string()),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
    }
    let mut rec: BaseRecord<'_, Vec<u8>, Vec<u8>> =
        BaseRecord::to(topic).partition(partition).headers(headers);
    if let Some(k) = &r.key {
        rec = rec.key(k);
    }
    if let Some(v) = &r.value {
        rec = rec.payload(v);
    }
    if r.timestamp_type != TimestampType::NotAvailable && r.timestamp >= 0 {
        rec = rec.timestamp(r.timestamp);
    }
    loop {
        match producer.send(rec) {
            Ok(()) => return Ok(()),
            Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                rec = back;
                // The producer's buffer is full: wait for deliveries to make room.
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => {
                return Err(Error::Kafka {
                    operation: format!("producing to {topic}/{partition}"),
                    source: e,
                });
            }
        }
    }
}

/// Producer context remembering the first delivery failure.
#[derive(Default)]
struct DeliveryContext {
    inner: KafkaContext,
    failure: Mutex<Option<rdkafka::error::KafkaError>>,
}

impl DeliveryContext {
    fn first_failure(&self) -> Option<rdkafka::error::KafkaError> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.inner.log(level, fac, message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.inner.error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && let Ok(mut f) = self.failure.lock()
            && f.is_none()
        {
            *f = Some(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_compact_and_translate_committed_offsets() {
        let mut runs = Vec::new();
        // Source offsets 0..5 and 8..10 (a compaction gap) land at 100..107.
        for (i, s) in [0, 1, 2, 3, 4, 8, 9].iter().enumerate() {
            extend_runs(&mut runs, *s, 100 + i as i64);
        }
        assert_eq!(runs, vec![[0, 100, 5], [8, 105, 2]]);
        let m = OffsetMapPartition {
            partition: 0,
            runs,
            target_end_offset: 107,
        };
        assert_eq!(m.translate(0), 100);
        assert_eq!(m.translate(3), 103);
        // Committed 5 ("next to read"): the first restored record at or after it is source 8.
        assert_eq!(m.translate(5), 105);
        assert_eq!(m.translate(9), 106);
        assert_eq!(m.translate(10), 107);
        assert_eq!(m.translate(1000), 107);
    }

    #[test]
    fn pitr_names_a_window_with_one_time_per_end() {
        use kafka_backup_api::restore::Pitr;
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
}
