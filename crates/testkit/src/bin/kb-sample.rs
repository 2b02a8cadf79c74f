//! `kb-sample`: writes the sample data set of the quickstart and checks a topic holds it exactly;
//! writes, counts and deletes the data sets of the benchmark harness (`bench/run`).
//!
//!   kb-sample produce BOOTSTRAP TOPIC RECORDS PARTITIONS
//!   kb-sample check   BOOTSTRAP TOPIC RECORDS PARTITIONS
//!   kb-sample fill    BOOTSTRAP TOPIC[,TOPIC...] RECORDS PARTITIONS RECORD_SIZE
//!   kb-sample count   BOOTSTRAP TOPIC...
//!   kb-sample list    BOOTSTRAP PREFIX
//!   kb-sample delete  BOOTSTRAP TOPIC...
//!
//! `check` reads the topic back and compares every record (partition, order, key, value, headers
//! including null values, timestamp) with the sample set, and checks the topic holds nothing more;
//! it exits non-zero on the first difference.
//!
//! `fill` creates each topic (if missing) and writes RECORDS records to it, fast (batched,
//! idempotent producer): record `i` goes to partition `i % PARTITIONS` with timestamp
//! `1700000000000 + i` (so timestamps increase within each partition), a 16-byte key
//! (`key-000000000042`), a value of `RECORD_SIZE - 16` bytes (half fixed text, half pseudo-random
//! hex derived from `i`: deterministic; lz4 halves it, zstd about quarters it) and two 8-byte
//! headers. The same arguments always write the same records. `count` prints
//! `TOPIC PARTITIONS RECORDS` per topic (`TOPIC missing` when it does not exist); `list` prints the
//! topics whose names start with PREFIX; `delete` deletes topics (missing ones are skipped).

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_backup_testkit::kafka::{config_for, consume_all, create_topic, produce, sample_records};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

/// Timestamp of record 0 written by `fill`, in milliseconds since the epoch.
const FILL_BASE_TIMESTAMP: i64 = 1_700_000_000_000;
/// Key length of the records `fill` writes.
const FILL_KEY_LEN: usize = 16;
const FILL_TEXT: &[u8] =
    b"{\"event\":\"order-updated\",\"region\":\"eu-west\",\"status\":\"confirmed\",\"note\":\"";

fn usage() -> ExitCode {
    eprintln!(
        "usage: kb-sample produce|check BOOTSTRAP TOPIC RECORDS PARTITIONS\n       \
         kb-sample fill BOOTSTRAP TOPIC[,TOPIC...] RECORDS PARTITIONS RECORD_SIZE\n       \
         kb-sample count|delete BOOTSTRAP TOPIC...\n       \
         kb-sample list BOOTSTRAP PREFIX"
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("produce" | "check") => sample(&args).await,
        Some("fill") => fill(&args[1..]).await,
        Some("count") if args.len() >= 3 => count(&config_for(&args[1]), &args[2..]),
        Some("list") if args.len() == 3 => list(&config_for(&args[1]), &args[2]),
        Some("delete") if args.len() >= 3 => delete(&config_for(&args[1]), &args[2..]).await,
        _ => usage(),
    }
}

async fn sample(args: &[String]) -> ExitCode {
    let [cmd, bootstrap, topic, records, partitions] = args else {
        return usage();
    };
    let (Ok(records), Ok(partitions)) = (records.parse::<usize>(), partitions.parse::<i32>())
    else {
        return usage();
    };
    let config = config_for(bootstrap);
    let expected = sample_records(records, partitions);
    match cmd.as_str() {
        "produce" => {
            create_topic(&config, topic, partitions, 1, &[]).await;
            produce(&config, topic, &expected);
            println!("produced {records} records to {topic} ({partitions} partitions)");
            ExitCode::SUCCESS
        }
        "check" => {
            let got = consume_all(&config, topic, records, Duration::from_secs(60));
            let mut want = expected;
            want.sort_by_key(|r| r.partition);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                if &g.record != w {
                    eprintln!("record {i} differs:\n  got  {:?}\n  want {w:?}", g.record);
                    return ExitCode::FAILURE;
                }
            }
            println!(
                "{topic}: all {records} records match (partition, order, key, value, headers, timestamp)"
            );
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}

/// Counts failed deliveries and keeps the first error.
#[derive(Default)]
struct FillContext {
    failed: AtomicU64,
    first: std::sync::Mutex<Option<String>>,
}

impl ClientContext for FillContext {}

impl ProducerContext for FillContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut f) = self.first.lock() {
                f.get_or_insert_with(|| err.to_string());
            }
        }
    }
}

/// splitmix64: a deterministic stream of pseudo-random numbers from a seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The value of record `i`: `len` bytes, the first half fixed text, the rest pseudo-random hex.
fn fill_value(i: u64, len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    let text = len / 2;
    out.extend(FILL_TEXT.iter().cycle().take(text));
    let mut state = i;
    while out.len() < len {
        state = mix(state);
        let mut r = state;
        for _ in 0..16 {
            if out.len() == len {
                break;
            }
            out.push(HEX[(r & 15) as usize]);
            r >>= 4;
        }
    }
}

async fn fill(args: &[String]) -> ExitCode {
    let [bootstrap, topics, records, partitions, size] = args else {
        return usage();
    };
    let (Ok(records), Ok(partitions), Ok(size)) = (
        records.parse::<u64>(),
        partitions.parse::<i32>(),
        size.parse::<usize>(),
    ) else {
        return usage();
    };
    if partitions < 1 || size < FILL_KEY_LEN {
        eprintln!("kb-sample fill: PARTITIONS must be >= 1 and RECORD_SIZE >= {FILL_KEY_LEN}");
        return ExitCode::from(2);
    }
    let topics: Vec<&str> = topics.split(',').filter(|t| !t.is_empty()).collect();
    let config = config_for(bootstrap);
    for t in &topics {
        create_topic(&config, t, partitions, 1, &[]).await;
    }
    let started = Instant::now();
    let mut pc = config.clone();
    pc.set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("compression.type", "none");
    let producer: ThreadedProducer<FillContext> =
        match pc.create_with_context(FillContext::default()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("kb-sample fill: creating the producer failed: {e}");
                return ExitCode::FAILURE;
            }
        };
    let value_len = size - FILL_KEY_LEN;
    let mut value = Vec::with_capacity(value_len);
    for topic in &topics {
        for i in 0..records {
            let key = format!("key-{i:012}");
            fill_value(i, value_len, &mut value);
            let seq = i.to_be_bytes();
            let headers = OwnedHeaders::new_with_capacity(2)
                .insert(Header {
                    key: "h-seq",
                    value: Some(&seq),
                })
                .insert(Header {
                    key: "h-src",
                    value: Some(b"kb-bench"),
                });
            let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic)
                .partition((i % partitions as u64) as i32)
                .key(key.as_str())
                .payload(value.as_slice())
                .headers(headers)
                .timestamp(FILL_BASE_TIMESTAMP + i as i64);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((e, back))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((e, _)) => {
                        eprintln!("kb-sample fill: producing to {topic} failed: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    }
    if let Err(e) = producer.flush(Duration::from_secs(300)) {
        eprintln!("kb-sample fill: flush failed: {e}");
        return ExitCode::FAILURE;
    }
    let failed = producer.context().failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = producer.context().first.lock().ok().and_then(|f| f.clone());
        eprintln!(
            "kb-sample fill: {failed} deliveries failed, first: {}",
            first.unwrap_or_default()
        );
        return ExitCode::FAILURE;
    }
    let secs = started.elapsed().as_secs_f64();
    let total = records * topics.len() as u64;
    println!(
        "filled {} topic(s) with {records} records of {size} bytes each ({partitions} partitions): \
         {total} records in {secs:.1} s",
        topics.len()
    );
    ExitCode::SUCCESS
}

fn count(config: &ClientConfig, topics: &[String]) -> ExitCode {
    let consumer: BaseConsumer = match config.create() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kb-sample count: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_secs(10);
    for topic in topics {
        let md = match consumer.fetch_metadata(Some(topic), timeout) {
            Ok(md) => md,
            Err(e) => {
                eprintln!("kb-sample count: metadata of {topic}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Some(t) = md.topics().first().filter(|t| t.error().is_none()) else {
            println!("{topic} missing");
            continue;
        };
        let mut n = 0i64;
        for p in t.partitions() {
            match consumer.fetch_watermarks(topic, p.id(), timeout) {
                Ok((lo, hi)) => n += hi - lo,
                Err(e) => {
                    eprintln!("kb-sample count: offsets of {topic}/{}: {e}", p.id());
                    return ExitCode::FAILURE;
                }
            }
        }
        println!("{topic} {} {n}", t.partitions().len());
    }
    ExitCode::SUCCESS
}

fn list(config: &ClientConfig, prefix: &str) -> ExitCode {
    let consumer: BaseConsumer = match config.create() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kb-sample list: {e}");
            return ExitCode::FAILURE;
        }
    };
    match consumer.fetch_metadata(None, Duration::from_secs(10)) {
        Ok(md) => {
            let mut names: Vec<&str> = md
                .topics()
                .iter()
                .map(|t| t.name())
                .filter(|n| n.starts_with(prefix))
                .collect();
            names.sort_unstable();
            for n in names {
                println!("{n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kb-sample list: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn delete(config: &ClientConfig, topics: &[String]) -> ExitCode {
    let admin: AdminClient<DefaultClientContext> = match config.create() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kb-sample delete: {e}");
            return ExitCode::FAILURE;
        }
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    let mut rc = ExitCode::SUCCESS;
    for chunk in names.chunks(100) {
        match admin.delete_topics(chunk, &opts).await {
            Ok(results) => {
                for r in results {
                    if let Err((name, code)) = r
                        && code != RDKafkaErrorCode::UnknownTopicOrPartition
                    {
                        eprintln!("kb-sample delete: {name}: {code}");
                        rc = ExitCode::FAILURE;
                    }
                }
            }
            Err(e) => {
                eprintln!("kb-sample delete: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::fill_value;

    #[test]
    fn fill_values_are_deterministic_and_sized() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for len in [0, 1, 84, 1008] {
            fill_value(42, len, &mut a);
            fill_value(42, len, &mut b);
            assert_eq!(a.len(), len);
            assert_eq!(a, b);
        }
        fill_value(43, 1008, &mut b);
        assert_ne!(a, b);
    }
}
