//! `kafka-backup verify` and what a restore does with damaged objects: a flipped byte, a truncated
//! and a deleted segment are each found and named; a restore of a damaged backup fails naming the
//! object instead of writing corrupt data.

mod common;

use common::*;
use kafka_backup_testkit::kafka::{create_topic, plaintext_config, produce, sample_records};
use kafka_backup_testkit::unique_name;

fn verify(dir: &TempDir, file: &std::path::Path, id: &str, deep: bool) -> std::process::Output {
    let _ = dir;
    let mut c = cli();
    c.args(["verify", id, "-o", "json", "-f"]).arg(file);
    if deep {
        c.arg("--deep");
    }
    c.output().expect("run verify")
}

#[tokio::test]
async fn verify_finds_flipped_truncated_and_deleted_segments() {
    let dir = TempDir::new("vf");
    let topic = unique_name("vf");
    create_topic(&plaintext_config(), &topic, 3, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(3000, 3));
    let name = unique_name("vf");
    let repo_dir = dir.path().join("repo");
    let target = Target::Filesystem(repo_dir.clone());
    let file = write_manifest(
        dir.path(),
        &backup_manifest(&name, &plaintext(), &[&topic], &target),
    );
    let s = json_of(&backup(&file));
    let id = s["backupId"].as_str().expect("id").to_string();

    for deep in [false, true] {
        let r = json_of(&verify(&dir, &file, &id, deep));
        assert_eq!(r["problems"].as_array().map(Vec::len), Some(0), "{r}");
        assert_eq!(r["segments"], 3);
        if deep {
            assert_eq!(r["records"], 3000);
        }
    }

    let manifest = target
        .repository()
        .manifest(&name, &id)
        .await
        .expect("manifest");
    let segs: Vec<String> = manifest.topics[0]
        .partitions
        .iter()
        .map(|p| p.segments[0].path.clone())
        .collect();
    let path = |rel: &str| repo_dir.join(rel);
    // Flip a byte in the middle of the first segment, truncate the second, delete the third.
    let mut bytes = std::fs::read(path(&segs[0])).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(path(&segs[0]), &bytes).expect("write");
    let bytes = std::fs::read(path(&segs[1])).expect("read");
    std::fs::write(path(&segs[1]), &bytes[..bytes.len() - 10]).expect("write");
    std::fs::remove_file(path(&segs[2])).expect("delete");

    let out = verify(&dir, &file, &id, false);
    assert!(!out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let problems: Vec<(String, String)> = r["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["object"].as_str().unwrap_or_default().to_string(),
                p["problem"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let of = |seg: &str| {
        problems
            .iter()
            .find(|(o, _)| o == seg)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("{seg} not reported: {problems:?}"))
    };
    assert!(of(&segs[0]).contains("SHA-256"), "{problems:?}");
    assert!(of(&segs[1]).contains("size"), "{problems:?}");
    assert_eq!(of(&segs[2]), "missing");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed verification") && err.contains("3 problems"),
        "{err}"
    );

    // Deep verification says what is wrong inside the flipped segment.
    let out = verify(&dir, &file, &id, true);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let deep_problems = r["problems"].to_string();
    assert!(
        deep_problems.contains("does not decode") || deep_problems.contains("CRC"),
        "{deep_problems}"
    );

    // A restore of the damaged backup fails naming the object, and never reports success.
    let restored = format!("{topic}-r");
    let m = serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": {"name": unique_name("vfr")},
        "spec": {"backupId": &id, "targetCluster": serde_json::to_value(plaintext()).expect("c"),
                 "storage": target.storage_json(), "topicMapping": {&topic: &restored}, "createTopics": true}
    });
    let out = cli()
        .args(["restore", "-f"])
        .arg(write_manifest(dir.path(), &m))
        .output()
        .expect("restore");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "restore of a damaged backup succeeded"
    );
    assert!(
        segs.iter().any(|s| err.contains(s.as_str())),
        "error names no segment: {err}"
    );
}
