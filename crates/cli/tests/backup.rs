//! `kafka-backup backup`, `list` and `describe` end to end against the genuine test broker and
//! stores. Every test checks what was stored by decoding the segments through the documented
//! format, record for record.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_backup_format::TimestampType;
use kafka_backup_testkit::kafka::{
    Listener, TestRecord, create_topic, plaintext_config, produce, sample_records,
};
use kafka_backup_testkit::poll::{wait_for, wait_until};
use kafka_backup_testkit::unique_name;

/// Records with every shape a backup must keep: null keys, tombstones, empty keys and values,
/// headers with null values and duplicate names, explicit old timestamps.
fn tricky_records(n: usize, partitions: i32) -> Vec<TestRecord> {
    let mut recs = sample_records(n, partitions);
    for (i, r) in recs.iter_mut().enumerate() {
        match i % 7 {
            0 => r.key = Some(Vec::new()),
            1 => r.value = Some(Vec::new()),
            2 => r.headers.push(("trace-id".into(), Some(b"dup".to_vec()))),
            3 => r.headers.clear(),
            4 => r.timestamp = Some(86_400_000 + i as i64),
            _ => {}
        }
    }
    recs
}

#[tokio::test]
async fn backs_up_every_record_field_to_a_directory() {
    let dir = TempDir::new("kb-fs");
    let topic = unique_name("bk-fields");
    create_topic(
        &plaintext_config(),
        &topic,
        3,
        1,
        // A retention longer than the records' age (they are stamped decades ago on purpose).
        &[("retention.ms", "3153600000000")],
    )
    .await;
    let records = tricky_records(3000, 3);
    produce(&plaintext_config(), &topic, &records);

    let name = unique_name("fields");
    let target = Target::Filesystem(dir.path().join("repo"));
    let m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    let file = write_manifest(dir.path(), &m);
    let summary = json_of(&backup(&file));
    assert_eq!(summary["records"], 3000);
    assert_eq!(summary["newRecords"], 3000);
    let id = summary["backupId"].as_str().expect("backupId").to_string();
    assert!(
        id.starts_with(&format!("{name}-")) && id.len() == name.len() + 16,
        "{id}"
    );

    let (manifest, stored) = read_backup(&target.repository(), &name, &id).await;
    let t = &manifest.topics[0];
    assert_eq!((t.name.as_str(), t.partition_count), (topic.as_str(), 3));
    assert_eq!(
        t.configs.get("retention.ms").map(String::as_str),
        Some("3153600000000")
    );
    for p in 0..3 {
        let want = of_partition(&records, p);
        let got = &stored[&(topic.clone(), p)];
        assert_same(got, &want, &format!("{topic}/{p}"));
        assert!(
            got.iter()
                .all(|r| r.timestamp_type == TimestampType::CreateTime)
        );
        let pe = &t.partitions[p as usize];
        assert_eq!((pe.start_offset, pe.end_offset), (0, want.len() as i64));
        assert_eq!(got.first().map(|r| r.offset), Some(0));
    }

    // list and describe see it.
    let out = cli()
        .args(["list", "-o", "json", "-f"])
        .arg(&file)
        .output()
        .expect("list");
    let list = json_of(&out);
    let ids: Vec<&str> = list["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .filter_map(|b| b["backupId"].as_str())
        .collect();
    assert!(ids.contains(&id.as_str()), "{list}");
    let out = cli()
        .args(["describe", &id, "-f"])
        .arg(&file)
        .output()
        .expect("describe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&topic) && text.contains("0..1000"), "{text}");
}

#[tokio::test]
async fn second_run_uploads_only_new_data_and_each_backup_restores_alone() {
    let dir = TempDir::new("kb-incr");
    let topic = unique_name("bk-incr");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let first = sample_records(2000, 2);
    produce(&plaintext_config(), &topic, &first);
    let name = unique_name("incr");
    let target = Target::Filesystem(dir.path().join("repo"));
    let file = write_manifest(
        dir.path(),
        &backup_manifest(&name, &plaintext(), &[&topic], &target),
    );
    let s1 = json_of(&backup(&file));
    let id1 = s1["backupId"].as_str().expect("id").to_string();
    let uploaded1 = s1["uploadedBytes"].as_u64().expect("uploaded");

    // No new data: nothing uploaded, every segment reused.
    let s2 = json_of(&backup(&file));
    assert_eq!(s2["uploadedBytes"], 0, "{s2}");
    assert_eq!(s2["newRecords"], 0);
    assert_eq!(s2["records"], 2000);
    assert_eq!(s2["previousBackupId"], id1.as_str());

    let mut second: Vec<TestRecord> = sample_records(500, 2);
    for r in &mut second {
        r.value = Some(b"second batch".to_vec());
    }
    produce(&plaintext_config(), &topic, &second);
    let s3 = json_of(&backup(&file));
    let id3 = s3["backupId"].as_str().expect("id").to_string();
    assert_eq!(s3["newRecords"], 500);
    assert_eq!(s3["records"], 2500);
    let uploaded3 = s3["uploadedBytes"].as_u64().expect("uploaded");
    assert!(
        uploaded3 > 0 && uploaded3 < uploaded1,
        "second upload {uploaded3} vs first {uploaded1}"
    );
    assert!(s3["reusedSegments"].as_u64().expect("reused") >= 2);

    // Each backup holds exactly the data up to its own point.
    let repo = target.repository();
    let (_, b1) = read_backup(&repo, &name, &id1).await;
    let (m3, b3) = read_backup(&repo, &name, &id3).await;
    for p in 0..2 {
        assert_same(
            &b1[&(topic.clone(), p)],
            &of_partition(&first, p),
            "first backup",
        );
        let mut all = of_partition(&first, p);
        all.extend(of_partition(&second, p));
        assert_same(&b3[&(topic.clone(), p)], &all, "third backup");
    }
    assert_eq!(m3.totals.uploaded_bytes, uploaded3);
}

#[tokio::test]
async fn retention_keeps_the_newest_and_collects_unreferenced_segments() {
    let dir = TempDir::new("kb-ret");
    let topic = unique_name("bk-ret");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    let name = unique_name("ret");
    let target = Target::Filesystem(dir.path().join("repo"));
    let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    m["spec"]["retention"] = serde_json::json!({"backups": 2});
    let file = write_manifest(dir.path(), &m);
    let mut ids = Vec::new();
    for round in 0..4 {
        produce(&plaintext_config(), &topic, &sample_records(100 + round, 1));
        let s = json_of(&backup(&file));
        ids.push(s["backupId"].as_str().expect("id").to_string());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let repo = target.repository();
    assert_eq!(
        repo.backup_ids(&name).await.expect("ids"),
        ids[2..].to_vec()
    );
    // An orphan segment (as a killed run leaves) is collected once no run is unfinished.
    let orphan = format!("{name}/segments/{topic}/0/00000000000000999999-00000000deadbeef.kbseg");
    repo.put(&orphan, bytes::Bytes::from_static(b"orphan"), true)
        .await
        .expect("put orphan");
    produce(&plaintext_config(), &topic, &sample_records(10, 1));
    let s = json_of(&backup(&file));
    let retention = &s["retention"];
    assert_eq!(
        retention["deletedBackups"].as_array().map(Vec::len),
        Some(1),
        "{s}"
    );
    assert!(retention["deletedSegments"].as_u64().expect("deleted") >= 1);
    let segments: Vec<String> = repo
        .segments(&name)
        .await
        .expect("segments")
        .iter()
        .map(|m| m.location.to_string())
        .collect();
    assert!(!segments.contains(&orphan), "orphan not collected");
    // Both kept backups still read completely (their shared segments were kept).
    for id in repo.backup_ids(&name).await.expect("ids") {
        let (manifest, stored) = read_backup(&repo, &name, &id).await;
        assert_eq!(
            stored[&(topic.clone(), 0)].len() as u64,
            manifest.totals.records
        );
    }
}

#[tokio::test]
async fn wildcards_with_excludes_select_topics_and_never_internal_ones() {
    let dir = TempDir::new("kb-wild");
    let base = unique_name("bk-wild");
    for suffix in ["orders", "payments", "events-a", "events-b"] {
        let t = format!("{base}-{suffix}");
        create_topic(&plaintext_config(), &t, 1, 1, &[]).await;
        produce(&plaintext_config(), &t, &sample_records(10, 1));
    }
    let name = unique_name("wild");
    let target = Target::Filesystem(dir.path().join("repo"));
    let mut m = backup_manifest(&name, &plaintext(), &[], &target);
    m["spec"]["topics"] = serde_json::json!([
        format!("{base}-events-*"),
        format!("{base}-orders"),
        "__consumer_offsets"
    ]);
    m["spec"]["excludeTopics"] = serde_json::json!([format!("{base}-events-b")]);
    let s = json_of(&backup(&write_manifest(dir.path(), &m)));
    let mut topics: Vec<&str> = s["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    topics.sort();
    assert_eq!(
        topics,
        vec![format!("{base}-events-a"), format!("{base}-orders")]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_keep_committed_records_only() {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let dir = TempDir::new("kb-txn");
    let topic = unique_name("bk-txn");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    let mut cfg = plaintext_config();
    cfg.set("transactional.id", unique_name("txn"));
    let producer: ThreadedProducer<DefaultProducerContext> = cfg.create().expect("producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init");
    let send = |v: &str| {
        producer
            .send(
                BaseRecord::<str, str>::to(&topic)
                    .key(v)
                    .payload(v)
                    .partition(0),
            )
            .map_err(|(e, _)| e)
            .expect("send");
    };
    producer.begin_transaction().expect("begin");
    for i in 0..5 {
        send(&format!("committed-a-{i}"));
    }
    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("commit");
    producer.begin_transaction().expect("begin");
    for i in 0..5 {
        send(&format!("aborted-{i}"));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    producer
        .abort_transaction(Duration::from_secs(30))
        .expect("abort");
    producer.begin_transaction().expect("begin");
    for i in 0..5 {
        send(&format!("committed-b-{i}"));
    }
    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("commit");

    let name = unique_name("txn");
    let target = Target::Filesystem(dir.path().join("repo"));
    let s = json_of(&backup(&write_manifest(
        dir.path(),
        &backup_manifest(&name, &plaintext(), &[&topic], &target),
    )));
    let id = s["backupId"].as_str().expect("id");
    let (manifest, stored) = read_backup(&target.repository(), &name, id).await;
    let values: Vec<String> = stored[&(topic.clone(), 0)]
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    let want: Vec<String> = (0..5)
        .map(|i| format!("committed-a-{i}"))
        .chain((0..5).map(|i| format!("committed-b-{i}")))
        .collect();
    assert_eq!(
        values, want,
        "aborted records and markers never enter a backup"
    );
    // 15 data records + 3 markers: the backup covers all 18 offsets with 10 records.
    let p = &manifest.topics[0].partitions[0];
    assert_eq!((p.end_offset, p.records), (18, 10));
    // Progress counts the aborted records and the markers, the last one after the last record.
    assert_eq!(
        assert_progress_reaches_the_end(dir.path(), &topic, 18).await,
        10
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn compacted_topic_gaps_are_recorded_not_errors() {
    let dir = TempDir::new("kb-compact");
    let topic = unique_name("bk-compact");
    compacted_topic_with_history(&topic).await;
    // Wait until the cleaner removed old versions (offsets no longer dense).
    wait_until(
        "the cleaner to compact the topic",
        Duration::from_secs(60),
        || read_all(&topic) < 1000,
    );
    let name = unique_name("compact");
    let target = Target::Filesystem(dir.path().join("repo"));
    let s = json_of(&backup(&write_manifest(
        dir.path(),
        &backup_manifest(&name, &plaintext(), &[&topic], &target),
    )));
    let id = s["backupId"].as_str().expect("id");
    let (manifest, stored) = read_backup(&target.repository(), &name, id).await;
    let p = &manifest.topics[0].partitions[0];
    let recs = &stored[&(topic.clone(), 0)];
    assert_eq!(p.end_offset, 1000);
    assert!(
        (recs.len() as u64) < 1000 && p.records == recs.len() as u64,
        "{} records",
        recs.len()
    );
    // Every key's latest value survives.
    for k in 0..10 {
        let key = format!("k{k}").into_bytes();
        let last = recs
            .iter()
            .rev()
            .find(|r| r.key.as_deref() == Some(&key))
            .expect("key kept");
        assert_eq!(
            last.value.as_deref(),
            Some(format!("v4-{}", 190 + k).as_bytes())
        );
    }
    assert_eq!(
        manifest.topics[0]
            .configs
            .get("cleanup.policy")
            .map(String::as_str),
        Some("compact")
    );

    // The run's progress counts the offsets compaction removed as passed, so it reaches its
    // target (the CLI's progress bar and the operator's status read it).
    let records = assert_progress_reaches_the_end(dir.path(), &topic, 1000).await;
    assert!(records < 1000, "{records} records");
}

/// Backs `topic` up through the engine (into a new repository under `dir`) and checks that the
/// run's progress counted `offsets` offsets of `offsets`, gaps included, and as many records as
/// the backup holds; returns that number of records.
async fn assert_progress_reaches_the_end(dir: &std::path::Path, topic: &str, offsets: u64) -> u64 {
    use kafka_backup_engine::backup::{BackupOptions, Progress};
    use std::sync::atomic::Ordering::Relaxed;
    let m = backup_manifest(
        &unique_name("progress"),
        &plaintext(),
        &[topic],
        &Target::Filesystem(dir.join("progress-repo")),
    );
    let progress = std::sync::Arc::new(Progress::default());
    let summary = engine_backup(&m, &BackupOptions::default(), progress.clone())
        .await
        .expect("backup through the engine");
    assert_eq!(progress.target_offsets.load(Relaxed), offsets);
    assert_eq!(progress.offsets_done.load(Relaxed), offsets);
    assert_eq!(progress.records.load(Relaxed), summary.records);
    summary.records
}

/// Records currently in `topic` (partition 0), by reading it to the end.
fn read_all(topic: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = plaintext_config().create().expect("consumer");
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    if high == 0 {
        return 0;
    }
    let mut n = 0;
    let mut cfg = plaintext_config();
    cfg.set("group.id", unique_name("count"))
        .set("enable.partition.eof", "true");
    let c: BaseConsumer = cfg.create().expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(low))
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => n += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return n,
            _ => {}
        }
    }
    n
}

#[tokio::test]
async fn each_compression_and_each_store() {
    let topic = unique_name("bk-codec");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let records = sample_records(1500, 2);
    produce(&plaintext_config(), &topic, &records);
    let dir = TempDir::new("kb-codec");
    let cases: Vec<(Target, &str, Option<i32>)> = vec![
        (Target::Filesystem(dir.path().join("none")), "none", None),
        (Target::Filesystem(dir.path().join("lz4")), "lz4", Some(9)),
        (
            Target::S3 {
                prefix: unique_name("bk-s3"),
            },
            "zstd",
            Some(3),
        ),
        (
            Target::Azure {
                prefix: unique_name("bk-az"),
            },
            "lz4",
            None,
        ),
        (
            Target::Filesystem(dir.path().join("zstd19")),
            "zstd",
            Some(19),
        ),
    ];
    let mut sizes = Vec::new();
    for (target, codec, level) in cases {
        let name = unique_name("codec");
        let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
        m["spec"]["compression"] = codec.into();
        if let Some(l) = level {
            m["spec"]["compressionLevel"] = l.into();
        }
        let s = json_of(&backup(&write_manifest(dir.path(), &m)));
        let id = s["backupId"].as_str().expect("id");
        let (manifest, stored) = read_backup(&target.repository(), &name, id).await;
        assert_eq!(
            serde_json::to_value(manifest.compression.codec).expect("codec"),
            codec
        );
        for p in 0..2 {
            assert_same(
                &stored[&(topic.clone(), p)],
                &of_partition(&records, p),
                &format!("{codec} on {target:?}"),
            );
        }
        sizes.push((
            codec,
            manifest.totals.stored_bytes,
            manifest.totals.raw_bytes,
        ));
    }
    let (_, none_stored, raw) = sizes[0];
    assert!(
        none_stored >= raw,
        "uncompressed stores at least the raw bytes"
    );
    for (codec, stored, _) in &sizes[1..] {
        assert!(
            *stored < none_stored,
            "{codec} compresses: {stored} vs {none_stored}"
        );
    }
}

#[tokio::test]
async fn killed_run_resumes_without_loss_or_duplicates() {
    let dir = TempDir::new("kb-kill");
    let topic = unique_name("bk-kill");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let records = sample_records(20000, 2);
    produce(&plaintext_config(), &topic, &records);
    let name = unique_name("kill");
    // Each attempt is killed once its checkpoint lists a random number of new records (at most a
    // hundredth of them): after it stored at least one segment, however slow or fast the machine
    // is, while its other segments are at points that differ from kill to kill. At 600 records/s
    // and a checkpoint every second, an attempt stores at most a first segment per partition
    // before its kill (about 1.3 s of records, with the limiter's one-second burst), so ten
    // attempts do not finish the backup.
    let SlowBackup { target, file, .. } =
        SlowBackup::new(dir.path(), &name, &plaintext(), &[&topic], 600);
    let repo = target.repository();
    let mut kills = 0;
    let mut early_exit: Option<String> = None;
    let most = records.len() as u64 / 100;
    for more in kill_points("records checkpointed before each kill", 10, 1, most) {
        let after = checkpointed_records(&repo, &name).await + more;
        let mut child = cli()
            .args(["backup", "-o", "json", "-f"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let (repo, name, child_ref) = (&repo, &name, &mut child);
        wait_for(
            &format!("attempt {kills} to checkpoint {more} more records"),
            Duration::from_secs(60),
            move || {
                let ended = child_ref.try_wait().expect("wait").is_some();
                async move {
                    (ended || checkpointed_records(repo, name).await >= after).then_some(())
                }
            },
        )
        .await;
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            early_exit = Some(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            break;
        }
        // SIGKILL: no chance to clean up.
        child.kill().expect("kill -9");
        kills += 1;
        let _ = child.wait();
        eprintln!(
            "kill {kills}: {} of {} records checkpointed",
            checkpointed_records(repo, name).await,
            records.len()
        );
        assert!(
            repo.backup_ids(name).await.expect("ids").is_empty(),
            "no manifest while the run is unfinished"
        );
    }
    assert_eq!(kills, 10, "the run ended before ten kills: {early_exit:?}");
    let cps = repo.checkpoint_ids(&name).await.expect("checkpoints");
    assert_eq!(cps.len(), 1, "one unfinished run: {cps:?}");
    let s = json_of(&backup(&file));
    assert_eq!(s["resumed"], true, "{s}");
    assert_eq!(s["backupId"], cps[0].as_str());
    let (_, stored) = read_backup(&repo, &name, &cps[0]).await;
    for p in 0..2 {
        let got = &stored[&(topic.clone(), p)];
        assert_same(got, &of_partition(&records, p), "after kill -9 and resume");
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            (0..10000).collect::<Vec<i64>>()
        );
    }
    assert!(
        repo.checkpoint_ids(&name)
            .await
            .expect("checkpoints")
            .is_empty()
    );
}

fn failing(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn bad_input_is_a_clear_error_and_nothing_is_marked_complete() {
    let dir = TempDir::new("kb-bad");
    let topic = unique_name("bk-bad");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(10, 1));
    let target = Target::Filesystem(dir.path().join("repo"));
    let base = backup_manifest("bad", &plaintext(), &[&topic], &target);

    // Unknown field, named with its path.
    let mut m = base.clone();
    m["spec"]["kafkaCluster"]["bootstrapServer"] = "x:1".into();
    let out = backup(&write_manifest(dir.path(), &m));
    let err = failing(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("spec.kafkaCluster") && err.contains("bootstrapServer"),
        "{err}"
    );

    // Compression level out of range.
    let mut m = base.clone();
    m["spec"]["compression"] = "zstd".into();
    m["spec"]["compressionLevel"] = 23.into();
    let out = backup(&write_manifest(dir.path(), &m));
    let err = failing(&out);
    assert!(
        err.contains("spec.compressionLevel") && err.contains("23") && err.contains("1-22"),
        "{err}"
    );
    let mut m = base.clone();
    m["spec"]["compression"] = "lz4".into();
    m["spec"]["compressionLevel"] = 13.into();
    let err = failing(&backup(&write_manifest(dir.path(), &m)));
    assert!(err.contains("13") && err.contains("1-12"), "{err}");

    // No topic matches: the patterns are listed.
    let mut m = base.clone();
    m["spec"]["topics"] = serde_json::json!(["no-such-topic-*", "nope"]);
    let err = failing(&backup(&write_manifest(dir.path(), &m)));
    assert!(
        err.contains("no-such-topic-*") && err.contains("nope"),
        "{err}"
    );

    // Unreachable brokers: a bounded wait, then an error naming them.
    let mut m = base.clone();
    m["spec"]["kafkaCluster"]["bootstrapServers"] = serde_json::json!(["127.0.0.1:1"]);
    let started = Instant::now();
    let err = failing(&backup(&write_manifest(dir.path(), &m)));
    assert!(
        err.contains("127.0.0.1:1") && err.contains("not reachable"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );

    // Authentication failure.
    let wrong_secrets = TempDir::new("kb-wrong");
    let s = wrong_secrets.path().join("kafka-scram-sha-256");
    std::fs::create_dir_all(&s).expect("mkdir");
    std::fs::write(s.join("username"), "kb-scram256").expect("user");
    std::fs::write(s.join("password"), "wrong-password").expect("pw");
    let ca = wrong_secrets.path().join("kafka-tls-ca");
    std::fs::create_dir_all(&ca).expect("mkdir");
    std::fs::copy(
        kafka_backup_testkit::TestEnv::get()
            .secrets_dir()
            .join("kafka-tls-ca/ca.crt"),
        ca.join("ca.crt"),
    )
    .expect("ca");
    let mut m = base.clone();
    m["spec"]["kafkaCluster"] = serde_json::to_value(
        Listener::SaslSsl(kafka_backup_api::kafka::SaslMechanism::ScramSha256).cluster_spec(),
    )
    .expect("spec");
    let err = failing(&backup_with_env(
        dir.path(),
        &m,
        "KAFKA_BACKUP_SECRETS_DIR",
        wrong_secrets.path(),
    ));
    assert!(
        err.contains("authentication") && !err.contains("wrong-password"),
        "{err}"
    );

    // Storage that cannot be written: a read-only directory.
    let ro = dir.path().join("read-only");
    std::fs::create_dir_all(&ro).expect("mkdir");
    let mut perms = std::fs::metadata(&ro).expect("meta").permissions();
    use std::os::unix::fs::PermissionsExt;
    perms.set_mode(0o555);
    std::fs::set_permissions(&ro, perms).expect("chmod");
    let mut m = base.clone();
    m["spec"]["storage"] = Target::Filesystem(ro.clone()).storage_json();
    let out = backup(&write_manifest(dir.path(), &m));
    if nix_is_root() {
        // root ignores directory permissions; use a path under a regular file instead.
        let file_not_dir = dir.path().join("a-file");
        std::fs::write(&file_not_dir, b"x").expect("file");
        m["spec"]["storage"] = Target::Filesystem(file_not_dir.join("repo")).storage_json();
        let err = failing(&backup(&write_manifest(dir.path(), &m)));
        assert!(err.contains("spec.storage"), "{err}");
    } else {
        let err = failing(&out);
        assert!(err.contains("storage"), "{err}");
    }

    // Storage that refuses the credentials.
    let bad_creds = TempDir::new("kb-s3-bad");
    let c = bad_creds.path().join("s3-credentials");
    std::fs::create_dir_all(&c).expect("mkdir");
    std::fs::write(c.join("accessKey"), "nobody").expect("ak");
    std::fs::write(c.join("secretKey"), "wrong-secret-key").expect("sk");
    let mut m = base.clone();
    m["spec"]["storage"] = Target::S3 {
        prefix: unique_name("denied"),
    }
    .storage_json();
    let err = failing(&backup_with_env(
        dir.path(),
        &m,
        "KAFKA_BACKUP_SECRETS_DIR",
        bad_creds.path(),
    ));
    assert!(
        err.contains("storage") && !err.contains("wrong-secret-key"),
        "{err}"
    );

    // A value of AWS_UNSIGNED_PAYLOAD that is not a boolean: named, with what would do.
    let mut m = base.clone();
    m["spec"]["storage"] = Target::S3 {
        prefix: unique_name("unsigned"),
    }
    .storage_json();
    let err = failing(&backup_with_env(
        dir.path(),
        &m,
        "AWS_UNSIGNED_PAYLOAD",
        "maybe",
    ));
    assert!(
        err.contains("spec.storage.s3")
            && err.contains("AWS_UNSIGNED_PAYLOAD")
            && err.contains("\"maybe\"")
            && err.contains("true or false"),
        "{err}"
    );

    // Nothing was committed by any of the failed runs.
    let repo = target.repository();
    assert!(repo.backup_ids("bad").await.expect("ids").is_empty());
}

/// Runs `backup` of manifest `m` (written into `dir`) with the variable `key` set to `value`.
fn backup_with_env(
    dir: &std::path::Path,
    m: &serde_json::Value,
    key: &str,
    value: impl AsRef<std::ffi::OsStr>,
) -> std::process::Output {
    cli()
        .env(key, value)
        .args(["backup", "-f"])
        .arg(write_manifest(dir, m))
        .output()
        .expect("run")
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Segment objects larger than one part stream as multipart uploads of whole parts; objects up to
/// one part go in one put. Every size around the part boundary, written in uneven pieces, must
/// read back byte for byte from each store, and an aborted upload must leave nothing.
#[tokio::test]
async fn uploads_around_the_part_size_store_every_byte() {
    const PART: usize = 5 << 20; // S3's smallest part but the last.
    let dir = TempDir::new("kb-upload");
    let targets = [
        Target::Filesystem(dir.path().join("repo")),
        Target::S3 {
            prefix: unique_name("up-s3"),
        },
        Target::Azure {
            prefix: unique_name("up-az"),
        },
    ];
    for target in &targets {
        let repo = target.repository();
        for size in [0, 1, PART, PART + 1, 3 * PART + 17] {
            let body: Vec<u8> = (0..size as u64)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            let path = format!("{}/obj-{size}", unique_name("upload"));
            let mut up = repo.upload(path.clone(), PART);
            // Pieces of varying length, one of them larger than a part.
            let mut rest = &body[..];
            for piece in [3, PART + 5, 1 << 20, 777].iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (now, next) = rest.split_at((*piece).min(rest.len()));
                up.write(now).await.expect("write");
                rest = next;
            }
            up.finish().await.expect("finish");
            let back = repo.get(&path).await.expect("read back");
            assert_eq!(back.len(), size, "{target:?} size {size}");
            assert!(back[..] == body[..], "{target:?} size {size}: bytes differ");
        }
        let path = format!("{}/aborted", unique_name("upload"));
        let mut up = repo.upload(path.clone(), PART);
        up.write(&vec![1u8; 2 * PART + 1]).await.expect("write");
        up.abort().await;
        assert!(
            repo.list(&path).await.expect("list").is_empty(),
            "{target:?}: an aborted upload left an object"
        );
    }
}
