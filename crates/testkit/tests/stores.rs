//! Smoke tests of the genuine object stores through `object_store`: put/get/list/delete on the S3
//! server and Azurite; list/get on fake-gcs-server (it serves reads of objects uploaded through its
//! JSON API; `object_store`'s GCS writes are not supported by any emulator).

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use kafka_backup_testkit::{TestEnv, stores, unique_name};

async fn put_get_list_delete(store: Arc<dyn ObjectStore>) {
    let prefix = Path::from(unique_name("smoke-store"));
    let names = ["a.bin", "b/c.bin"];
    for (i, name) in names.iter().enumerate() {
        let body = vec![i as u8; 1024 * (i + 1)];
        store
            .put(&prefix.clone().join_path(name), PutPayload::from(body))
            .await
            .unwrap_or_else(|e| panic!("{store}: put {name}: {e}"));
    }
    let got = store
        .get(&prefix.clone().join_path("b/c.bin"))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read body");
    assert_eq!(got.as_ref(), vec![1u8; 2048].as_slice());

    let range = store
        .get_range(&prefix.clone().join_path("b/c.bin"), 10..20)
        .await
        .expect("ranged get");
    assert_eq!(range.len(), 10);

    let mut listed: Vec<(String, u64)> = store
        .list(Some(&prefix))
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await
        .expect("list");
    listed.sort();
    assert_eq!(
        listed,
        vec![
            (format!("{prefix}/a.bin"), 1024),
            (format!("{prefix}/b/c.bin"), 2048)
        ]
    );

    for name in names {
        store
            .delete(&prefix.clone().join_path(name))
            .await
            .expect("delete");
    }
    let left: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .expect("list after delete");
    assert!(
        left.is_empty(),
        "{store}: objects left after delete: {left:?}"
    );
    let missing = store.get(&prefix.clone().join_path("a.bin")).await;
    assert!(
        matches!(missing, Err(object_store::Error::NotFound { .. })),
        "{store}: deleted object still readable: {missing:?}"
    );
}

trait JoinPath {
    fn join_path(self, rest: &str) -> Path;
}

impl JoinPath for Path {
    fn join_path(self, rest: &str) -> Path {
        rest.split('/').fold(self, |p, part| p.join(part))
    }
}

#[tokio::test]
async fn s3_put_get_list_delete() {
    put_get_list_delete(stores::s3()).await;
}

#[tokio::test]
async fn s3_wrong_secret_key_is_rejected() {
    let store = stores::s3_with_wrong_secret();
    let err = store
        .put(
            &Path::from(unique_name("smoke-denied")),
            PutPayload::from_static(b"x"),
        )
        .await
        .expect_err("a wrong secret key must be rejected");
    let msg = err.to_string();
    assert!(!msg.contains("not-the-secret-key"), "secret leaked: {msg}");
}

#[tokio::test]
async fn azure_put_get_list_delete() {
    put_get_list_delete(stores::azure()).await;
}

#[tokio::test]
async fn gcs_list_and_get() {
    let env = TestEnv::get();
    let store = stores::gcs();
    let object = Path::from(env.var("GCS_SAMPLE_OBJECT"));
    let listed: Vec<_> = store.list(None).try_collect().await.expect("list bucket");
    let meta = listed
        .iter()
        .find(|m| m.location == object)
        .unwrap_or_else(|| panic!("{object} not in listing {listed:?}"));
    let body = store
        .get(&object)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(body.len() as u64, meta.size);
    assert!(!body.is_empty());
}
