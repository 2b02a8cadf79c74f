//! Consumer group offsets after a restore: every strategy, header-based translation into a cluster
//! whose offsets differ from the source, active groups refused, the rollback snapshot.

mod common;

use std::time::Duration;

use common::*;
use kafka_backup_testkit::kafka::{create_topic, plaintext_config, produce, sample_records};
use kafka_backup_testkit::unique_name;
use rdkafka::consumer::Consumer;

fn restore(dir: &TempDir, m: &serde_json::Value, extra: &[&str]) -> std::process::Output {
    cli()
        .args(["restore", "-o", "json"])
        .args(extra)
        .arg("-f")
        .arg(write_manifest(dir.path(), m))
        .output()
        .expect("run restore")
}

/// A topic whose first 40 offsets were deleted (so restored offsets differ from the source by
/// 40), a group committed mid-topic at 55, and a backup of both.
async fn source_with_group(dir: &TempDir) -> (String, String, Target, String) {
    let topic = unique_name("ro-src");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(100, 1));
    kafka_backup_testkit::kafka::delete_records_before(&plaintext_config(), &topic, 0, 40).await;
    let group = unique_name("ro-group");
    commit(&group, &topic, &[(0, 55)]);
    let name = unique_name("ro");
    let target = Target::Filesystem(dir.path().join(&name));
    let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    m["spec"]["sourceClusterId"] = "production-us-west-2".into();
    let s = json_of(&backup(&write_manifest(dir.path(), &m)));
    (
        topic,
        group,
        target,
        s["backupId"].as_str().expect("id").to_string(),
    )
}

#[tokio::test]
async fn header_based_translates_the_committed_offset_into_the_target() {
    let dir = TempDir::new("ro-hb");
    let (topic, group, target, id) = source_with_group(&dir).await;
    let restored = format!("{topic}-hb");
    let mut m = restore_manifest_mapped(&unique_name("hb"), &id, &target, &topic, &restored);
    m["spec"]["offsetReset"] = serde_json::json!({
        "enabled": true, "strategy": "headerBased", "sourceCluster": "production-us-west-2",
        "consumerGroups": [&group]
    });
    // The dry run shows the group and its target offset, and changes nothing.
    let dry = json_of(&restore(&dir, &m, &["--dry-run"]));
    assert_eq!(
        dry["offsetReset"]["groups"][0]["offsets"][0]["offset"], 15,
        "{dry}"
    );
    assert!(committed(&group, &restored, 1).is_empty());

    let s = json_of(&restore(&dir, &m, &[]));
    assert_eq!(s["offsetReset"]["phase"], "Completed");
    // Source offset 55 was the 16th record kept (40..100 restored to 0..60): next to read is 15.
    assert_eq!(committed(&group, &restored, 1), vec![(0, 15)]);

    // Without consumerGroups the groups recorded in the backup are used.
    let restored2 = format!("{topic}-hb2");
    let mut m = restore_manifest_mapped(&unique_name("hb2"), &id, &target, &topic, &restored2);
    m["spec"]["offsetReset"] = serde_json::json!({"enabled": true, "strategy": "headerBased"});
    json_of(&restore(&dir, &m, &[]));
    assert_eq!(committed(&group, &restored2, 1), vec![(0, 15)]);

    // A sourceCluster that is not the backup's is refused.
    let mut m = restore_manifest_mapped(
        &unique_name("hb3"),
        &id,
        &target,
        &topic,
        &format!("{topic}-hb3"),
    );
    m["spec"]["offsetReset"] = serde_json::json!({"enabled": true, "strategy": "headerBased", "sourceCluster": "elsewhere", "consumerGroups": [&group]});
    let out = restore(&dir, &m, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.offsetReset.sourceCluster") && err.contains("elsewhere"),
        "{err}"
    );
}

#[tokio::test]
async fn header_based_counts_only_the_records_of_a_time_window() {
    let dir = TempDir::new("ro-hbw");
    let (topic, group, target, id) = source_with_group(&dir).await;
    // Records carry timestamps base + i (i = 0..100; 40..100 were kept); the group committed 55.
    let base = 1_700_000_000_000i64;
    for (label, pitr, want_restored, want_offset) in [
        // 50..100 restored: 50..55 precede the committed offset.
        (
            "in",
            serde_json::json!({"enabled": true, "fromTimestampMillis": base + 50}),
            50,
            5,
        ),
        // 60..100 restored: the group has read none of them.
        (
            "after",
            serde_json::json!({"enabled": true, "fromTimestampMillis": base + 60}),
            40,
            0,
        ),
        // 45..=52 restored: the group has read all of them.
        (
            "before",
            serde_json::json!({"enabled": true, "fromTimestampMillis": base + 45,
                               "timestampMillis": base + 52}),
            8,
            8,
        ),
    ] {
        let restored = format!("{topic}-{label}");
        let mut m = restore_manifest_mapped(&unique_name("hbw"), &id, &target, &topic, &restored);
        m["spec"]["pitr"] = pitr;
        m["spec"]["offsetReset"] = serde_json::json!({
            "enabled": true, "strategy": "headerBased", "consumerGroups": [&group]
        });
        let dry = json_of(&restore(&dir, &m, &["--dry-run"]));
        assert_eq!(
            dry["offsetReset"]["groups"][0]["offsets"][0]["offset"], want_offset,
            "{label}: {dry}"
        );
        let s = json_of(&restore(&dir, &m, &[]));
        assert_eq!(s["restoredRecords"], want_restored, "{label}: {s}");
        assert_eq!(
            committed(&group, &restored, 1),
            vec![(0, want_offset)],
            "{label}"
        );
    }
}

#[tokio::test]
async fn earliest_latest_timestamp_and_offset_strategies() {
    let dir = TempDir::new("ro-strat");
    let (topic, group, target, id) = source_with_group(&dir).await;
    // Records carry timestamps 1_700_000_000_000 + i (i = 0..100; 40..100 were kept).
    for (strategy, extra, want) in [
        ("earliest", serde_json::json!({}), 0),
        ("latest", serde_json::json!({}), 60),
        (
            "timestamp",
            serde_json::json!({"timestamp": "2023-11-14T22:13:20.070Z"}),
            30,
        ),
        (
            "timestamp",
            serde_json::json!({"timestamp": "2030-01-01T00:00:00Z"}),
            60,
        ),
        ("offset", serde_json::json!({}), 55),
    ] {
        let restored = format!("{topic}-{strategy}-{want}");
        let mut m = restore_manifest_mapped(&unique_name("st"), &id, &target, &topic, &restored);
        let mut reset =
            serde_json::json!({"enabled": true, "strategy": strategy, "consumerGroups": [&group]});
        for (k, v) in extra.as_object().expect("obj") {
            reset[k] = v.clone();
        }
        m["spec"]["offsetReset"] = reset;
        let s = json_of(&restore(&dir, &m, &[]));
        assert_eq!(
            committed(&group, &restored, 1),
            vec![(0, want)],
            "{strategy}: {s}"
        );
    }
}

#[tokio::test]
async fn active_groups_are_refused_before_anything_is_written() {
    let dir = TempDir::new("ro-active");
    let (topic, _, target, id) = source_with_group(&dir).await;
    let busy = unique_name("ro-busy");
    let member = active_member(&busy, &topic);
    let restored = format!("{topic}-busy");
    let mut m = restore_manifest_mapped(&unique_name("busy"), &id, &target, &topic, &restored);
    m["spec"]["offsetReset"] =
        serde_json::json!({"enabled": true, "strategy": "earliest", "consumerGroups": [&busy]});
    let out = restore(&dir, &m, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&busy) && err.contains("active members"),
        "{err}"
    );
    let md = member
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    assert!(
        !md.topics().iter().any(|t| t.name() == restored),
        "nothing created for a refused restore"
    );
    drop(member);
}

#[tokio::test]
async fn rollback_snapshot_holds_the_offsets_before_the_reset() {
    let dir = TempDir::new("ro-rb");
    let (topic, _, target, id) = source_with_group(&dir).await;
    // The target already has data and a group with committed offsets on it.
    let existing = unique_name("ro-existing");
    create_topic(&plaintext_config(), &existing, 1, 1, &[]).await;
    produce(&plaintext_config(), &existing, &sample_records(10, 1));
    let group = unique_name("ro-rbgroup");
    commit(&group, &existing, &[(0, 7)]);
    let snapshot = unique_name("pre-restore");
    let mut m = restore_manifest_mapped(&unique_name("rb"), &id, &target, &topic, &existing);
    m["spec"]["existingData"] = "append".into();
    m["spec"]["offsetReset"] =
        serde_json::json!({"enabled": true, "strategy": "latest", "consumerGroups": [&group]});
    m["spec"]["rollback"] = serde_json::json!({"enabled": true, "snapshotId": &snapshot});
    let s = json_of(&restore(&dir, &m, &[]));
    assert_eq!(s["rollbackSnapshotId"], snapshot.as_str());
    assert_eq!(committed(&group, &existing, 1), vec![(0, 70)]);
    let bytes = target
        .repository()
        .get(&format!("offset-snapshots/{snapshot}.json"))
        .await
        .expect("snapshot stored");
    let snap: kafka_backup_engine::offsets::OffsetSnapshot =
        serde_json::from_slice(&bytes).expect("snapshot json");
    assert_eq!(snap.snapshot_id, snapshot);
    let g = snap
        .groups
        .iter()
        .find(|g| g.group_id == group)
        .expect("group in snapshot");
    assert_eq!(
        g.offsets
            .iter()
            .map(|o| (o.topic.as_str(), o.partition, o.offset))
            .collect::<Vec<_>>(),
        vec![(existing.as_str(), 0, 7)]
    );

    // Committing the snapshot back restores the previous offsets exactly.
    let offsets: std::collections::BTreeMap<(String, i32), i64> = g
        .offsets
        .iter()
        .map(|o| ((o.topic.clone(), o.partition), o.offset))
        .collect();
    kafka_backup_engine::offsets::commit_offsets(&plaintext_config(), &group, &offsets)
        .expect("rollback");
    assert_eq!(committed(&group, &existing, 1), vec![(0, 7)]);

    // Snapshots are immutable: the same id again is refused.
    let mut m2 = restore_manifest_mapped(
        &unique_name("rb2"),
        &id,
        &target,
        &topic,
        &format!("{topic}-rb2"),
    );
    m2["spec"]["offsetReset"] =
        serde_json::json!({"enabled": true, "strategy": "latest", "consumerGroups": [&group]});
    m2["spec"]["rollback"] = serde_json::json!({"enabled": true, "snapshotId": &snapshot});
    let out = restore(&dir, &m2, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&snapshot) && err.contains("already exists"),
        "{err}"
    );
}
