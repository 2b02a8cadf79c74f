//! The operator end to end on the test cluster's real node: each test installs the chart into
//! its own namespace (the operator as the chart's Deployment, from the image `scripts/image
//! --load` built), the kubelet runs every Job's pod from the same image with real Secret volumes,
//! and the statuses are checked field by field against the spec, with the genuine Kafka broker
//! and MinIO behind the cluster's DNS names.

mod common;

use std::process::Command;
use std::time::Duration;

use common::operator::{
    Setup, assert_ready, backup_manifest, condition, is_time, meta, pod_cluster, restore_manifest,
    wait_for,
};
use common::{TempDir, commit, committed};
use kafka_backup_api::backup::KafkaBackup;
use kafka_backup_api::offsets::{KafkaOffsetReset, KafkaOffsetRollback};
use kafka_backup_api::restore::KafkaRestore;
use kafka_backup_testkit::cluster;
use kafka_backup_testkit::kafka::{
    consume_all, create_topic, plaintext_config, produce, sample_records,
};
use kafka_backup_testkit::unique_name;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kafka-backup");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_reset_rollback_run_as_jobs() {
    let s = Setup::new("op-e2e").await;
    let topic = unique_name("op-src");
    let restored = format!("{topic}-restored");
    create_topic(&plaintext_config(), &topic, 3, 1, &[]).await;
    let records = sample_records(300, 3);
    produce(&plaintext_config(), &topic, &records);

    // Backup, one-time.
    let name = "orders-backup";
    s.create::<KafkaBackup>(backup_manifest(
        &s,
        name,
        &topic,
        json!({
            "job": {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600},
            "podTemplate": {"labels": {"team": "data"}, "annotations": {"note": "x"}},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}
        }),
    ))
    .await;
    let kb = s
        .wait_phase::<KafkaBackup>(name, "Completed", Duration::from_secs(120))
        .await;
    let st = &kb["status"];
    let id = st["lastBackupId"].as_str().expect("lastBackupId");
    assert!(id.starts_with("orders-backup-"), "{st}");
    assert_eq!(st["lastBackupRecords"], 300, "{st}");
    assert!(st["lastBackupSize"].as_u64().is_some_and(|b| b > 0), "{st}");
    assert!(is_time(&st["lastBackupTime"]), "{st}");
    assert!(st.get("nextScheduledTime").is_none(), "{st}");
    let history = st["backupHistory"].as_array().expect("history");
    assert_eq!(history.len(), 1, "{st}");
    assert_eq!(history[0]["backupId"], id);
    assert_eq!(history[0]["outcome"], "success");
    assert_eq!(history[0]["records"], 300);
    assert_eq!(history[0]["size"], st["lastBackupSize"]);
    assert!(is_time(&history[0]["startTime"]) && is_time(&history[0]["completionTime"]));
    assert_ready(&kb, "True", "BackupCompleted");

    // The Job: settings from the spec; Secrets as volumes; no Secret value anywhere.
    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 1);
    let job = serde_json::to_value(&jobs[0]).expect("job");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 3600);
    let pod = &job["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["team"], "data");
    assert_eq!(pod["metadata"]["annotations"]["note"], "x");
    assert_eq!(pod["spec"]["serviceAccountName"], "kafka-backup-worker");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(pod["spec"]["containers"][0]["image"], cluster::image());
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["memory"],
        "128Mi"
    );
    assert!(
        pod["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["secret"]["secretName"] == "s3-credentials")
    );
    let secret = s.secret_value();
    assert!(
        !job.to_string().contains(&secret),
        "secret value in the Job"
    );
    assert!(!kb.to_string().contains(&secret), "secret value in status");
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = s.api();
    let sa = sa.get("kafka-backup-worker").await.expect("worker SA");
    assert_eq!(sa.automount_service_account_token, Some(false));
    let events = s.events(name).await;
    let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    assert!(reasons.contains(&"BackupStarted"), "{events:?}");
    assert!(reasons.contains(&"BackupCompleted"), "{events:?}");

    // Restore into a new topic.
    s.create::<KafkaRestore>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": meta("orders-restore"),
        "spec": {
            "backupId": id,
            "targetCluster": pod_cluster(),
            "storage": s.storage(),
            "topicMapping": {&topic: &restored},
            "createTopics": true
        }
    }))
    .await;
    let kr = s
        .wait_phase::<KafkaRestore>("orders-restore", "Completed", Duration::from_secs(120))
        .await;
    let st = &kr["status"];
    assert_eq!(st["restoredRecords"], 300, "{st}");
    assert_eq!(
        st["restoredTopics"],
        json!([{"name": restored, "records": 300}]),
        "{st}"
    );
    assert!(
        is_time(&st["startTime"]) && is_time(&st["completionTime"]),
        "{st}"
    );
    assert_ready(&kr, "True", "RestoreCompleted");
    let got = consume_all(&plaintext_config(), &restored, 300, Duration::from_secs(30));
    for p in 0..3 {
        let want = common::of_partition(&records, p);
        let have: Vec<_> = got
            .iter()
            .filter(|c| c.record.partition == p)
            .map(|c| c.record.clone())
            .collect();
        assert_eq!(have.len(), want.len(), "partition {p}");
        for (h, w) in have.iter().zip(&want) {
            assert_eq!(h.key, w.key);
            assert_eq!(h.value, w.value);
            assert_eq!(h.headers, w.headers);
            assert_eq!(h.timestamp, w.timestamp);
        }
    }

    // Offsets: snapshot, reset to earliest, roll back to the snapshot, verify.
    let group = unique_name("op-group");
    commit(&group, &restored, &[(0, 10), (1, 20), (2, 30)]);
    let korb = |name: &str, op: &str| {
        json!({
            "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaOffsetRollback", "metadata": meta(name),
            "spec": {
                "kafkaCluster": pod_cluster(),
                "operation": op, "snapshotId": format!("snap-{group}"),
                "consumerGroups": [&group], "storage": s.storage()
            }
        })
    };
    s.create::<KafkaOffsetRollback>(korb("take-snapshot", "snapshot"))
        .await;
    let snap = s
        .wait_phase::<KafkaOffsetRollback>("take-snapshot", "Completed", Duration::from_secs(90))
        .await;
    assert_eq!(snap["status"]["groups"][0]["groupId"], group.as_str());
    assert_eq!(snap["status"]["groups"][0]["outcome"], "success");
    assert_ready(&snap, "True", "OffsetRollbackCompleted");

    s.create::<KafkaOffsetReset>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaOffsetReset", "metadata": meta("to-earliest"),
        "spec": {
            "kafkaCluster": pod_cluster(),
            "consumerGroups": [&group], "strategy": "earliest",
            "storage": s.storage()
        }
    }))
    .await;
    let kor = s
        .wait_phase::<KafkaOffsetReset>("to-earliest", "Completed", Duration::from_secs(90))
        .await;
    let st = &kor["status"];
    assert_eq!(st["groups"][0]["groupId"], group.as_str(), "{st}");
    assert_eq!(st["groups"][0]["outcome"], "success", "{st}");
    assert_eq!(st["groups"][0]["partitions"], 3, "{st}");
    assert!(
        is_time(&st["startTime"]) && is_time(&st["completionTime"]),
        "{st}"
    );
    assert_ready(&kor, "True", "OffsetResetCompleted");
    assert_eq!(
        committed(&group, &restored, 3),
        vec![(0, 0), (1, 0), (2, 0)]
    );

    s.create::<KafkaOffsetRollback>(korb("roll-back", "rollback"))
        .await;
    let rb = s
        .wait_phase::<KafkaOffsetRollback>("roll-back", "Completed", Duration::from_secs(90))
        .await;
    assert_eq!(rb["status"]["verified"], true, "{}", rb["status"]);
    assert_eq!(
        committed(&group, &restored, 3),
        vec![(0, 10), (1, 20), (2, 30)]
    );
    s.create::<KafkaOffsetRollback>(korb("check", "verify"))
        .await;
    let v = s
        .wait_phase::<KafkaOffsetRollback>("check", "Completed", Duration::from_secs(90))
        .await;
    assert_eq!(v["status"]["verified"], true, "{}", v["status"]);

    // Metrics count the runs.
    let op_pod = s.release.pods().await[0].name_any();
    let (code, metrics) = s.operator_http(&op_pod, "/metrics");
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("kafka_backup_runs_total{kind=\"KafkaBackup\",outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kafka_backup_leader 1"), "{metrics}");
    // No Secret value (nor its base64 form) in metrics, events, the operator's or any worker's
    // debug log.
    let encoded = {
        use k8s_openapi::ByteString;
        serde_json::to_value(ByteString(secret.as_bytes().to_vec()))
            .expect("base64")
            .as_str()
            .expect("string")
            .to_string()
    };
    let operator_log = s.release.logs().await;
    assert!(
        operator_log.contains("DEBUG"),
        "the operator logged at debug level"
    );
    let worker_logs = s.worker_logs().await;
    assert!(
        worker_logs.contains("DEBUG"),
        "workers logged at debug level"
    );
    let all_events: Vec<String> = {
        let api: Api<k8s_openapi::api::events::v1::Event> = s.api();
        api.list(&ListParams::default())
            .await
            .expect("events")
            .items
            .iter()
            .map(|e| serde_json::to_string(e).expect("json"))
            .collect()
    };
    for (what, text) in [
        ("metrics", metrics.as_str()),
        ("operator log", operator_log.as_str()),
        ("worker logs", worker_logs.as_str()),
        ("events", &all_events.join("\n")),
    ] {
        assert!(!text.contains(&secret), "a Secret value in {what}");
        assert!(!text.contains(&encoded), "a base64 Secret value in {what}");
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_specs_fail_with_the_field_named_and_no_job() {
    let s = Setup::new("op-invalid").await;
    let topic = unique_name("op-inv");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    let cluster = pod_cluster();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "missing-secret",
            backup_manifest(
                &s,
                "missing-secret",
                &topic,
                json!({
                    "kafkaCluster": {"bootstrapServers": cluster["bootstrapServers"].clone(),
                        "securityProtocol": "SASL_PLAINTEXT",
                        "saslSecret": {"name": "no-such-secret", "mechanism": "PLAIN"}}
                }),
            ),
            "spec.kafkaCluster.saslSecret: Secret 'no-such-secret' not found",
        ),
        (
            "missing-key",
            backup_manifest(
                &s,
                "missing-key",
                &topic,
                json!({
                    "kafkaCluster": {"bootstrapServers": cluster["bootstrapServers"].clone(),
                        "securityProtocol": "SASL_PLAINTEXT",
                        "saslSecret": {"name": "s3-credentials", "mechanism": "PLAIN"}}
                }),
            ),
            "spec.kafkaCluster.saslSecret.usernameKey: key 'username' of secret 's3-credentials' not found",
        ),
        (
            "bad-cron",
            backup_manifest(&s, "bad-cron", &topic, json!({"schedule": "0 * * *"})),
            "spec.schedule: '0 * * *' has 4 fields",
        ),
        (
            "bad-zone",
            backup_manifest(
                &s,
                "bad-zone",
                &topic,
                json!({"schedule": "0 * * * *", "timeZone": "Mars/Olympus"}),
            ),
            "spec.timeZone: 'Mars/Olympus'",
        ),
        (
            "unreachable",
            backup_manifest(
                &s,
                "unreachable",
                &topic,
                json!({
                    "kafkaCluster": {"bootstrapServers": ["127.0.0.1:1"]}
                }),
            ),
            "spec.kafkaCluster.bootstrapServers: Kafka at 127.0.0.1:1 not reachable",
        ),
    ];
    for (_, m, _) in &cases {
        s.create::<KafkaBackup>(m.clone()).await;
    }
    s.create::<KafkaRestore>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": meta("no-backup"),
        "spec": {"backupId": "nothing-20240101-000000", "targetCluster": cluster,
                 "storage": s.storage()}
    }))
    .await;
    s.create::<KafkaRestore>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": meta("pitr-no-time"),
        "spec": {"backupId": "nothing-20240101-000000", "targetCluster": cluster,
                 "storage": s.storage(), "pitr": {"enabled": true}}
    }))
    .await;
    s.create::<KafkaOffsetRollback>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaOffsetRollback", "metadata": meta("no-storage"),
        "spec": {"kafkaCluster": cluster, "snapshotId": "s1"}
    }))
    .await;

    for (name, _, message) in &cases {
        let kb = s
            .wait_phase::<KafkaBackup>(name, "Failed", Duration::from_secs(60))
            .await;
        assert_ready(&kb, "False", "InvalidSpec");
        let m = condition(&kb)["message"].as_str().expect("message");
        assert!(m.starts_with(message), "{name}: {m}");
    }
    let r = s
        .wait_phase::<KafkaRestore>("no-backup", "Failed", Duration::from_secs(60))
        .await;
    let m = condition(&r)["message"].as_str().expect("message");
    assert!(
        m.starts_with("spec.backupId: backup 'nothing-20240101-000000' not found"),
        "{m}"
    );
    let r = s
        .wait_phase::<KafkaRestore>("pitr-no-time", "Failed", Duration::from_secs(60))
        .await;
    let m = condition(&r)["message"].as_str().expect("message");
    assert!(m.starts_with("spec.pitr: enabled needs timestamp"), "{m}");
    let r = s
        .wait_phase::<KafkaOffsetRollback>("no-storage", "Failed", Duration::from_secs(60))
        .await;
    let m = condition(&r)["message"].as_str().expect("message");
    assert!(m.starts_with("spec.storage: not set"), "{m}");
    let events = s.events("missing-secret").await;
    assert!(events.iter().any(|(r, _)| r == "InvalidSpec"), "{events:?}");

    // Not one Job for any of them.
    assert!(s.jobs().await.is_empty());

    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_trigger_and_retention() {
    let s = Setup::new("op-sched").await;
    let topic = unique_name("op-sched");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(50, 1));
    let name = "every-minute";
    s.create::<KafkaBackup>(backup_manifest(
        &s,
        name,
        &topic,
        json!({"schedule": "* * * * *", "timeZone": "Europe/Berlin", "retention": {"backups": 1}}),
    ))
    .await;
    // Before the first slot: Pending, with the next slot in status.
    let api = s.api::<KafkaBackup>();
    let first = wait_for("nextScheduledTime", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let kb = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            kb["status"]["nextScheduledTime"].is_string().then_some(kb)
        }
    })
    .await;
    let next = first["status"]["nextScheduledTime"]
        .as_str()
        .expect("next")
        .to_string();
    assert!(next.ends_with(":00Z"), "{next}");

    // The slot fires.
    let kb = wait_for("a scheduled backup", Duration::from_secs(150), || {
        let api = api.clone();
        async move {
            let kb = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            (kb["status"]["backupHistory"].as_array().map_or(0, Vec::len) >= 1
                && kb["status"]["phase"] == "Completed")
                .then_some(kb)
        }
    })
    .await;
    assert_ready(&kb, "True", "BackupScheduled");
    assert!(
        condition(&kb)["message"]
            .as_str()
            .expect("message")
            .starts_with("Next backup scheduled for "),
    );
    assert!(is_time(&kb["status"]["nextScheduledTime"]));
    let runs_before = kb["status"]["backupHistory"].as_array().map_or(0, Vec::len);

    // The trigger annotation runs one more backup, once per value.
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"kafka.oso.sh/trigger-backup": "one"}}})),
    )
    .await
    .expect("annotate");
    wait_for("the triggered backup", Duration::from_secs(120), || {
        let api = api.clone();
        async move {
            let kb = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            (kb["status"]["backupHistory"].as_array().map_or(0, Vec::len) > runs_before
                && kb["status"]["phase"] == "Completed"
                && kb["metadata"]["annotations"]["kafka.oso.sh/handled-trigger"] == "one")
                .then_some(())
        }
    })
    .await;
    let jobs = s.jobs().await;
    let triggered: Vec<_> = jobs
        .iter()
        .filter(|j| {
            j.labels()
                .get("kafka.oso.sh/run")
                .is_some_and(|r| r.starts_with('t'))
        })
        .collect();
    assert_eq!(triggered.len(), 1, "one Job per trigger value");
    // No two Jobs for one slot.
    let mut runs: Vec<&String> = jobs
        .iter()
        .filter_map(|j| j.labels().get("kafka.oso.sh/run"))
        .collect();
    let n = runs.len();
    runs.dedup();
    assert_eq!(runs.len(), n);

    // Retention keeps one backup in storage.
    let repo = s.target.repository();
    let ids = repo.backup_ids(name).await.expect("ids");
    assert_eq!(ids.len(), 1, "{ids:?}");
    // The kept backup is one the operator recorded (the newest, unless a later slot ran since).
    let kb = serde_json::to_value(api.get(name).await.expect("get")).expect("json");
    let history: Vec<&str> = kb["status"]["backupHistory"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["backupId"].as_str())
        .collect();
    assert!(history.contains(&ids[0].as_str()), "{ids:?} {history:?}");
    assert!(history.len() >= 2, "{history:?}");
    s.finish().await;
}

/// Every example of the CRD reference, applied as written, is reconciled: none of them can run
/// here (their Secrets, claims, brokers and buckets do not exist), so each ends Failed with
/// InvalidSpec, a message naming the field, and no Job. The operator runs in its pod, where only
/// the cluster's names resolve and only this machine is reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_spec_example_is_reconciled_as_written() {
    let s = Setup::new("op-examples").await;
    let examples = common::spec_examples();
    let gvk = |kind: &str| {
        kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "kafka.oso.sh",
            "v1alpha1",
            kind,
        ))
    };
    for (where_, example) in &examples {
        let ar = gvk(example["kind"].as_str().expect("kind"));
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(s.client.clone(), &s.ns, &ar);
        let mut obj: kube::api::DynamicObject =
            serde_json::from_value(example.clone()).expect("object");
        // Examples name their own namespace; they go into the test's.
        obj.metadata.namespace = None;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            // The same name appears in both documents' examples.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => panic!("{where_}: {e}"),
        }
    }
    for (where_, example) in &examples {
        let kind = example["kind"].as_str().expect("kind");
        let name = example["metadata"]["name"].as_str().expect("name");
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(s.client.clone(), &s.ns, &gvk(kind));
        let obj = wait_for(
            &format!("{where_}: a status"),
            Duration::from_secs(120),
            || {
                let api = api.clone();
                async move {
                    let o = serde_json::to_value(api.get(name).await.ok()?).ok()?;
                    (o["status"]["phase"] == "Failed").then_some(o)
                }
            },
        )
        .await;
        assert_ready(&obj, "False", "InvalidSpec");
        let m = condition(&obj)["message"].as_str().expect("message");
        assert!(m.starts_with("spec."), "{where_}: {m}");
        eprintln!("{where_}: {kind} {name}: {m}");
    }
    assert!(s.jobs().await.is_empty(), "no Job for an invalid spec");
    s.finish().await;
}

/// The worker without its resource: exit 2, and a result the operator can read.
#[test]
fn worker_without_a_manifest_is_bad_input_with_a_result() {
    let dir = TempDir::new("worker");
    let result = dir.path().join("termination-log");
    let out = Command::new(BIN)
        .arg("worker")
        .arg("--result-file")
        .arg(&result)
        .env_remove("KAFKA_BACKUP_MANIFEST")
        .output()
        .expect("run worker");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("KAFKA_BACKUP_MANIFEST: not set"),
        "{stderr}"
    );
    let r: kafka_backup_api::worker::WorkerResult =
        serde_json::from_str(&std::fs::read_to_string(&result).expect("result")).expect("json");
    assert_eq!(r.outcome, "failure");
    assert!(r.bad_input);
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("KAFKA_BACKUP_MANIFEST"))
    );
}

/// `storageType: pvc`: the claim (bound to a hostPath volume of the node) is mounted into the
/// Job's pod at the path the worker reads, so a backup lands on the volume and a restore reads it
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pvc_storage_is_mounted_into_the_jobs() {
    use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
    let s = Setup::new("op-pvc").await;
    let dir = TempDir::new("op-pvc-volume");
    // The worker runs as uid 65532; a hostPath volume keeps the directory's owner and mode.
    std::os::unix::fs::chown(dir.path(), Some(65532), Some(65532)).expect("chown");
    let pv_name = unique_name("op-pv");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "hostPath": {"path": dir.path().to_string_lossy(), "type": "Directory"},
                 "claimRef": {"namespace": s.ns, "name": "backup-storage"}}
    }))
    .expect("pv");
    let pvs: Api<PersistentVolume> = Api::all(s.client.clone());
    pvs.create(&PostParams::default(), &pv)
        .await
        .expect("create pv");
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "backup-storage"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv_name,
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("pvc");
    s.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create pvc");
    let topic = unique_name("op-pvc");
    let restored = format!("{topic}-restored");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let records = sample_records(100, 2);
    produce(&plaintext_config(), &topic, &records);
    let storage = json!({"storageType": "pvc", "pvc": {"claimName": "backup-storage", "subPath": "kafka/backups"}});
    s.create::<KafkaBackup>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaBackup", "metadata": meta("local-backup"),
        "spec": {"kafkaCluster": pod_cluster(), "topics": [&topic], "storage": storage}
    }))
    .await;
    let kb = s
        .wait_phase::<KafkaBackup>("local-backup", "Completed", Duration::from_secs(120))
        .await;
    assert_eq!(kb["status"]["lastBackupRecords"], 100);
    let id = kb["status"]["lastBackupId"]
        .as_str()
        .expect("id")
        .to_string();
    let on_volume = dir
        .path()
        .join("kafka/backups/local-backup/manifests")
        .join(format!("{id}.json"));
    assert!(on_volume.is_file(), "{} missing", on_volume.display());
    s.create::<KafkaRestore>(restore_manifest(
        &s,
        "local-restore",
        &id,
        json!({"storage": storage, "topicMapping": {&topic: &restored}, "createTopics": true}),
    ))
    .await;
    let kr = s
        .wait_phase::<KafkaRestore>("local-restore", "Completed", Duration::from_secs(120))
        .await;
    assert_eq!(kr["status"]["restoredRecords"], 100);
    let got = consume_all(&plaintext_config(), &restored, 100, Duration::from_secs(30));
    assert_eq!(got.len(), 100);
    s.finish().await;
    let _ = pvs.delete(&pv_name, &Default::default()).await;
}
