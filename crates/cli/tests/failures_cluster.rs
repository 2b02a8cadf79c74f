//! A broker of the three-broker test cluster (`scripts/testenv up kafka-cluster`) killed with
//! kill -9 and restarted while a backup or a restore runs: the partition leader goes away,
//! leadership moves, and the result is still exact: same records, same order, per partition,
//! nothing lost and nothing duplicated. With every broker killed, a backup fails in bounded time
//! and the next run resumes it.
//!
//! Killing a broker disturbs everything using the cluster, so these tests run one at a time
//! (`CLUSTER`), and only tests in this binary use the cluster. Every killed broker is restarted
//! (also when a test fails: [`KilledBroker`] restarts it on drop), and each test starts and ends
//! with every replica of the cluster in sync.

mod common;
mod reliability;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kafka_backup_api::kafka::{KafkaClusterSpec, SecurityProtocol};
use kafka_backup_testkit::kafka::{TestRecord, config_for, create_topic, produce};
use kafka_backup_testkit::poll::wait_until;
use kafka_backup_testkit::{TestEnv, env::repo_root, unique_name};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use reliability::*;

/// One test at a time on the cluster.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bootstrap() -> String {
    TestEnv::get().var("KAFKA_CLUSTER_BOOTSTRAP").to_string()
}

fn cluster_config() -> ClientConfig {
    config_for(&bootstrap())
}

fn cluster_spec() -> KafkaClusterSpec {
    KafkaClusterSpec {
        bootstrap_servers: bootstrap().split(',').map(str::to_string).collect(),
        security_protocol: SecurityProtocol::Plaintext,
        tls_secret: None,
        sasl_secret: None,
        oauthbearer: None,
        kerberos: None,
    }
}

/// `scripts/testenv-kafka-node ARGS`.
fn node_script(args: &[&str]) -> std::process::Output {
    Command::new(repo_root().join("scripts/testenv-kafka-node"))
        .args(args)
        .output()
        .expect("run scripts/testenv-kafka-node")
}

/// `scripts/testenv-kafka-node status`: one line for the cluster.
fn cluster_status() -> String {
    String::from_utf8_lossy(&node_script(&["status"]).stdout).into_owned()
}

fn start_node(n: u8) {
    let out = node_script(&["start", &n.to_string()]);
    assert!(
        out.status.success(),
        "restarting kafka-cluster node {n} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A broker killed with kill -9; restarted by [`KilledBroker::restart`] or, at the latest, on drop.
struct KilledBroker {
    node: u8,
    restarted: bool,
}

impl KilledBroker {
    fn kill(node: u8) -> KilledBroker {
        let out = node_script(&["kill", &node.to_string()]);
        let guard = KilledBroker {
            node,
            restarted: false,
        };
        assert!(
            out.status.success(),
            "kill -9 of node {node} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        guard
    }

    fn restart(&mut self) {
        if !self.restarted {
            self.restarted = true;
            start_node(self.node);
        }
    }
}

/// Every broker of the cluster, killed with kill -9. They restart together (a broker alone has
/// no controller quorum and does not come up), also when a test fails.
struct KilledCluster(Vec<KilledBroker>);

impl KilledCluster {
    fn kill() -> KilledCluster {
        KilledCluster((1..=3).map(KilledBroker::kill).collect())
    }

    fn restart(&mut self) {
        std::thread::scope(|s| {
            for b in &mut self.0 {
                s.spawn(|| b.restart());
            }
        });
    }
}

impl Drop for KilledCluster {
    fn drop(&mut self) {
        let brokers = std::mem::take(&mut self.0);
        std::thread::scope(|s| {
            for b in brokers {
                s.spawn(move || drop(b));
            }
        });
    }
}

impl Drop for KilledBroker {
    fn drop(&mut self) {
        if !self.restarted {
            self.restarted = true;
            let out = node_script(&["start", &self.node.to_string()]);
            if !out.status.success() {
                eprintln!(
                    "restarting kafka-cluster node {} failed:\n{}",
                    self.node,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// Every partition of every topic of the cluster has a leader and all its replicas in sync.
fn all_in_sync(consumer: &BaseConsumer) -> Result<(), String> {
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    if md.brokers().len() != 3 {
        return Err(format!("{} brokers", md.brokers().len()));
    }
    for t in md.topics() {
        for p in t.partitions() {
            if p.leader() < 0 || p.isr().len() != p.replicas().len() {
                return Err(format!(
                    "{}/{}: leader {}, replicas {:?}, in sync {:?}",
                    t.name(),
                    p.id(),
                    p.leader(),
                    p.replicas(),
                    p.isr()
                ));
            }
        }
    }
    Ok(())
}

/// Waits until the three brokers run and every replica is in sync.
fn cluster_healthy() {
    let status = cluster_status();
    assert!(
        !status.contains("kafka-cluster: stopped"),
        "the three-broker cluster is not running: start it with `scripts/testenv up kafka-cluster`"
    );
    // A node left stopped by an interrupted earlier run is started again.
    if let Some(stopped) = status.split("stopped:").nth(1) {
        for n in 1..=3u8 {
            if stopped.contains(&format!("node {n}")) {
                start_node(n);
            }
        }
    }
    let consumer: BaseConsumer = cluster_config().create().expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match all_in_sync(&consumer) {
            Ok(()) => return,
            Err(e) => assert!(
                Instant::now() < deadline,
                "cluster replicas not in sync within 120 s: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The node id (1..=3, the broker on port 29091+N) leading `topic`/`partition`.
fn leader_of(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<u8> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let t = md.topics().first()?;
    let p = t.partitions().iter().find(|p| p.id() == partition)?;
    u8::try_from(p.leader())
        .ok()
        .filter(|l| (1..=3).contains(l))
}

/// Kills the leader of `topic`/0 with kill -9, restarts it a few seconds later and checks that
/// leadership of the partition moved to another broker. Returns the killed node.
fn kill_leader_and_restart(topic: &str) -> u8 {
    let consumer: BaseConsumer = cluster_config().create().expect("consumer");
    let leader = leader_of(&consumer, topic, 0).expect("partition 0 has a leader");
    let killed_at = Instant::now();
    let mut broker = KilledBroker::kill(leader);
    eprintln!("killed node {leader}, the leader of {topic}/0");
    let moved = |c: &BaseConsumer| leader_of(c, topic, 0).is_some_and(|l| l != leader);
    let mut moved_early = false;
    while killed_at.elapsed() < Duration::from_secs(3) && !moved_early {
        moved_early = moved(&consumer);
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.restart();
    eprintln!("node {leader} restarted after {:?}", killed_at.elapsed());
    // The controller moves leadership away from a dead broker after its session times out, or
    // at once when the broker registers again after its restart.
    if !moved_early {
        wait_until(
            "leadership of the partition moves to another broker",
            Duration::from_secs(60),
            || moved(&consumer),
        );
    }
    eprintln!(
        "leadership of {topic}/0 moved away from node {leader} ({:?} after the kill)",
        killed_at.elapsed()
    );
    leader
}

/// `n` records over `partitions`, each ~`value_len` bytes, with headers (one with a null value),
/// null keys and tombstones now and then, and explicit timestamps.
fn records(n: usize, partitions: i32, value_len: usize) -> Vec<TestRecord> {
    (0..n)
        .map(|i| TestRecord {
            partition: (i as i32) % partitions,
            key: (i % 10 != 9).then(|| format!("key-{i}").into_bytes()),
            value: (i % 13 != 12).then(|| {
                let mut v = format!("value-{i}-").into_bytes();
                v.resize(value_len, b'a' + (i % 26) as u8);
                v
            }),
            headers: vec![
                ("seq".to_string(), Some(i.to_string().into_bytes())),
                ("nullable".to_string(), None),
            ],
            timestamp: Some(1_700_000_000_000 + i as i64),
        })
        .collect()
}

async fn delete_topics(topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = cluster_config().create().expect("admin");
    let _ = admin.delete_topics(topics, &AdminOptions::new()).await;
}

/// A new topic on the cluster (`partitions` partitions, three replicas) holding `n` [`records`]
/// of about `value_len` bytes; its name starts with `prefix`.
async fn topic_with_records(
    prefix: &str,
    partitions: i32,
    n: usize,
    value_len: usize,
) -> (String, Vec<TestRecord>) {
    let topic = unique_name(prefix);
    create_topic(&cluster_config(), &topic, partitions, 3, &[]).await;
    let produced = records(n, partitions, value_len);
    produce(&cluster_config(), &topic, &produced);
    (topic, produced)
}

/// The backup `id` holds exactly `produced` for each of `topic`'s `partitions`: the same records
/// in the same order, at offsets 0, 1, 2, ...
async fn assert_backup_exact(
    backup: &SlowBackup,
    id: &str,
    topic: &str,
    produced: &[TestRecord],
    partitions: i32,
) {
    let (_, stored) = read_backup(&backup.target.repository(), &backup.name, id).await;
    for p in 0..partitions {
        let got = &stored[&(topic.to_string(), p)];
        let want = of_partition(produced, p);
        assert_same(got, &want, &format!("{topic}/{p} in the backup"));
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (0..want.len() as i64).collect::<Vec<_>>(),
            "{topic}/{p}: offsets"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_survives_the_partition_leader_killed_and_restarted() {
    let _cluster = CLUSTER.lock().await;
    tokio::task::block_in_place(cluster_healthy);
    let started = Instant::now();
    let dir = TempDir::new("kb-clkill");
    let (topic, produced) = topic_with_records("cl-backup", 6, 120_000, 100).await;
    // Slow enough that the run is still reading when the leader dies and when it comes back.
    let slow = SlowBackup::new(
        dir.path(),
        &unique_name("clkill"),
        &cluster_spec(),
        &[&topic],
        4000,
    );
    let (file, target) = (&slow.file, &slow.target);

    let mut run = Running::start(dir.path(), &["backup", "-o", "json"], file);
    // Kill once the run has stored its first segment.
    wait_for_checkpointed_segment(&target.repository(), &slow.name, &mut run).await;
    let killed = tokio::task::block_in_place(|| kill_leader_and_restart(&topic));
    assert!(
        run.running(),
        "the backup ended before node {killed} was back: the kill did not happen mid-run"
    );

    let first = run.wait(Duration::from_secs(180));
    let summary = if first.status.success() {
        first.json()
    } else {
        // A clean failure (named, exit 1) is allowed; running it again resumes to completion.
        assert_eq!(first.status.code(), Some(1), "{}", first.stderr);
        assert!(first.stderr.contains("error:"), "{}", first.stderr);
        eprintln!("first run failed cleanly; resuming:\n{}", first.stderr);
        let s = json_of(&backup(file));
        assert_eq!(s["resumed"], true, "{s}");
        s
    };
    eprintln!(
        "backup took {:?}; log:\n{}",
        first.took,
        first.stderr.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(summary["records"], produced.len() as u64, "{summary}");
    let id = summary["backupId"].as_str().expect("id").to_string();

    // The stored backup is exact, then a restore into the cluster reproduces the topic.
    assert_backup_exact(&slow, &id, &topic, &produced, 6).await;
    tokio::task::block_in_place(cluster_healthy);
    let restored = format!("{topic}-r");
    let mut r = restore_manifest_to(&unique_name("clkill-r"), &id, target, &cluster_spec());
    r["spec"]["topicMapping"] = serde_json::json!({&topic: &restored});
    r["spec"]["createTopics"] = true.into();
    r["spec"]["defaultReplicationFactor"] = 3.into();
    let out = restore(&write_manifest(dir.path(), &r));
    assert_ok(&out, "restore");
    tokio::task::block_in_place(|| assert_topic_holds(&cluster_config(), &restored, &produced, 6));
    delete_topics(&[&topic, &restored]).await;
    tokio::task::block_in_place(cluster_healthy);
    eprintln!("test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_survives_the_partition_leader_killed_and_restarted() {
    let _cluster = CLUSTER.lock().await;
    tokio::task::block_in_place(cluster_healthy);
    let started = Instant::now();
    let dir = TempDir::new("kb-clrs");
    let (topic, produced) = topic_with_records("cl-restore", 4, 400_000, 200).await;
    let name = unique_name("clrs");
    let target = Target::Filesystem(dir.path().join("repo"));
    let s = json_of(&backup(&write_manifest(
        dir.path(),
        &backup_manifest(&name, &cluster_spec(), &[&topic], &target),
    )));
    let id = s["backupId"].as_str().expect("id").to_string();
    eprintln!(
        "source produced and backed up after {:?}",
        started.elapsed()
    );

    let restored = format!("{topic}-r");
    let mut r = restore_manifest_to(&unique_name("clrs-r"), &id, &target, &cluster_spec());
    r["spec"]["topicMapping"] = serde_json::json!({&topic: &restored});
    r["spec"]["createTopics"] = true.into();
    r["spec"]["defaultReplicationFactor"] = 3.into();
    let file = write_manifest(dir.path(), &r);
    let mut run = Running::start(dir.path(), &["restore", "-o", "json"], &file);
    // Kill once records are landing in the target.
    let consumer: BaseConsumer = cluster_config().create().expect("consumer");
    tokio::task::block_in_place(|| {
        wait_until("restored records land", Duration::from_secs(60), || {
            assert!(run.running(), "the restore ended before it wrote");
            consumer
                .fetch_watermarks(&restored, 0, Duration::from_secs(2))
                .is_ok_and(|(_, high)| high > 0)
        })
    });
    let killed = tokio::task::block_in_place(|| kill_leader_and_restart(&restored));
    let mid_run = run.running();
    let first = run.wait(Duration::from_secs(180));
    eprintln!(
        "restore took {:?} (still running when node {killed} was back: {mid_run}); log:\n{}",
        first.took,
        first.stderr.lines().take(40).collect::<Vec<_>>().join("\n")
    );
    if first.status.success() {
        let s = first.json();
        assert_eq!(s["restoredRecords"], produced.len() as u64, "{s}");
    } else {
        // A clean failure is allowed; the same restore again continues exactly where it stopped.
        assert_eq!(first.status.code(), Some(1), "{}", first.stderr);
        tokio::task::block_in_place(cluster_healthy);
        let out = restore(&file);
        assert_ok(&out, "resumed restore");
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
        assert_eq!(s["resumed"], true, "{s}");
    }
    tokio::task::block_in_place(|| assert_topic_holds(&cluster_config(), &restored, &produced, 4));
    delete_topics(&[&topic, &restored]).await;
    tokio::task::block_in_place(cluster_healthy);
    eprintln!("test took {:?}", started.elapsed());
}

/// Every broker of the cluster killed while a backup reads: the run retries a bounded number of
/// times, then fails with an error that names the partition it was reading. What it stored stays,
/// and a run after the brokers are back resumes it to an exact backup.
///
/// The run goes through the engine, not the binary, to set a small number of consecutive Kafka
/// errors; the binary allows 30, with growing pauses between them, which takes minutes.
#[tokio::test(flavor = "multi_thread")]
async fn backup_fails_in_bounded_time_when_every_broker_dies_and_resumes_after() {
    use kafka_backup_engine::backup::{BackupOptions, Progress};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let _cluster = CLUSTER.lock().await;
    tokio::task::block_in_place(cluster_healthy);
    let started = Instant::now();
    let dir = TempDir::new("kb-cldown");
    let (topic, produced) = topic_with_records("cl-down", 2, 60_000, 100).await;
    // Slow enough that the run is still reading when the brokers die.
    let slow = SlowBackup::new(
        dir.path(),
        &unique_name("cldown"),
        &cluster_spec(),
        &[&topic],
        4000,
    );
    let options = BackupOptions {
        max_kafka_errors: 4,
        ..BackupOptions::default()
    };
    let progress = Arc::new(Progress::default());

    // Kill every broker once the run has read some records; restart them after the run ends.
    let watched = progress.clone();
    let killer = std::thread::spawn(move || {
        kafka_backup_testkit::poll::wait_until(
            "the backup to read 8,000 records",
            Duration::from_secs(60),
            || watched.records.load(Ordering::Relaxed) >= 8_000,
        );
        (Instant::now(), KilledCluster::kill())
    });
    let result = tokio::time::timeout(
        Duration::from_secs(180),
        engine_backup(&slow.manifest, &options, progress.clone()),
    )
    .await
    .expect("the backup ended within 180 s of losing every broker");
    let (killed_at, mut killed) = tokio::task::block_in_place(|| killer.join().expect("killer"));
    let failed_after = killed_at.elapsed();
    let read = progress.records.load(Ordering::Relaxed);
    let error = match result {
        Ok(s) => panic!("the backup succeeded without brokers: {s:?}"),
        Err(e) => e.to_string(),
    };
    eprintln!("failed {failed_after:?} after the kill, having read {read} records: {error}");
    assert!(
        read < produced.len() as u64,
        "the run read everything before the kill ({read} records)"
    );
    assert!(
        error.contains(&format!("reading {topic}/")) && error.contains("4 consecutive errors"),
        "the error names the partition and the errors: {error}"
    );
    assert!(
        failed_after < Duration::from_secs(120),
        "failing took {failed_after:?}"
    );

    tokio::task::block_in_place(|| {
        killed.restart();
        cluster_healthy();
    });
    // The next run resumes what the failed one stored, and the result is exact.
    let s = json_of(&backup(&slow.file));
    assert_eq!(s["resumed"], true, "{s}");
    assert_eq!(s["records"], produced.len() as u64, "{s}");
    let id = s["backupId"].as_str().expect("id");
    assert_backup_exact(&slow, id, &topic, &produced, 2).await;
    delete_topics(&[&topic]).await;
    tokio::task::block_in_place(cluster_healthy);
    eprintln!("test took {:?}", started.elapsed());
}
