//! A restore's dry run shows the consumer group offsets the restore then commits: both come from
//! one offset table, for every strategy that can be planned before the records are written.

mod common;

use common::*;
use kafka_backup_testkit::kafka::{create_topic, plaintext_config, produce, sample_records};
use kafka_backup_testkit::unique_name;

fn restore(dir: &TempDir, m: &serde_json::Value, extra: &[&str]) -> serde_json::Value {
    json_of(
        &cli()
            .args(["restore", "-o", "json"])
            .args(extra)
            .arg("-f")
            .arg(write_manifest(dir.path(), m))
            .output()
            .expect("run restore"),
    )
}

/// The group's offsets in a restore summary, as (topic, partition, offset).
fn offsets(summary: &serde_json::Value) -> Vec<(String, i64, i64)> {
    summary["offsetReset"]["groups"][0]["offsets"]
        .as_array()
        .unwrap_or_else(|| panic!("no offsets in {summary}"))
        .iter()
        .map(|o| {
            (
                o["topic"].as_str().unwrap_or_default().to_string(),
                o["partition"].as_i64().unwrap_or(-1),
                o["offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[tokio::test]
async fn dry_run_shows_the_offsets_the_restore_commits() {
    let dir = TempDir::new("rd-agree");
    // 100 records, the first 40 deleted, a group that read everything (committed 100): restored
    // into a topic that already holds 7 records, the group's offset is past the restored ones.
    let topic = unique_name("rd-src");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(100, 1));
    kafka_backup_testkit::kafka::delete_records_before(&plaintext_config(), &topic, 0, 40).await;
    let group = unique_name("rd-group");
    commit(&group, &topic, &[(0, 100)]);
    let name = unique_name("rd");
    let target = Target::Filesystem(dir.path().join(&name));
    let m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    let id = json_of(&backup(&write_manifest(dir.path(), &m)))["backupId"]
        .as_str()
        .expect("id")
        .to_string();

    for strategy in ["offset", "headerBased", "latest", "earliest"] {
        let restored = unique_name("rd-dst");
        create_topic(&plaintext_config(), &restored, 1, 1, &[]).await;
        produce(&plaintext_config(), &restored, &sample_records(7, 1));
        let m = serde_json::json!({
            "apiVersion": "kafka.oso.sh/v1alpha1",
            "kind": "KafkaRestore",
            "metadata": {"name": unique_name("rd-restore")},
            "spec": {
                "backupId": &id,
                "targetCluster": serde_json::to_value(plaintext()).expect("cluster"),
                "storage": target.storage_json(),
                "topicMapping": {&topic: &restored},
                "existingData": "append",
                "offsetReset": {"enabled": true, "strategy": strategy, "consumerGroups": [&group]},
            }
        });
        let dry = restore(&dir, &m, &["--dry-run"]);
        assert_eq!(dry["offsetReset"]["phase"], "Planned", "{dry}");
        assert!(committed(&group, &restored, 1).is_empty(), "{strategy}");
        let run = restore(&dir, &m, &[]);
        assert_eq!(run["offsetReset"]["phase"], "Completed", "{run}");
        assert_eq!(offsets(&dry), offsets(&run), "{strategy}: {dry} {run}");
        let want = match strategy {
            "earliest" => 0,
            // 7 existing + 60 restored; the committed 100 is past them all.
            _ => 67,
        };
        assert_eq!(
            offsets(&run),
            vec![(restored.clone(), 0, want)],
            "{strategy}"
        );
        assert_eq!(
            committed(&group, &restored, 1),
            vec![(0, want)],
            "{strategy}"
        );
    }
}
