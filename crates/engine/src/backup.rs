//! One backup run: capture each partition's high watermark, read committed records up to it, write
//! them as segments, checkpoint what is durably stored, and commit the manifest last.
//!
//! Durability: a segment is listed in a checkpoint only after its object is completely stored, and
//! the manifest (which alone makes a backup exist) is written after every segment. A run killed at
//! any moment resumes from its last checkpoint under the same backup id; segments written after that
//! checkpoint are never referenced and are collected later.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kafka_backup_api::backup::{Compression, KafkaBackup, KafkaBackupSpec};
use kafka_backup_api::encryption::Encryption;
use kafka_backup_format::{
    Checkpoint, CheckpointState, Codec, CompressionInfo, ConsumerGroupEntry, EncryptionInfo,
    EncryptionKey, Gap, GapReason, GroupOffset, Manifest, PartitionEntry, RecordHeaders, RecordRef,
    SegmentEntry, SegmentWriter, TimestampType, TopicEntry, Totals, backup_id, rfc3339,
    segment_path,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, MessageStream, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::encryption::{self, KeyOverride};
use crate::error::{Error, Result};
use crate::kafka::{self, Fetched, KafkaContext, MessageBatch};
use crate::limits::{Backoff, BreakerConfig, CircuitBreaker, RateLimiter};
use crate::patterns;
use crate::repo::Repository;
use crate::retention::{self, RetentionSummary};
use crate::secrets::SecretStore;
use crate::storage::{self, StorageOptions};
use crate::util::{blocking, now_secs};

/// Default seconds between checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL_SECS: u64 = 30;

/// Tuning of a run beyond the spec. The defaults bound memory to roughly
/// `workers * (2 * fetch_queue_kib * 1024 + 2 MiB of fetch + 3 * single_put_limit + 2 * block_bytes)`
/// (the queue, and the batch the reader took from it): about 110 MiB.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// After reaching the captured high watermarks, keep backing up: every checkpoint interval a
    /// new incremental backup is committed, until [`BackupOptions::stop`] says stop.
    pub continuous: bool,
    /// Partitions read at once (each with its own consumer).
    pub workers: usize,
    /// Raw bytes at which a block is closed.
    pub block_bytes: usize,
    /// Stored bytes at which a segment is closed (it also closes at each checkpoint interval).
    pub segment_bytes: u64,
    /// Objects up to this size are written with one request; larger ones stream as multipart
    /// uploads in parts of this size.
    pub single_put_limit: usize,
    /// Pre-fetched data the Kafka client may queue per worker, in KiB.
    pub fetch_queue_kib: usize,
    /// Time limit of each Kafka metadata or offset request, and to reach the cluster at all.
    pub kafka_timeout: Duration,
    /// How storage is reached.
    pub storage: StorageOptions,
    /// Retry policy of single storage calls and of segment uploads.
    pub backoff: Backoff,
    /// Consecutive Kafka errors (with the breaker's pauses between them) after which a run fails.
    pub max_kafka_errors: u32,
    /// Set to `true` to stop: the run checkpoints what it has stored and returns
    /// [`Error::Interrupted`]; a continuous run that is between backups returns normally.
    pub stop: Option<watch::Receiver<bool>>,
    /// The encryption key from outside the spec (the CLI's `KAFKA_BACKUP_ENCRYPTION_KEY`): used
    /// instead of the Secret `spec.encryption.keySecret` names. It does not turn encryption on.
    pub encryption_key: Option<KeyOverride>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            continuous: false,
            workers: 4,
            block_bytes: kafka_backup_format::DEFAULT_BLOCK_BYTES,
            segment_bytes: 256 << 20,
            // The smallest part S3 accepts.
            single_put_limit: 5 << 20,
            fetch_queue_kib: 4 << 10,
            kafka_timeout: Duration::from_secs(30),
            storage: StorageOptions::default(),
            backoff: Backoff::default(),
            max_kafka_errors: 30,
            stop: None,
            encryption_key: None,
        }
    }
}

/// Live counters of a run, for progress bars and log lines.
#[derive(Debug, Default)]
pub struct Progress {
    /// Offsets to read in all (sum over partitions of target minus start); an upper bound of the
    /// records, since offsets may have gaps.
    pub target_offsets: AtomicU64,
    /// Offsets passed so far.
    pub offsets_done: AtomicU64,
    /// Records read so far.
    pub records: AtomicU64,
    /// Record bytes (key + value + headers) read so far.
    pub bytes: AtomicU64,
    /// Bytes of segments stored so far.
    pub stored_bytes: AtomicU64,
}

/// What a run did, for the final summary (`--output json`) and the operator's status.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupSummary {
    pub backup_id: String,
    pub backup_name: String,
    pub storage: String,
    pub resumed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_backup_id: Option<String>,
    pub start_time: String,
    pub completion_time: String,
    pub duration_secs: f64,
    pub topics: Vec<TopicSummary>,
    pub records: u64,
    /// Records read by this run (the rest come from earlier backups).
    pub new_records: u64,
    pub raw_bytes: u64,
    /// Bytes of every segment the backup references.
    pub stored_bytes: u64,
    /// Bytes this run wrote.
    pub uploaded_bytes: u64,
    pub new_segments: u64,
    pub reused_segments: u64,
    pub consumer_groups: usize,
    pub gaps: Vec<GapSummary>,
    pub warnings: Vec<String>,
    pub circuit_breaker: BreakerSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSummary>,
}

/// Per-topic part of [`BackupSummary`].
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicSummary {
    pub name: String,
    pub partitions: usize,
    pub records: u64,
    pub new_records: u64,
    pub stored_bytes: u64,
}

/// A recorded gap, in the summary.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GapSummary {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    pub reason: String,
}

/// How the circuit breakers fared.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSummary {
    pub enabled: bool,
    pub kafka_failures: u64,
    pub kafka_opened: u64,
    pub storage_failures: u64,
    pub storage_opened: u64,
}

/// Runs the backup `kb` describes: one run, or with `options.continuous` one run after another.
/// Returns the summary of the last committed backup.
pub async fn run(
    kb: &KafkaBackup,
    secrets: &SecretStore,
    options: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    let plan = Settings::from_spec(kb, secrets, options)?;
    let mut last = run_once(&plan, options, progress.clone()).await?;
    if !options.continuous {
        return Ok(last);
    }
    let mut stop = options.stop.clone();
    loop {
        let wait = tokio::time::sleep(plan.checkpoint_interval);
        match stop.as_mut() {
            Some(stop) => tokio::select! {
                _ = wait => {}
                _ = cancelled(stop) => return Ok(last),
            },
            None => wait.await,
        }
        last = run_once(&plan, options, progress.clone()).await?;
    }
}

/// Resolves once the flag is `true` (never, if its sender is gone without setting it).
async fn cancelled(flag: &mut watch::Receiver<bool>) {
    loop {
        if *flag.borrow_and_update() {
            return;
        }
        if flag.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Everything derived from the spec, validated, before anything is contacted.
struct Settings {
    name: String,
    kafka: ClientConfig,
    repo: Repository,
    topics: Vec<String>,
    exclude: Vec<String>,
    codec: Codec,
    /// The key every block is encrypted with (`spec.encryption`).
    encryption: Option<EncryptionKey>,
    encryption_spec: Option<Encryption>,
    encryption_override: Option<KeyOverride>,
    include_offset_headers: bool,
    source_cluster_id: Option<String>,
    checkpoint_interval: Duration,
    limiter: Arc<RateLimiter>,
    kafka_breaker: Arc<CircuitBreaker>,
    breaker_enabled: bool,
    retention: Option<u32>,
    warnings: Vec<String>,
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        field: field.to_string(),
        message: message.into(),
    }
}

/// The codec `compression` and `compressionLevel` ask for, or an error naming the field, the value
/// and the accepted range.
pub fn codec_for(compression: Option<Compression>, level: Option<i32>) -> Result<Codec> {
    let codec = match (compression.unwrap_or_default(), level) {
        (Compression::None, None) => Codec::None,
        (Compression::None, Some(l)) => {
            return Err(invalid(
                "spec.compressionLevel",
                format!(
                    "{l} is set but compression is none; remove it or choose zstd (1-22) or lz4 (1-12)"
                ),
            ));
        }
        (Compression::Zstd, l) => {
            let l = l.unwrap_or(3);
            if !(1..=22).contains(&l) {
                return Err(invalid(
                    "spec.compressionLevel",
                    format!("{l} is out of range for zstd: use 1-22"),
                ));
            }
            Codec::Zstd { level: l }
        }
        (Compression::Lz4, l) => {
            let l = l.unwrap_or(1);
            if !(1..=12).contains(&l) {
                return Err(invalid(
                    "spec.compressionLevel",
                    format!("{l} is out of range for lz4: use 1-12"),
                ));
            }
            Codec::Lz4 { level: l as u32 }
        }
    };
    Ok(codec)
}

impl Settings {
    /// Refuses to add this run's segments to those of `what` (recorded with `recorded`) unless
    /// they share one encryption key, or are both unencrypted.
    fn check_encryption(&self, what: &str, recorded: Option<&EncryptionInfo>) -> Result<()> {
        encryption::check_continuation(
            what,
            recorded,
            self.encryption.as_ref(),
            self.encryption_spec.as_ref(),
            self.encryption_override.as_ref(),
        )
    }

    fn from_spec(kb: &KafkaBackup, secrets: &SecretStore, options: &BackupOptions) -> Result<Self> {
        let name = kb
            .metadata
            .name
            .clone()
            .ok_or_else(|| invalid("metadata.name", "is required"))?;
        crate::names::check_backup_name(&name)?;
        let spec = &kb.spec;
        check_topic_patterns(spec)?;
        let codec = codec_for(spec.compression, spec.compression_level)?;
        let encryption = encryption::key_for_backup(
            spec.encryption.as_ref(),
            secrets,
            options.encryption_key.as_ref(),
        )?;
        let interval = checkpoint_interval(spec)?;
        let (bytes_ps, records_ps) = rate_limits(spec)?;
        let breaker = breaker_config(spec)?;
        let retention = retention_backups(spec)?;
        let warnings = spec_warnings(spec, options);
        let kafka = kafka::client_config("spec.kafkaCluster", &spec.kafka_cluster, secrets)?;
        let storage = storage::open("spec.storage", &spec.storage, secrets, &options.storage)?;
        let storage_breaker = Arc::new(CircuitBreaker::new("storage", breaker.clone()));
        let repo = Repository::new(storage, storage_breaker, options.backoff.clone());
        Ok(Settings {
            name,
            kafka,
            repo,
            topics: spec.topics.clone(),
            exclude: spec.exclude_topics.clone(),
            codec,
            encryption,
            encryption_spec: spec.encryption.clone(),
            encryption_override: options.encryption_key.clone(),
            include_offset_headers: spec.include_offset_headers.unwrap_or(false),
            source_cluster_id: spec.source_cluster_id.clone(),
            checkpoint_interval: interval,
            limiter: Arc::new(RateLimiter::new(bytes_ps, records_ps)),
            kafka_breaker: Arc::new(CircuitBreaker::new("kafka", breaker.clone())),
            breaker_enabled: breaker.is_some(),
            retention,
            warnings,
        })
    }
}

fn check_topic_patterns(spec: &KafkaBackupSpec) -> Result<()> {
    if spec.topics.is_empty() {
        return Err(invalid(
            "spec.topics",
            "needs at least one topic name or pattern (e.g. \"orders\", \"events-*\", \"*\")",
        ));
    }
    if let Some(p) = spec
        .topics
        .iter()
        .chain(&spec.exclude_topics)
        .find(|p| p.trim().is_empty())
    {
        return Err(invalid(
            "spec.topics",
            format!("'{p}' is not a topic name or pattern"),
        ));
    }
    Ok(())
}

fn checkpoint_interval(spec: &KafkaBackupSpec) -> Result<Duration> {
    let interval = spec
        .checkpoint_interval_secs
        .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL_SECS);
    if interval == 0 {
        return Err(invalid(
            "spec.checkpointIntervalSecs",
            "0 is not allowed: use 1 or more seconds",
        ));
    }
    Ok(Duration::from_secs(interval))
}

/// Bytes and records per second, each optional.
fn rate_limits(spec: &KafkaBackupSpec) -> Result<(Option<u64>, Option<u64>)> {
    let (bytes_ps, records_ps) = match &spec.rate_limit {
        Some(r) => (r.bytes_per_second, r.records_per_second),
        None => (None, None),
    };
    if bytes_ps == Some(0) {
        return Err(invalid(
            "spec.rateLimit.bytesPerSecond",
            "0 is not allowed: omit it for no limit",
        ));
    }
    if records_ps == Some(0) {
        return Err(invalid(
            "spec.rateLimit.recordsPerSecond",
            "0 is not allowed: omit it for no limit",
        ));
    }
    Ok((bytes_ps, records_ps))
}

/// The circuit breakers' settings, or `None` when they are off.
fn breaker_config(spec: &KafkaBackupSpec) -> Result<Option<BreakerConfig>> {
    let Some(cb) = spec.circuit_breaker.as_ref().filter(|cb| cb.enabled) else {
        return Ok(None);
    };
    let threshold = cb.failure_threshold.unwrap_or(5);
    if threshold == 0 {
        return Err(invalid(
            "spec.circuitBreaker.failureThreshold",
            "0 is not allowed: use 1 or more",
        ));
    }
    let reset = cb.reset_timeout_secs.unwrap_or(60);
    if reset == 0 {
        return Err(invalid(
            "spec.circuitBreaker.resetTimeoutSecs",
            "0 is not allowed: use 1 or more seconds",
        ));
    }
    Ok(Some(BreakerConfig {
        failure_threshold: threshold,
        reset_timeout: Duration::from_secs(reset),
    }))
}

fn retention_backups(spec: &KafkaBackupSpec) -> Result<Option<u32>> {
    match spec.retention.as_ref().and_then(|r| r.backups) {
        Some(0) => Err(invalid(
            "spec.retention.backups",
            "0 would delete every backup: use 1 or more",
        )),
        other => Ok(other),
    }
}

/// Settings that are accepted but do nothing, said once at the start of each run.
fn spec_warnings(spec: &KafkaBackupSpec, options: &BackupOptions) -> Vec<String> {
    let mut warnings = Vec::new();
    if let (Some(o), None) = (&options.encryption_key, &spec.encryption) {
        warnings.push(format!(
            "{} is set but spec.encryption is not: this backup is not encrypted",
            o.source
        ));
    }
    let unused = spec.storage.unused_blocks();
    if !unused.is_empty() {
        warnings.push(format!(
            "spec.storage: {} set but storageType is {}; {} not used",
            unused.join(", "),
            spec.storage.storage_type.as_str(),
            if unused.len() == 1 {
                "it is"
            } else {
                "they are"
            }
        ));
    }
    warnings
}

/// The state of one partition during a run.
#[derive(Clone, Debug)]
struct PartitionTask {
    topic: String,
    partition: i32,
    /// Next offset to read.
    read_from: i64,
    /// Captured high watermark: read up to (excluding) this.
    target: i64,
}

enum Event {
    Stored {
        topic: String,
        partition: i32,
        segment: SegmentEntry,
        next_offset: i64,
    },
    Done {
        topic: String,
        partition: i32,
        next_offset: i64,
    },
    TopicGone {
        topic: String,
        partition: i32,
    },
}

/// One backup: resume the unfinished run of this name or plan a new one, read every partition up
/// to its target, then commit the manifest and apply retention.
async fn run_once(
    s: &Settings,
    options: &BackupOptions,
    progress: Arc<Progress>,
) -> Result<BackupSummary> {
    let started = Instant::now();
    let cluster = connect(s, options).await?;
    let mut warnings = s.warnings.clone();
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let (mut checkpoint, resumed) =
        start_run(s, options, cluster.cluster_id.clone(), &mut warnings).await?;
    let tasks = partition_tasks(&checkpoint, &progress);
    let stored =
        read_partitions(s, options, progress, tasks, &mut checkpoint, &mut warnings).await?;
    let manifest = commit(s, &checkpoint, options.kafka_timeout, stored.uploaded).await?;
    let retention = match s.retention {
        Some(keep) => Some(retention::apply(&s.repo, &s.name, keep as usize).await?),
        None => None,
    };
    Ok(summary(
        s, &manifest, &stored, started, resumed, warnings, retention,
    ))
}

/// Reaches the cluster before anything else, so that a wrong address or credential fails the run
/// before storage is touched.
async fn connect(s: &Settings, options: &BackupOptions) -> Result<kafka::ClusterInfo> {
    let kafka_cfg = s.kafka.clone();
    let timeout = options.kafka_timeout;
    let cluster = blocking(move || kafka::probe(&kafka_cfg, timeout)).await?;
    tracing::info!(
        backup = %s.name,
        storage = s.repo.description(),
        brokers = cluster.brokers,
        "connected to Kafka"
    );
    Ok(cluster)
}

/// The run's checkpoint, stored before any segment is written: the latest unfinished run of this
/// name, resumed, or a new plan. The flag says whether it resumes.
async fn start_run(
    s: &Settings,
    options: &BackupOptions,
    kafka_cluster_id: Option<String>,
    warnings: &mut Vec<String>,
) -> Result<(Checkpoint, bool)> {
    let checkpoints = s.repo.checkpoint_ids(&s.name).await?;
    let checkpoint = match checkpoints.last() {
        Some(id) => {
            let mut cp = s.repo.checkpoint(&s.name, id).await?;
            s.check_encryption(&format!("the unfinished run {id}"), cp.encryption.as_ref())?;
            tracing::info!(backup_id = %id, "resuming the unfinished run from its checkpoint");
            if checkpoints.len() > 1 {
                warnings.push(format!(
                    "older unfinished runs are left as they are: {}",
                    checkpoints[..checkpoints.len() - 1].join(", ")
                ));
            }
            check_resumed_topics(s, &mut cp, options.kafka_timeout, warnings).await?;
            cp
        }
        None => plan_new_run(s, options, kafka_cluster_id, warnings).await?,
    };
    s.repo.put_checkpoint(&checkpoint).await?;
    Ok((checkpoint, !checkpoints.is_empty()))
}

/// The partitions still to read; the offsets they span are added to `progress`'s target.
fn partition_tasks(cp: &Checkpoint, progress: &Progress) -> VecDeque<PartitionTask> {
    let mut tasks = VecDeque::new();
    let mut target_total = 0u64;
    for t in &cp.topics {
        for p in &t.partitions {
            let target = p.target_offset.unwrap_or(p.end_offset);
            let read_from = p.next_offset.unwrap_or(p.end_offset);
            if read_from < target {
                target_total += (target - read_from) as u64;
                tasks.push_back(PartitionTask {
                    topic: t.name.clone(),
                    partition: p.partition,
                    read_from,
                    target,
                });
            }
        }
    }
    progress
        .target_offsets
        .fetch_add(target_total, Ordering::Relaxed);
    tracing::info!(
        backup_id = %cp.backup_id,
        topics = cp.topics.len(),
        partitions_to_read = tasks.len(),
        offsets_to_read = target_total,
        "backing up"
    );
    tasks
}

/// Reads `tasks` with the workers while the coordinator records what they store in `checkpoint`.
/// Returns what was stored, or the run's first error once the checkpoint is saved.
async fn read_partitions(
    s: &Settings,
    options: &BackupOptions,
    progress: Arc<Progress>,
    tasks: VecDeque<PartitionTask>,
    checkpoint: &mut Checkpoint,
    warnings: &mut Vec<String>,
) -> Result<Stored> {
    let (events_tx, events_rx) = mpsc::channel::<Event>(1024);
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let ctx = Arc::new(WorkerContext {
        name: s.name.clone(),
        repo: s.repo.clone(),
        codec: s.codec,
        encryption: s.encryption.clone(),
        block_bytes: options.block_bytes,
        segment_bytes: options.segment_bytes,
        single_put_limit: options.single_put_limit,
        checkpoint_interval: s.checkpoint_interval,
        limiter: s.limiter.clone(),
        kafka_breaker: s.kafka_breaker.clone(),
        backoff: options.backoff.clone(),
        max_kafka_errors: options.max_kafka_errors,
        progress,
        cancel: cancel_rx,
    });
    let workers = spawn_workers(s, options, ctx, tasks, events_tx)?;
    let mut coordinator = Coordinator {
        s,
        checkpoint,
        warnings,
        cancel: cancel_tx,
        failure: None,
        dirty: false,
        stored: Stored::default(),
    };
    coordinator
        .run(events_rx, workers, options.stop.clone())
        .await;
    coordinator.finish().await
}

/// Starts the workers, each with its own consumer, taking partitions from one queue. They stop
/// sending events when all of them have returned.
fn spawn_workers(
    s: &Settings,
    options: &BackupOptions,
    ctx: Arc<WorkerContext>,
    tasks: VecDeque<PartitionTask>,
    events: mpsc::Sender<Event>,
) -> Result<JoinSet<Result<()>>> {
    let queue = Arc::new(Mutex::new(tasks));
    let mut workers = JoinSet::new();
    for w in 0..options.workers.max(1) {
        let consumer = kafka::create(&consumer_config(s, options, w), "consumer")?;
        workers.spawn(worker(ctx.clone(), consumer, queue.clone(), events.clone()));
    }
    Ok(workers)
}

/// The configuration of worker `w`'s consumer.
fn consumer_config(s: &Settings, options: &BackupOptions, w: usize) -> ClientConfig {
    let mut cfg = s.kafka.clone();
    cfg.set("group.id", format!("kafka-backup-{}", s.name))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set(
            "queued.max.messages.kbytes",
            options.fetch_queue_kib.to_string(),
        )
        // When the queue is full the client pauses fetching this long (librdkafka's
        // default is a whole second, which halves throughput with a small queue).
        .set("fetch.queue.backoff.ms", "10")
        // A run reads only below the high watermarks it captured, so the broker has no reason
        // to hold a fetch open waiting for new data. A long wait would delay the next
        // partition's first fetch behind the finished one's (the client keeps one fetch per
        // broker in flight): with the default 500 ms, small partitions read at two a second.
        .set("fetch.wait.max.ms", "10")
        // Small fetches keep the queue (and the fetch buffers it pins) near its bound; a
        // record larger than this is still fetched whole.
        .set("fetch.max.bytes", (2 << 20).to_string())
        .set("max.partition.fetch.bytes", (1 << 20).to_string())
        .set("client.id", format!("kafka-backup-{}-{w}", s.name));
    cfg
}

/// One worker: backs up partitions taken from the queue until it is empty.
async fn worker(
    ctx: Arc<WorkerContext>,
    consumer: StreamConsumer<KafkaContext>,
    queue: Arc<Mutex<VecDeque<PartitionTask>>>,
    events: mpsc::Sender<Event>,
) -> Result<()> {
    let mut known_topics = HashSet::new();
    loop {
        let task = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(task) = task else { return Ok(()) };
        if known_topics.insert(task.topic.clone()) {
            // The client learns a newly assigned topic's leaders on its next periodic
            // scan, up to a second later; asking now fills its metadata cache, and the
            // assignment starts fetching at once. Best effort: on failure the scan
            // still finds them.
            let _ = tokio::task::block_in_place(|| {
                consumer.fetch_metadata(Some(&task.topic), Timeout::After(METADATA_WARMUP))
            });
        }
        backup_partition(&ctx, &consumer, &task, &events).await?;
    }
}

/// What the workers stored during a run, as the coordinator heard it.
#[derive(Default)]
struct Stored {
    uploaded: u64,
    new_segments: u64,
    new_records_by_topic: BTreeMap<String, u64>,
}

/// The run's coordinator: records the segments the workers store in the checkpoint, saves it on a
/// timer, and stops every worker on the first error or when asked to stop.
struct Coordinator<'r> {
    s: &'r Settings,
    checkpoint: &'r mut Checkpoint,
    warnings: &'r mut Vec<String>,
    cancel: watch::Sender<bool>,
    /// The first error: the run returns it, after the final checkpoint.
    failure: Option<Error>,
    /// Whether the checkpoint changed since it was saved.
    dirty: bool,
    stored: Stored,
}

impl Coordinator<'_> {
    /// Runs until every worker has returned.
    async fn run(
        &mut self,
        mut events: mpsc::Receiver<Event>,
        mut workers: JoinSet<Result<()>>,
        mut stop: Option<watch::Receiver<bool>>,
    ) {
        let mut ticker = tokio::time::interval(self.s.checkpoint_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.record(ev),
                    None => break,
                },
                _ = ticker.tick() => self.save_if_changed().await,
                Some(joined) = workers.join_next(), if !workers.is_empty() => {
                    if let Err(e) = worker_result(joined) {
                        if self.failure.is_none() {
                            tracing::error!(error = %e, "stopping the run");
                        }
                        self.fail(e);
                    }
                }
                _ = async { match stop.as_mut() { Some(s) => cancelled(s).await, None => std::future::pending().await } }, if self.failure.is_none() => {
                    tracing::warn!("stop requested: checkpointing what is stored");
                    self.fail(Error::Interrupted);
                }
            }
        }
        while let Some(joined) = workers.join_next().await {
            if let Err(e) = worker_result(joined) {
                self.failure.get_or_insert(e);
            }
        }
    }

    fn record(&mut self, ev: Event) {
        if let Event::Stored { segment, topic, .. } = &ev {
            self.stored.uploaded += segment.size;
            self.stored.new_segments += 1;
            *self
                .stored
                .new_records_by_topic
                .entry(topic.clone())
                .or_default() += segment.records;
        }
        if let Event::TopicGone { topic, partition } = &ev {
            let w = format!(
                "topic {topic} (partition {partition}) was deleted during the backup; the backup holds what was read before"
            );
            tracing::warn!("{w}");
            self.warnings.push(w);
        }
        apply_event(self.checkpoint, ev);
        self.dirty = true;
    }

    async fn save_if_changed(&mut self) {
        if self.dirty {
            self.checkpoint.checkpoint_time = Some(rfc3339(now_secs()));
            if let Err(e) = self.s.repo.put_checkpoint(self.checkpoint).await {
                self.fail(e);
            }
            self.dirty = false;
        }
    }

    /// Keeps the first error, and tells every worker to stop.
    fn fail(&mut self, e: Error) {
        self.failure.get_or_insert(e);
        let _ = self.cancel.send(true);
    }

    /// Records what is durably stored, whatever happened, so a new run resumes from there; then
    /// returns what was stored, or the run's first error.
    async fn finish(self) -> Result<Stored> {
        self.checkpoint.checkpoint_time = Some(rfc3339(now_secs()));
        let saved = self.s.repo.put_checkpoint(self.checkpoint).await;
        if let Some(e) = self.failure {
            if let Err(save) = saved {
                tracing::error!(error = %save, "could not write the final checkpoint");
            }
            return Err(e);
        }
        saved?;
        Ok(self.stored)
    }
}

fn worker_result(joined: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    joined.unwrap_or_else(|e| Err(Error::Internal(format!("worker failed: {e}"))))
}

/// Makes the backup exist: captures the consumer groups' committed offsets on the backed-up
/// topics, writes the manifest, and deletes the checkpoint it replaces.
async fn commit(
    s: &Settings,
    checkpoint: &Checkpoint,
    timeout: Duration,
    uploaded: u64,
) -> Result<Manifest> {
    let groups = capture_group_offsets(s, checkpoint, timeout).await?;
    let manifest = build_manifest(checkpoint, groups, uploaded);
    s.repo.put_manifest(&manifest).await?;
    s.repo
        .delete_checkpoint(&s.name, &manifest.backup_id)
        .await?;
    tracing::info!(
        backup_id = %manifest.backup_id,
        records = manifest.totals.records,
        stored_bytes = manifest.totals.stored_bytes,
        uploaded_bytes = uploaded,
        "backup committed"
    );
    Ok(manifest)
}

fn summary(
    s: &Settings,
    manifest: &Manifest,
    stored: &Stored,
    started: Instant,
    resumed: bool,
    warnings: Vec<String>,
    retention: Option<RetentionSummary>,
) -> BackupSummary {
    BackupSummary {
        backup_id: manifest.backup_id.clone(),
        backup_name: s.name.clone(),
        storage: s.repo.description().to_string(),
        resumed,
        previous_backup_id: manifest.previous_backup_id.clone(),
        start_time: manifest.start_time.clone(),
        completion_time: manifest.completion_time.clone(),
        duration_secs: started.elapsed().as_secs_f64(),
        topics: topic_summaries(manifest, &stored.new_records_by_topic),
        records: manifest.totals.records,
        new_records: stored.new_records_by_topic.values().sum(),
        raw_bytes: manifest.totals.raw_bytes,
        stored_bytes: manifest.totals.stored_bytes,
        uploaded_bytes: stored.uploaded,
        new_segments: stored.new_segments,
        reused_segments: manifest.totals.segments.saturating_sub(stored.new_segments),
        consumer_groups: manifest.consumer_groups.len(),
        gaps: gap_summaries(manifest),
        warnings,
        circuit_breaker: BreakerSummary {
            enabled: s.breaker_enabled,
            kafka_failures: s.kafka_breaker.failures(),
            kafka_opened: s.kafka_breaker.times_opened(),
            storage_failures: s.repo.breaker().failures(),
            storage_opened: s.repo.breaker().times_opened(),
        },
        retention,
    }
}

fn topic_summaries(manifest: &Manifest, new_records: &BTreeMap<String, u64>) -> Vec<TopicSummary> {
    manifest
        .topics
        .iter()
        .map(|t| TopicSummary {
            name: t.name.clone(),
            partitions: t.partitions.len(),
            records: t.partitions.iter().map(|p| p.records).sum(),
            new_records: new_records.get(&t.name).copied().unwrap_or(0),
            stored_bytes: t
                .partitions
                .iter()
                .flat_map(|p| &p.segments)
                .map(|s| s.size)
                .sum(),
        })
        .collect()
}

fn gap_summaries(manifest: &Manifest) -> Vec<GapSummary> {
    let mut gaps = Vec::new();
    for t in &manifest.topics {
        for p in &t.partitions {
            for g in &p.gaps {
                gaps.push(GapSummary {
                    topic: t.name.clone(),
                    partition: p.partition,
                    from: g.from,
                    to: g.to,
                    reason: serde_json::to_value(g.reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                });
            }
        }
    }
    gaps
}

/// Plans a new run: picks the topics, captures watermarks and configs, and continues from the
/// newest complete backup of the same name.
async fn plan_new_run(
    s: &Settings,
    options: &BackupOptions,
    kafka_cluster_id: Option<String>,
    warnings: &mut Vec<String>,
) -> Result<Checkpoint> {
    let captured = capture_topics(s, options.kafka_timeout, warnings).await?;
    let names: Vec<String> = captured.topics.iter().map(|t| t.name.clone()).collect();
    let previous = previous_backup(s, &names, warnings).await?;
    let (id, start) = fresh_backup_id(s).await?;
    let topics = captured
        .topics
        .iter()
        .map(|t| plan_topic(t, &captured, previous.as_ref(), warnings))
        .collect();
    Ok(Checkpoint {
        backup_id: id,
        backup_name: s.name.clone(),
        state: CheckpointState::Running,
        start_time: rfc3339(start),
        checkpoint_time: None,
        previous_backup_id: previous.map(|m| m.backup_id),
        source_cluster_id: s.source_cluster_id.clone(),
        kafka_cluster_id,
        tool: Some(format!("kafka-backup {}", env!("CARGO_PKG_VERSION"))),
        compression: Some(CompressionInfo::from(s.codec)),
        include_offset_headers: Some(s.include_offset_headers),
        encryption: s.encryption.as_ref().map(EncryptionKey::info),
        topics,
    })
}

/// Low and high watermark of each (topic, partition).
type Watermarks = BTreeMap<(String, i32), (i64, i64)>;

/// Topic ids by name, or why the cluster could not tell them.
type TopicIds = std::result::Result<BTreeMap<String, String>, kafka::TopicIdError>;

/// The topics a new run backs up, as they were when it started.
struct Captured {
    topics: Vec<kafka::TopicInfo>,
    /// The run backs up to exactly these high watermarks.
    marks: Watermarks,
    /// Topic ids by name; empty when the cluster could not tell them.
    ids: BTreeMap<String, String>,
    configs: BTreeMap<String, BTreeMap<String, String>>,
}

/// Selects the topics and captures their watermarks, ids and configs.
async fn capture_topics(
    s: &Settings,
    timeout: Duration,
    warnings: &mut Vec<String>,
) -> Result<Captured> {
    let cfg = s.kafka.clone();
    let include = s.topics.clone();
    let exclude = s.exclude.clone();
    let (topics, marks, ids) =
        blocking(move || select_topics(&cfg, include, exclude, timeout)).await?;
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => {
            let w = format!(
                "topic ids could not be read ({e}); a topic deleted and created again is recognised only when its end offset went back"
            );
            tracing::warn!("{w}");
            warnings.push(w);
            BTreeMap::new()
        }
    };
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let configs = kafka::topic_configs(&s.kafka, &names, timeout).await?;
    Ok(Captured {
        topics,
        marks,
        ids,
        configs,
    })
}

/// The topics `include` and `exclude` select, with their watermarks and ids (or why the ids could
/// not be read); blocking.
fn select_topics(
    cfg: &ClientConfig,
    include: Vec<String>,
    exclude: Vec<String>,
    timeout: Duration,
) -> Result<(Vec<kafka::TopicInfo>, Watermarks, TopicIds)> {
    let consumer: BaseConsumer<KafkaContext> = kafka::create(cfg, "metadata")?;
    let all = kafka::list_topics(&consumer, timeout)?;
    let names = patterns::select(all.iter().map(|t| t.name.as_str()), &include, &exclude);
    if names.is_empty() {
        return Err(Error::NoTopicsMatch {
            patterns: include,
            excludes: exclude,
            available: all
                .iter()
                .filter(|t| !patterns::INTERNAL_TOPICS.contains(&t.name.as_str()))
                .count(),
        });
    }
    let selected: Vec<kafka::TopicInfo> = all
        .into_iter()
        .filter(|t| names.contains(&t.name))
        .collect();
    let mut marks = BTreeMap::new();
    for t in &selected {
        for &p in &t.partitions {
            marks.insert(
                (t.name.clone(), p),
                kafka::watermarks(&consumer, &t.name, p, timeout)?,
            );
        }
    }
    let names: Vec<String> = selected.iter().map(|t| t.name.clone()).collect();
    let ids = kafka::topic_ids(consumer.client(), &names, timeout);
    Ok((selected, marks, ids))
}

/// The newest complete backup of this name, to continue from; it must share this run's
/// encryption key. Its topics that are not selected any more are named in a warning.
async fn previous_backup(
    s: &Settings,
    names: &[String],
    warnings: &mut Vec<String>,
) -> Result<Option<Manifest>> {
    let Some(id) = s.repo.backup_ids(&s.name).await?.pop() else {
        return Ok(None);
    };
    let prev = s.repo.manifest(&s.name, &id).await?;
    s.check_encryption(
        &format!("backup {}", prev.backup_id),
        prev.encryption.as_ref(),
    )?;
    for t in &prev.topics {
        if !names.contains(&t.name) {
            let w = format!(
                "topic {} was in backup {} but is no longer selected or no longer exists; this backup does not include it",
                t.name, prev.backup_id
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }
    Ok(Some(prev))
}

/// A fresh backup id and the start time it holds; never one in use (two runs within one second
/// wait for the next).
async fn fresh_backup_id(s: &Settings) -> Result<(String, i64)> {
    let mut start = now_secs();
    let existing = s.repo.backup_ids(&s.name).await?;
    while existing.contains(&backup_id(&s.name, start)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        start = now_secs();
    }
    Ok((backup_id(&s.name, start), start))
}

/// A topic's entry in a new run's checkpoint, continuing its history in `previous`.
fn plan_topic(
    t: &kafka::TopicInfo,
    captured: &Captured,
    previous: Option<&Manifest>,
    warnings: &mut Vec<String>,
) -> TopicEntry {
    let topic_id = captured.ids.get(&t.name).cloned();
    let mut prev_topic = previous.and_then(|m| m.topics.iter().find(|pt| pt.name == t.name));
    // Same name, another topic: never continue the old topic's history with the new one's
    // records. The earlier backups keep the old topic; this one starts the new topic afresh.
    if let (Some(pt), Some(id), Some(prev)) = (prev_topic, &topic_id, previous)
        && let Some(old_id) = &pt.topic_id
        && old_id != id
    {
        let w = format!(
            "topic {} was deleted and created again since backup {} (topic id {old_id}, now {id}); this backup starts a new history for it with the new topic's records only, and backup {} keeps the old topic's",
            t.name, prev.backup_id, prev.backup_id
        );
        tracing::warn!("{w}");
        warnings.push(w);
        prev_topic = None;
    }
    let previous_id = previous.map(|m| m.backup_id.as_str()).unwrap_or("");
    let partitions = t
        .partitions
        .iter()
        .map(|&p| {
            let marks = captured
                .marks
                .get(&(t.name.clone(), p))
                .copied()
                .unwrap_or((0, 0));
            let prev_part =
                prev_topic.and_then(|pt| pt.partitions.iter().find(|pp| pp.partition == p));
            plan_partition(&t.name, p, marks, prev_part, previous_id, warnings)
        })
        .collect();
    TopicEntry {
        name: t.name.clone(),
        topic_id,
        partition_count: t.partitions.len() as i32,
        replication_factor: t.replication_factor,
        configs: captured.configs.get(&t.name).cloned().unwrap_or_default(),
        partitions,
    }
}

/// A partition's entry in a new run's checkpoint: it continues `prev_part` (of backup
/// `previous_id`) unless its end offset went back, and records as a gap the offsets retention
/// deleted before they could be read.
fn plan_partition(
    topic: &str,
    p: i32,
    (low, high): (i64, i64),
    mut prev_part: Option<&PartitionEntry>,
    previous_id: &str,
    warnings: &mut Vec<String>,
) -> PartitionEntry {
    if let Some(pp) = prev_part
        && high < pp.end_offset
    {
        let w = format!(
            "topic {topic} partition {p}: its end offset went back from {} to {high} since backup {previous_id}; the topic was deleted and recreated, so this backup starts a new history for it",
            pp.end_offset,
        );
        tracing::warn!("{w}");
        warnings.push(w);
        prev_part = None;
    }
    let (start_offset, resume, mut gaps, segments) = match prev_part {
        Some(pp) => (
            pp.start_offset,
            pp.end_offset,
            pp.gaps.clone(),
            pp.segments.clone(),
        ),
        None => (low, low, Vec::new(), Vec::new()),
    };
    let read_from = resume.max(low);
    if low > resume {
        gaps.push(Gap {
            from: resume,
            to: low,
            reason: GapReason::LogStart,
        });
        let w = format!(
            "topic {topic} partition {p}: offsets {resume}..{low} were deleted by retention before they could be backed up"
        );
        tracing::warn!("{w}");
        warnings.push(w);
    }
    PartitionEntry {
        partition: p,
        start_offset,
        end_offset: high.max(read_from),
        records: segments.iter().map(|s| s.records).sum(),
        min_timestamp: None,
        max_timestamp: None,
        gaps,
        segments,
        target_offset: Some(high.max(read_from)),
        next_offset: Some(read_from),
    }
}

/// A resumed run whose topic was deleted and created again since the run started must not read
/// the new topic's records into the old topic's history: such a topic ends where the checkpoint
/// says it was read, as if it had been deleted during the run.
async fn check_resumed_topics(
    s: &Settings,
    cp: &mut Checkpoint,
    timeout: Duration,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let names: Vec<String> = cp
        .topics
        .iter()
        .filter(|t| t.topic_id.is_some())
        .map(|t| t.name.clone())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let cfg = s.kafka.clone();
    let ids = blocking(move || {
        let consumer: BaseConsumer<KafkaContext> = kafka::create(&cfg, "metadata")?;
        Ok(kafka::topic_ids(consumer.client(), &names, timeout))
    })
    .await?;
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => {
            let w = format!(
                "topic ids could not be read ({e}); resuming without checking that the topics are still the same"
            );
            tracing::warn!("{w}");
            warnings.push(w);
            return Ok(());
        }
    };
    for t in &mut cp.topics {
        if let (Some(old), Some(new)) = (&t.topic_id, ids.get(&t.name))
            && old != new
        {
            let w = format!(
                "topic {} was deleted and created again while run {} was unfinished (topic id {old}, now {new}); the backup holds what was read before, and the next run starts a new history for it",
                t.name, cp.backup_id
            );
            tracing::warn!("{w}");
            warnings.push(w);
            for p in &mut t.partitions {
                let end = p.next_offset.unwrap_or(p.end_offset);
                p.end_offset = end;
                p.target_offset = Some(end);
            }
        }
    }
    Ok(())
}

fn apply_event(cp: &mut Checkpoint, ev: Event) {
    match ev {
        Event::Stored {
            topic,
            partition,
            segment,
            next_offset,
        } => {
            if let Some(p) = partition_mut(cp, &topic, partition) {
                p.records += segment.records;
                p.segments.push(segment);
                p.next_offset = Some(next_offset);
            }
        }
        Event::Done {
            topic,
            partition,
            next_offset,
        } => {
            if let Some(p) = partition_mut(cp, &topic, partition) {
                p.next_offset = Some(next_offset);
            }
        }
        Event::TopicGone { topic, partition } => {
            if let Some(p) = partition_mut(cp, &topic, partition) {
                // Nothing more can be read: the backup covers what was stored.
                let end = p.next_offset.unwrap_or(p.end_offset);
                p.end_offset = end;
                p.target_offset = Some(end);
            }
        }
    }
}

fn partition_mut<'a>(
    cp: &'a mut Checkpoint,
    topic: &str,
    partition: i32,
) -> Option<&'a mut PartitionEntry> {
    cp.topics
        .iter_mut()
        .find(|t| t.name == topic)
        .and_then(|t| t.partitions.iter_mut().find(|p| p.partition == partition))
}

fn build_manifest(cp: &Checkpoint, groups: Vec<ConsumerGroupEntry>, uploaded: u64) -> Manifest {
    let mut totals = Totals {
        uploaded_bytes: uploaded,
        ..Totals::default()
    };
    let topics: Vec<TopicEntry> = cp
        .topics
        .iter()
        .map(|t| {
            let partitions: Vec<PartitionEntry> = t
                .partitions
                .iter()
                .map(|p| {
                    let records: u64 = p.segments.iter().map(|s| s.records).sum();
                    totals.partitions += 1;
                    totals.records += records;
                    totals.segments += p.segments.len() as u64;
                    totals.stored_bytes += p.segments.iter().map(|s| s.size).sum::<u64>();
                    totals.raw_bytes += p.segments.iter().map(|s| s.raw_bytes).sum::<u64>();
                    PartitionEntry {
                        partition: p.partition,
                        start_offset: p.start_offset,
                        end_offset: p.target_offset.unwrap_or(p.end_offset),
                        records,
                        min_timestamp: p.segments.iter().map(|s| s.min_timestamp).min(),
                        max_timestamp: p.segments.iter().map(|s| s.max_timestamp).max(),
                        gaps: p.gaps.clone(),
                        segments: p.segments.clone(),
                        target_offset: None,
                        next_offset: None,
                    }
                })
                .collect();
            totals.topics += 1;
            TopicEntry {
                partitions,
                ..t.clone()
            }
        })
        .collect();
    Manifest {
        backup_id: cp.backup_id.clone(),
        backup_name: cp.backup_name.clone(),
        previous_backup_id: cp.previous_backup_id.clone(),
        source_cluster_id: cp.source_cluster_id.clone(),
        kafka_cluster_id: cp.kafka_cluster_id.clone(),
        start_time: cp.start_time.clone(),
        completion_time: rfc3339(now_secs()),
        tool: cp.tool.clone().unwrap_or_default(),
        compression: cp.compression.unwrap_or_default(),
        include_offset_headers: cp.include_offset_headers.unwrap_or(false),
        encryption: cp.encryption.clone(),
        topics,
        consumer_groups: groups,
        totals,
    }
}

async fn capture_group_offsets(
    s: &Settings,
    cp: &Checkpoint,
    timeout: Duration,
) -> Result<Vec<ConsumerGroupEntry>> {
    let partitions: Vec<(String, i32)> = cp
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.clone(), p.partition))
        })
        .collect();
    let cfg = s.kafka.clone();
    let offsets = blocking(move || {
        let consumer: BaseConsumer<KafkaContext> = kafka::create(&cfg, "metadata")?;
        let groups = kafka::consumer_groups(&consumer, timeout)?;
        kafka::committed_offsets_of_groups(&consumer, &groups, &partitions, timeout)
    })
    .await?;
    let mut out: BTreeMap<String, Vec<GroupOffset>> = BTreeMap::new();
    for o in offsets {
        out.entry(o.group).or_default().push(GroupOffset {
            topic: o.topic,
            partition: o.partition,
            offset: o.offset,
            metadata: o.metadata,
        });
    }
    Ok(out
        .into_iter()
        .filter(|(_, offsets)| !offsets.is_empty())
        .map(|(group_id, mut offsets)| {
            offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
            ConsumerGroupEntry { group_id, offsets }
        })
        .collect())
}

struct WorkerContext {
    name: String,
    repo: Repository,
    codec: Codec,
    encryption: Option<EncryptionKey>,
    block_bytes: usize,
    segment_bytes: u64,
    single_put_limit: usize,
    checkpoint_interval: Duration,
    limiter: Arc<RateLimiter>,
    kafka_breaker: Arc<CircuitBreaker>,
    backoff: Backoff,
    max_kafka_errors: u32,
    progress: Arc<Progress>,
    cancel: watch::Receiver<bool>,
}

/// Record headers of a Kafka message, read out of the client once (each read of a header through
/// the client checks its name), as the format's writer reads them.
struct KafkaHeaders<'a> {
    inline: [(&'a str, Option<&'a [u8]>); INLINE_HEADERS],
    more: Vec<(&'a str, Option<&'a [u8]>)>,
    count: usize,
    /// Bytes of names and values.
    bytes: usize,
}

/// Headers kept without allocating; records with more use a vector.
const INLINE_HEADERS: usize = 8;

impl<'a> KafkaHeaders<'a> {
    fn new() -> Self {
        KafkaHeaders {
            inline: [("", None); INLINE_HEADERS],
            more: Vec::new(),
            count: 0,
            bytes: 0,
        }
    }

    /// Reads the headers of `m` into `self`; a header name that is not UTF-8 is an error.
    /// In place: returned by value, the struct (a few hundred bytes) was copied for every record.
    fn read(&mut self, m: &Fetched<'a>) -> std::result::Result<(), String> {
        m.for_each_header(|key, value| {
            self.bytes += key.len() + value.map_or(0, <[u8]>::len);
            if self.count < INLINE_HEADERS {
                self.inline[self.count] = (key, value);
            } else {
                self.more.push((key, value));
            }
            self.count += 1;
        })
    }
}

impl RecordHeaders for KafkaHeaders<'_> {
    fn count(&self) -> usize {
        self.count
    }
    fn get(&self, index: usize) -> (&str, Option<&[u8]>) {
        if index < INLINE_HEADERS {
            self.inline[index]
        } else {
            self.more[index - INLINE_HEADERS]
        }
    }
}

/// A segment being written: created at its first record.
struct OpenSegment {
    writer: SegmentWriter,
    upload: Option<crate::repo::Upload>,
    first_offset: i64,
    opened: Instant,
}

impl OpenSegment {
    async fn write(&mut self, bytes: Option<Vec<u8>>) -> Result<()> {
        if let (Some(b), Some(u)) = (bytes, self.upload.as_mut()) {
            u.write(&b).await?;
        }
        Ok(())
    }
}

/// Why a segment stops taking records.
enum SegmentEnd {
    /// It is full, or has been open a checkpoint interval: store it and keep reading.
    Roll,
    /// The partition is complete up to its target: store the segment and finish.
    Finished,
    /// Writing it failed: it is read again from its first record, if the retry policy allows.
    WriteFailed(Error),
    /// The topic was deleted: store what was read and finish.
    TopicGone,
}

/// Backs up one partition from `task.read_from` to `task.target`, one segment after another.
async fn backup_partition(
    ctx: &WorkerContext,
    consumer: &StreamConsumer<KafkaContext>,
    task: &PartitionTask,
    events: &mpsc::Sender<Event>,
) -> Result<()> {
    let mut cancel = ctx.cancel.clone();
    // Created once, not per record: timers and the cancellation future would otherwise be
    // registered and dropped for every message.
    let stop = cancelled(&mut cancel);
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut messages = Messages {
        stream: consumer.stream(),
        batch: MessageBatch::new(consumer, BATCH_MESSAGES),
        ticker,
        stop,
    };
    let mut partition = Partition {
        ctx,
        consumer,
        task,
        events,
        next: task.read_from,
        upload_failures: 0,
        kafka_errors: 0,
    };
    while partition.next < task.target {
        if !write_segment(&mut messages, &mut partition).await? {
            return Ok(());
        }
    }
    let _ = events
        .send(Event::Done {
            topic: task.topic.clone(),
            partition: task.partition,
            next_offset: task.target,
        })
        .await;
    Ok(())
}

/// Where one partition's messages come from: the consumer's stream wakes the reader and gives
/// the first message, its batch gives those already fetched many per call; the ticker and the
/// stop signal interrupt waiting.
struct Messages<'a, S> {
    stream: MessageStream<'a, KafkaContext>,
    /// Taken from the consumer's queue but not yet read: all of it comes before anything the
    /// stream would give now.
    batch: MessageBatch<'a>,
    ticker: tokio::time::Interval,
    stop: Pin<&'a mut S>,
}

/// What wakes a reader that waits for messages.
enum Wake<'a> {
    /// Messages to read: the stream's first (if it gave one), then the batch's.
    Messages(Option<KafkaResult<BorrowedMessage<'a>>>),
    /// A tick decided that the segment ends.
    End(SegmentEnd),
}

/// One partition's side of its backup: where reading has got to, and the failures the retry
/// policies count.
struct Partition<'a> {
    ctx: &'a WorkerContext,
    consumer: &'a StreamConsumer<KafkaContext>,
    task: &'a PartitionTask,
    events: &'a mpsc::Sender<Event>,
    /// Next offset to read: after the last record written to the open segment.
    next: i64,
    /// Consecutive failed segment uploads.
    upload_failures: u32,
    /// Consecutive Kafka errors.
    kafka_errors: u32,
}

/// One attempt at a segment: it starts at the first record read after `start`, and is read
/// again from there if storing it fails.
struct SegmentAttempt {
    start: i64,
    /// Created at the first record.
    open: Option<OpenSegment>,
    /// Progress this attempt added: a retry reads its records again.
    counted: Counted,
    /// Whether anything (a record, end of partition, an error) arrived since the last tick, and
    /// since when nothing did.
    active: bool,
    idle_since: Instant,
}

impl SegmentAttempt {
    fn new(start: i64) -> Self {
        SegmentAttempt {
            start,
            open: None,
            counted: Counted::default(),
            active: true,
            idle_since: Instant::now(),
        }
    }

    /// Gives up the segment's upload: nothing of it is stored.
    async fn abort(&mut self) {
        if let Some(s) = self.open.take()
            && let Some(u) = s.upload
        {
            u.abort().await;
        }
    }
}

/// Writes the partition's next segment: reads from `partition.next` until the segment ends, then
/// stores it and sends it to the coordinator. A segment whose upload fails is read again from its
/// first record (after the retry policy's wait). Returns `false` once the topic is gone.
async fn write_segment<S: Future<Output = ()>>(
    messages: &mut Messages<'_, S>,
    partition: &mut Partition<'_>,
) -> Result<bool> {
    partition.assign()?;
    messages.batch.clear();
    let mut attempt = SegmentAttempt::new(partition.next);
    let end = read_segment(messages, partition, &mut attempt).await?;
    let finished = match end {
        SegmentEnd::Roll => false,
        SegmentEnd::Finished => true,
        SegmentEnd::TopicGone => {
            partition.topic_gone(attempt.open.take()).await?;
            return Ok(false);
        }
        SegmentEnd::WriteFailed(e) => {
            attempt.abort().await;
            partition.retry_segment(e, attempt.start).await?;
            return Ok(true);
        }
    };
    if let Some(s) = attempt.open.take()
        && let Err(e) = partition.store(s).await
    {
        attempt.counted.take_back(&partition.ctx.progress);
        partition.retry_segment(e, attempt.start).await?;
        return Ok(true);
    }
    if finished {
        // Offsets after the last record (transaction markers, compaction) count as passed.
        let task = partition.task;
        partition.ctx.progress.offsets_done.fetch_add(
            task.target.saturating_sub(partition.next).max(0) as u64,
            Ordering::Relaxed,
        );
        partition.next = task.target;
    }
    Ok(true)
}

/// Reads records into the attempt's segment until it ends, round after round: wait for
/// messages (or a tick, or the stop signal), then read those at hand.
async fn read_segment<S: Future<Output = ()>>(
    messages: &mut Messages<'_, S>,
    partition: &mut Partition<'_>,
    attempt: &mut SegmentAttempt,
) -> Result<SegmentEnd> {
    loop {
        let first = match messages.wait(partition, attempt).await? {
            Wake::Messages(first) => first,
            Wake::End(end) => return Ok(end),
        };
        if let Some(end) = read_round(messages, partition, attempt, first).await? {
            return Ok(end);
        }
    }
}

/// Reads the messages at hand: `first`, then the batch's, refilling it from what the client has
/// already fetched. Between two looks at the stop signal and the clock, at most a tick passes (or
/// a round of messages). Returns how the segment ends, or `None` to wait again.
async fn read_round<S>(
    messages: &mut Messages<'_, S>,
    partition: &mut Partition<'_>,
    attempt: &mut SegmentAttempt,
    first: Option<KafkaResult<BorrowedMessage<'_>>>,
) -> Result<Option<SegmentEnd>> {
    let mut pending = first
        .as_ref()
        .map(|r| r.as_ref().map(Fetched::of).map_err(Clone::clone));
    let round = Instant::now();
    let ctx = partition.ctx;
    let mut tally = Tally::new(&ctx.progress, &mut attempt.counted);
    let limited = ctx.limiter.is_limited();
    let batch = &mut messages.batch;
    let mut taken = 0;
    loop {
        let r = match pending.take() {
            Some(r) => r,
            None => {
                if !batch.has_unread() {
                    if taken >= BATCH_ROUND || round.elapsed() >= TICK || batch.fill() == 0 {
                        return Ok(None);
                    }
                } else if limited && round.elapsed() >= TICK {
                    return Ok(None);
                }
                taken += 1;
                match batch.next() {
                    Some(r) => r,
                    None => return Ok(None),
                }
            }
        };
        attempt.active = true;
        let end = match r {
            Ok(m) => partition.record(m, &mut attempt.open, &mut tally).await?,
            // The client moves the position as the batch takes records, so while the batch
            // still holds some after this end of partition (records committed since), the
            // position is ahead of what was read: those records finish the partition, or a
            // later end of partition does.
            Err(KafkaError::PartitionEOF(_)) => {
                if batch.holds_unread_records() {
                    None
                } else {
                    partition.end_of_partition()
                }
            }
            Err(e) => partition.kafka_error(e).await?,
        };
        if let Some(end) = end {
            if let SegmentEnd::WriteFailed(_) = end {
                tally.take_back();
            }
            return Ok(Some(end));
        }
    }
}

impl<'a, S: Future<Output = ()>> Messages<'a, S> {
    /// Waits until there are messages to read, or a tick ends the segment. The client's own
    /// errors (brokers down) wake nobody: they are looked for on each tick.
    async fn wait(
        &mut self,
        partition: &Partition<'_>,
        attempt: &mut SegmentAttempt,
    ) -> Result<Wake<'a>> {
        loop {
            tokio::select! {
                biased;
                _ = self.stop.as_mut() => {
                    attempt.abort().await;
                    return Err(Error::Interrupted);
                }
                now = self.ticker.tick() => {
                    if let Some(end) = partition.tick(now.into_std(), attempt) {
                        return Ok(Wake::End(end));
                    }
                    if self.batch.take_client_errors() > 0 {
                        return Ok(Wake::Messages(None));
                    }
                }
                () = std::future::ready(()), if self.batch.has_unread() => {
                    return Ok(Wake::Messages(None));
                }
                r = self.stream.next() => match r {
                    Some(r) => return Ok(Wake::Messages(Some(r))),
                    None => return Err(Error::Internal("the consumer's message stream ended".into())),
                },
            }
        }
    }
}

impl Partition<'_> {
    /// Makes the consumer read this partition from `next`.
    fn assign(&self) -> Result<()> {
        let task = self.task;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&task.topic, task.partition, Offset::Offset(self.next))
            .map_err(|source| Error::Kafka {
                operation: "assigning a partition".into(),
                source,
            })?;
        self.consumer.assign(&tpl).map_err(|source| Error::Kafka {
            operation: format!("reading {}/{}", task.topic, task.partition),
            source,
        })
    }

    /// On a tick: a segment open for a checkpoint interval ends, so that the checkpoint can
    /// list it; a partition silent for a while is checked for its topic's deletion, which the
    /// client does not always report as an error.
    fn tick(&self, now: Instant, attempt: &mut SegmentAttempt) -> Option<SegmentEnd> {
        let interval = self.ctx.checkpoint_interval;
        if attempt
            .open
            .as_ref()
            .is_some_and(|s| now >= s.opened + interval)
        {
            return Some(SegmentEnd::Roll);
        }
        if std::mem::take(&mut attempt.active) {
            attempt.idle_since = now;
        } else if now.duration_since(attempt.idle_since) >= IDLE_CHECK {
            if !topic_exists(self.consumer, &self.task.topic) {
                return Some(SegmentEnd::TopicGone);
            }
            attempt.idle_since = Instant::now();
        }
        None
    }

    /// Writes one record into the segment (opened at the first). Says whether the segment ends.
    async fn record(
        &mut self,
        m: Fetched<'_>,
        open: &mut Option<OpenSegment>,
        tally: &mut Tally<'_, '_>,
    ) -> Result<Option<SegmentEnd>> {
        let (ctx, task) = (self.ctx, self.task);
        self.kafka_errors = 0;
        ctx.kafka_breaker.success();
        if m.offset < self.next {
            return Ok(None);
        }
        if m.offset >= task.target {
            // Beyond the captured watermark: the next run takes it.
            return Ok(Some(SegmentEnd::Finished));
        }
        let mut headers = KafkaHeaders::new();
        headers.read(&m).map_err(|message| Error::KafkaRequest {
            operation: format!(
                "reading {}/{} at offset {}",
                task.topic, task.partition, m.offset
            ),
            message,
        })?;
        let size = message_bytes(&m, &headers);
        ctx.limiter.acquire(size, 1).await;
        let s = match open.as_mut() {
            Some(s) => s,
            None => open.insert(open_segment(ctx, task, m.offset).await?),
        };
        let emitted = s
            .writer
            .push(&record_ref(&m, &headers))
            .map_err(|source| Error::Format {
                object: format!("segment of {}/{}", task.topic, task.partition),
                source,
            })?;
        if let Err(e) = s.write(emitted).await {
            return Ok(Some(SegmentEnd::WriteFailed(e)));
        }
        // Offsets passed, with the gaps (compaction, transaction markers) since the last record.
        tally.add(size, (m.offset + 1 - self.next) as u64);
        self.next = m.offset + 1;
        if self.next >= task.target {
            return Ok(Some(SegmentEnd::Finished));
        }
        if s.writer.emitted_bytes() >= ctx.segment_bytes {
            return Ok(Some(SegmentEnd::Roll));
        }
        Ok(None)
    }

    /// At an end of partition with nothing unread: with read_committed the position moves past
    /// transaction markers and aborted records, so at the target nothing more below it can
    /// arrive.
    fn end_of_partition(&self) -> Option<SegmentEnd> {
        let task = self.task;
        position(self.consumer, &task.topic, task.partition)
            .is_some_and(|p| p >= task.target)
            .then_some(SegmentEnd::Finished)
    }

    /// A Kafka error while reading: the topic's deletion ends the segment; other errors are
    /// retried after the breaker's and the backoff's wait, up to `max_kafka_errors` in a row.
    async fn kafka_error(&mut self, e: KafkaError) -> Result<Option<SegmentEnd>> {
        let (ctx, task) = (self.ctx, self.task);
        if matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
        ) {
            return Ok(Some(SegmentEnd::TopicGone));
        }
        ctx.kafka_breaker.failure(Instant::now());
        self.kafka_errors += 1;
        tracing::warn!(topic = %task.topic, partition = task.partition, error = %e, attempt = self.kafka_errors, "reading from Kafka failed");
        if self.kafka_errors >= ctx.max_kafka_errors {
            return Err(Error::Kafka {
                operation: format!(
                    "reading {}/{} ({} consecutive errors)",
                    task.topic, task.partition, self.kafka_errors
                ),
                source: e,
            });
        }
        let wait = ctx
            .kafka_breaker
            .wait_time(Instant::now())
            .max(ctx.backoff.delay(self.kafka_errors.min(6) + 1));
        tokio::time::sleep(wait).await;
        Ok(None)
    }

    /// Stores a segment and tells the coordinator, which lists it in the next checkpoint.
    async fn store(&mut self, s: OpenSegment) -> Result<()> {
        if let Some(entry) = close_segment(self.ctx, self.task, s).await? {
            self.upload_failures = 0;
            self.send_stored(entry).await;
        }
        Ok(())
    }

    async fn send_stored(&self, segment: SegmentEntry) {
        let _ = self
            .events
            .send(Event::Stored {
                topic: self.task.topic.clone(),
                partition: self.task.partition,
                segment,
                next_offset: self.next,
            })
            .await;
    }

    /// A segment could not be stored: after the retry policy's wait, read it again from `start`;
    /// after its attempts, the error.
    async fn retry_segment(&mut self, e: Error, start: i64) -> Result<()> {
        upload_failed(self.ctx, &mut self.upload_failures, e).await?;
        self.next = start;
        Ok(())
    }

    /// The topic was deleted while being read: keep (store) what was read, and report it.
    async fn topic_gone(&self, open: Option<OpenSegment>) -> Result<()> {
        if let Some(s) = open
            && let Some(entry) = close_segment(self.ctx, self.task, s).await?
        {
            self.send_stored(entry).await;
        }
        let _ = self
            .events
            .send(Event::TopicGone {
                topic: self.task.topic.clone(),
                partition: self.task.partition,
            })
            .await;
        Ok(())
    }
}

/// Progress one reader counts during a round, added to the shared counters when the round ends
/// (however it ends). An atomic add per record on counters all workers share cost more than the
/// rest of the loop's own work on small records.
struct Tally<'p, 's> {
    progress: &'p Progress,
    /// What the segment being written has added so far, taken back if it is read again.
    segment: &'s mut Counted,
    own: Counted,
}

impl<'p, 's> Tally<'p, 's> {
    fn new(progress: &'p Progress, segment: &'s mut Counted) -> Self {
        Tally {
            progress,
            segment,
            own: Counted::default(),
        }
    }

    /// One record of `bytes`, which moved the position `offsets` forward.
    fn add(&mut self, bytes: u64, offsets: u64) {
        self.own.records += 1;
        self.own.bytes += bytes;
        self.own.offsets += offsets;
    }

    /// The segment is read again from its first record: nothing it counted stays counted.
    fn take_back(&mut self) {
        self.own = Counted::default();
        self.segment.take_back(self.progress);
    }
}

impl Drop for Tally<'_, '_> {
    fn drop(&mut self) {
        let c = std::mem::take(&mut self.own);
        if c.records > 0 {
            c.add_to(self.progress);
            self.segment.add(&c);
        }
    }
}

/// Records, bytes and offsets added to the shared progress.
#[derive(Default)]
struct Counted {
    records: u64,
    bytes: u64,
    offsets: u64,
}

impl Counted {
    fn add(&mut self, other: &Counted) {
        self.records += other.records;
        self.bytes += other.bytes;
        self.offsets += other.offsets;
    }

    fn add_to(&self, progress: &Progress) {
        progress.records.fetch_add(self.records, Ordering::Relaxed);
        progress.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        progress
            .offsets_done
            .fetch_add(self.offsets, Ordering::Relaxed);
    }

    /// Subtracts what was counted from `progress`, and forgets it.
    fn take_back(&mut self, progress: &Progress) {
        let c = std::mem::take(self);
        progress.records.fetch_sub(c.records, Ordering::Relaxed);
        progress.bytes.fetch_sub(c.bytes, Ordering::Relaxed);
        progress
            .offsets_done
            .fetch_sub(c.offsets, Ordering::Relaxed);
    }
}

/// Messages taken from the consumer's queue per call.
const BATCH_MESSAGES: usize = 1024;

/// Messages read between two looks at the stop signal and the clock.
const BATCH_ROUND: usize = 16 * BATCH_MESSAGES;

/// How long a partition may stay silent (below its target) before the run checks that its topic
/// still exists.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Time limit of the metadata request that warms a worker's client for a new topic.
const METADATA_WARMUP: Duration = Duration::from_secs(5);

/// How often a partition's reader looks at the clock: segment rolls and idle checks happen on
/// these ticks.
const TICK: Duration = Duration::from_millis(250);

fn topic_exists(consumer: &StreamConsumer<KafkaContext>, topic: &str) -> bool {
    let md = tokio::task::block_in_place(|| {
        consumer.fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(10)))
    });
    match md {
        // Only the broker saying the topic is unknown counts as deletion; a transient metadata
        // error (leader election, a slow broker) is not evidence of it: keep waiting.
        Ok(md) => md.topics().first().is_none_or(|t| {
            t.error()
                != Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        }),
        Err(_) => true,
    }
}

/// Counts a failed segment upload, waits (backoff, or while the storage circuit is open) and says
/// whether to retry the segment from its first record; after the policy's attempts, the error.
async fn upload_failed(ctx: &WorkerContext, failures: &mut u32, e: Error) -> Result<()> {
    *failures += 1;
    let breaker = ctx.repo.breaker();
    breaker.failure(Instant::now());
    if *failures >= ctx.backoff.max_attempts
        || matches!(&e, Error::Storage { source, .. } if !crate::repo::retryable(source))
    {
        return Err(e);
    }
    let wait = breaker
        .wait_time(Instant::now())
        .max(ctx.backoff.delay(*failures + 1));
    tracing::warn!(error = %e, attempt = *failures, retry_in_secs = wait.as_secs_f64(), "segment upload failed; retrying it from its first record");
    tokio::time::sleep(wait).await;
    Ok(())
}

fn position(consumer: &StreamConsumer<KafkaContext>, topic: &str, partition: i32) -> Option<i64> {
    let tpl = consumer.position().ok()?;
    match tpl.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

async fn open_segment(
    ctx: &WorkerContext,
    task: &PartitionTask,
    first_offset: i64,
) -> Result<OpenSegment> {
    let mut writer = SegmentWriter::new(ctx.codec, ctx.block_bytes);
    if let Some(key) = &ctx.encryption {
        writer = writer.with_encryption(key.clone());
    }
    let unique: u64 = rand_u64();
    let path = segment_path(&ctx.name, &task.topic, task.partition, first_offset, unique);
    let mut upload = ctx.repo.upload(path, ctx.single_put_limit);
    upload.write(&writer.start()).await?;
    Ok(OpenSegment {
        writer,
        upload: Some(upload),
        first_offset,
        opened: Instant::now(),
    })
}

async fn close_segment(
    ctx: &WorkerContext,
    task: &PartitionTask,
    mut s: OpenSegment,
) -> Result<Option<SegmentEntry>> {
    if s.writer.records() == 0 {
        if let Some(u) = s.upload.take() {
            u.abort().await;
        }
        return Ok(None);
    }
    let (tail, summary) = s.writer.finish().map_err(|source| Error::Format {
        object: format!("segment of {}/{}", task.topic, task.partition),
        source,
    })?;
    let Some(mut upload) = s.upload.take() else {
        return Err(Error::Internal("segment without an upload".into()));
    };
    let path = upload.path().to_string();
    if let Err(e) = upload.write(&tail).await {
        upload.abort().await;
        return Err(e);
    }
    upload.finish().await?;
    ctx.progress
        .stored_bytes
        .fetch_add(summary.size, Ordering::Relaxed);
    tracing::debug!(path = %path, first = s.first_offset, last = summary.last_offset, records = summary.records, bytes = summary.size, "segment stored");
    Ok(Some(SegmentEntry::new(path, &summary)))
}

fn rand_u64() -> u64 {
    let b = uuid::Uuid::new_v4();
    let bytes = b.as_bytes();
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

fn message_bytes(m: &Fetched<'_>, headers: &KafkaHeaders<'_>) -> u64 {
    (m.key.map_or(0, <[u8]>::len) + m.value.map_or(0, <[u8]>::len) + headers.bytes) as u64
}

fn record_ref<'a>(m: &Fetched<'a>, headers: &'a KafkaHeaders<'a>) -> RecordRef<'a> {
    use rdkafka::bindings::rd_kafka_timestamp_type_t as T;
    let (timestamp, timestamp_type) = match m.timestamp_type {
        _ if m.timestamp == -1 => (-1, TimestampType::NotAvailable),
        T::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE => (-1, TimestampType::NotAvailable),
        T::RD_KAFKA_TIMESTAMP_CREATE_TIME => (m.timestamp, TimestampType::CreateTime),
        T::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => (m.timestamp, TimestampType::LogAppendTime),
    };
    RecordRef {
        offset: m.offset,
        timestamp,
        timestamp_type,
        key: m.key,
        value: m.value,
        headers,
    }
}
