//! Writing restored records to Kafka: one idempotent producer per worker, each partition through
//! one producer in order, so a retried send never duplicates or reorders a record.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_backup_format::{EncryptionKey, OffsetMapPartition, Record, TimestampType, extend_runs};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use super::plan::Task;
use super::read::for_each_block;
use super::{
    HEADER_SOURCE_CLUSTER, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TIMESTAMP,
    Progress,
};
use crate::error::{Error, Result};
use crate::kafka::KafkaContext;
use crate::repo::Repository;
use crate::util::blocking;

/// Records waiting for delivery, in KiB and in number, shared by the workers' producers: bounds
/// memory (librdkafka keeps a few hundred bytes per queued record besides its key and value).
const PRODUCER_BUFFER_KIB: usize = 32 << 10;
/// See [`PRODUCER_BUFFER_KIB`].
const PRODUCER_BUFFER_RECORDS: usize = 200_000;

/// Offset maps by (source topic, target topic, partition).
pub(super) type PartitionMaps = BTreeMap<(String, String, i32), OffsetMapPartition>;

/// What every worker reads and writes with.
#[derive(Clone)]
pub(super) struct Source {
    pub repo: Repository,
    pub key: Option<EncryptionKey>,
    pub window: kafka_backup_format::TimeWindow,
    pub include_headers: bool,
    pub cluster_label: String,
    pub stop: Option<watch::Receiver<bool>>,
}

/// Restores `tasks` with `workers` workers, each with its own producer, and returns the offset
/// map of every partition once every record is delivered.
pub(super) async fn produce(
    kafka: &ClientConfig,
    source: Source,
    tasks: Vec<Task>,
    workers: usize,
    progress: Arc<Progress>,
) -> Result<PartitionMaps> {
    let producers = producers(kafka, workers.max(1))?;
    let queue = Arc::new(Mutex::new(tasks));
    let maps: Arc<Mutex<PartitionMaps>> = Arc::default();
    let mut set = tokio::task::JoinSet::new();
    for producer in &producers {
        let (queue, maps, progress) = (queue.clone(), maps.clone(), progress.clone());
        let (producer, source) = (producer.clone(), source.clone());
        set.spawn(async move { work(&source, &producer, &queue, &maps, &progress).await });
    }
    let mut failure = None;
    while let Some(r) = set.join_next().await {
        if let Err(e) = r.unwrap_or_else(|e| Err(Error::Internal(e.to_string()))) {
            failure.get_or_insert(e);
        }
    }
    let flushed = flush(&producers).await?;
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
    let mut maps = maps
        .lock()
        .map_err(|_| Error::Internal("offset maps poisoned".into()))?;
    Ok(std::mem::take(&mut *maps))
}

/// One idempotent producer per worker; a partition is restored by one worker, so its records
/// go through one producer, in order. librdkafka sends one partition per produce request and
/// at most five requests in flight per connection, so with many partitions a single producer
/// leaves the broker idle between round trips; a producer per worker multiplies that window.
fn producers(
    kafka: &ClientConfig,
    workers: usize,
) -> Result<Vec<Arc<ThreadedProducer<DeliveryContext>>>> {
    let mut pcfg = kafka.clone();
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
    (0..workers)
        .map(|_| {
            pcfg.create_with_context(DeliveryContext::default())
                .map(Arc::new)
                .map_err(|source| Error::Kafka {
                    operation: "creating the producer".into(),
                    source,
                })
        })
        .collect()
}

/// One worker: takes partitions off the queue until it is empty.
async fn work(
    source: &Source,
    producer: &ThreadedProducer<DeliveryContext>,
    queue: &Mutex<Vec<Task>>,
    maps: &Mutex<PartitionMaps>,
    progress: &Progress,
) -> Result<()> {
    loop {
        let task = queue.lock().ok().and_then(|mut q| q.pop());
        let Some(task) = task else { return Ok(()) };
        let map = restore_partition(source, producer, &task, progress).await?;
        // The plan counted segments straddling a point in time whole.
        let written = (map.target_end_offset - task.target_start) as u64;
        progress.target_records.fetch_sub(
            task.partition.records.saturating_sub(written),
            Ordering::Relaxed,
        );
        if let Ok(mut m) = maps.lock() {
            let p = &task.partition;
            m.insert(
                (
                    p.source_topic.clone(),
                    p.target_topic.clone(),
                    p.source.partition,
                ),
                map,
            );
        }
    }
}

/// Waits (at most five minutes) for every producer's records to be delivered.
async fn flush(
    producers: &[Arc<ThreadedProducer<DeliveryContext>>],
) -> Result<std::result::Result<(), rdkafka::error::KafkaError>> {
    let ps = producers.to_vec();
    blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        Ok(ps
            .iter()
            .try_for_each(|p| p.flush(deadline.saturating_duration_since(Instant::now()))))
    })
    .await
}

/// Restores one partition: reads its records again from the start (those an earlier run wrote
/// only count towards the offset map) and sends the rest.
async fn restore_partition(
    source: &Source,
    producer: &ThreadedProducer<DeliveryContext>,
    task: &Task,
    progress: &Progress,
) -> Result<OffsetMapPartition> {
    let mut idx: i64 = 0;
    let mut runs = Vec::new();
    let partition = task.partition.source.partition;
    let target_topic = &task.partition.target_topic;
    let (include_headers, cluster_label) = (source.include_headers, source.cluster_label.as_str());
    for seg in &task.partition.source.segments {
        if source.stop.as_ref().is_some_and(|s| *s.borrow()) {
            return Err(Error::Interrupted);
        }
        let (repo, key, window) = (&source.repo, source.key.as_ref(), source.window);
        for_each_block(repo, key, seg, window, |records| {
            for r in records {
                extend_runs(&mut runs, r.offset, task.target_start + idx);
                if idx >= task.already_written {
                    send(
                        producer,
                        target_topic,
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
                    operation: format!("producing to {target_topic}/{partition}"),
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
