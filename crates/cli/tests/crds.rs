//! The CRDs: the committed copies under deploy/ (and the Helm chart's) are what the types
//! generate, they apply to the genuine API server, every example of the spec documents is accepted
//! as written (with strict field validation), and invalid objects are refused with messages naming
//! the field.

mod common;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};

use kafka_backup_testkit::env::repo_root;
use kafka_backup_testkit::{k8s, unique_name};

use common::spec_examples;

#[test]
fn committed_crds_are_what_the_types_generate() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kafka-backup"))
        .arg("crd")
        .output()
        .expect("run kafka-backup crd");
    assert!(out.status.success());
    let committed = std::fs::read_to_string(repo_root().join("deploy/crds/kafka-backup.yaml"))
        .expect("read deploy/crds/kafka-backup.yaml");
    assert!(
        committed == String::from_utf8_lossy(&out.stdout),
        "deploy/crds/kafka-backup.yaml is stale: run `cargo run -p kafka-backup-cli -- crd > deploy/crds/kafka-backup.yaml`, then scripts/render-manifests"
    );
    // The Helm chart installs its own copy (Helm reads CRDs only from the chart's crds/).
    let chart = std::fs::read_to_string(
        repo_root().join("deploy/helm/kafka-backup/crds/kafka-backup.yaml"),
    )
    .expect("read deploy/helm/kafka-backup/crds/kafka-backup.yaml");
    assert!(
        chart == committed,
        "deploy/helm/kafka-backup/crds/kafka-backup.yaml differs from deploy/crds/kafka-backup.yaml: run scripts/render-manifests"
    );
}

async fn install_crds(client: &kube::Client) {
    k8s::apply_crds(client).await;
}

async fn namespace(client: &kube::Client) -> String {
    let name = unique_name("crd");
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

fn api_for(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kafka.oso.sh", "v1alpha1", kind);
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// Applies `obj` with strict field validation, retrying briefly while a new CRD's endpoint appears.
async fn apply(
    client: &kube::Client,
    ns: &str,
    obj: &serde_json::Value,
) -> Result<(), kube::Error> {
    let kind = obj["kind"].as_str().expect("kind");
    let name = obj["metadata"]["name"].as_str().expect("name");
    let api = api_for(client, ns, kind);
    let mut obj = obj.clone();
    obj["metadata"]["namespace"] = ns.into();
    let pp = PatchParams::apply("kafka-backup-tests").validation_strict();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match api.patch(name, &pp, &Patch::Apply(&obj)).await {
            Err(kube::Error::Api(s)) if s.code == 404 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other.map(|_| ()),
        }
    }
}

#[test]
fn reference_copies_match_the_shared_spec_when_present() {
    // docs/reference holds the CRD reference the examples come from; where the shared spec is
    // checked out beside the repository, the copies must not have drifted from it.
    let shared = repo_root().join("../shared/spec");
    if !shared.is_dir() {
        return;
    }
    for file in ["kafkabackup-crd.md", "kafkarestore-crd.md"] {
        let a = std::fs::read_to_string(shared.join(file)).expect("shared spec");
        let b =
            std::fs::read_to_string(repo_root().join("docs/reference").join(file)).expect("copy");
        assert!(
            a == b,
            "docs/reference/{file} differs from ../shared/spec/{file}: copy it again"
        );
    }
}

/// Every YAML block of the spec documents whose apiVersion is kafka.oso.sh/v1alpha1, except those
/// of the "Overview" sections, which are fragments (`spec:` with a comment for a body).
/// The path of the first part of `want` that `got` does not hold as written, if any.
fn not_contained(want: &serde_json::Value, got: &serde_json::Value, path: &str) -> Option<String> {
    match (want, got) {
        (serde_json::Value::Object(w), serde_json::Value::Object(g)) => {
            w.iter().find_map(|(k, v)| match g.get(k) {
                Some(gv) => not_contained(v, gv, &format!("{path}.{k}")),
                None => Some(format!("{path}.{k}")),
            })
        }
        (serde_json::Value::Array(w), serde_json::Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .find_map(|(i, (a, b))| not_contained(a, b, &format!("{path}[{i}]"))),
        (w, g) if w == g => None,
        _ => Some(path.to_string()),
    }
}

#[tokio::test]
async fn crds_apply_and_every_spec_example_is_accepted() {
    let client = k8s::client().await;
    install_crds(&client).await;
    let ns = namespace(&client).await;
    let examples = spec_examples();
    let kinds: std::collections::BTreeSet<String> = examples
        .iter()
        .map(|(_, v)| v["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        vec!["KafkaBackup", "KafkaOffsetRollback", "KafkaRestore"],
        "the spec documents' examples"
    );
    assert!(
        examples.len() >= 12,
        "found only {} examples",
        examples.len()
    );
    for (where_, example) in &examples {
        apply(&client, &ns, example)
            .await
            .unwrap_or_else(|e| panic!("{where_} ({}) refused: {e}", example["metadata"]["name"]));
        // Read back: nothing was pruned (every field of the example is stored as written; the
        // server may add defaults).
        let kind = example["kind"].as_str().expect("kind");
        let name = example["metadata"]["name"].as_str().expect("name");
        let stored = api_for(&client, &ns, kind).get(name).await.expect("get");
        if let Some(missing) = not_contained(&example["spec"], &stored.data["spec"], "spec") {
            panic!("{where_}: stored object lost or changed {missing}");
        }
    }
    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
}

#[tokio::test]
async fn invalid_objects_are_refused_naming_the_field() {
    let client = k8s::client().await;
    install_crds(&client).await;
    let ns = namespace(&client).await;
    let base = serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaBackup", "metadata": {"name": "bad"},
        "spec": {"kafkaCluster": {"bootstrapServers": ["kafka:9092"]}, "topics": ["t"],
                 "storage": {"storageType": "s3", "s3": {"bucket": "b", "region": "r"}}}
    });
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("/spec/compression", "brotli".into(), "spec.compression"),
        (
            "/spec/storage/storageType",
            "ftp".into(),
            "spec.storage.storageType",
        ),
        (
            "/spec/kafkaCluster/securityProtocol",
            "TLS".into(),
            "spec.kafkaCluster.securityProtocol",
        ),
        (
            "/spec/retention",
            serde_json::json!({"backups": 0}),
            "spec.retention.backups",
        ),
        (
            "/spec/checkpointIntervalSecs",
            0.into(),
            "spec.checkpointIntervalSecs",
        ),
        ("/spec/unknownField", true.into(), "unknownField"),
        ("/spec/topics", serde_json::json!([]), "spec.topics"),
    ];
    for (pointer, value, field) in cases {
        let mut obj = base.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        obj.pointer_mut(parent).expect("parent")[key] = value;
        let err = apply(&client, &ns, &obj).await.expect_err(pointer);
        assert!(err.to_string().contains(field), "{pointer}: {err}");
    }
    // A required field missing.
    let mut obj = base.clone();
    obj["spec"].as_object_mut().expect("spec").remove("storage");
    let err = apply(&client, &ns, &obj).await.expect_err("no storage");
    assert!(err.to_string().contains("spec.storage"), "{err}");
    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
}

#[test]
fn every_spec_example_parses_as_a_cli_manifest() {
    use kafka_backup_api::backup::KafkaBackup;
    use kafka_backup_api::offsets::KafkaOffsetRollback;
    use kafka_backup_api::restore::KafkaRestore;
    for (where_, example) in spec_examples() {
        let r = match example["kind"].as_str() {
            Some("KafkaBackup") => {
                serde_json::from_value::<KafkaBackup>(example.clone()).map(|_| ())
            }
            Some("KafkaRestore") => {
                serde_json::from_value::<KafkaRestore>(example.clone()).map(|_| ())
            }
            Some("KafkaOffsetRollback") => {
                serde_json::from_value::<KafkaOffsetRollback>(example.clone()).map(|_| ())
            }
            other => panic!("{where_}: unexpected kind {other:?}"),
        };
        r.unwrap_or_else(|e| panic!("{where_}: {e}"));
    }
}
