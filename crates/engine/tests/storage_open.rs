//! The engine's storage builders against the genuine test stores: the GCS builder reads through
//! fake-gcs-server (which serves reads of objects uploaded through its JSON API), with a
//! service-account file whose endpoint is loopback, so no cloud metadata server is ever asked.

use futures::TryStreamExt;
use kafka_backup_api::storage::StorageSpec;
use kafka_backup_engine::secrets::SecretStore;
use kafka_backup_engine::storage::{StorageOptions, open};
use kafka_backup_testkit::TestEnv;
use object_store::ObjectStoreExt;

#[tokio::test]
async fn gcs_storage_from_a_spec_lists_and_reads() {
    let env = TestEnv::get();
    let spec: StorageSpec = serde_json::from_value(serde_json::json!({
        "storageType": "gcs",
        "gcs": {"bucket": env.var("GCS_BUCKET"), "credentialsSecret": {"name": "gcs-credentials"}}
    }))
    .expect("spec");
    let storage = open(
        "spec.storage",
        &spec,
        &SecretStore::new(env.secrets_dir()),
        &StorageOptions::default(),
    )
    .expect("open gcs");
    assert_eq!(
        storage.description(),
        format!("gs://{}", env.var("GCS_BUCKET"))
    );
    let sample = object_store::path::Path::from(env.var("GCS_SAMPLE_OBJECT"));
    let listed: Vec<_> = storage
        .store()
        .list(None)
        .try_collect()
        .await
        .expect("list");
    assert!(listed.iter().any(|m| m.location == sample), "{listed:?}");
    let body = storage
        .store()
        .get(&sample)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert!(!body.is_empty());
}

#[tokio::test]
async fn missing_storage_block_and_credentials_are_named() {
    let env = TestEnv::get();
    let secrets = SecretStore::new(env.secrets_dir());
    let spec: StorageSpec =
        serde_json::from_value(serde_json::json!({"storageType": "s3"})).expect("spec");
    let err =
        open("spec.storage", &spec, &secrets, &StorageOptions::default()).expect_err("no s3 block");
    assert_eq!(
        err.to_string(),
        "spec.storage.s3: is required when storageType is s3"
    );

    let spec: StorageSpec = serde_json::from_value(serde_json::json!({
        "storageType": "gcs",
        "gcs": {"bucket": "b", "credentialsSecret": {"name": "no-such-secret"}}
    }))
    .expect("spec");
    let err =
        open("spec.storage", &spec, &secrets, &StorageOptions::default()).expect_err("no secret");
    let msg = err.to_string();
    assert!(
        msg.contains("spec.storage.gcs.credentialsSecret.key")
            && msg.contains("'no-such-secret'")
            && msg.contains("'credentials.json'"),
        "{msg}"
    );

    let spec: StorageSpec = serde_json::from_value(serde_json::json!({
        "storageType": "azure",
        "azure": {"accountName": "a", "container": "c"}
    }))
    .expect("spec");
    let err =
        open("spec.storage", &spec, &secrets, &StorageOptions::default()).expect_err("no auth");
    assert!(err.to_string().contains("useWorkloadIdentity"), "{err}");
}
