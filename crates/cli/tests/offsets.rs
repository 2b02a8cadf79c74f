//! `kafka-backup offsets` against the genuine broker: every reset strategy, snapshot, rollback and
//! verify, active and unknown groups, unknown snapshots, dry runs.

mod common;

use common::*;
use kafka_backup_testkit::kafka::{create_topic, plaintext_config, produce, sample_records};
use kafka_backup_testkit::unique_name;

fn reset_manifest(
    name: &str,
    groups: &[&str],
    strategy: &str,
    storage: &Target,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1",
        "kind": "KafkaOffsetReset",
        "metadata": {"name": name},
        "spec": {
            "kafkaCluster": serde_json::to_value(plaintext()).expect("cluster"),
            "consumerGroups": groups,
            "strategy": strategy,
            "storage": storage.storage_json(),
        }
    })
}

fn rollback_manifest(
    name: &str,
    operation: &str,
    snapshot: &str,
    groups: &[&str],
    storage: &Target,
) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1",
        "kind": "KafkaOffsetRollback",
        "metadata": {"name": name},
        "spec": {
            "kafkaCluster": serde_json::to_value(plaintext()).expect("cluster"),
            "operation": operation,
            "snapshotId": snapshot,
            "consumerGroups": groups,
            "storage": storage.storage_json(),
        }
    })
}

fn offsets(dir: &TempDir, sub: &str, m: &serde_json::Value) -> std::process::Output {
    cli()
        .args(["offsets", sub, "-o", "json", "-f"])
        .arg(write_manifest(dir.path(), m))
        .output()
        .expect("run offsets")
}

/// A 2-partition topic with 100 records (timestamps 1_700_000_000_000 + i) and a group at 10/20.
async fn topic_with_group() -> (String, String) {
    let topic = unique_name("of-topic");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(100, 2));
    let group = unique_name("of-group");
    commit(&group, &topic, &[(0, 10), (1, 20)]);
    (topic, group)
}

/// A strategy, its extra spec fields, and the offsets it must give partitions 0 and 1.
type StrategyCase = (&'static str, serde_json::Value, Vec<(i32, i64)>);

#[tokio::test]
async fn every_strategy_moves_the_group() {
    let dir = TempDir::new("of-strat");
    let storage = Target::Filesystem(dir.path().join("repo"));
    let (topic, group) = topic_with_group().await;
    let cases: Vec<StrategyCase> = vec![
        ("earliest", serde_json::json!({}), vec![(0, 0), (1, 0)]),
        ("latest", serde_json::json!({}), vec![(0, 50), (1, 50)]),
        // Partition 0 holds even i (ts base+i), partition 1 odd i: first at or after base+41.
        (
            "timestamp",
            serde_json::json!({"timestamp": "2023-11-14T22:13:20.041Z"}),
            vec![(0, 21), (1, 20)],
        ),
        // A time after the last record: the end offsets.
        (
            "timestamp",
            serde_json::json!({"timestamp": "2031-01-01T00:00:00Z"}),
            vec![(0, 50), (1, 50)],
        ),
        (
            "offset",
            serde_json::json!({"offsets": [{"topic": &topic, "partition": 0, "offset": 7}, {"topic": &topic, "partition": 1, "offset": 42}]}),
            vec![(0, 7), (1, 42)],
        ),
    ];
    for (strategy, extra, want) in cases {
        let mut m = reset_manifest(&unique_name("reset"), &[&group], strategy, &storage);
        for (k, v) in extra.as_object().expect("obj") {
            m["spec"][k] = v.clone();
        }
        m["spec"]["topics"] = serde_json::json!([&topic]);
        let r = json_of(&offsets(&dir, "reset", &m));
        assert_eq!(r["groups"][0]["outcome"], "success", "{strategy}: {r}");
        assert_eq!(committed(&group, &topic, 2), want, "{strategy}");
    }
}

#[tokio::test]
async fn header_based_uses_the_restore_offset_map() {
    let dir = TempDir::new("of-hb");
    let topic = unique_name("of-hb");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(100, 1));
    kafka_backup_testkit::kafka::delete_records_before(&plaintext_config(), &topic, 0, 40).await;
    let group = unique_name("of-hbgroup");
    commit(&group, &topic, &[(0, 55)]);
    let name = unique_name("ofb");
    let storage = Target::Filesystem(dir.path().join("repo"));
    let s = json_of(&backup(&write_manifest(
        dir.path(),
        &backup_manifest(&name, &plaintext(), &[&topic], &storage),
    )));
    let id = s["backupId"].as_str().expect("id");
    let restored = format!("{topic}-r");
    let restore = serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": {"name": "of-restore"},
        "spec": {"backupId": id, "targetCluster": serde_json::to_value(plaintext()).expect("c"),
                 "storage": storage.storage_json(), "topicMapping": {&topic: &restored}, "createTopics": true}
    });
    json_of(
        &cli()
            .args(["restore", "-o", "json", "-f"])
            .arg(write_manifest(dir.path(), &restore))
            .output()
            .expect("restore"),
    );
    let mut m = reset_manifest("hb", &[&group], "headerBased", &storage);
    m["spec"]["backupId"] = id.into();
    let r = json_of(&offsets(&dir, "reset", &m));
    assert_eq!(r["groups"][0]["outcome"], "success", "{r}");
    assert_eq!(committed(&group, &restored, 1), vec![(0, 15)]);
}

#[tokio::test]
async fn snapshot_reset_rollback_verify_round_trip() {
    let dir = TempDir::new("of-rb");
    let storage = Target::Filesystem(dir.path().join("repo"));
    let (topic, group) = topic_with_group().await;
    let snap = unique_name("snap");
    // Snapshot by pattern.
    let prefix = &group[..group.len() - 4];
    let r = json_of(&offsets(
        &dir,
        "snapshot",
        &rollback_manifest("s", "snapshot", &snap, &[&format!("{prefix}*")], &storage),
    ));
    assert_eq!(r["snapshotId"], snap.as_str());
    assert!(
        r["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .any(|g| g["groupId"] == group.as_str())
    );
    // list and show see it.
    let list = json_of(
        &cli()
            .args(["offsets", "list", "-o", "json", "-f"])
            .arg(write_manifest(
                dir.path(),
                &rollback_manifest("s", "snapshot", &snap, &[], &storage),
            ))
            .output()
            .expect("list"),
    );
    assert!(
        list["snapshots"]
            .as_array()
            .expect("snapshots")
            .iter()
            .any(|s| s["snapshotId"] == snap.as_str())
    );
    let shown = json_of(
        &cli()
            .args(["offsets", "show", &snap, "-o", "json", "-f"])
            .arg(write_manifest(
                dir.path(),
                &rollback_manifest("s", "snapshot", &snap, &[], &storage),
            ))
            .output()
            .expect("show"),
    );
    let g = shown["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["groupId"] == group.as_str())
        .expect("group");
    assert_eq!(g["offsets"].as_array().map(Vec::len), Some(2));
    assert!(
        shown["clusterId"].as_str().is_some_and(|c| !c.is_empty()),
        "{shown}"
    );
    assert!(
        shown["createdTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{shown}"
    );

    // Move the group (with a snapshot before, taken by the reset itself).
    let mut m = reset_manifest("mv", &[&group], "latest", &storage);
    m["spec"]["snapshotBeforeReset"] = true.into();
    let r = json_of(&offsets(&dir, "reset", &m));
    assert!(
        r["snapshotId"]
            .as_str()
            .expect("snapshot id")
            .starts_with("mv-"),
        "{r}"
    );
    assert_eq!(committed(&group, &topic, 2), vec![(0, 50), (1, 50)]);

    // verify now differs, and says so with a non-zero exit.
    let out = offsets(
        &dir,
        "verify",
        &rollback_manifest("v", "verify", &snap, &[&group], &storage),
    );
    assert!(!out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["verified"], false);
    assert_eq!(r["groups"][0]["outcome"], "differs");

    // rollback sets exactly the snapshot's offsets, then verifies them.
    let r = json_of(&offsets(
        &dir,
        "rollback",
        &rollback_manifest("rb", "rollback", &snap, &[&group], &storage),
    ));
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(committed(&group, &topic, 2), vec![(0, 10), (1, 20)]);
    let r = json_of(&offsets(
        &dir,
        "verify",
        &rollback_manifest("v2", "verify", &snap, &[&group], &storage),
    ));
    assert_eq!(r["groups"][0]["outcome"], "matches");

    // The subcommand must match the manifest's operation.
    let out = offsets(
        &dir,
        "rollback",
        &rollback_manifest("x", "verify", &snap, &[&group], &storage),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("spec.operation is verify"), "{err}");
}

#[tokio::test]
async fn bad_input_and_active_groups_are_refused_and_dry_runs_change_nothing() {
    let dir = TempDir::new("of-bad");
    let storage = Target::Filesystem(dir.path().join("repo"));
    let (topic, group) = topic_with_group().await;

    // Unknown group and a pattern matching nothing.
    let out = offsets(
        &dir,
        "reset",
        &reset_manifest("u", &["no-such-group-xyz"], "earliest", &storage),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown consumer group 'no-such-group-xyz'"),
        "{err}"
    );
    let err = String::from_utf8_lossy(
        &offsets(
            &dir,
            "reset",
            &reset_manifest("u", &["zz-nothing-*"], "earliest", &storage),
        )
        .stderr,
    )
    .into_owned();
    assert!(
        err.contains("'zz-nothing-*' matches no consumer group"),
        "{err}"
    );

    // Unknown snapshot.
    let out = offsets(
        &dir,
        "rollback",
        &rollback_manifest("n", "rollback", "no-such-snapshot", &[], &storage),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("snapshot 'no-such-snapshot' not found"),
        "{err}"
    );

    // Dry run: reported, not committed.
    let mut m = reset_manifest("dry", &[&group], "earliest", &storage);
    m["spec"]["dryRun"] = true.into();
    let r = json_of(&offsets(&dir, "reset", &m));
    assert_eq!(r["groups"][0]["outcome"], "planned");
    assert_eq!(r["groups"][0]["offsets"][0]["to"], 0);
    assert_eq!(committed(&group, &topic, 2), vec![(0, 10), (1, 20)]);

    // timestamp without a timestamp.
    let err = String::from_utf8_lossy(
        &offsets(
            &dir,
            "reset",
            &reset_manifest("t", &[&group], "timestamp", &storage),
        )
        .stderr,
    )
    .into_owned();
    assert!(err.contains("spec.timestamp"), "{err}");

    // Fields another strategy or operation would use are refused, not ignored.
    let mut m = reset_manifest("f", &[&group], "earliest", &storage);
    m["spec"]["timestamp"] = "2024-12-01T12:00:00Z".into();
    let err = String::from_utf8_lossy(&offsets(&dir, "reset", &m).stderr).into_owned();
    assert!(
        err.contains("spec.timestamp") && err.contains("only by strategy timestamp"),
        "{err}"
    );
    let mut m = reset_manifest("f", &[&group], "latest", &storage);
    m["spec"]["backupId"] = "x-20241201-120000".into();
    let err = String::from_utf8_lossy(&offsets(&dir, "reset", &m).stderr).into_owned();
    assert!(
        err.contains("spec.backupId") && err.contains("headerBased"),
        "{err}"
    );
    let mut m = rollback_manifest("f", "verify", "some-snapshot", &[], &storage);
    m["spec"]["topics"] = serde_json::json!([&topic]);
    let err = String::from_utf8_lossy(&offsets(&dir, "verify", &m).stderr).into_owned();
    assert!(
        err.contains("spec.topics") && err.contains("only by operation snapshot"),
        "{err}"
    );

    // An active group is refused, naming it, and nothing moves.
    let member = active_member(&group, &topic);
    let out = offsets(
        &dir,
        "reset",
        &reset_manifest("a", &[&group], "latest", &storage),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&group) && err.contains("active members"),
        "{err}"
    );
    drop(member);
}

#[tokio::test]
async fn hundreds_of_groups_are_reset_with_results_per_group() {
    let dir = TempDir::new("of-many");
    let storage = Target::Filesystem(dir.path().join("repo"));
    let topic = unique_name("of-many");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(50, 1));
    let prefix = unique_name("many");
    let groups: Vec<String> = (0..200).map(|i| format!("{prefix}-g{i:03}")).collect();
    // Commit concurrently: 200 groups, a few threads.
    std::thread::scope(|s| {
        for chunk in groups.chunks(50) {
            let topic = &topic;
            s.spawn(move || {
                for g in chunk {
                    commit(g, topic, &[(0, 5)]);
                }
            });
        }
    });
    let started = std::time::Instant::now();
    let r = json_of(&offsets(
        &dir,
        "reset",
        &reset_manifest("many", &[&format!("{prefix}-*")], "latest", &storage),
    ));
    let reports = r["groups"].as_array().expect("groups");
    assert_eq!(reports.len(), 200);
    assert!(reports.iter().all(|g| g["outcome"] == "success"), "{r}");
    for g in groups.iter().step_by(37) {
        assert_eq!(committed(g, &topic, 1), vec![(0, 50)], "{g}");
    }
    eprintln!("reset 200 groups in {:?}", started.elapsed());
    // Leave the shared broker as it was: every backup reads every group's offsets.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        plaintext_config().create().expect("admin");
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    let deleted = admin
        .delete_groups(&names, &rdkafka::admin::AdminOptions::new())
        .await
        .expect("delete groups");
    assert!(deleted.iter().all(|r| r.is_ok()), "{deleted:?}");
}
