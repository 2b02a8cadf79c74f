//! Shared by the CLI's end-to-end tests: manifests for the genuine test services, running the
//! `kafka-backup` binary, and reading a backup back through the documented format.

#![allow(dead_code)]

pub mod operator;
pub mod private_kafka;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kafka_backup_api::kafka::KafkaClusterSpec;
use kafka_backup_engine::limits::{Backoff, CircuitBreaker};
use kafka_backup_engine::repo::Repository;
use kafka_backup_engine::secrets::SecretStore;
use kafka_backup_engine::storage::{self, StorageOptions};
use kafka_backup_format::{Manifest, Record, decode_segment};
// Not every test binary compares records.
#[allow(unused_imports)]
pub use kafka_backup_testkit::kafka::assert_same;
use kafka_backup_testkit::kafka::{Listener, TestRecord};
use kafka_backup_testkit::{TestEnv, unique_name};

/// A scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a test backs up to.
#[derive(Clone, Debug)]
pub enum Target {
    Filesystem(PathBuf),
    S3 {
        prefix: String,
    },
    Azure {
        prefix: String,
    },
    /// `spec.storage` given whole: a server of the test's own, another endpoint.
    Storage(serde_json::Value),
}

impl Target {
    /// `spec.storage` for this target, as YAML-ready JSON.
    pub fn storage_json(&self) -> serde_json::Value {
        let env = TestEnv::get();
        match self {
            Target::Filesystem(dir) => serde_json::json!({
                "storageType": "filesystem",
                "filesystem": {"path": dir.to_string_lossy()}
            }),
            Target::S3 { prefix } => serde_json::json!({
                "storageType": "s3",
                "s3": {
                    "bucket": env.var("S3_BUCKET"),
                    "region": env.var("S3_REGION"),
                    "prefix": prefix,
                    "endpoint": env.var("S3_ENDPOINT"),
                    "credentialsSecret": {"name": "s3-credentials"}
                }
            }),
            Target::Azure { prefix } => serde_json::json!({
                "storageType": "azure",
                "azure": {
                    "accountName": env.var("AZURE_STORAGE_ACCOUNT"),
                    "container": env.var("AZURE_CONTAINER"),
                    "prefix": prefix,
                    "endpoint": format!("{}/{}", env.var("AZURITE_BLOB_STORAGE_URL"), env.var("AZURE_STORAGE_ACCOUNT")),
                    "credentialsSecret": {"name": "azure-storage"}
                }
            }),
            Target::Storage(storage) => storage.clone(),
        }
    }

    /// The repository, opened the way the engine opens it.
    pub fn repository(&self) -> Repository {
        let spec = serde_json::from_value(self.storage_json()).expect("storage spec");
        let storage = storage::open(
            "spec.storage",
            &spec,
            &SecretStore::new(TestEnv::get().secrets_dir()),
            &StorageOptions::default(),
        )
        .expect("open storage");
        Repository::new(
            storage,
            std::sync::Arc::new(CircuitBreaker::new("storage", None)),
            Backoff::default(),
        )
    }
}

/// A KafkaBackup manifest as JSON; tests adjust `spec` before writing it.
pub fn backup_manifest(
    name: &str,
    cluster: &KafkaClusterSpec,
    topics: &[&str],
    target: &Target,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1",
        "kind": "KafkaBackup",
        "metadata": {"name": name},
        "spec": {
            "kafkaCluster": serde_json::to_value(cluster).expect("cluster spec"),
            "topics": topics,
            "storage": target.storage_json(),
            "checkpointIntervalSecs": 1
        }
    })
}

/// A KafkaRestore manifest as JSON: backup `backup_id` in `target`, restored into the test broker
/// (plaintext listener) under the same topic names; tests adjust `spec` before writing it.
pub fn restore_manifest(name: &str, backup_id: &str, target: &Target) -> serde_json::Value {
    restore_manifest_to(name, backup_id, target, &plaintext())
}

/// Like [`restore_manifest`], into `cluster`.
pub fn restore_manifest_to(
    name: &str,
    backup_id: &str,
    target: &Target,
    cluster: &KafkaClusterSpec,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1",
        "kind": "KafkaRestore",
        "metadata": {"name": name},
        "spec": {
            "backupId": backup_id,
            "targetCluster": serde_json::to_value(cluster).expect("cluster spec"),
            "storage": target.storage_json(),
        }
    })
}

/// Like [`restore_manifest`], restoring topic `from` as `to`, which the restore creates: tests
/// that back up and restore on one broker never write into their source topic.
pub fn restore_manifest_mapped(
    name: &str,
    backup_id: &str,
    target: &Target,
    from: &str,
    to: &str,
) -> serde_json::Value {
    let mut m = restore_manifest(name, backup_id, target);
    m["spec"]["topicMapping"] = serde_json::json!({ from: to });
    m["spec"]["createTopics"] = true.into();
    m
}

/// Records that the unfinished run of backup `name` lists as stored in its checkpoint (0 before
/// it wrote one): a killed run resumes from exactly these, so kill tests measure a run's progress
/// by them.
pub async fn checkpointed_records(repo: &Repository, name: &str) -> u64 {
    let ids = repo.checkpoint_ids(name).await.expect("checkpoints");
    let Some(id) = ids.first() else { return 0 };
    // A checkpoint being replaced may be unreadable for a moment: count it as no progress.
    repo.checkpoint(name, id).await.map_or(0, |cp| {
        cp.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.records)
            .sum()
    })
}

/// A backup of `topics` into a directory repository under `dir`, slowed to `records_per_second`
/// so that a run is still reading when the test acts on it (kills it, a broker, the topic).
pub struct SlowBackup {
    pub name: String,
    pub target: Target,
    /// The manifest, as written to `file`.
    pub manifest: serde_json::Value,
    pub file: PathBuf,
}

impl SlowBackup {
    pub fn new(
        dir: &Path,
        name: &str,
        cluster: &KafkaClusterSpec,
        topics: &[&str],
        records_per_second: u64,
    ) -> SlowBackup {
        let target = Target::Filesystem(dir.join("repo"));
        let mut manifest = backup_manifest(name, cluster, topics, &target);
        manifest["spec"]["rateLimit"] =
            serde_json::json!({ "recordsPerSecond": records_per_second });
        let file = write_manifest(dir, &manifest);
        SlowBackup {
            name: name.to_string(),
            target,
            manifest,
            file,
        }
    }
}

/// Runs the backup `manifest` describes through the engine rather than the binary, for what the
/// binary does not expose: its options, and its progress while it runs. Secrets come from the
/// test services' secrets directory, as the binary's do (see [`cli`]).
pub async fn engine_backup(
    manifest: &serde_json::Value,
    options: &kafka_backup_engine::backup::BackupOptions,
    progress: std::sync::Arc<kafka_backup_engine::backup::Progress>,
) -> Result<kafka_backup_engine::backup::BackupSummary, kafka_backup_engine::Error> {
    let kb = serde_json::from_value(manifest.clone()).expect("a KafkaBackup");
    let secrets = SecretStore::new(TestEnv::get().secrets_dir());
    kafka_backup_engine::backup::run(&kb, &secrets, options, progress).await
}

/// Writes a manifest (as YAML) into `dir` and returns its path.
pub fn write_manifest(dir: &Path, manifest: &serde_json::Value) -> PathBuf {
    let path = dir.join(format!("{}.yaml", unique_name("manifest")));
    let yaml = serde_yaml_ng::to_string(manifest).expect("manifest to YAML");
    std::fs::write(&path, yaml).expect("write manifest");
    path
}

/// The `kafka-backup` binary with the test Secrets, trusting the system's roots and the CA of the
/// test S3 server that speaks HTTPS.
pub fn cli() -> Command {
    let env = TestEnv::get();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kafka-backup"));
    c.arg("--log-format").arg("text");
    c.env("KAFKA_BACKUP_SECRETS_DIR", env.secrets_dir());
    c.env("SSL_CERT_FILE", env.path("S3_TLS_TRUST_FILE"));
    c.env("KAFKA_BACKUP_LOG", "info");
    c
}

/// Runs `kafka-backup backup -f manifest -o json`.
pub fn backup(manifest: &Path) -> Output {
    cli()
        .args(["backup", "-o", "json", "-f"])
        .arg(manifest)
        .output()
        .expect("run kafka-backup")
}

/// Output of a successful run as JSON; panics with its stderr otherwise.
pub fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "kafka-backup failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Every record of backup `id` of `name`, per (topic, partition), decoded from the stored segments
/// after checking each segment's size and SHA-256 against the manifest.
pub async fn read_backup(
    repo: &Repository,
    name: &str,
    id: &str,
) -> (Manifest, BTreeMap<(String, i32), Vec<Record>>) {
    use sha2::Digest;
    let manifest = repo.manifest(name, id).await.expect("manifest");
    let mut out = BTreeMap::new();
    for t in &manifest.topics {
        for p in &t.partitions {
            let mut records = Vec::new();
            for s in &p.segments {
                let bytes = repo.get(&s.path).await.expect("segment");
                assert_eq!(bytes.len() as u64, s.size, "{}: size", s.path);
                assert_eq!(
                    hex(&sha2::Sha256::digest(&bytes)),
                    s.sha256,
                    "{}: sha256",
                    s.path
                );
                let decoded = decode_segment(&bytes).expect("segment decodes");
                assert_eq!(decoded.len() as u64, s.records, "{}: records", s.path);
                records.extend(decoded);
            }
            assert_eq!(
                records.len() as u64,
                p.records,
                "{}/{}: records",
                t.name,
                p.partition
            );
            assert!(
                records.windows(2).all(|w| w[0].offset < w[1].offset),
                "{}/{}: offsets increase across segments",
                t.name,
                p.partition
            );
            out.insert((t.name.clone(), p.partition), records);
        }
    }
    (manifest, out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The records of `all` produced to `partition`, in order.
pub fn of_partition(all: &[TestRecord], partition: i32) -> Vec<TestRecord> {
    all.iter()
        .filter(|r| r.partition == partition)
        .cloned()
        .collect()
}

/// The plaintext listener's cluster spec.
pub fn plaintext() -> KafkaClusterSpec {
    Listener::Plaintext.cluster_spec()
}

/// Creates `topic` as a compacted topic the test broker's cleaner works on within seconds, and
/// writes 1000 records: five batches of 200 over ten keys (`k0`..`k9`, values `v<batch>-<i>`),
/// pausing so segments roll and become cleanable.
pub async fn compacted_topic_with_history(topic: &str) {
    use kafka_backup_testkit::kafka::{create_topic, plaintext_config, produce};
    create_topic(
        &plaintext_config(),
        topic,
        1,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "100"),
        ],
    )
    .await;
    for batch in 0..5 {
        let recs: Vec<TestRecord> = (0..200)
            .map(|i| TestRecord {
                partition: 0,
                key: Some(format!("k{}", i % 10).into_bytes()),
                value: Some(format!("v{batch}-{i}").into_bytes()),
                headers: vec![],
                timestamp: None,
            })
            .collect();
        produce(&plaintext_config(), topic, &recs);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// A member of `group` consuming `topic`, returned once the group has assigned it partitions:
/// the group is active (has members) until it is dropped.
pub fn active_member(group: &str, topic: &str) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut cfg = kafka_backup_testkit::kafka::plaintext_config();
    cfg.set("group.id", group)
        .set("session.timeout.ms", "10000");
    let member: BaseConsumer = cfg.create().expect("consumer");
    member.subscribe(&[topic]).expect("subscribe");
    // Polling is what makes the member join.
    kafka_backup_testkit::poll::wait_until(
        "the member to join its group",
        std::time::Duration::from_secs(30),
        || {
            let _ = member.poll(std::time::Duration::from_millis(100));
            member.assignment().map(|a| a.count()).unwrap_or(0) > 0
        },
    );
    member
}

/// Commits `offsets` for `group` on `topic` (partition, offset), as a consumer of that group would.
pub fn commit(group: &str, topic: &str, offsets: &[(i32, i64)]) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let mut cfg = kafka_backup_testkit::kafka::plaintext_config();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = cfg.create().expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, rdkafka::Offset::Offset(*o))
            .expect("tpl");
    }
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

/// `group`'s committed (partition, offset) on the first `partitions` partitions of `topic`.
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<(i32, i64)> {
    let parts: Vec<(String, i32)> = (0..partitions).map(|p| (topic.to_string(), p)).collect();
    let mut v: Vec<(i32, i64)> = kafka_backup_engine::kafka::committed_offsets(
        &kafka_backup_testkit::kafka::plaintext_config(),
        group,
        &parts,
        std::time::Duration::from_secs(10),
    )
    .expect("committed")
    .into_iter()
    .map(|c| (c.partition, c.offset))
    .collect();
    v.sort();
    v
}

/// `n` pseudo-random numbers from `min` to `max` for kill tests (how much progress to let happen
/// before a kill), different every run (seeded from the clock), printed with `what`
/// so a failing sequence can be read from the test output.
pub fn kill_points(what: &str, n: usize, min: u64, max: u64) -> Vec<u64> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let points: Vec<u64> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            min + x % (max - min + 1)
        })
        .collect();
    eprintln!("{what}: {points:?}");
    points
}

/// Every example manifest of the CRD reference (docs/reference, copies of the spec), with where
/// it was found.
pub fn spec_examples() -> Vec<(String, serde_json::Value)> {
    let spec_dir = kafka_backup_testkit::env::repo_root().join("docs/reference");
    let mut out = Vec::new();
    for file in ["kafkabackup-crd.md", "kafkarestore-crd.md"] {
        let path = spec_dir.join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        for section in text.split("\n## ").skip(1) {
            let heading = section.lines().next().unwrap_or_default().trim();
            if heading == "Overview" {
                continue;
            }
            for (i, block) in section.split("```yaml").skip(1).enumerate() {
                let yaml = block.split("```").next().unwrap_or_default();
                let Ok(value) = serde_yaml_ng::from_str::<serde_json::Value>(yaml) else {
                    continue;
                };
                if value["apiVersion"] == "kafka.oso.sh/v1alpha1"
                    && value["metadata"]["name"].is_string()
                {
                    out.push((format!("{file}, {heading}, block {i}"), value));
                }
            }
        }
    }
    out
}
