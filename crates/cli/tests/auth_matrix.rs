//! Backup, restore and consumer-group offset operations over every authenticated listener of the
//! test broker: SASL_SSL with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, mutual TLS, and SASL PLAIN
//! without TLS. Each restore is checked record for record; each offset operation by reading the
//! group's committed offsets back.

mod common;

use common::{
    Target, TempDir, assert_same, backup, backup_manifest, cli, commit, committed, json_of,
    of_partition, read_backup, write_manifest,
};
use kafka_backup_api::kafka::SaslMechanism;
use kafka_backup_testkit::kafka::{
    Listener, TestRecord, consume_all, create_topic, plaintext_config, produce, sample_records,
};
use kafka_backup_testkit::unique_name;
use serde_json::json;

fn run(dir: &TempDir, args: &[&str], manifest: &serde_json::Value) -> serde_json::Value {
    json_of(
        &cli()
            .args(args)
            .args(["-o", "json", "-f"])
            .arg(write_manifest(dir.path(), manifest))
            .output()
            .expect("run kafka-backup"),
    )
}

/// One listener: backup, restore, snapshot, reset, rollback, verify.
async fn over(listener: Listener) {
    let dir = TempDir::new("auth-matrix");
    let topic = unique_name("auth-src");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let records = sample_records(200, 2);
    produce(&plaintext_config(), &topic, &records);
    {
        let what = format!("{listener:?}");
        let cluster = serde_json::to_value(listener.cluster_spec()).expect("cluster");
        let name = unique_name("auth");
        let target = Target::Filesystem(dir.path().join(&name));

        // Backup.
        let m = backup_manifest(&name, &listener.cluster_spec(), &[&topic], &target);
        let s = json_of(&backup(&write_manifest(dir.path(), &m)));
        let id = s["backupId"].as_str().expect("id").to_string();
        let (_, stored) = read_backup(&target.repository(), &name, &id).await;
        for p in 0..2 {
            assert_same(
                &stored[&(topic.clone(), p)],
                &of_partition(&records, p),
                &what,
            );
        }

        // Restore into a new topic over the same listener.
        let restored = format!("{name}-restored");
        let r = run(
            &dir,
            &["restore"],
            &json!({
                "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore",
                "metadata": {"name": format!("{name}-r")},
                "spec": {"backupId": id, "targetCluster": cluster, "storage": target.storage_json(),
                         "topicMapping": {&topic: &restored}, "createTopics": true}
            }),
        );
        assert_eq!(r["restoredRecords"], 200, "{what}: {r}");
        let got = consume_all(
            &plaintext_config(),
            &restored,
            200,
            std::time::Duration::from_secs(30),
        );
        for p in 0..2 {
            let have: Vec<TestRecord> = got
                .iter()
                .filter(|c| c.record.partition == p)
                .map(|c| c.record.clone())
                .collect();
            let want = of_partition(&records, p);
            assert_eq!(have.len(), want.len(), "{what} partition {p}");
            for (h, w) in have.iter().zip(&want) {
                assert_eq!(
                    (&h.key, &h.value, &h.headers),
                    (&w.key, &w.value, &w.headers),
                    "{what}"
                );
            }
        }

        // Offsets: snapshot, reset to earliest, roll back, verify.
        let group = unique_name("auth-group");
        commit(&group, &restored, &[(0, 40), (1, 60)]);
        let snap = unique_name("auth-snap");
        let korb = |op: &str| {
            json!({
                "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaOffsetRollback",
                "metadata": {"name": format!("{name}-{op}")},
                "spec": {"kafkaCluster": cluster, "operation": op, "snapshotId": snap,
                         "consumerGroups": [&group], "storage": target.storage_json()}
            })
        };
        let r = run(&dir, &["offsets", "snapshot"], &korb("snapshot"));
        assert_eq!(r["groups"][0]["outcome"], "success", "{what}: {r}");
        let r = run(
            &dir,
            &["offsets", "reset"],
            &json!({
                "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaOffsetReset",
                "metadata": {"name": format!("{name}-reset")},
                "spec": {"kafkaCluster": cluster, "consumerGroups": [&group], "strategy": "earliest"}
            }),
        );
        assert_eq!(r["groups"][0]["outcome"], "success", "{what}: {r}");
        assert_eq!(
            committed(&group, &restored, 2),
            vec![(0, 0), (1, 0)],
            "{what}"
        );
        let r = run(&dir, &["offsets", "rollback"], &korb("rollback"));
        assert_eq!(r["verified"], true, "{what}: {r}");
        assert_eq!(
            committed(&group, &restored, 2),
            vec![(0, 40), (1, 60)],
            "{what}"
        );
        let r = run(&dir, &["offsets", "verify"], &korb("verify"));
        assert_eq!(r["verified"], true, "{what}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_ssl_plain() {
    over(Listener::SaslSsl(SaslMechanism::Plain)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_ssl_scram_sha_256() {
    over(Listener::SaslSsl(SaslMechanism::ScramSha256)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_ssl_scram_sha_512() {
    over(Listener::SaslSsl(SaslMechanism::ScramSha512)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_mutual_tls() {
    over(Listener::Ssl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_plaintext_plain() {
    over(Listener::SaslPlaintext(SaslMechanism::Plain)).await;
}
