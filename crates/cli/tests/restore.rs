//! `kafka-backup restore` end to end against the genuine test broker: exact round trips, topic
//! mapping with created topics and configs, point-in-time bounds, original-offset headers,
//! compacted topics, kill -9 and resume, existing data, and bad input.

mod common;

use std::time::Duration;

use common::*;
use kafka_backup_testkit::kafka::{
    ConsumedRecord, TestRecord, consume_all, create_topic, plaintext_config, produce,
    sample_records,
};
use kafka_backup_testkit::{TestEnv, unique_name};

/// Backs `topics` up under a fresh name to a fresh directory; returns (target, name, backup id).
async fn backed_up(dir: &TempDir, topics: &[&str]) -> (Target, String, String) {
    let name = unique_name("rs");
    let target = Target::Filesystem(dir.path().join(&name));
    let mut m = backup_manifest(&name, &plaintext(), topics, &target);
    m["spec"]["sourceClusterId"] = "source-cluster".into();
    let s = json_of(&backup(&write_manifest(dir.path(), &m)));
    let id = s["backupId"].as_str().expect("id").to_string();
    (target, name, id)
}

fn restore(manifest: &std::path::Path, extra: &[&str]) -> std::process::Output {
    cli()
        .args(["restore", "-o", "json"])
        .args(extra)
        .arg("-f")
        .arg(manifest)
        .output()
        .expect("run kafka-backup restore")
}

fn records_of(consumed: &[ConsumedRecord], partition: i32) -> Vec<TestRecord> {
    consumed
        .iter()
        .filter(|c| c.record.partition == partition)
        .map(|c| c.record.clone())
        .collect()
}

fn with_mixed_records(n: usize, partitions: i32) -> Vec<TestRecord> {
    let mut recs = sample_records(n, partitions);
    for (i, r) in recs.iter_mut().enumerate() {
        if i % 5 == 0 {
            r.key = Some(Vec::new());
        }
        if i % 11 == 0 {
            r.headers.push(("empty".into(), Some(Vec::new())));
        }
    }
    recs
}

#[tokio::test]
async fn round_trip_with_mapping_created_topics_and_configs_is_exact() {
    let dir = TempDir::new("rs-rt");
    let orders = unique_name("rs-orders");
    let payments = unique_name("rs-payments");
    create_topic(
        &plaintext_config(),
        &orders,
        3,
        1,
        &[
            ("retention.ms", "3153600000123"),
            ("max.message.bytes", "2000000"),
        ],
    )
    .await;
    create_topic(&plaintext_config(), &payments, 2, 1, &[]).await;
    let o = with_mixed_records(3000, 3);
    let p = with_mixed_records(1000, 2);
    produce(&plaintext_config(), &orders, &o);
    produce(&plaintext_config(), &payments, &p);
    let (target, _, id) = backed_up(&dir, &[&orders, &payments]).await;

    let new_orders = format!("{orders}-restored");
    let new_payments = format!("{payments}-restored");
    let mut m = restore_manifest(&unique_name("rt"), &id, &target);
    m["spec"]["topicMapping"] = serde_json::json!({&orders: &new_orders, &payments: &new_payments});
    m["spec"]["createTopics"] = true.into();
    m["spec"]["defaultReplicationFactor"] = 1.into();
    let s = json_of(&restore(&write_manifest(dir.path(), &m), &[]));
    assert_eq!(s["restoredRecords"], 4000);
    let mut created: Vec<String> = s["topicsCreated"]
        .as_array()
        .expect("created")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    created.sort();
    let mut want = vec![new_orders.clone(), new_payments.clone()];
    want.sort();
    assert_eq!(created, want);

    for (topic, produced, parts) in [(&new_orders, &o, 3), (&new_payments, &p, 2)] {
        let got = consume_all(
            &plaintext_config(),
            topic,
            produced.len(),
            Duration::from_secs(60),
        );
        assert_eq!(got.len(), produced.len());
        for part in 0..parts {
            let want: Vec<TestRecord> = produced
                .iter()
                .filter(|r| r.partition == part)
                .cloned()
                .collect();
            assert_eq!(records_of(&got, part), want, "{topic}/{part}");
            // Same offsets as the source: the restored partition starts at 0 and is dense.
            let offsets: Vec<i64> = got
                .iter()
                .filter(|c| c.record.partition == part)
                .map(|c| c.offset)
                .collect();
            assert_eq!(offsets, (0..want.len() as i64).collect::<Vec<_>>());
        }
    }
    let configs = kafka_backup_engine::kafka::topic_configs(
        &plaintext_config(),
        std::slice::from_ref(&new_orders),
        Duration::from_secs(30),
    )
    .await
    .expect("configs");
    let c = &configs[&new_orders];
    assert_eq!(
        c.get("retention.ms").map(String::as_str),
        Some("3153600000123")
    );
    assert_eq!(
        c.get("max.message.bytes").map(String::as_str),
        Some("2000000")
    );
}

/// Restores the records of `topic` (backed up as `id`) that `pitr` selects into `restored`: the
/// dry run and the restore count exactly `want`, and each of the `partitions` holds exactly its
/// records of `want`, in order. Returns the restore's summary.
#[allow(clippy::too_many_arguments)]
fn restore_by_time(
    dir: &TempDir,
    target: &Target,
    id: &str,
    topic: &str,
    restored: &str,
    pitr: serde_json::Value,
    want: &[&TestRecord],
    partitions: i32,
) -> serde_json::Value {
    let mut m = restore_manifest_mapped(&unique_name("pitr"), id, target, topic, restored);
    m["spec"]["pitr"] = pitr.clone();
    let file = write_manifest(dir.path(), &m);
    let dry = json_of(&restore(&file, &["--dry-run"]));
    assert_eq!(dry["restoredRecords"], want.len() as u64, "{pitr}: {dry}");
    let s = json_of(&restore(&file, &[]));
    assert_eq!(s["restoredRecords"], want.len() as u64, "{pitr}: {s}");
    let got = consume_all(
        &plaintext_config(),
        restored,
        want.len(),
        Duration::from_secs(60),
    );
    for part in 0..partitions {
        let w: Vec<TestRecord> = want
            .iter()
            .filter(|r| r.partition == part)
            .map(|r| (*r).clone())
            .collect();
        assert_eq!(records_of(&got, part), w, "{pitr}: partition {part}");
    }
    s
}

#[tokio::test]
async fn point_in_time_and_time_windows_restore_exactly_their_records() {
    let dir = TempDir::new("rs-pitr");
    let topic = unique_name("rs-pitr");
    create_topic(&plaintext_config(), &topic, 3, 1, &[]).await;
    // Timestamps out of order within and across partitions.
    let base = 1_700_000_000_000i64;
    let recs: Vec<TestRecord> = (0..600)
        .map(|i| TestRecord {
            partition: i % 3,
            key: Some(format!("k{i}").into_bytes()),
            value: Some(format!("v{i}").into_bytes()),
            headers: vec![],
            timestamp: Some(base + ((i * 7919) % 600) as i64),
        })
        .collect();
    produce(&plaintext_config(), &topic, &recs);
    let (target, _, id) = backed_up(&dir, &[&topic]).await;
    // T is included and T+1 differs by exactly the records stamped T+1.
    let t = base + 300;
    assert_eq!(
        recs.iter().filter(|r| r.timestamp == Some(t + 1)).count(),
        1
    );
    // Up to T and T+1; both ends, the start as a time (2023-11-14T22:13:20.200Z is base + 200)
    // and the end in milliseconds; a start alone.
    let cases = [
        (
            "t",
            serde_json::json!({"enabled": true, "timestampMillis": t}),
            i64::MIN..=t,
        ),
        (
            "t1",
            serde_json::json!({"enabled": true, "timestampMillis": t + 1}),
            i64::MIN..=t + 1,
        ),
        (
            "both",
            serde_json::json!({"enabled": true, "fromTimestamp": "2023-11-14T22:13:20.200Z",
                               "timestampMillis": base + 400}),
            base + 200..=base + 400,
        ),
        (
            "from",
            serde_json::json!({"enabled": true, "fromTimestampMillis": base + 550}),
            base + 550..=i64::MAX,
        ),
    ];
    for (label, pitr, range) in cases {
        let want: Vec<&TestRecord> = recs
            .iter()
            .filter(|r| range.contains(&r.timestamp.unwrap_or(-1)))
            .collect();
        assert!(!want.is_empty() && want.len() < recs.len(), "{label}");
        let restored = format!("{topic}-{label}");
        let s = restore_by_time(&dir, &target, &id, &topic, &restored, pitr, &want, 3);
        let from = (*range.start() != i64::MIN).then_some(*range.start());
        assert_eq!(
            s["pitrFromTimestampMillis"],
            serde_json::json!(from),
            "{label}"
        );
    }
}

#[tokio::test]
async fn point_in_time_over_many_blocks_counts_restores_and_reads_exactly() {
    let dir = TempDir::new("rs-pitr-blocks");
    let topic = unique_name("rs-pitr-blocks");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    let base = 1_700_000_000_000i64;
    // About 3.6 MiB in one partition, several blocks, timestamps increasing.
    let recs: Vec<TestRecord> = (0..1800)
        .map(|i| TestRecord {
            partition: 0,
            key: Some(format!("k{i}").into_bytes()),
            value: Some(vec![b'a' + (i % 26) as u8; 2048]),
            headers: vec![],
            timestamp: Some(base + i as i64),
        })
        .collect();
    let bytes: usize = recs
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Vec::len))
        .sum();
    assert!(bytes > 3 * kafka_backup_format::DEFAULT_BLOCK_BYTES);
    produce(&plaintext_config(), &topic, &recs);
    let (target, _, id) = backed_up(&dir, &[&topic]).await;

    // Up to a bound that leaves blocks wholly inside it (counted from the index), one across it
    // (read), and blocks wholly after it.
    let bound = base + 1234;
    let want: Vec<&TestRecord> = recs.iter().filter(|r| r.timestamp <= Some(bound)).collect();
    assert_eq!(want.len(), 1235);
    let pitr = serde_json::json!({"enabled": true, "timestampMillis": bound});
    let restored = format!("{topic}-pitr");
    restore_by_time(&dir, &target, &id, &topic, &restored, pitr, &want, 1);

    // The last 1% by time: it sits in the segment's last blocks, so the restore reads the
    // manifest, the index and those blocks, not the 3.6 MiB before them.
    let from = base + 1782;
    let want: Vec<&TestRecord> = recs.iter().filter(|r| r.timestamp >= Some(from)).collect();
    assert_eq!(want.len(), 18);
    let pitr = serde_json::json!({"enabled": true, "fromTimestampMillis": from});
    let restored = format!("{topic}-last");
    let s = restore_by_time(&dir, &target, &id, &topic, &restored, pitr, &want, 1);
    let read = s["storedBytesRead"].as_u64().expect("storedBytesRead");
    assert!(
        read < 2 * kafka_backup_format::DEFAULT_BLOCK_BYTES as u64,
        "read {read} bytes"
    );
}

#[tokio::test]
async fn a_restarted_restore_must_ask_for_the_same_records_the_same_way() {
    let dir = TempDir::new("rs-window-restart");
    let topic = unique_name("rs-window-restart");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    // Record i has timestamp base + i.
    let base = 1_700_000_000_000i64;
    let recs = sample_records(100, 1);
    assert_eq!(recs[99].timestamp, Some(base + 99));
    produce(&plaintext_config(), &topic, &recs);
    let (target, name, id) = backed_up(&dir, &[&topic]).await;
    let restored = format!("{topic}-r");
    let restore_name = unique_name("window-restart");
    // The restore, into `into`, of the records from `from` on, with the headers or not.
    let spec = |into: &str, from: i64, headers: bool| {
        let mut m = restore_manifest_mapped(&restore_name, &id, &target, &topic, into);
        m["spec"]["pitr"] = serde_json::json!({"enabled": true, "fromTimestampMillis": from});
        m["spec"]["includeOriginalOffsetHeader"] = headers.into();
        write_manifest(dir.path(), &m)
    };
    // Refused as bad input; what it said.
    let refused = |file: std::path::PathBuf| {
        let out = restore(&file, &[]);
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let s = json_of(&restore(&spec(&restored, base + 60, false), &[]));
    assert_eq!(s["restoredRecords"], 40);
    // Make it look interrupted after writing everything, as a kill just before its last write
    // of the state would leave it.
    let state_path = dir
        .path()
        .join(&name)
        .join(&name)
        .join("restores")
        .join(format!("{restore_name}.json"));
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("state")).expect("json");
    assert_eq!(state["window"]["fromMillis"], base + 60, "{state}");
    state["state"] = "running".into();
    state
        .as_object_mut()
        .expect("object")
        .remove("completionTime");
    std::fs::write(&state_path, serde_json::to_vec(&state).expect("json")).expect("write");

    // Restarted with another window: refused, nothing written.
    let err = refused(spec(&restored, base + 50, false));
    assert!(
        err.contains("spec.pitr")
            && err.contains(&format!("timestamp >= {}", base + 60))
            && err.contains(&format!("timestamp >= {}", base + 50)),
        "{err}"
    );
    // Restarted into another topic: refused too, naming the mapping, and nothing is created.
    let elsewhere = format!("{topic}-elsewhere");
    let err = refused(spec(&elsewhere, base + 60, false));
    assert!(
        err.contains("spec.topicMapping")
            && err.contains(&format!("{restored}/0"))
            && err.contains(&format!("{elsewhere}/0")),
        "{err}"
    );
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let reader: BaseConsumer = plaintext_config().create().expect("consumer");
    let md = Consumer::fetch_metadata(&reader, None, Duration::from_secs(10)).expect("metadata");
    assert!(
        md.topics().iter().any(|t| t.name() == restored)
            && !md.topics().iter().any(|t| t.name() == elsewhere),
        "no topic created for the refused restart"
    );
    // Restarted with the source-position headers switched on: refused too.
    let err = refused(spec(&restored, base + 60, true));
    assert!(
        err.contains("spec.includeOriginalOffsetHeader")
            && err.contains("includeOriginalOffsetHeader: false"),
        "{err}"
    );
    // Restarted with the same window: resumes, and the topic holds the 40 records once.
    let s = json_of(&restore(&spec(&restored, base + 60, false), &[]));
    assert_eq!(s["resumed"], true, "{s}");
    let want: Vec<TestRecord> = recs[60..].to_vec();
    let got = consume_all(&plaintext_config(), &restored, 40, Duration::from_secs(60));
    assert_eq!(records_of(&got, 0), want);
    let (low, high) = reader
        .fetch_watermarks(&restored, 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((low, high), (0, 40), "no record written twice");
}

#[tokio::test]
async fn original_offset_headers_carry_source_position() {
    let dir = TempDir::new("rs-hdr");
    let topic = unique_name("rs-hdr");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let recs = sample_records(200, 2);
    produce(&plaintext_config(), &topic, &recs);
    let (target, _, id) = backed_up(&dir, &[&topic]).await;
    let restored = format!("{topic}-h");
    let mut m = restore_manifest_mapped(&unique_name("hdr"), &id, &target, &topic, &restored);
    m["spec"]["includeOriginalOffsetHeader"] = true.into();
    json_of(&restore(&write_manifest(dir.path(), &m), &[]));
    let got = consume_all(&plaintext_config(), &restored, 200, Duration::from_secs(60));
    for c in &got {
        let h = |name: &str| {
            c.record
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
                .map(|v| String::from_utf8(v).expect("utf8"))
                .unwrap_or_else(|| panic!("header {name} missing"))
        };
        assert_eq!(h("kafka-backup.source.offset"), c.offset.to_string());
        assert_eq!(
            h("kafka-backup.source.partition"),
            c.record.partition.to_string()
        );
        assert_eq!(
            h("kafka-backup.source.timestamp"),
            c.record.timestamp.expect("ts").to_string()
        );
        assert_eq!(h("kafka-backup.source.cluster"), "source-cluster");
        // The original headers come first, unchanged.
        assert_eq!(c.record.headers[0].0, "trace-id");
        assert_eq!(c.record.headers[1], ("nullable".to_string(), None));
    }
}

#[tokio::test]
async fn offset_map_translates_across_gaps() {
    let dir = TempDir::new("rs-map");
    let topic = unique_name("rs-map");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(100, 1));
    // Offsets 0..40 disappear (log start moves): the backup starts at 40.
    kafka_backup_testkit::kafka::delete_records_before(&plaintext_config(), &topic, 0, 40).await;
    let (target, name, id) = backed_up(&dir, &[&topic]).await;
    let restored = format!("{topic}-m");
    let rname = unique_name("map");
    let m = restore_manifest_mapped(&rname, &id, &target, &topic, &restored);
    let s = json_of(&restore(&write_manifest(dir.path(), &m), &[]));
    assert_eq!(s["restoredRecords"], 60);
    let path = s["offsetMap"].as_str().expect("offset map path");
    assert_eq!(path, format!("{name}/offset-maps/{id}/{rname}.json"));
    let bytes = target.repository().get(path).await.expect("offset map");
    let map: kafka_backup_engine::restore::OffsetMap =
        serde_json::from_slice(&bytes).expect("map json");
    let p = &map.topics[0].partitions[0];
    assert_eq!(p.runs, vec![[40, 0, 60]]);
    assert_eq!(p.translate(0), 0);
    assert_eq!(p.translate(55), 15);
    assert_eq!(p.translate(100), 60);
}

#[tokio::test]
async fn killed_restore_resumes_without_duplicates() {
    let dir = TempDir::new("rs-kill");
    let topic = unique_name("rs-kill");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let recs: Vec<TestRecord> = (0..400_000)
        .map(|i| TestRecord {
            partition: i % 2,
            key: Some(format!("{i}").into_bytes()),
            value: Some(vec![b'x'; 100]),
            headers: vec![],
            timestamp: Some(1_700_000_000_000 + i as i64),
        })
        .collect();
    produce(&plaintext_config(), &topic, &recs);
    let (target, _, id) = backed_up(&dir, &[&topic]).await;
    let restored = format!("{topic}-k");
    let m = restore_manifest_mapped(&unique_name("kill"), &id, &target, &topic, &restored);
    let file = write_manifest(dir.path(), &m);
    let mut kills = 0;
    let mut mid_write = 0;
    let mut early_exit: Option<String> = None;
    // One reader for the many looks at the target's end offsets, so each look is one request.
    let reader: rdkafka::consumer::BaseConsumer = plaintext_config().create().expect("consumer");
    let landed = || landed_records(&reader, &restored);
    // Each attempt is killed once a random number of its records, at most a twentieth of them,
    // have landed: mid-write however slow or fast the machine (or the build) is, and early
    // enough that ten attempts do not finish the restore.
    let most = recs.len() as u64 / 20;
    for more in kill_points("records landed before each kill", 10, 1, most) {
        let before = landed();
        let after = before + more as i64;
        let mut child = cli()
            .args(["restore", "-f"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while landed() < after && child.try_wait().expect("wait").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "attempt {kills}: {more} records did not land within 60 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            early_exit = Some(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
            // Completed (or refused because an earlier attempt completed).
            break;
        }
        child.kill().expect("kill -9");
        kills += 1;
        let _ = child.wait();
        let now = landed();
        eprintln!("kill {kills}: {now} of {} records landed", recs.len());
        if now < recs.len() as i64 {
            mid_write += 1;
        }
    }
    assert_eq!(
        kills, 10,
        "the restore ended before ten kills: {early_exit:?}"
    );
    assert!(
        mid_write >= 3,
        "only {mid_write} kills hit the restore while it was writing"
    );
    let out = restore(&file, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        let s = json_of(&out);
        assert_eq!(s["resumed"], true, "{s}");
        assert_eq!(s["restoredRecords"], recs.len() as u64, "{s}");
    } else {
        assert!(stderr.contains("already completed"), "{stderr}");
    }
    let ends = {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = plaintext_config().create().expect("consumer");
        let a = c
            .fetch_watermarks(&restored, 0, Duration::from_secs(10))
            .expect("wm");
        let b = c
            .fetch_watermarks(&restored, 1, Duration::from_secs(10))
            .expect("wm");
        (a.1, b.1)
    };
    assert_eq!(
        ends,
        (200_000, 200_000),
        "end offsets after {kills} kills; {stderr}"
    );
    let got = consume_all(
        &plaintext_config(),
        &restored,
        recs.len(),
        Duration::from_secs(120),
    );
    assert_eq!(got.len(), recs.len(), "no record lost or duplicated");
    for part in 0..2 {
        let want: Vec<TestRecord> = recs
            .iter()
            .filter(|r| r.partition == part)
            .cloned()
            .collect();
        assert_eq!(
            records_of(&got, part),
            want,
            "partition {part} after kill -9 and resume"
        );
    }
}

#[tokio::test]
async fn existing_data_is_refused_unless_append_or_purge() {
    let dir = TempDir::new("rs-exist");
    let topic = unique_name("rs-exist");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    let recs = sample_records(50, 1);
    produce(&plaintext_config(), &topic, &recs);
    let (target, _, id) = backed_up(&dir, &[&topic]).await;

    // Restoring onto the source itself: it holds data.
    let m = restore_manifest(&unique_name("refuse"), &id, &target);
    let out = restore(&write_manifest(dir.path(), &m), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{err}\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains("spec.existingData")
            && err.contains(&topic)
            && err.contains("append")
            && err.contains("purge"),
        "{err}"
    );

    let mut m = restore_manifest(&unique_name("append"), &id, &target);
    m["spec"]["existingData"] = "append".into();
    let s = json_of(&restore(&write_manifest(dir.path(), &m), &[]));
    assert_eq!(
        s["restoredTopics"][0]["partitions"][0]["targetStartOffset"],
        50
    );
    let got = consume_all(&plaintext_config(), &topic, 100, Duration::from_secs(60));
    assert_eq!(got.len(), 100);

    let mut m = restore_manifest(&unique_name("purge"), &id, &target);
    m["spec"]["existingData"] = "purge".into();
    let s = json_of(&restore(&write_manifest(dir.path(), &m), &[]));
    assert_eq!(
        s["restoredTopics"][0]["partitions"][0]["targetStartOffset"],
        100
    );
    let got = consume_all(&plaintext_config(), &topic, 50, Duration::from_secs(60));
    assert_eq!(got.len(), 50, "only the restored records remain");
    assert_eq!(
        got.iter().map(|c| c.record.clone()).collect::<Vec<_>>(),
        recs
    );
}

#[tokio::test]
async fn bad_restore_input_is_named() {
    let dir = TempDir::new("rs-bad");
    let topic = unique_name("rs-bad");
    create_topic(&plaintext_config(), &topic, 3, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(30, 3));
    let (target, _, id) = backed_up(&dir, &[&topic]).await;

    // Unknown backup id (one second later than the real one): the nearest ids are listed.
    let last = id.chars().last().expect("id");
    let wrong = format!(
        "{}{}",
        &id[..id.len() - 1],
        if last == '9' { '8' } else { '9' }
    );
    let out = restore(
        &write_manifest(dir.path(), &restore_manifest("bad-id", &wrong, &target)),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&wrong) && err.contains(&id), "{err}");

    // A target with fewer partitions than the backup.
    let small = format!("{topic}-small");
    create_topic(&plaintext_config(), &small, 1, 1, &[]).await;
    let mut m = restore_manifest("fewer", &id, &target);
    m["spec"]["topicMapping"] = serde_json::json!({&topic: &small});
    let err =
        String::from_utf8_lossy(&restore(&write_manifest(dir.path(), &m), &[]).stderr).into_owned();
    assert!(
        err.contains(&small) && err.contains("1 partitions") && err.contains("has 3"),
        "{err}"
    );

    // A missing target without createTopics.
    let mut m = restore_manifest("missing", &id, &target);
    m["spec"]["topicMapping"] = serde_json::json!({&topic: format!("{topic}-nope")});
    let err =
        String::from_utf8_lossy(&restore(&write_manifest(dir.path(), &m), &[]).stderr).into_owned();
    assert!(err.contains("spec.createTopics"), "{err}");

    // pitr enabled without a time.
    let mut m = restore_manifest("nopitr", &id, &target);
    m["spec"]["pitr"] = serde_json::json!({"enabled": true});
    let err =
        String::from_utf8_lossy(&restore(&write_manifest(dir.path(), &m), &[]).stderr).into_owned();
    assert!(err.contains("spec.pitr"), "{err}");

    // A time window whose start is after its end.
    let mut m = restore_manifest("reversed", &id, &target);
    m["spec"]["pitr"] = serde_json::json!({"enabled": true,
        "fromTimestamp": "2024-12-01T12:00:00Z", "timestamp": "2024-12-01T11:00:00Z"});
    let out = restore(&write_manifest(dir.path(), &m), &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("spec.pitr.fromTimestamp")
            && err.contains("1733054400000 ms > 1733050800000 ms"),
        "{err}"
    );

    // A replication factor for topics that are not created.
    let mut m = restore_manifest("rf", &id, &target);
    m["spec"]["defaultReplicationFactor"] = 1.into();
    let err =
        String::from_utf8_lossy(&restore(&write_manifest(dir.path(), &m), &[]).stderr).into_owned();
    assert!(
        err.contains("spec.defaultReplicationFactor") && err.contains("createTopics"),
        "{err}"
    );

    // A topic that is not in the backup.
    let mut m = restore_manifest("nosuch", &id, &target);
    m["spec"]["topics"] = serde_json::json!(["no-such-topic"]);
    let err =
        String::from_utf8_lossy(&restore(&write_manifest(dir.path(), &m), &[]).stderr).into_owned();
    assert!(
        err.contains("spec.topics") && err.contains("no-such-topic") && err.contains(&topic),
        "{err}"
    );

    // Offset reset by timestamp without a timestamp.
    let mut m = restore_manifest("reset", &id, &target);
    m["spec"]["offsetReset"] =
        serde_json::json!({"enabled": true, "strategy": "timestamp", "consumerGroups": ["g"]});
    let out = restore(&write_manifest(dir.path(), &m), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("spec.offsetReset.timestamp"), "{err}");

    // Rollback without an offset reset to roll back.
    let mut m = restore_manifest("rollback", &id, &target);
    m["spec"]["rollback"] = serde_json::json!({"enabled": true, "snapshotId": "x"});
    let err =
        String::from_utf8_lossy(&restore(&write_manifest(dir.path(), &m), &[]).stderr).into_owned();
    assert!(err.contains("spec.rollback"), "{err}");

    // The dry run creates nothing.
    let mut m = restore_manifest("dry", &id, &target);
    let fresh = format!("{topic}-dry");
    m["spec"]["topicMapping"] = serde_json::json!({&topic: &fresh});
    m["spec"]["createTopics"] = true.into();
    let s = json_of(&restore(&write_manifest(dir.path(), &m), &["--dry-run"]));
    assert_eq!(s["topicsCreated"][0], fresh.as_str());
    assert_eq!(s["restoredRecords"], 30);
    let consumer: rdkafka::consumer::BaseConsumer = plaintext_config().create().expect("consumer");
    use rdkafka::consumer::Consumer;
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    assert!(
        !md.topics().iter().any(|t| t.name() == fresh),
        "dry run created {fresh}"
    );
    let _ = TestEnv::get();
}

#[tokio::test]
async fn compacted_topic_with_gaps_restores_the_surviving_records_in_order() {
    let dir = TempDir::new("rs-compact");
    let topic = unique_name("rs-compact");
    compacted_topic_with_history(&topic).await;
    // Back up once the cleaner has removed old versions (the backup then has offset gaps).
    let (target, name, id) = kafka_backup_testkit::poll::wait_for(
        "the topic compacted (a backup of fewer than 1000 records)",
        Duration::from_secs(60),
        || async {
            let (target, name, id) = backed_up(&dir, &[&topic]).await;
            let m = target
                .repository()
                .manifest(&name, &id)
                .await
                .expect("manifest");
            (m.totals.records < 1000).then_some((target, name, id))
        },
    )
    .await;
    let (_, stored) = read_backup(&target.repository(), &name, &id).await;
    let kept = &stored[&(topic.clone(), 0)];
    let restored = format!("{topic}-r");
    let m = restore_manifest_mapped(&unique_name("compact"), &id, &target, &topic, &restored);
    let s = json_of(&restore(&write_manifest(dir.path(), &m), &[]));
    assert_eq!(s["restoredRecords"], kept.len() as u64);
    let got = consume_all(
        &plaintext_config(),
        &restored,
        kept.len(),
        Duration::from_secs(60),
    );
    let pairs = |k: &Option<Vec<u8>>, v: &Option<Vec<u8>>| (k.clone(), v.clone());
    assert_eq!(
        got.iter()
            .map(|c| pairs(&c.record.key, &c.record.value))
            .collect::<Vec<_>>(),
        kept.iter()
            .map(|r| pairs(&r.key, &r.value))
            .collect::<Vec<_>>()
    );
    // The offset map has one run per stretch of surviving offsets, starting after the gap.
    let bytes = target
        .repository()
        .get(s["offsetMap"].as_str().expect("map"))
        .await
        .expect("map");
    let map: kafka_backup_engine::restore::OffsetMap =
        serde_json::from_slice(&bytes).expect("json");
    let runs = &map.topics[0].partitions[0].runs;
    assert!(
        runs[0][0] > 0 || runs.len() > 1,
        "compaction gaps appear in the runs: {runs:?}"
    );
    assert_eq!(runs[0][1], 0);
    assert_eq!(runs.iter().map(|r| r[2]).sum::<i64>(), kept.len() as i64);
}

#[tokio::test]
async fn restores_over_sasl_ssl_and_mutual_tls() {
    use kafka_backup_api::kafka::SaslMechanism;
    use kafka_backup_testkit::kafka::Listener;
    let dir = TempDir::new("rs-sec");
    let topic = unique_name("rs-sec");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let recs = sample_records(200, 2);
    produce(&plaintext_config(), &topic, &recs);
    let (target, _, id) = backed_up(&dir, &[&topic]).await;
    for (i, listener) in [Listener::SaslSsl(SaslMechanism::ScramSha256), Listener::Ssl]
        .into_iter()
        .enumerate()
    {
        let restored = format!("{topic}-sec{i}");
        let mut m = restore_manifest(&unique_name("sec"), &id, &target);
        m["spec"]["targetCluster"] = serde_json::to_value(listener.cluster_spec()).expect("spec");
        m["spec"]["topicMapping"] = serde_json::json!({&topic: &restored});
        m["spec"]["createTopics"] = true.into();
        let s = json_of(&restore(&write_manifest(dir.path(), &m), &[]));
        assert_eq!(s["restoredRecords"], 200, "{listener:?}");
        let got = consume_all(&plaintext_config(), &restored, 200, Duration::from_secs(60));
        for part in 0..2 {
            let want: Vec<TestRecord> = recs
                .iter()
                .filter(|r| r.partition == part)
                .cloned()
                .collect();
            assert_eq!(
                records_of(&got, part),
                want,
                "{listener:?} partition {part}"
            );
        }
    }
}

/// Records in `topic` (2 partitions) by end offsets; 0 while it does not exist.
fn landed_records(reader: &rdkafka::consumer::BaseConsumer, topic: &str) -> i64 {
    use rdkafka::consumer::Consumer;
    (0..2)
        .map(|p| {
            reader
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, h)| h)
                .unwrap_or(0)
        })
        .sum()
}
