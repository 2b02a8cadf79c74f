//! What only a real node shows: Job pods under real cgroup limits, security contexts, deadlines,
//! deletion and the loss of the operator's leader pod, each through the chart-installed operator
//! and pods the kubelet runs from the product image.

mod common;

use std::time::Duration;

use common::operator::{
    Setup, assert_ready, backup_manifest, condition, restore_manifest, wait_for,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kafka_backup_api::backup::KafkaBackup;
use kafka_backup_api::restore::KafkaRestore;
use kafka_backup_testkit::cluster::{self, ReleaseOptions};
use kafka_backup_testkit::kafka::{create_topic, plaintext_config, produce, sample_records};
use kafka_backup_testkit::unique_name;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

/// A topic of `n` sample records in `partitions` partitions.
async fn topic_with(prefix: &str, partitions: i32, n: usize) -> String {
    let topic = unique_name(prefix);
    create_topic(&plaintext_config(), &topic, partitions, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(n, partitions));
    topic
}

/// Deleting a running KafkaBackup and a running KafkaRestore the way `kubectl delete` does
/// (background propagation) stops their pods: the garbage collector deletes the Job and its pod,
/// the kubelet sends SIGTERM, and the worker checkpoints before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_running_backup_or_restore_stops_its_pod() {
    let s = Setup::new("op-cancel").await;
    let topic = topic_with("op-slow", 1, 2000).await;
    // A backup paced at 20 records a second runs for over a minute.
    let name = "slow-backup";
    s.create::<KafkaBackup>(backup_manifest(
        &s,
        name,
        &topic,
        json!({"rateLimit": {"recordsPerSecond": 20}, "checkpointIntervalSecs": 1}),
    ))
    .await;
    let kb = wait_for("progress in status", Duration::from_secs(120), || async {
        let kb = s.get::<KafkaBackup>(name).await?;
        (kb["status"]["phase"] == "Running"
            && condition(&kb)["message"]
                .as_str()
                .is_some_and(|m| m.contains("% (")))
        .then_some(kb)
    })
    .await;
    assert_ready(&kb, "True", "BackupRunning");
    let log = s.follow_worker_log(name, Duration::from_secs(90)).await;
    s.api::<KafkaBackup>()
        .delete(name, &DeleteParams::background())
        .await
        .expect("delete");
    wait_for(
        "the Job and its pod gone",
        Duration::from_secs(90),
        || async { s.runs_gone(name).await.then_some(()) },
    )
    .await;
    let text = log.await.expect("log task");
    assert!(
        text.contains("interrupted: what was stored is checkpointed"),
        "the worker did not checkpoint on SIGTERM:\n{text}"
    );

    // A restore held back by a CPU limit of 10 millicores, deleted while it runs.
    let backup = "full-backup";
    s.create::<KafkaBackup>(backup_manifest(&s, backup, &topic, json!({})))
        .await;
    let kb = s
        .wait_phase::<KafkaBackup>(backup, "Completed", Duration::from_secs(120))
        .await;
    let id = kb["status"]["lastBackupId"].as_str().expect("id");
    let restore = "slow-restore";
    let restored = format!("{topic}-restored");
    s.create::<KafkaRestore>(restore_manifest(
        &s,
        restore,
        id,
        json!({
            "topicMapping": {&topic: &restored}, "createTopics": true,
            "resources": {"limits": {"cpu": "10m"}}
        }),
    ))
    .await;
    s.wait_phase::<KafkaRestore>(restore, "Running", Duration::from_secs(120))
        .await;
    s.api::<KafkaRestore>()
        .delete(restore, &DeleteParams::background())
        .await
        .expect("delete");
    wait_for(
        "the restore's Job and pod gone",
        Duration::from_secs(90),
        || async { s.runs_gone(restore).await.then_some(()) },
    )
    .await;
    s.finish().await;
}

/// Two operator replicas: one leads. Its pod deleted mid-run (`kubectl delete pod`), the other
/// takes the Lease, adopts the running Job (no second Job) and completes the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_new_leader_adopts_a_running_job() {
    let s = Setup::with(
        "op-leader",
        ReleaseOptions {
            replicas: 2,
            ..ReleaseOptions::default()
        },
    )
    .await;
    let leases: Api<Lease> = s.api();
    let holder = || async {
        let lease = leases.list(&ListParams::default()).await.ok()?.items;
        lease.first()?.spec.as_ref()?.holder_identity.clone()
    };
    let leader = wait_for("a Lease holder", Duration::from_secs(60), holder).await;
    let pods: Vec<String> = s
        .release
        .pods()
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert!(pods.contains(&leader), "{leader} not in {pods:?}");
    let standby = pods
        .iter()
        .find(|p| **p != leader)
        .expect("standby")
        .clone();
    for pod in [&leader, &standby] {
        assert_eq!(s.operator_http(pod, "/healthz").0, 200);
        wait_for("ready", Duration::from_secs(30), || async {
            (s.operator_http(pod, "/readyz").0 == 200).then_some(())
        })
        .await;
    }
    let leads = |pod: &str| {
        s.operator_http(pod, "/metrics")
            .1
            .contains("kafka_backup_leader 1")
    };
    wait_for("the leader gauge", Duration::from_secs(30), || async {
        leads(&leader).then_some(())
    })
    .await;
    assert!(!leads(&standby), "the standby must not lead");

    let topic = topic_with("op-lead", 1, 400).await;
    let name = "led";
    s.create::<KafkaBackup>(backup_manifest(
        &s,
        name,
        &topic,
        json!({"rateLimit": {"recordsPerSecond": 20}, "checkpointIntervalSecs": 1}),
    ))
    .await;
    s.wait_phase::<KafkaBackup>(name, "Running", Duration::from_secs(120))
        .await;
    let job = s.jobs().await[0].name_any();
    cluster::kubectl(&["-n", &s.ns, "delete", "pod", &leader], None);
    let new_leader = wait_for("a new leader", Duration::from_secs(90), || async {
        holder().await.filter(|h| *h != leader)
    })
    .await;
    // The standby, or the replacement pod the Deployment started: either adopts the Job.
    assert_ne!(new_leader, leader);
    let kb = s
        .wait_phase::<KafkaBackup>(name, "Completed", Duration::from_secs(180))
        .await;
    assert_eq!(kb["status"]["lastBackupRecords"], 400, "{}", kb["status"]);
    let history = kb["status"]["backupHistory"].as_array().expect("history");
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["outcome"], "success");
    let jobs: Vec<String> = s.jobs().await.iter().map(|j| j.name_any()).collect();
    assert_eq!(jobs, vec![job], "the running Job was adopted, not replaced");
    s.finish().await;
}

/// The Job pod as the kubelet runs it: uid and gid 65532, a read-only root file system, no
/// service-account token, the Secret mounted at its default mode, and it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_runs_read_only_as_65532_without_a_token() {
    let s = Setup::new("op-secure").await;
    let topic = topic_with("op-secure", 1, 50).await;
    s.create::<KafkaBackup>(backup_manifest(&s, "secure", &topic, json!({})))
        .await;
    s.wait_phase::<KafkaBackup>("secure", "Completed", Duration::from_secs(120))
        .await;
    let pod = s
        .worker_pods()
        .await
        .into_iter()
        .next()
        .expect("a worker pod");
    let spec = serde_json::to_value(pod.spec.as_ref().expect("spec")).expect("json");
    let ctr = &spec["containers"][0];
    assert_eq!(spec["automountServiceAccountToken"], false, "{spec}");
    assert_eq!(
        ctr["securityContext"]["readOnlyRootFilesystem"], true,
        "{ctr}"
    );
    let uid = ctr["securityContext"]["runAsUser"]
        .as_i64()
        .or(spec["securityContext"]["runAsUser"].as_i64());
    assert_eq!(uid, Some(65532), "{spec}");
    let mounts = ctr["volumeMounts"].as_array().expect("mounts");
    assert!(
        !mounts
            .iter()
            .any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"),
        "a service-account token is mounted: {mounts:?}"
    );
    let status = serde_json::to_value(pod.status.as_ref().expect("status")).expect("json");
    let term = &status["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 0, "{status}");
    s.finish().await;
}

/// Under `resources.limits.memory: 256Mi` (a real cgroup limit, page cache included) a backup
/// of 200,000 records completes; under 24Mi the kernel kills the worker, and status says so and
/// names the field to raise.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_limits_hold_and_an_oom_kill_is_named() {
    let s = Setup::new("op-memory").await;
    let topic = topic_with("op-memory", 4, 200_000).await;
    s.create::<KafkaBackup>(backup_manifest(
        &s,
        "in-256mi",
        &topic,
        json!({"resources": {"limits": {"memory": "256Mi"}}, "job": {"backoffLimit": 0}}),
    ))
    .await;
    let kb = s
        .wait_phase::<KafkaBackup>("in-256mi", "Completed", Duration::from_secs(300))
        .await;
    assert_eq!(
        kb["status"]["lastBackupRecords"], 200_000,
        "{}",
        kb["status"]
    );

    s.create::<KafkaBackup>(backup_manifest(
        &s,
        "in-24mi",
        &topic,
        json!({"resources": {"limits": {"memory": "24Mi"}}, "job": {"backoffLimit": 0}}),
    ))
    .await;
    let kb = s
        .wait_phase::<KafkaBackup>("in-24mi", "Failed", Duration::from_secs(300))
        .await;
    let m = condition(&kb)["message"].as_str().expect("message");
    assert!(m.contains("ran out of memory (OOMKilled"), "{m}");
    assert!(m.contains("spec.resources.limits.memory"), "{m}");
    assert!(m.contains("24Mi"), "{m}");
    s.finish().await;
}

/// `job.activeDeadlineSeconds` ends a run that takes longer: the Job controller kills the pod,
/// and status says the deadline ended it and names the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_active_deadline_ends_a_run() {
    let s = Setup::new("op-deadline").await;
    let topic = topic_with("op-deadline", 1, 2000).await;
    s.create::<KafkaBackup>(backup_manifest(
        &s,
        "too-slow",
        &topic,
        json!({"rateLimit": {"recordsPerSecond": 20}, "job": {"activeDeadlineSeconds": 15}}),
    ))
    .await;
    let kb = s
        .wait_phase::<KafkaBackup>("too-slow", "Failed", Duration::from_secs(180))
        .await;
    let m = condition(&kb)["message"].as_str().expect("message");
    assert!(m.contains("spec.job.activeDeadlineSeconds"), "{m}");
    assert!(m.contains("15"), "{m}");
    let jobs: Vec<Job> = s.jobs().await;
    let job = serde_json::to_value(&jobs[0]).expect("job");
    assert!(
        job["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["reason"] == "DeadlineExceeded"),
        "{}",
        job["status"]
    );
    s.finish().await;
}
