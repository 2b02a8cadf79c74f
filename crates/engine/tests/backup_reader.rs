//! The backup's partition reader against the genuine test broker, with the default client
//! settings and with settings the CLI does not expose: a fetch queue so small that the reader
//! keeps catching up with the client, and segments so small that it rolls (and reassigns its
//! partition) many times. Whatever the interleaving of batches, stream and rolls, every record is
//! stored once, in order, intact.

use std::sync::Arc;

use kafka_backup_api::backup::KafkaBackup;
use kafka_backup_engine::backup::{self, BackupOptions, BackupSummary, Progress};
use kafka_backup_engine::limits::{Backoff, CircuitBreaker};
use kafka_backup_engine::repo::Repository;
use kafka_backup_engine::secrets::SecretStore;
use kafka_backup_engine::storage::{self, StorageOptions};
use kafka_backup_format::{Record, decode_segment};
use kafka_backup_testkit::kafka::{
    Listener, assert_same, create_topic, plaintext_config, produce, sample_records,
};
use kafka_backup_testkit::{TestEnv, unique_name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_stored_once_in_order_whatever_the_client_has_fetched() {
    let topic = unique_name("rd-batches");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    let records = sample_records(60_000, 1);
    produce(&plaintext_config(), &topic, &records);

    let tiny = BackupOptions {
        workers: 1,
        fetch_queue_kib: 1,
        block_bytes: 8 << 10,
        segment_bytes: 32 << 10,
        ..BackupOptions::default()
    };
    for (what, options) in [("defaults", BackupOptions::default()), ("tiny queue", tiny)] {
        let (summary, stored) = backup_and_read(&topic, &options).await;
        assert_eq!(summary.records, 60_000, "{what}");
        if options.segment_bytes < 1 << 20 {
            assert!(
                summary.new_segments > 5,
                "{what}: {} segments",
                summary.new_segments
            );
        }
        assert_same(&stored, &records, what);
        assert!(
            stored.iter().enumerate().all(|(i, r)| r.offset == i as i64),
            "{what}: offsets are not 0..60000 in order"
        );
    }
}

/// Backs up `topic` to a new directory with `options` and decodes what was stored.
async fn backup_and_read(topic: &str, options: &BackupOptions) -> (BackupSummary, Vec<Record>) {
    let dir = std::env::temp_dir().join(unique_name("kb-reader"));
    let name = unique_name("reader");
    let storage_spec = serde_json::json!({
        "storageType": "filesystem",
        "filesystem": {"path": dir.join("repo")}
    });
    let kb: KafkaBackup = serde_json::from_value(serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1",
        "kind": "KafkaBackup",
        "metadata": {"name": name},
        "spec": {
            "kafkaCluster": serde_json::to_value(Listener::Plaintext.cluster_spec()).expect("spec"),
            "topics": [topic],
            "storage": storage_spec,
        }
    }))
    .expect("KafkaBackup");
    let secrets = SecretStore::new(TestEnv::get().secrets_dir());
    let summary = backup::run(&kb, &secrets, options, Arc::new(Progress::default()))
        .await
        .expect("backup");

    let repo = Repository::new(
        storage::open(
            "spec.storage",
            &serde_json::from_value(storage_spec).expect("storage spec"),
            &secrets,
            &StorageOptions::default(),
        )
        .expect("storage"),
        Arc::new(CircuitBreaker::new("storage", None)),
        Backoff::default(),
    );
    let manifest = repo
        .manifest(&name, &summary.backup_id)
        .await
        .expect("manifest");
    let mut stored = Vec::new();
    for s in &manifest.topics[0].partitions[0].segments {
        let bytes = repo.get(&s.path).await.expect("segment");
        stored.extend(decode_segment(&bytes).expect("segment decodes"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    (summary, stored)
}
