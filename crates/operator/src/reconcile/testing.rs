//! Objects for the decision functions' tests, written the way the API server would return them.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kafka_backup_api::worker::WorkerResult;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::observe::{Observed, ObservedJob, SpecCheck};
use crate::Config;

/// The time every test decides at.
pub fn now() -> DateTime<Utc> {
    at("2024-12-01T12:00:30Z")
}

pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("a test time")
        .with_timezone(&Utc)
}

pub fn config() -> Config {
    Config {
        namespace: None,
        worker_image: "kafka-backup:test".into(),
        worker_service_account: "kafka-backup-worker".into(),
        worker_env: Vec::new(),
        http_addr: "127.0.0.1:0".parse().expect("an address"),
        lease_namespace: "ops".into(),
        lease_name: "kafka-backup-operator".into(),
        identity: "test".into(),
        default_storage: None,
        work_dir: PathBuf::from("/tmp/kafka-backup-operator-test"),
    }
}

fn storage() -> Value {
    json!({"storageType": "filesystem", "filesystem": {"path": "/backups"}})
}

fn cluster() -> Value {
    json!({"bootstrapServers": ["kafka:9092"]})
}

/// A resource of `kind` named `name` with `spec` merged over a minimal valid spec, and the
/// given status and annotations.
pub fn resource<K: DeserializeOwned>(
    kind: &str,
    spec: Value,
    status: Value,
    annotations: Value,
) -> K {
    let mut base = match kind {
        "KafkaBackup" => {
            json!({"kafkaCluster": cluster(), "topics": ["orders"], "storage": storage()})
        }
        "KafkaRestore" => {
            json!({"backupId": "orders-backup-20241201-110000", "targetCluster": cluster(), "storage": storage()})
        }
        "KafkaOffsetReset" => {
            json!({"kafkaCluster": cluster(), "consumerGroups": ["billing"], "strategy": "earliest"})
        }
        _ => json!({"kafkaCluster": cluster(), "snapshotId": "snap-1"}),
    };
    if let (Some(b), Value::Object(extra)) = (base.as_object_mut(), spec) {
        b.extend(extra);
    }
    serde_json::from_value(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1",
        "kind": kind,
        "metadata": {
            "name": "orders",
            "namespace": "prod",
            "uid": "uid-1",
            "generation": 1,
            "creationTimestamp": "2024-12-01T11:30:00Z",
            "annotations": annotations,
        },
        "spec": base,
        "status": status,
    }))
    .expect("a valid test resource")
}

/// A Job of the resource; `condition` is its finishing condition (`Complete`, `Failed`), with a
/// reason.
pub fn job(name: &str, condition: Option<(&str, &str)>) -> ObservedJob {
    let conditions: Vec<Value> = condition
        .map(|(type_, reason)| {
            json!({"type": type_, "status": "True", "reason": reason, "message": "as the test says"})
        })
        .into_iter()
        .collect();
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "prod", "annotations": {}},
        "status": {"startTime": "2024-12-01T12:00:00Z", "conditions": conditions},
    }))
    .expect("a valid test Job");
    ObservedJob {
        job,
        pods: Vec::new(),
        progress: None,
    }
}

/// The same Job, already recorded in status.
pub fn recorded(mut j: ObservedJob) -> ObservedJob {
    j.job
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(crate::job::ANNOTATION_RECORDED.into(), "true".into());
    j
}

/// A pod whose worker container ended with `exit_code` and termination message `message`.
pub fn pod(exit_code: i32, reason: &str, message: &str, finished_at: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{finished_at}"), "namespace": "prod"},
        "status": {"containerStatuses": [{
            "name": "worker",
            "image": "kafka-backup:test",
            "imageID": "",
            "ready": false,
            "restartCount": 0,
            "state": {"terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "message": message,
                "finishedAt": finished_at,
            }},
        }]},
    }))
    .expect("a valid test pod")
}

/// A pod that reported `r`.
pub fn reported(r: &WorkerResult) -> Pod {
    let code = if r.outcome == "success" { 0 } else { 1 };
    pod(
        code,
        "Completed",
        &r.to_termination_message(),
        "2024-12-01T12:00:20Z",
    )
}

pub fn success(records: u64, bytes: u64) -> WorkerResult {
    WorkerResult {
        outcome: "success".into(),
        start_time: "2024-12-01T12:00:00Z".into(),
        completion_time: "2024-12-01T12:00:20Z".into(),
        backup_id: Some("orders-20241201-120000".into()),
        records,
        bytes,
        ..WorkerResult::default()
    }
}

pub fn failure(error: &str) -> WorkerResult {
    WorkerResult {
        outcome: "failure".into(),
        error: Some(error.into()),
        start_time: "2024-12-01T12:00:00Z".into(),
        completion_time: "2024-12-01T12:00:20Z".into(),
        ..WorkerResult::default()
    }
}

/// What a pass saw: `jobs`, and the spec check if it was made.
pub fn seen(spec: Value, jobs: Vec<ObservedJob>, check: Option<SpecCheck>) -> Observed {
    Observed {
        now: now(),
        spec,
        jobs,
        check,
    }
}

/// The pod with a memory limit on its worker container.
pub fn with_memory_limit(mut p: Pod, limit: &str) -> Pod {
    p.spec = Some(
        serde_json::from_value(json!({"containers": [{
            "name": "worker",
            "resources": {"limits": {"memory": limit}},
        }]}))
        .expect("a valid pod spec"),
    );
    p
}

/// A pod the scheduler could not place, saying `why`.
pub fn unschedulable(why: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "orders-run-abcde", "namespace": "prod"},
        "status": {"phase": "Pending", "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": why,
        }]},
    }))
    .expect("a valid test pod")
}
