//! KafkaRestore, KafkaOffsetReset and KafkaOffsetRollback: one run each.
//!
//! Phases: no status yet or `Pending` -> (spec checked) `Running` with the Job -> `Completed` or
//! `Failed` from the Job's result. An invalid spec is `Failed` with reason `InvalidSpec` and is
//! checked again until it can run. A started run whose Job disappears before its result was
//! recorded is `Failed`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kafka_backup_api::common::{Condition, JobSettings, Phase, PodTemplate};
use kafka_backup_api::offsets::{KafkaOffsetReset, KafkaOffsetRollback};
use kafka_backup_api::restore::KafkaRestore;
use kafka_backup_api::storage::StorageSpec;
use kafka_backup_api::worker::WorkerResult;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use serde_json::{Map, Value, json};

use super::apply::{Decision, FinishedRun, Note, apply};
use super::error::Result;
use super::observe::{JobState, Observed, ObservedJob, observe};
use super::{
    Active, Ctx, INVALID_SPEC, Kind, PROGRESS_EVERY, RECHECK_INVALID_EVERY, STARTED_ANNOTATION,
    decide_checked, json_of, owner, progress_prefix, ready, rfc3339, seconds_between,
    started_message, worker_manifest,
};
use crate::Config;
use crate::job::{self, JobInput};

/// The status of a kind that runs once, as a merge patch: the kinds share the fields the
/// reconciler sets (phase, times, conditions) and differ in the result fields.
pub type StatusPatch = Map<String, Value>;

/// What differs between the kinds that run once.
pub trait RunOnce: Kind {
    /// The kind-specific status fields of a finished run.
    fn result_fields(r: &WorkerResult) -> StatusPatch;

    /// The Ready message of a successful run.
    fn completed_message(r: &WorkerResult) -> String {
        format!(
            "{} completed successfully for {} groups{}",
            Self::NOUN,
            r.groups.len(),
            match r.verified {
                Some(true) => "; every group matches the snapshot",
                _ => "",
            }
        )
    }

    /// Where the run writes its progress document, if this kind reports progress.
    fn progress_path(_spec: &Value, _job: &str, _storage: Option<&StorageSpec>) -> Option<String> {
        None
    }
}

impl RunOnce for KafkaRestore {
    fn result_fields(r: &WorkerResult) -> StatusPatch {
        let mut m = Map::new();
        m.insert("restoredRecords".into(), json!(r.records));
        m.insert("restoredTopics".into(), json!(r.restored_topics));
        if let Some(o) = &r.offset_reset_status {
            m.insert("offsetResetStatus".into(), json!(o));
        }
        if let Some(s) = &r.snapshot_id {
            m.insert("rollbackSnapshotId".into(), json!(s));
        }
        m
    }

    fn completed_message(r: &WorkerResult) -> String {
        format!(
            "Restore completed successfully: {} records into {} topics",
            r.records,
            r.restored_topics.len()
        )
    }

    /// Under the backup's name, next to its `restores/` records.
    fn progress_path(spec: &Value, job: &str, storage: Option<&StorageSpec>) -> Option<String> {
        storage.map(|_| format!("{}/progress/{job}.json", progress_prefix(spec)))
    }
}

impl RunOnce for KafkaOffsetReset {
    fn result_fields(r: &WorkerResult) -> StatusPatch {
        let mut m = Map::new();
        m.insert("groups".into(), json!(r.groups));
        if let Some(s) = &r.snapshot_id {
            m.insert("snapshotId".into(), json!(s));
        }
        m
    }
}

impl RunOnce for KafkaOffsetRollback {
    fn result_fields(r: &WorkerResult) -> StatusPatch {
        let mut m = Map::new();
        m.insert("groups".into(), json!(r.groups));
        if let Some(v) = r.verified {
            m.insert("verified".into(), json!(v));
        }
        m
    }
}

/// Reconciles a resource that runs once.
pub async fn reconcile_once<K: RunOnce>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action> {
    ctx.metrics.reconcile(&K::kind(&()));
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let seen = observe(&ctx, obj.as_ref()).await?;
    let decision = decide_checked(&ctx, obj.as_ref(), seen, decide::<K>).await;
    apply(&ctx, obj.as_ref(), decision).await
}

/// The status fields the decision reads.
struct Current {
    phase: String,
    start_time: Option<String>,
    conditions: Vec<Condition>,
    generation: Option<i64>,
}

impl Current {
    fn of<K: Kind>(obj: &K) -> Current {
        let status = json_of(obj).get("status").cloned().unwrap_or(json!({}));
        Current {
            phase: status
                .get("phase")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            start_time: status
                .get("startTime")
                .and_then(Value::as_str)
                .map(str::to_string),
            conditions: status
                .get("conditions")
                .cloned()
                .and_then(|c| serde_json::from_value(c).ok())
                .unwrap_or_default(),
            generation: obj.meta().generation,
        }
    }

    fn invalid(&self) -> bool {
        self.conditions
            .first()
            .is_some_and(|c| c.reason == INVALID_SPEC)
    }

    fn ready(&self, ok: bool, reason: &str, message: &str, seen: &Observed) -> Value {
        json!(ready(
            &self.conditions,
            ok,
            reason,
            message,
            self.generation,
            seen.now
        ))
    }
}

/// What to do for `obj`, or `None` when that depends on the spec check and `seen` has none
/// (the caller checks the spec and decides again).
pub fn decide<K: RunOnce>(
    obj: &K,
    seen: &Observed,
    config: &Config,
) -> Option<Decision<StatusPatch>> {
    let current = Current::of(obj);
    if let Some(j) = seen.unrecorded_finished().next() {
        return Some(record::<K>(&current, j, seen));
    }
    let terminal = current.phase == "Completed" || current.phase == "Failed";
    if terminal && !current.invalid() {
        return Some(Decision::status(None, Action::await_change()));
    }
    if let Some(active) = seen.active() {
        return Some(running::<K>(&current, active, seen));
    }
    if obj.annotations().contains_key(STARTED_ANNOTATION) && !current.invalid() {
        return Some(job_gone::<K>(&current, seen));
    }
    match seen.check.as_ref()? {
        Err(message) => Some(invalid(&current, message, seen)),
        Ok(storage) => Some(start(obj, &current, storage.as_ref(), seen, config)),
    }
}

/// A finished run: its result becomes the status, once.
fn record<K: RunOnce>(
    current: &Current,
    j: &ObservedJob,
    seen: &Observed,
) -> Decision<StatusPatch> {
    let noun = K::NOUN;
    let state = j.state();
    let r = j.result().unwrap_or_default();
    let ok = state == JobState::Succeeded && r.outcome == "success";
    let mut fields = K::result_fields(&r);
    let completion = if r.completion_time.is_empty() {
        rfc3339(seen.now)
    } else {
        r.completion_time.clone()
    };
    fields.insert("completionTime".into(), json!(completion));
    let start = current
        .start_time
        .clone()
        .unwrap_or_else(|| r.start_time.clone());
    let (reason, message) = if ok {
        (format!("{noun}Completed"), K::completed_message(&r))
    } else {
        (
            format!("{noun}Failed"),
            format!("{noun} failed: {}", j.failure(&r)),
        )
    };
    fields.insert(
        "phase".into(),
        json!(if ok { Phase::Completed } else { Phase::Failed }),
    );
    fields.insert(
        "conditions".into(),
        current.ready(ok, &reason, &message, seen),
    );
    let mut d = Decision::status(Some(fields), Action::await_change());
    d.mark_recorded.push(j.name());
    d.runs.push(FinishedRun {
        success: ok,
        records: r.records,
        bytes: r.bytes,
        secs: seconds_between(&start, &completion),
    });
    d.events.push(if ok {
        Note::normal(reason, message)
    } else {
        Note::warning(reason, message)
    });
    d
}

/// A run going on: its progress, every few seconds.
fn running<K: Kind>(
    current: &Current,
    active: &ObservedJob,
    seen: &Observed,
) -> Decision<StatusPatch> {
    let a = Active::of(K::NOUN, active);
    let mut fields = Map::new();
    fields.insert("phase".into(), json!(Phase::Running));
    if current.start_time.is_none() {
        fields.insert("startTime".into(), json!(rfc3339(seen.now)));
    }
    fields.insert(
        "conditions".into(),
        current.ready(a.ok, &a.reason, &a.message, seen),
    );
    Decision::status(Some(fields), Action::requeue(PROGRESS_EVERY))
}

/// Started, and its Job is gone before its result was recorded (deleted by hand).
fn job_gone<K: Kind>(current: &Current, seen: &Observed) -> Decision<StatusPatch> {
    let noun = K::NOUN;
    let reason = format!("{noun}Failed");
    let message = format!("{noun} failed: its Job was deleted before it finished");
    let fields = json!({
        "phase": Phase::Failed,
        "completionTime": rfc3339(seen.now),
        "conditions": current.ready(false, &reason, &message, seen),
    });
    let mut d = Decision::status(patch_of(fields), Action::await_change());
    d.events.push(Note::warning(reason, message));
    d
}

/// The spec cannot run: say why, and look again later (a missing Secret may appear).
fn invalid(current: &Current, message: &str, seen: &Observed) -> Decision<StatusPatch> {
    let changed = current
        .conditions
        .first()
        .is_none_or(|c| c.message != message);
    let fields = json!({
        "phase": Phase::Failed,
        "conditions": current.ready(false, INVALID_SPEC, message, seen),
    });
    let mut d = Decision::status(patch_of(fields), Action::requeue(RECHECK_INVALID_EVERY));
    if changed {
        d.events.push(Note::warning(INVALID_SPEC, message));
    }
    d
}

/// The operator-only Job settings every kind has.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypedJobBits {
    #[serde(default)]
    resources: Option<ResourceRequirements>,
    #[serde(default)]
    job: Option<JobSettings>,
    #[serde(default)]
    pod_template: Option<PodTemplate>,
}

/// The spec checked out: start the run.
fn start<K: RunOnce>(
    obj: &K,
    current: &Current,
    storage: Option<&StorageSpec>,
    seen: &Observed,
    config: &Config,
) -> Decision<StatusPatch> {
    let noun = K::NOUN;
    let name = obj.name_any();
    let job_name = job::job_name(&name, "run");
    let typed_spec: TypedJobBits = serde_json::from_value(seen.spec.clone()).unwrap_or_default();
    let kind = K::kind(&());
    let job = job::build(JobInput {
        name: job_name.clone(),
        namespace: obj.namespace().unwrap_or_default(),
        owner: owner(obj),
        kind: &kind,
        resource_name: &name,
        run: "run".into(),
        reason: "one-time run".into(),
        manifest: worker_manifest(obj, &seen.spec),
        image: config.worker_image.clone(),
        service_account: config.worker_service_account.clone(),
        resources: typed_spec.resources,
        job: typed_spec.job,
        pod_template: typed_spec.pod_template,
        progress_path: K::progress_path(&seen.spec, &job_name, storage),
        extra_env: config.worker_env.clone(),
    });
    let fields = json!({
        "phase": Phase::Running,
        "startTime": rfc3339(seen.now),
        "conditions": current.ready(true, &format!("{noun}Running"), &started_message(noun, &job_name, None), seen),
    });
    let mut d = Decision::status(patch_of(fields), Action::requeue(PROGRESS_EVERY));
    d.create = Some(job);
    d.annotate = Some((STARTED_ANNOTATION, rfc3339(seen.now)));
    d.events.push(Note::normal(
        format!("{noun}Started"),
        format!("{noun} started in Job {job_name}"),
    ));
    d
}

fn patch_of(v: Value) -> Option<StatusPatch> {
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use kafka_backup_api::offsets::GroupResult;

    use super::*;
    use crate::reconcile::effective_spec;
    use crate::reconcile::observe::SpecCheck;
    use crate::reconcile::testing::{
        config, failure, job, now, recorded, reported, resource, seen, success, unschedulable,
    };

    fn restore(status: Value, annotations: Value) -> KafkaRestore {
        resource("KafkaRestore", json!({}), status, annotations)
    }

    fn decide_with<K: RunOnce>(
        obj: &K,
        jobs: Vec<ObservedJob>,
        check: Option<SpecCheck>,
    ) -> Option<Decision<StatusPatch>> {
        let s = seen(effective_spec(&config(), obj), jobs, check);
        decide(obj, &s, &config())
    }

    fn storage() -> Option<SpecCheck> {
        Some(Ok(Some(
            serde_json::from_value(
                json!({"storageType": "filesystem", "filesystem": {"path": "/b"}}),
            )
            .expect("storage"),
        )))
    }

    fn field<'a>(d: &'a Decision<StatusPatch>, name: &str) -> &'a Value {
        d.status
            .as_ref()
            .and_then(|s| s.get(name))
            .unwrap_or(&Value::Null)
    }

    fn ready_field<'a>(d: &'a Decision<StatusPatch>, name: &str) -> &'a Value {
        &field(d, "conditions")[0][name]
    }

    fn invalid_status(message: &str) -> Value {
        json!({"phase": "Failed", "conditions": [{
            "type": "Ready", "status": "False", "reason": INVALID_SPEC, "message": message,
            "lastTransitionTime": "2024-12-01T11:00:00Z", "observedGeneration": 1,
        }]})
    }

    #[test]
    fn new_resource_asks_for_the_spec_check() {
        assert_eq!(
            decide_with(&restore(json!(null), json!({})), vec![], None),
            None
        );
    }

    #[test]
    fn checked_spec_starts_the_run_with_its_progress_path() {
        let d = decide_with(&restore(json!(null), json!({})), vec![], storage()).expect("decided");
        let job = d.create.as_ref().expect("a Job");
        assert_eq!(job.metadata.name.as_deref(), Some("orders-run"));
        let annotations = job.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations
                .get(crate::job::ANNOTATION_PROGRESS)
                .map(String::as_str),
            Some("orders-backup/progress/orders-run.json")
        );
        assert_eq!(d.annotate, Some((STARTED_ANNOTATION, rfc3339(now()))));
        assert_eq!(field(&d, "phase"), "Running");
        assert_eq!(field(&d, "startTime"), rfc3339(now()).as_str());
        assert_eq!(ready_field(&d, "reason"), "RestoreRunning");
        assert_eq!(
            d.events,
            vec![Note::normal(
                "RestoreStarted",
                "Restore started in Job orders-run"
            )]
        );
        assert_eq!(d.action, Action::requeue(PROGRESS_EVERY));
    }

    #[test]
    fn offset_kinds_write_no_progress_document() {
        let obj: KafkaOffsetReset = resource("KafkaOffsetReset", json!({}), json!(null), json!({}));
        let d = decide_with(&obj, vec![], Some(Ok(None))).expect("decided");
        let job = d.create.as_ref().expect("a Job");
        let annotations = job.metadata.annotations.clone().unwrap_or_default();
        assert!(!annotations.contains_key(crate::job::ANNOTATION_PROGRESS));
        assert_eq!(d.events[0].reason, "OffsetResetStarted");
    }

    #[test]
    fn invalid_spec_fails_and_is_checked_again_with_one_event_per_message() {
        let d = decide_with(
            &restore(json!(null), json!({})),
            vec![],
            Some(Err("spec.backupId: not found".into())),
        )
        .expect("decided");
        assert!(d.create.is_none() && d.annotate.is_none());
        assert_eq!(field(&d, "phase"), "Failed");
        assert_eq!(ready_field(&d, "reason"), INVALID_SPEC);
        assert_eq!(
            d.events,
            vec![Note::warning(INVALID_SPEC, "spec.backupId: not found")]
        );
        assert_eq!(d.action, Action::requeue(RECHECK_INVALID_EVERY));

        let obj = restore(invalid_status("spec.backupId: not found"), json!({}));
        assert_eq!(
            decide_with(&obj, vec![], None),
            None,
            "an invalid spec is checked again"
        );
        let d = decide_with(&obj, vec![], Some(Err("spec.backupId: not found".into())))
            .expect("decided");
        assert!(d.events.is_empty());
        assert_eq!(
            ready_field(&d, "lastTransitionTime"),
            "2024-12-01T11:00:00Z"
        );
    }

    #[test]
    fn fixed_spec_starts_the_run() {
        let obj = restore(invalid_status("spec.backupId: not found"), json!({}));
        let d = decide_with(&obj, vec![], storage()).expect("decided");
        assert!(d.create.is_some());
        assert_eq!(field(&d, "phase"), "Running");
        assert_eq!(ready_field(&d, "status"), "True");
    }

    #[test]
    fn running_job_reports_progress_and_keeps_its_start_time() {
        let obj = restore(
            json!({"phase": "Running", "startTime": "2024-12-01T12:00:00Z"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut active = job("orders-run", None);
        active.progress = Some("10% (1 of 10 offsets)".into());
        let d = decide_with(&obj, vec![active.clone()], None).expect("decided without a check");
        assert_eq!(field(&d, "phase"), "Running");
        assert_eq!(field(&d, "startTime"), &Value::Null, "not rewritten");
        assert_eq!(
            ready_field(&d, "message"),
            "Restore running in Job orders-run: 10% (1 of 10 offsets)"
        );
        assert_eq!(d.action, Action::requeue(PROGRESS_EVERY));

        let obj = restore(
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let d = decide_with(&obj, vec![active], None).expect("decided");
        assert_eq!(field(&d, "startTime"), rfc3339(now()).as_str());
    }

    #[test]
    fn successful_run_completes_with_its_result_fields() {
        let obj = restore(
            json!({"phase": "Running", "startTime": "2024-12-01T12:00:00Z"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut done = job("orders-run", Some(("Complete", "")));
        let mut r = success(7, 70);
        r.snapshot_id = Some("snap-9".into());
        done.pods = vec![reported(&r)];
        let d = decide_with(&obj, vec![done], None).expect("decided");
        assert_eq!(field(&d, "phase"), "Completed");
        assert_eq!(field(&d, "restoredRecords"), 7);
        assert_eq!(field(&d, "rollbackSnapshotId"), "snap-9");
        assert_eq!(field(&d, "completionTime"), "2024-12-01T12:00:20Z");
        assert_eq!(ready_field(&d, "reason"), "RestoreCompleted");
        assert_eq!(
            ready_field(&d, "message"),
            "Restore completed successfully: 7 records into 0 topics"
        );
        assert_eq!(d.mark_recorded, vec!["orders-run".to_string()]);
        assert_eq!(
            d.runs,
            vec![FinishedRun {
                success: true,
                records: 7,
                bytes: 70,
                secs: 20.0
            }]
        );
        assert_eq!(d.events[0].reason, "RestoreCompleted");
        assert_eq!(d.action, Action::await_change());
    }

    #[test]
    fn failed_run_fails_with_the_workers_error() {
        let obj = restore(
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut done = job("orders-run", Some(("Failed", "BackoffLimitExceeded")));
        done.pods = vec![reported(&failure("topic orders: exists"))];
        let d = decide_with(&obj, vec![done], None).expect("decided");
        assert_eq!(field(&d, "phase"), "Failed");
        assert_eq!(ready_field(&d, "reason"), "RestoreFailed");
        assert_eq!(
            ready_field(&d, "message"),
            "Restore failed: topic orders: exists"
        );
        assert!(d.events[0].warning);
        assert!(!d.runs[0].success);
    }

    #[test]
    fn job_that_succeeded_without_a_result_is_a_failure() {
        let obj = restore(
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let done = job("orders-run", Some(("Complete", "")));
        let d = decide_with(&obj, vec![done], None).expect("decided");
        assert_eq!(field(&d, "phase"), "Failed");
        assert_eq!(
            ready_field(&d, "message"),
            "Restore failed: Job orders-run ended without a result"
        );
    }

    #[test]
    fn finished_resource_is_left_alone() {
        let obj = restore(
            json!({"phase": "Completed"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let done = recorded(job("orders-run", Some(("Complete", ""))));
        let d = decide_with(&obj, vec![done], None).expect("decided");
        assert_eq!(d, Decision::status(None, Action::await_change()));
    }

    #[test]
    fn started_run_whose_job_vanished_fails() {
        let obj = restore(
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let d = decide_with(&obj, vec![], None).expect("decided without a check");
        assert!(d.create.is_none());
        assert_eq!(field(&d, "phase"), "Failed");
        assert_eq!(field(&d, "completionTime"), rfc3339(now()).as_str());
        assert_eq!(
            ready_field(&d, "message"),
            "Restore failed: its Job was deleted before it finished"
        );
        assert_eq!(d.events[0].reason, "RestoreFailed");
    }

    #[test]
    fn rollback_reports_groups_and_verification() {
        let obj: KafkaOffsetRollback = resource(
            "KafkaOffsetRollback",
            json!({}),
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut done = job("orders-run", Some(("Complete", "")));
        let mut r = success(0, 0);
        r.groups = vec![GroupResult::default(), GroupResult::default()];
        r.verified = Some(true);
        done.pods = vec![reported(&r)];
        let d = decide_with(&obj, vec![done], None).expect("decided");
        assert_eq!(field(&d, "verified"), true);
        assert_eq!(field(&d, "groups").as_array().map(Vec::len), Some(2));
        assert_eq!(
            ready_field(&d, "message"),
            "OffsetRollback completed successfully for 2 groups; every group matches the snapshot"
        );
        assert_eq!(ready_field(&d, "reason"), "OffsetRollbackCompleted");
    }

    #[test]
    fn offset_kinds_run_on_the_default_storage_when_they_name_none() {
        let mut cfg = config();
        cfg.default_storage = Some(
            serde_json::from_value(
                json!({"storageType": "filesystem", "filesystem": {"path": "/d"}}),
            )
            .expect("storage"),
        );
        let reset: KafkaOffsetReset =
            resource("KafkaOffsetReset", json!({}), json!(null), json!({}));
        assert_eq!(
            effective_spec(&cfg, &reset)["storage"]["filesystem"]["path"],
            "/d"
        );
        let obj = restore(json!(null), json!({}));
        assert_eq!(
            effective_spec(&cfg, &obj)["storage"]["filesystem"]["path"],
            "/backups"
        );
    }

    #[test]
    fn unschedulable_pod_is_what_ready_says_while_the_job_waits() {
        let obj = restore(
            json!({"phase": "Running", "startTime": "2024-12-01T12:00:00Z"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut active = job("orders-run", None);
        active.pods = vec![unschedulable(
            "0/3 nodes are available: 3 Insufficient memory.",
        )];
        let d = decide_with(&obj, vec![active], None).expect("decided without a check");
        assert_eq!(field(&d, "phase"), "Running");
        assert_eq!(ready_field(&d, "status"), "False");
        assert_eq!(ready_field(&d, "reason"), "RestoreUnschedulable");
        assert_eq!(
            ready_field(&d, "message"),
            "Restore waiting in Job orders-run: pod orders-run-abcde cannot be scheduled: 0/3 nodes are available: 3 Insufficient memory."
        );
        assert_eq!(d.action, Action::requeue(PROGRESS_EVERY));
    }
}
