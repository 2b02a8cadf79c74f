//! Restoring a backup into a Kafka cluster: same partition, same order, same key, value, headers
//! and timestamp for every record; optionally only those at or before a point in time.
//!
//! Exactness: records go through an idempotent producer, one partition in order. A restore records
//! where each target partition ended before it wrote anything; when it runs again after a crash it
//! reads the target's actual end offsets, so it knows exactly how many records already landed and
//! continues after them. Nothing is duplicated and nothing skipped.
//!
//! A restore runs in stages, one module each: [`plan`] (pure: what to read, where to write, which
//! offsets to commit), `read` (records from storage), `produce` (records to Kafka) and `finish`
//! (end-offset checks, offset map, group reset); `target` is the target cluster as they see it.
//! A dry run stops after the plan and prints the offset table the run would commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_backup_api::restore::{KafkaRestore, OffsetResetStrategy};
use kafka_backup_format::{
    EncryptionKey, Manifest, RestoreProgress, RestoreState, restore_state_path, rfc3339,
};
use serde::Serialize;
use tokio::sync::watch;

use crate::encryption::{self, KeyOverride, Purpose};
use crate::error::{Error, Result};
use crate::kafka;
use crate::limits::Backoff;
use crate::repo::Repository;
use crate::secrets::SecretStore;
use crate::storage::StorageOptions;
use crate::util::now_secs;

mod finish;
pub mod plan;
mod produce;
mod read;
mod target;

pub use kafka_backup_format::{OffsetMap, OffsetMapPartition, OffsetMapTopic};
pub use plan::{Plan, Request, TargetRange, offset_table, pitr_window};

use plan::PlannedPartition;
use target::{Marks, Target};

/// Header names added by `includeOriginalOffsetHeader`; values are decimal ASCII (the cluster id
/// is the backup's `sourceClusterId`, else the Kafka cluster id it recorded).
pub const HEADER_SOURCE_OFFSET: &str = "kafka-backup.source.offset";
/// See [`HEADER_SOURCE_OFFSET`].
pub const HEADER_SOURCE_PARTITION: &str = "kafka-backup.source.partition";
/// See [`HEADER_SOURCE_OFFSET`].
pub const HEADER_SOURCE_TIMESTAMP: &str = "kafka-backup.source.timestamp";
/// See [`HEADER_SOURCE_OFFSET`].
pub const HEADER_SOURCE_CLUSTER: &str = "kafka-backup.source.cluster";

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

/// What a restore works with once its plan is made.
struct Run<'a> {
    plan: Plan,
    repo: Repository,
    key: Option<EncryptionKey>,
    target: Target,
    options: &'a RestoreOptions,
    warnings: Vec<String>,
}

/// Restores the backup `kr` names: plan, then (unless a dry run) create the target topics,
/// place and write the records, and finish.
pub async fn run(
    kr: &KafkaRestore,
    secrets: &SecretStore,
    options: &RestoreOptions,
    progress: Arc<Progress>,
) -> Result<RestoreSummary> {
    let started = Instant::now();
    let (run, manifest) = prepare(kr, secrets, options).await?;
    run.target.check(&run.plan.groups).await?;
    let existing = run
        .target
        .existing_topics(run.plan.topics.iter().map(|(t, _)| t.clone()).collect())
        .await?;
    let to_create = run.plan.topics_to_create(&existing)?;
    let created_names: Vec<String> = to_create.iter().map(|(t, _)| t.clone()).collect();
    if options.dry_run {
        return dry_run(run, created_names, started).await;
    }
    let created = run
        .target
        .create_topics(&to_create, run.plan.replication)
        .await?;
    let mut run = run;
    let marks = run.target.offsets(&run.plan.targets(), &created).await?;
    let mut state = place(&mut run, &marks).await?;
    let tasks = plan::tasks(&run.plan, &state.target_start_offsets, &marks)?;
    progress
        .target_records
        .store(run.plan.records(), Ordering::Relaxed);
    let source = produce::Source {
        repo: run.repo.clone(),
        key: run.key.clone(),
        window: run.plan.window(),
        include_headers: run.plan.include_headers,
        cluster_label: run.plan.cluster_label.clone(),
        stop: options.stop.clone(),
    };
    let maps =
        produce::produce(&run.target.kafka, source, tasks, options.workers, progress).await?;
    let ranges = finish::check_ends(&run.target, &state, &maps).await?;
    let map_path = finish::store_offset_map(
        &run.repo,
        &run.plan,
        manifest.source_cluster_id.clone(),
        &maps,
    )
    .await?;
    let offset_reset = match run.plan.request.reset.as_ref().map(|r| r.strategy) {
        Some(strategy) => Some(
            finish::reset_groups(
                &run.repo,
                &run.target,
                &run.plan,
                strategy,
                &ranges,
                &maps,
                &mut run.warnings,
            )
            .await?,
        ),
        None => None,
    };
    finish::store_state(&run.repo, &run.plan, &mut state, RestoreProgress::Completed).await?;
    let written = ranges
        .iter()
        .map(|(k, r)| (k.clone(), (r.start, r.end)))
        .collect();
    Ok(summary(
        run,
        &written,
        created_names,
        Some(map_path),
        offset_reset,
        started,
    ))
}

/// Checks the spec, opens the repository, reads the manifest and the restore's previous state,
/// and plans.
async fn prepare<'a>(
    kr: &KafkaRestore,
    secrets: &SecretStore,
    options: &'a RestoreOptions,
) -> Result<(Run<'a>, Manifest)> {
    let spec = &kr.spec;
    let request = Request::new(kr.metadata.name.as_deref(), spec)?;
    let kafka = kafka::client_config("spec.targetCluster", &spec.target_cluster, secrets)?;
    let repo = Repository::open(
        "spec.storage",
        &spec.storage,
        secrets,
        &options.storage,
        options.backoff.clone(),
    )?;
    let manifest = repo.find_manifest(&spec.backup_id).await?;
    let key = encryption::key_for_reading(
        &manifest,
        spec.encryption.as_ref(),
        secrets,
        options.encryption_key.as_ref(),
        Purpose::Restore,
    )?;
    let mut warnings = request.warnings.clone();
    if let (Some(o), None) = (&options.encryption_key, &manifest.encryption) {
        warnings.push(format!(
            "{} is set but backup {} is not encrypted; not used",
            o.source, manifest.backup_id
        ));
    }
    let previous = load_state(&repo, &manifest.backup_name, &request.name).await?;
    let plan = Plan::new(spec, request, &manifest, previous)?;
    let target = Target {
        kafka,
        timeout: options.kafka_timeout,
    };
    let run = Run {
        plan,
        repo,
        key,
        target,
        options,
        warnings,
    };
    Ok((run, manifest))
}

/// The restore's own record: present means this is a restart of the same restore.
async fn load_state(
    repo: &Repository,
    backup_name: &str,
    name: &str,
) -> Result<Option<RestoreState>> {
    let path = restore_state_path(backup_name, name);
    match repo.get(&path).await {
        Ok(b) => RestoreState::from_json(&b)
            .map(Some)
            .map_err(|source| Error::Format {
                object: format!("{}/{path}", repo.description()),
                source,
            }),
        Err(Error::Storage {
            source: object_store::Error::NotFound { .. },
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Where each target partition starts: kept from the previous run, or (first run) where it ends
/// now, after purging what `existingData: purge` removes; the state is stored before anything is
/// written.
async fn place(run: &mut Run<'_>, marks: &Marks) -> Result<RestoreState> {
    if let Some(st) = &run.plan.previous {
        return Ok(st.clone());
    }
    let (starts, to_purge) = plan::starts(&run.plan, marks)?;
    if !to_purge.is_empty() {
        run.target.purge(&to_purge).await?;
        run.warnings.push(format!(
            "purged existing records from {} partitions",
            to_purge.len()
        ));
    }
    let mut state = RestoreState {
        restore_name: run.plan.name().to_string(),
        backup_id: run.plan.backup_id.clone(),
        state: RestoreProgress::Running,
        start_time: rfc3339(now_secs()),
        completion_time: None,
        target_start_offsets: starts,
        window: Some(run.plan.window()),
        include_original_offset_header: Some(run.plan.include_headers),
    };
    finish::store_state(&run.repo, &run.plan, &mut state, RestoreProgress::Running).await?;
    Ok(state)
}

/// The dry run: counts the records exactly (reading the indexes and the blocks that straddle
/// the window, partitions concurrently) and computes the offset table from where the target
/// partitions will be, without writing anything.
async fn dry_run(
    mut run: Run<'_>,
    created: Vec<String>,
    started: Instant,
) -> Result<RestoreSummary> {
    use futures::{StreamExt, TryStreamExt};
    let (repo, key, window) = (&run.repo, run.key.as_ref(), run.plan.window());
    let counts: Vec<u64> = futures::stream::iter(run.plan.partitions.iter())
        .map(|p| read::count_records(repo, key, &p.source, window))
        .buffered(16)
        .try_collect()
        .await?;
    for (p, n) in run.plan.partitions.iter_mut().zip(counts) {
        p.records = n;
    }
    let offset_reset = match run.plan.request.reset.as_ref().map(|r| r.strategy) {
        Some(strategy) => Some(planned_reset(&run, &created, strategy).await?),
        None => None,
    };
    Ok(summary(
        run,
        &BTreeMap::new(),
        created,
        None,
        offset_reset,
        started,
    ))
}

/// The offset table a dry run shows: the same table the run commits, from where the target
/// partitions will be; strategy headerBased counts the restored records before each committed
/// offset, where the run reads it from its offset map.
async fn planned_reset(
    run: &Run<'_>,
    created: &[String],
    strategy: OffsetResetStrategy,
) -> Result<OffsetResetSummary> {
    let empty = created.iter().cloned().collect();
    let marks = run.target.offsets(&run.plan.targets(), &empty).await?;
    let ranges = plan::projected_ranges(&run.plan, &marks);
    let mut before: BTreeMap<(String, i32, i64), u64> = BTreeMap::new();
    if strategy == OffsetResetStrategy::HeaderBased {
        for ((_, src, partition), c) in &run.plan.committed {
            let Some(p) = run
                .plan
                .partitions
                .iter()
                .find(|p| &p.source_topic == src && p.source.partition == *partition)
            else {
                continue;
            };
            let n = read::count_before(
                &run.repo,
                run.key.as_ref(),
                &p.source,
                run.plan.window(),
                *c,
            )
            .await?;
            before.insert((src.clone(), *partition, *c), n);
        }
    }
    let position = |p: &PlannedPartition, r: &TargetRange, c: i64| {
        before
            .get(&(p.source_topic.clone(), p.source.partition, c))
            .map(|n| r.start + *n as i64)
    };
    let table = offset_table(&run.plan, strategy, &ranges, &BTreeMap::new(), &position);
    Ok(OffsetResetSummary {
        strategy,
        phase: "Planned".into(),
        groups: table
            .into_iter()
            .map(|(g, offsets)| finish::group_reset(g, offsets))
            .collect(),
    })
}

/// The summary of a restore; `written` holds each target partition's `[start, end)` (empty for
/// a dry run, which reports the planned counts).
fn summary(
    run: Run<'_>,
    written: &BTreeMap<(String, i32), (i64, i64)>,
    topics_created: Vec<String>,
    offset_map: Option<String>,
    offset_reset: Option<OffsetResetSummary>,
    started: Instant,
) -> RestoreSummary {
    let plan = &run.plan;
    let topics: Vec<RestoredTopicSummary> = plan
        .topics
        .iter()
        .map(|(target, t)| {
            let partitions: Vec<RestoredPartitionSummary> = plan
                .partitions
                .iter()
                .filter(|p| p.source_topic == t.name)
                .map(|p| {
                    let n = p.records;
                    let (a, b, records) = match written.get(&p.target()) {
                        Some(&(a, b)) => (a, b, (b - a) as u64),
                        None => (0, n as i64, n),
                    };
                    RestoredPartitionSummary {
                        partition: p.source.partition,
                        records,
                        target_start_offset: a,
                        target_end_offset: b,
                    }
                })
                .collect();
            RestoredTopicSummary {
                source: t.name.clone(),
                records: partitions.iter().map(|p| p.records).sum(),
                name: target.clone(),
                partitions,
            }
        })
        .collect();
    RestoreSummary {
        restore_name: plan.name().to_string(),
        backup_id: plan.backup_id.clone(),
        storage: run.repo.description().to_string(),
        dry_run: run.options.dry_run,
        resumed: plan.previous.is_some(),
        pitr_timestamp_millis: plan.window().to,
        pitr_from_timestamp_millis: plan.window().from,
        restored_records: topics.iter().map(|t| t.records).sum(),
        restored_topics: topics,
        topics_created,
        stored_bytes_read: run.repo.bytes_read(),
        offset_map,
        offset_reset,
        rollback_snapshot_id: plan.request.rollback_id.clone(),
        duration_secs: started.elapsed().as_secs_f64(),
        warnings: run.warnings,
    }
}
