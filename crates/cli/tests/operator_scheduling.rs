//! `podTemplate.nodeSelector` and `tolerations` reach the scheduler: a selector no node matches
//! leaves the Job's pod Pending and status (Ready False, BackupUnschedulable) says why; a
//! toleration lets the pod onto a tainted node that turns every other pod away.
//!
//! This is the only test of its binary: it taints the test cluster's one node for a while, which
//! would hold back the pods of tests running beside it (cargo runs test binaries one at a time).

mod common;

use std::time::Duration;

use common::operator::{Setup, backup_manifest, condition, wait_for};
use kafka_backup_api::backup::KafkaBackup;
use kafka_backup_testkit::cluster;
use kafka_backup_testkit::kafka::{create_topic, plaintext_config, produce, sample_records};
use kafka_backup_testkit::{TestEnv, unique_name};
use serde_json::json;

/// Removes the taint when the test ends, however it ends.
struct Taint(String);

impl Drop for Taint {
    fn drop(&mut self) {
        let node = TestEnv::get().var("KB_NODE_NAME").to_string();
        let _ = cluster::try_run(
            &TestEnv::get().path("KUBECTL"),
            &["taint", "node", &node, &format!("{}-", self.0)],
            None,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_selector_and_tolerations_steer_the_job_pods() {
    let s = Setup::new("op-sched-node").await;
    let topic = unique_name("op-node");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(20, 1));

    // No node has the label: the pod stays Pending, and status says it cannot be scheduled and
    // why, in the scheduler's words.
    s.create::<KafkaBackup>(backup_manifest(
        &s,
        "nowhere",
        &topic,
        json!({"podTemplate": {"nodeSelector": {"disktype": "nvme-that-no-node-has"}}}),
    ))
    .await;
    let kb = wait_for("the reason in status", Duration::from_secs(120), || async {
        let kb = s.get::<KafkaBackup>("nowhere").await?;
        condition(&kb)["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot be scheduled"))
            .then_some(kb)
    })
    .await;
    let m = condition(&kb)["message"].as_str().expect("message");
    assert!(m.contains("node affinity/selector"), "{m}");
    assert_eq!(condition(&kb)["reason"], "BackupUnschedulable", "{m}");
    assert_eq!(condition(&kb)["status"], "False", "{m}");
    let pods = s.worker_pods().await;
    assert_eq!(pods.len(), 1);
    assert_eq!(
        pods[0].status.as_ref().and_then(|st| st.phase.as_deref()),
        Some("Pending")
    );

    // The node's own label selects it; a taint turns away every pod but the one that tolerates it.
    let node = TestEnv::get().var("KB_NODE_NAME").to_string();
    let key = format!("kafka-backup-test/{}", unique_name("t"));
    cluster::kubectl(
        &["taint", "node", &node, &format!("{key}=yes:NoSchedule")],
        None,
    );
    let _taint = Taint(format!("{key}=yes:NoSchedule"));
    s.create::<KafkaBackup>(backup_manifest(
        &s,
        "tolerated",
        &topic,
        json!({"podTemplate": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": key, "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]
        }}),
    ))
    .await;
    s.create::<KafkaBackup>(backup_manifest(&s, "intolerant", &topic, json!({})))
        .await;
    let kb = s
        .wait_phase::<KafkaBackup>("tolerated", "Completed", Duration::from_secs(120))
        .await;
    assert_eq!(kb["status"]["lastBackupRecords"], 20);
    let kb = wait_for(
        "the intolerant pod held back",
        Duration::from_secs(60),
        || async {
            let kb = s.get::<KafkaBackup>("intolerant").await?;
            condition(&kb)["message"]
                .as_str()
                .is_some_and(|m| m.contains("taint"))
                .then_some(kb)
        },
    )
    .await;
    assert_eq!(
        condition(&kb)["reason"],
        "BackupUnschedulable",
        "{}",
        kb["status"]
    );
    drop(_taint);
    s.wait_phase::<KafkaBackup>("intolerant", "Completed", Duration::from_secs(120))
        .await;
    s.finish().await;
}
