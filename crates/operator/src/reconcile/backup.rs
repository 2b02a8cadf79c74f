//! KafkaBackup: runs on a schedule, on each new trigger value, or once.
//!
//! Phases: `Pending` until the first run -> `Running` while a Job runs -> `Completed` or
//! `Failed` from the last Job's result, and back to `Running` at the next slot or trigger. An
//! invalid spec (or schedule) is `Failed` with reason `InvalidSpec`; a slot or trigger that
//! meets an invalid spec counts as handled and is not retried. `status.backupHistory` keeps the
//! last [`HISTORY_LIMIT`] runs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kafka_backup_api::backup::{BackupHistoryEntry, KafkaBackup, KafkaBackupStatus};
use kafka_backup_api::common::{Condition, Phase};
use kafka_backup_api::worker::WorkerResult;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::apply::{Decision, FinishedRun, Note, apply};
use super::error::Result;
use super::observe::{JobState, Observed, ObservedJob, observe};
use super::{
    Active, Ctx, HANDLED_TRIGGER_ANNOTATION, HISTORY_LIMIT, INVALID_SPEC, Kind,
    LAST_SLOT_ANNOTATION, PROGRESS_EVERY, RECHECK_INVALID_EVERY, STARTED_ANNOTATION,
    TRIGGER_ANNOTATION, decide_checked, owner, parse_time, ready, rfc3339, seconds_between,
    started_message, worker_manifest,
};
use crate::Config;
use crate::job::{self, JobInput};
use crate::schedule::Schedule;

/// Reconciles one KafkaBackup.
pub async fn reconcile_backup(obj: Arc<KafkaBackup>, ctx: Arc<Ctx>) -> Result<Action> {
    ctx.metrics.reconcile(&KafkaBackup::kind(&()));
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let seen = observe(&ctx, obj.as_ref()).await?;
    let decision = decide_checked(&ctx, obj.as_ref(), seen, decide).await;
    apply(&ctx, obj.as_ref(), decision).await
}

/// A run to start, and the annotation that records it was handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextRun {
    /// The run's id in the Job name (`t<hash>`, `s<minute>`, `once`).
    pub run: String,
    /// Why it runs, for the Job and the event.
    pub reason: String,
    pub mark: &'static str,
    pub mark_value: String,
    /// A warning that slots were missed, to publish when the run is decided on.
    pub missed: Option<Note>,
}

/// What to do for `obj`, or `None` when that depends on the spec check and `seen` has none
/// (the caller checks the spec and decides again).
pub fn decide(
    obj: &KafkaBackup,
    seen: &Observed,
    config: &Config,
) -> Option<Decision<KafkaBackupStatus>> {
    let old = obj.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut d = Decision::status(None, Action::await_change());
    for j in seen.unrecorded_finished() {
        let (note, run) = record(obj, &mut status, j, seen.now);
        d.events.push(note);
        d.runs.push(run);
        d.mark_recorded.push(j.name());
    }
    let schedule = schedule_of(obj);
    let next = match &schedule {
        Some(Ok(s)) => s.next_after(seen.now),
        _ => None,
    };
    status.next_scheduled_time = next.map(rfc3339);
    let generation = obj.meta().generation;
    if let Some(active) = seen.active() {
        status.phase = Some(Phase::Running);
        let a = Active::of(KafkaBackup::NOUN, active);
        status.conditions = ready(
            &old.conditions,
            a.ok,
            &a.reason,
            &a.message,
            generation,
            seen.now,
        );
        return Some(d.with(status, Action::requeue(PROGRESS_EVERY)));
    }
    match next_run(obj, schedule.as_ref(), seen.now) {
        Err(message) => Some(invalid(d, status, &message, generation, seen.now)),
        Ok(None) => idle(d, status, &old.conditions, next, seen, generation),
        Ok(Some(run)) => start(obj, d, status, &old.conditions, run, seen, config),
    }
}

fn schedule_of(obj: &KafkaBackup) -> Option<Result<Schedule, String>> {
    obj.spec
        .schedule
        .as_deref()
        .map(|e| Schedule::parse(e, obj.spec.time_zone.as_deref()))
}

impl<S> Decision<S> {
    fn with(mut self, status: S, action: Action) -> Self {
        self.status = Some(status);
        self.action = action;
        self
    }
}

/// Whether a run should start: a new trigger value first, then a due schedule slot, then the
/// one run of a backup without a schedule. `Err` is an invalid schedule.
pub fn next_run(
    obj: &KafkaBackup,
    schedule: Option<&Result<Schedule, String>>,
    now: DateTime<Utc>,
) -> Result<Option<NextRun>, String> {
    let annotations = obj.annotations();
    let handled = annotations.get(HANDLED_TRIGGER_ANNOTATION);
    if let Some(v) = annotations
        .get(TRIGGER_ANNOTATION)
        .filter(|v| Some(*v) != handled)
    {
        return Ok(Some(NextRun {
            run: format!("t{}", job::short_hash(v)),
            reason: format!("trigger {v}"),
            mark: HANDLED_TRIGGER_ANNOTATION,
            mark_value: v.clone(),
            missed: None,
        }));
    }
    match schedule {
        Some(Err(message)) => Err(message.clone()),
        Some(Ok(s)) => Ok(due_slot(obj, s, now)),
        None if annotations.contains_key(STARTED_ANNOTATION) => Ok(None),
        None => Ok(Some(NextRun {
            run: "once".into(),
            reason: "one-time backup".into(),
            mark: STARTED_ANNOTATION,
            mark_value: rfc3339(now),
            missed: None,
        })),
    }
}

/// The latest slot due since the last one handled (or since the resource was created); the
/// slots missed before it are skipped with a warning.
fn due_slot(obj: &KafkaBackup, s: &Schedule, now: DateTime<Utc>) -> Option<NextRun> {
    let created = obj
        .meta()
        .creation_timestamp
        .as_ref()
        .and_then(|c| parse_time(&c.0.to_string()))
        .unwrap_or(now);
    let last = obj
        .annotations()
        .get(LAST_SLOT_ANNOTATION)
        .and_then(|v| parse_time(v))
        .unwrap_or(created);
    let (slot, missed) = s.latest_due(last, now)?;
    let missed = (missed > 1).then(|| {
        Note::warning(
            "ScheduleSlotsMissed",
            format!(
                "{} schedule slots passed without a run (a run was still going, or no operator was running); one backup runs now for the slot of {}",
                missed,
                rfc3339(slot)
            ),
        )
    });
    Some(NextRun {
        run: format!("s{}", slot.timestamp() / 60),
        reason: format!("schedule {}", rfc3339(slot)),
        mark: LAST_SLOT_ANNOTATION,
        mark_value: rfc3339(slot),
        missed,
    })
}

/// Nothing to run: waiting for the next slot (or done, for a one-time backup). A new or changed
/// spec (or one found invalid before) is checked now, not at its first slot.
fn idle(
    mut d: Decision<KafkaBackupStatus>,
    mut status: KafkaBackupStatus,
    old: &[Condition],
    next: Option<DateTime<Utc>>,
    seen: &Observed,
    generation: Option<i64>,
) -> Option<Decision<KafkaBackupStatus>> {
    if status.phase.is_none() {
        status.phase = Some(Phase::Pending);
    }
    let Some(n) = next else {
        return Some(d.with(status, Action::await_change()));
    };
    let was_invalid = old.first().is_some_and(|c| c.reason == INVALID_SPEC);
    let stale = old
        .first()
        .is_none_or(|c| c.observed_generation != generation || c.reason == INVALID_SPEC);
    if stale {
        if let Err(message) = seen.check.as_ref()? {
            return Some(invalid(d, status, message, generation, seen.now));
        }
        if was_invalid {
            status.phase = match status.backup_history.last() {
                None => Some(Phase::Pending),
                Some(h) if h.outcome == "success" => Some(Phase::Completed),
                Some(_) => Some(Phase::Failed),
            };
        }
    }
    let old: &[Condition] = if stale { &[] } else { old };
    let last_ok = status.phase != Some(Phase::Failed);
    let message = if last_ok {
        format!("Next backup scheduled for {}", rfc3339(n))
    } else {
        let last = old
            .first()
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "The last backup failed".into());
        format!("{last}; next backup scheduled for {}", rfc3339(n))
    };
    let (ok, reason) = if last_ok {
        (true, "BackupScheduled")
    } else {
        (
            false,
            old.first()
                .map(|c| c.reason.as_str())
                .unwrap_or("BackupFailed"),
        )
    };
    if old.first().is_none_or(|c| !c.message.contains(&rfc3339(n))) {
        status.conditions = ready(
            &status.conditions,
            ok,
            reason,
            &message,
            generation,
            seen.now,
        );
    }
    d.action = Action::requeue(until(n, seen.now));
    d.status = Some(status);
    Some(d)
}

/// How long to wait for slot `n`: at most five minutes (a changed schedule or a clock step is
/// seen within that), and a little past the slot so that it is due when the pass runs.
fn until(n: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (n - now)
        .to_std()
        .unwrap_or(Duration::from_secs(1))
        .min(Duration::from_secs(300))
        + Duration::from_millis(200)
}

/// A run is due: check the spec, then start it.
fn start(
    obj: &KafkaBackup,
    mut d: Decision<KafkaBackupStatus>,
    mut status: KafkaBackupStatus,
    old: &[Condition],
    run: NextRun,
    seen: &Observed,
    config: &Config,
) -> Option<Decision<KafkaBackupStatus>> {
    let generation = obj.meta().generation;
    d.events.extend(run.missed.clone());
    if let Err(message) = seen.check.as_ref()? {
        // A slot or trigger with an invalid spec counts as handled: it is not retried.
        if run.mark != STARTED_ANNOTATION {
            d.annotate = Some((run.mark, run.mark_value));
        }
        return Some(invalid(d, status, message, generation, seen.now));
    }
    let name = obj.name_any();
    let job_name = job::job_name(&name, &run.run);
    let kind = KafkaBackup::kind(&());
    d.create = Some(job::build(JobInput {
        name: job_name.clone(),
        namespace: obj.namespace().unwrap_or_default(),
        owner: owner(obj),
        kind: &kind,
        resource_name: &name,
        run: run.run.clone(),
        reason: run.reason.clone(),
        manifest: worker_manifest(obj, &seen.spec),
        image: config.worker_image.clone(),
        service_account: config.worker_service_account.clone(),
        resources: obj.spec.resources.clone(),
        job: obj.spec.job.clone(),
        pod_template: obj.spec.pod_template.clone(),
        progress_path: Some(format!("{name}/progress/{job_name}.json")),
        extra_env: config.worker_env.clone(),
    }));
    d.annotate = Some((run.mark, run.mark_value));
    status.phase = Some(Phase::Running);
    let message = started_message("Backup", &job_name, None);
    status.conditions = ready(old, true, "BackupRunning", &message, generation, seen.now);
    d.events.push(Note::normal(
        "BackupStarted",
        format!("Backup started in Job {job_name} ({})", run.reason),
    ));
    Some(d.with(status, Action::requeue(PROGRESS_EVERY)))
}

/// The spec (or schedule) cannot run: say why, and look again later.
fn invalid(
    mut d: Decision<KafkaBackupStatus>,
    mut status: KafkaBackupStatus,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Decision<KafkaBackupStatus> {
    let old = status.conditions.clone();
    if old.first().is_none_or(|c| c.message != message) {
        d.events.push(Note::warning(INVALID_SPEC, message));
    }
    status.phase = Some(Phase::Failed);
    status.conditions = ready(&old, false, INVALID_SPEC, message, generation, now);
    d.with(status, Action::requeue(RECHECK_INVALID_EVERY))
}

/// A finished run into status: history (bounded, without duplicates), last backup, phase,
/// Ready; and the event and metrics that go with it.
fn record(
    obj: &KafkaBackup,
    status: &mut KafkaBackupStatus,
    j: &ObservedJob,
    now: DateTime<Utc>,
) -> (Note, FinishedRun) {
    let state = j.state();
    let result = j.result();
    let succeeded =
        state == JobState::Succeeded && result.as_ref().is_some_and(|r| r.outcome == "success");
    let r = result.unwrap_or_default();
    let completion = if r.completion_time.is_empty() {
        rfc3339(now)
    } else {
        r.completion_time.clone()
    };
    let start = if r.start_time.is_empty() {
        j.start_time().unwrap_or_else(|| completion.clone())
    } else {
        r.start_time.clone()
    };
    let run = FinishedRun {
        success: succeeded,
        records: r.records,
        bytes: r.bytes,
        secs: seconds_between(&start, &completion),
    };
    let backup_id = r.backup_id.clone().unwrap_or_default();
    add_history(
        status,
        BackupHistoryEntry {
            backup_id: backup_id.clone(),
            start_time: start,
            completion_time: Some(completion.clone()),
            size: succeeded.then_some(r.bytes),
            records: succeeded.then_some(r.records),
            outcome: if succeeded { "success" } else { "failure" }.into(),
        },
    );
    if !succeeded {
        let message = format!("Backup failed: {}", j.failure(&r));
        status.phase = Some(Phase::Failed);
        let generation = obj.meta().generation;
        status.conditions = ready(
            &status.conditions,
            false,
            "BackupFailed",
            &message,
            generation,
            now,
        );
        return (Note::warning("BackupFailed", message), run);
    }
    let note = Note::normal(
        "BackupCompleted",
        format!(
            "Backup {backup_id} completed in Job {}: {} records, {} bytes",
            j.name(),
            r.records,
            r.bytes
        ),
    );
    completed(obj, status, &r, completion, now);
    (note, run)
}

/// A successful run: the last backup's totals, and Ready saying when the next one runs.
fn completed(
    obj: &KafkaBackup,
    status: &mut KafkaBackupStatus,
    r: &WorkerResult,
    completion: String,
    now: DateTime<Utc>,
) {
    let backup_id = r.backup_id.clone().unwrap_or_default();
    status.phase = Some(Phase::Completed);
    status.last_backup_id = Some(backup_id.clone());
    status.last_backup_time = Some(completion);
    status.last_backup_size = Some(r.bytes);
    status.last_backup_records = Some(r.records);
    let message = match schedule_of(obj)
        .and_then(|s| s.ok())
        .and_then(|s| s.next_after(now))
    {
        Some(n) => format!("Next backup scheduled for {}", rfc3339(n)),
        None => format!(
            "Backup {backup_id} completed: {} records, {} bytes",
            r.records, r.bytes
        ),
    };
    let reason = if obj.spec.schedule.is_some() {
        "BackupScheduled"
    } else {
        "BackupCompleted"
    };
    let generation = obj.meta().generation;
    status.conditions = ready(&status.conditions, true, reason, &message, generation, now);
}

/// Appends a run to `status.backupHistory` unless it is there already (a pass repeated after a
/// failure records the same Job again), keeping the newest [`HISTORY_LIMIT`].
fn add_history(status: &mut KafkaBackupStatus, entry: BackupHistoryEntry) {
    if status
        .backup_history
        .iter()
        .any(|h| h.start_time == entry.start_time && h.backup_id == entry.backup_id)
    {
        return;
    }
    status.backup_history.push(entry);
    let excess = status.backup_history.len().saturating_sub(HISTORY_LIMIT);
    status.backup_history.drain(..excess);
}

#[cfg(test)]
mod tests {
    use kafka_backup_api::common::Phase;
    use serde_json::{Value, json};

    use super::*;
    use crate::reconcile::effective_spec;
    use crate::reconcile::testing::{
        at, config, failure, job, now, pod, recorded, reported, resource, seen, success,
        unschedulable, with_memory_limit,
    };

    fn backup(spec: Value, status: Value, annotations: Value) -> KafkaBackup {
        resource("KafkaBackup", spec, status, annotations)
    }

    fn hourly() -> Value {
        json!({"schedule": "0 * * * *"})
    }

    fn decide_with(
        obj: &KafkaBackup,
        jobs: Vec<ObservedJob>,
        check: Option<Result<(), &str>>,
    ) -> Option<Decision<KafkaBackupStatus>> {
        let check = check.map(|c| c.map(|()| None).map_err(str::to_string));
        let s = seen(effective_spec(&config(), obj), jobs, check);
        decide(obj, &s, &config())
    }

    fn ready_of(status: &KafkaBackupStatus) -> &Condition {
        status.conditions.first().expect("a Ready condition")
    }

    fn status_of(d: &Decision<KafkaBackupStatus>) -> &KafkaBackupStatus {
        d.status.as_ref().expect("a status patch")
    }

    fn condition(ok: bool, reason: &str, message: &str, generation: i64) -> Value {
        json!([{
            "type": "Ready",
            "status": if ok { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "lastTransitionTime": "2024-12-01T11:00:00Z",
            "observedGeneration": generation,
        }])
    }

    #[test]
    fn one_time_backup_asks_for_the_spec_check_before_it_starts() {
        let obj = backup(json!({}), json!(null), json!({}));
        assert_eq!(decide_with(&obj, vec![], None), None);
    }

    #[test]
    fn one_time_backup_starts_its_job_once_the_spec_checks_out() {
        let obj = backup(json!({}), json!(null), json!({}));
        let d = decide_with(&obj, vec![], Some(Ok(()))).expect("decided");
        let job = d.create.as_ref().expect("a Job");
        assert_eq!(job.metadata.name.as_deref(), Some("orders-once"));
        assert_eq!(d.annotate, Some((STARTED_ANNOTATION, rfc3339(now()))));
        let status = status_of(&d);
        assert_eq!(status.phase, Some(Phase::Running));
        assert_eq!(ready_of(status).reason, "BackupRunning");
        assert_eq!(
            ready_of(status).message,
            "Backup running in Job orders-once"
        );
        assert_eq!(
            d.events,
            vec![Note::normal(
                "BackupStarted",
                "Backup started in Job orders-once (one-time backup)"
            )]
        );
        assert_eq!(d.action, Action::requeue(PROGRESS_EVERY));
    }

    #[test]
    fn invalid_spec_fails_with_its_message_and_is_checked_again() {
        let obj = backup(json!({}), json!(null), json!({}));
        let d =
            decide_with(&obj, vec![], Some(Err("spec.storage: no such bucket"))).expect("decided");
        assert!(d.create.is_none());
        assert!(d.annotate.is_none(), "a one-time run is not marked started");
        let status = status_of(&d);
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(ready_of(status).reason, INVALID_SPEC);
        assert_eq!(ready_of(status).status, "False");
        assert_eq!(
            d.events,
            vec![Note::warning(INVALID_SPEC, "spec.storage: no such bucket")]
        );
        assert_eq!(d.action, Action::requeue(RECHECK_INVALID_EVERY));

        // The same message again: no second event.
        let obj = backup(
            json!({}),
            json!({"phase": "Failed", "conditions": condition(false, INVALID_SPEC, "spec.storage: no such bucket", 1)}),
            json!({}),
        );
        let d =
            decide_with(&obj, vec![], Some(Err("spec.storage: no such bucket"))).expect("decided");
        assert!(d.events.is_empty());
        assert_eq!(
            ready_of(status_of(&d)).last_transition_time,
            "2024-12-01T11:00:00Z"
        );
    }

    #[test]
    fn running_job_reports_progress_without_a_spec_check() {
        let obj = backup(
            json!({}),
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut active = job("orders-once", None);
        active.progress = Some("50% (5 of 10 offsets)".into());
        let d = decide_with(&obj, vec![active], None).expect("decided without a check");
        let status = status_of(&d);
        assert_eq!(status.phase, Some(Phase::Running));
        assert_eq!(
            ready_of(status).message,
            "Backup running in Job orders-once: 50% (5 of 10 offsets)"
        );
        assert!(d.create.is_none());
        assert_eq!(d.action, Action::requeue(PROGRESS_EVERY));
    }

    #[test]
    fn finished_job_is_recorded_once_with_history_and_totals() {
        let obj = backup(
            json!({}),
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut done = job("orders-once", Some(("Complete", "")));
        done.pods = vec![reported(&success(10, 2048))];
        let d = decide_with(&obj, vec![done], None).expect("decided without a check");
        let status = status_of(&d);
        assert_eq!(status.phase, Some(Phase::Completed));
        assert_eq!(
            status.last_backup_id.as_deref(),
            Some("orders-20241201-120000")
        );
        assert_eq!(status.last_backup_records, Some(10));
        assert_eq!(status.last_backup_size, Some(2048));
        assert_eq!(status.backup_history.len(), 1);
        assert_eq!(status.backup_history[0].outcome, "success");
        assert_eq!(ready_of(status).reason, "BackupCompleted");
        assert_eq!(d.mark_recorded, vec!["orders-once".to_string()]);
        assert_eq!(d.runs.len(), 1);
        assert!(d.runs[0].success);
        assert_eq!(d.runs[0].secs, 20.0);
        assert_eq!(d.events[0].reason, "BackupCompleted");
        assert_eq!(d.action, Action::await_change());

        // Recorded: nothing more to say.
        let obj = backup(
            json!({}),
            serde_json::to_value(status).expect("json"),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let again = recorded(job("orders-once", Some(("Complete", ""))));
        let d = decide_with(&obj, vec![again], None).expect("decided");
        assert!(d.mark_recorded.is_empty() && d.events.is_empty() && d.runs.is_empty());
        assert_eq!(status_of(&d).backup_history.len(), 1);
    }

    #[test]
    fn failed_job_without_a_result_fails_with_the_jobs_reason() {
        let obj = backup(
            json!({}),
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let done = job("orders-once", Some(("Failed", "BackoffLimitExceeded")));
        let d = decide_with(&obj, vec![done], None).expect("decided");
        let status = status_of(&d);
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(ready_of(status).reason, "BackupFailed");
        assert_eq!(
            ready_of(status).message,
            "Backup failed: Job orders-once failed (BackoffLimitExceeded): as the test says"
        );
        assert_eq!(status.backup_history[0].outcome, "failure");
        assert_eq!(status.backup_history[0].records, None);
        assert!(d.events[0].warning);
        assert!(!d.runs[0].success);
    }

    #[test]
    fn worker_error_is_the_failure_message() {
        let obj = backup(
            json!({}),
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut done = job("orders-once", Some(("Failed", "BackoffLimitExceeded")));
        done.pods = vec![reported(&failure("topic orders: not found"))];
        let d = decide_with(&obj, vec![done], None).expect("decided");
        assert_eq!(
            ready_of(status_of(&d)).message,
            "Backup failed: topic orders: not found"
        );
    }

    #[test]
    fn history_keeps_the_newest_runs_and_no_duplicates() {
        let history: Vec<Value> = (0..HISTORY_LIMIT)
            .map(|i| json!({"backupId": format!("b{i}"), "startTime": format!("t{i}"), "outcome": "success"}))
            .collect();
        let obj = backup(
            json!({}),
            json!({"backupHistory": history}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut done = job("orders-once", Some(("Complete", "")));
        done.pods = vec![reported(&success(1, 1))];
        let d = decide_with(&obj, vec![done.clone()], None).expect("decided");
        let status = status_of(&d);
        assert_eq!(status.backup_history.len(), HISTORY_LIMIT);
        assert_eq!(status.backup_history[0].backup_id, "b1");
        assert_eq!(
            status.backup_history[HISTORY_LIMIT - 1].backup_id,
            "orders-20241201-120000"
        );
        // The same run seen again (its Job not yet marked recorded) is not added twice.
        let obj = backup(
            json!({}),
            serde_json::to_value(status).expect("json"),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let d = decide_with(&obj, vec![done], None).expect("decided");
        assert_eq!(status_of(&d).backup_history.len(), HISTORY_LIMIT);
        assert_eq!(status_of(&d).backup_history[0].backup_id, "b1");
    }

    #[test]
    fn due_schedule_slot_starts_a_run_and_marks_the_slot() {
        let obj = backup(hourly(), json!(null), json!({}));
        assert_eq!(decide_with(&obj, vec![], None), None);
        let d = decide_with(&obj, vec![], Some(Ok(()))).expect("decided");
        let slot = at("2024-12-01T12:00:00Z");
        let run = format!("s{}", slot.timestamp() / 60);
        let job = d.create.as_ref().expect("a Job");
        assert_eq!(job.metadata.name, Some(job::job_name("orders", &run)));
        assert_eq!(d.annotate, Some((LAST_SLOT_ANNOTATION, rfc3339(slot))));
        assert_eq!(
            status_of(&d).next_scheduled_time.as_deref(),
            Some("2024-12-01T13:00:00Z")
        );
        assert!(d.events.iter().all(|e| e.reason != "ScheduleSlotsMissed"));
    }

    #[test]
    fn missed_slots_run_once_with_a_warning() {
        let obj = backup(
            hourly(),
            json!(null),
            json!({LAST_SLOT_ANNOTATION: "2024-12-01T08:00:00Z"}),
        );
        let d = decide_with(&obj, vec![], Some(Ok(()))).expect("decided");
        assert_eq!(d.events[0].reason, "ScheduleSlotsMissed");
        assert!(d.events[0].message.starts_with("4 schedule slots passed"));
        assert_eq!(
            d.annotate,
            Some((LAST_SLOT_ANNOTATION, "2024-12-01T12:00:00Z".to_string()))
        );
        assert_eq!(d.events[1].reason, "BackupStarted");
    }

    #[test]
    fn slot_with_an_invalid_spec_counts_as_handled() {
        let obj = backup(hourly(), json!(null), json!({}));
        let d = decide_with(&obj, vec![], Some(Err("spec.kafkaCluster: unreachable")))
            .expect("decided");
        assert!(d.create.is_none());
        assert_eq!(
            d.annotate,
            Some((LAST_SLOT_ANNOTATION, "2024-12-01T12:00:00Z".to_string()))
        );
        assert_eq!(ready_of(status_of(&d)).reason, INVALID_SPEC);
    }

    #[test]
    fn between_slots_it_waits_without_a_check_when_nothing_changed() {
        let obj = backup(
            hourly(),
            json!({"phase": "Completed", "conditions": condition(true, "BackupScheduled", "Next backup scheduled for 2024-12-01T12:00:00Z", 1)}),
            json!({LAST_SLOT_ANNOTATION: "2024-12-01T12:00:00Z"}),
        );
        let d = decide_with(&obj, vec![], None).expect("decided without a check");
        let status = status_of(&d);
        assert_eq!(status.phase, Some(Phase::Completed));
        assert_eq!(
            ready_of(status).message,
            "Next backup scheduled for 2024-12-01T13:00:00Z"
        );
        assert_eq!(ready_of(status).reason, "BackupScheduled");
        assert_eq!(
            d.action,
            Action::requeue(Duration::from_secs(300) + Duration::from_millis(200))
        );
        assert!(d.create.is_none() && d.annotate.is_none());
    }

    #[test]
    fn waiting_after_a_failure_keeps_the_failure_in_ready() {
        let obj = backup(
            hourly(),
            json!({"phase": "Failed", "conditions": condition(false, "BackupFailed", "Backup failed: disk full", 1)}),
            json!({LAST_SLOT_ANNOTATION: "2024-12-01T12:00:00Z"}),
        );
        let d = decide_with(&obj, vec![], None).expect("decided");
        let ready = ready_of(status_of(&d));
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, "BackupFailed");
        assert_eq!(
            ready.message,
            "Backup failed: disk full; next backup scheduled for 2024-12-01T13:00:00Z"
        );
    }

    #[test]
    fn changed_spec_is_checked_before_its_first_slot() {
        let obj = backup(
            hourly(),
            json!({"phase": "Completed", "conditions": condition(true, "BackupScheduled", "x", 0)}),
            json!({LAST_SLOT_ANNOTATION: "2024-12-01T12:00:00Z"}),
        );
        assert_eq!(decide_with(&obj, vec![], None), None);
        let d = decide_with(&obj, vec![], Some(Err("spec.topics: empty"))).expect("decided");
        assert_eq!(ready_of(status_of(&d)).reason, INVALID_SPEC);
        assert!(d.annotate.is_none(), "no slot was due");
    }

    #[test]
    fn fixed_spec_leaves_invalid_and_returns_to_the_last_outcome() {
        let obj = backup(
            hourly(),
            json!({
                "phase": "Failed",
                "conditions": condition(false, INVALID_SPEC, "spec.topics: empty", 1),
                "backupHistory": [{"backupId": "b", "startTime": "t", "outcome": "success"}],
            }),
            json!({LAST_SLOT_ANNOTATION: "2024-12-01T12:00:00Z"}),
        );
        assert_eq!(
            decide_with(&obj, vec![], None),
            None,
            "an invalid spec is checked again"
        );
        let d = decide_with(&obj, vec![], Some(Ok(()))).expect("decided");
        let status = status_of(&d);
        assert_eq!(status.phase, Some(Phase::Completed));
        assert_eq!(ready_of(status).reason, "BackupScheduled");
        assert_eq!(ready_of(status).status, "True");
    }

    #[test]
    fn invalid_schedule_fails_without_a_check() {
        let obj = backup(json!({"schedule": "every hour"}), json!(null), json!({}));
        let d = decide_with(&obj, vec![], None).expect("decided without a check");
        let status = status_of(&d);
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(ready_of(status).reason, INVALID_SPEC);
        assert!(d.annotate.is_none());
        assert_eq!(d.action, Action::requeue(RECHECK_INVALID_EVERY));
    }

    #[test]
    fn new_trigger_value_runs_one_backup() {
        let obj = backup(
            hourly(),
            json!(null),
            json!({TRIGGER_ANNOTATION: "now-1", LAST_SLOT_ANNOTATION: "2024-12-01T12:00:00Z"}),
        );
        let d = decide_with(&obj, vec![], Some(Ok(()))).expect("decided");
        let job = d.create.as_ref().expect("a Job");
        let run = format!("t{}", job::short_hash("now-1"));
        assert_eq!(job.metadata.name, Some(job::job_name("orders", &run)));
        assert_eq!(
            d.annotate,
            Some((HANDLED_TRIGGER_ANNOTATION, "now-1".to_string()))
        );
        assert_eq!(
            d.events[0].message,
            format!(
                "Backup started in Job {} (trigger now-1)",
                job::job_name("orders", &run)
            )
        );
    }

    #[test]
    fn handled_trigger_value_does_not_run_again() {
        let obj = backup(
            json!({}),
            json!({"phase": "Completed"}),
            json!({TRIGGER_ANNOTATION: "now-1", HANDLED_TRIGGER_ANNOTATION: "now-1", STARTED_ANNOTATION: "x"}),
        );
        let d = decide_with(&obj, vec![], None).expect("decided");
        assert!(d.create.is_none() && d.annotate.is_none());
        assert_eq!(d.action, Action::await_change());
    }

    #[test]
    fn trigger_with_an_invalid_spec_counts_as_handled() {
        let obj = backup(
            json!({}),
            json!(null),
            json!({TRIGGER_ANNOTATION: "now-2", STARTED_ANNOTATION: "x"}),
        );
        let d = decide_with(&obj, vec![], Some(Err("spec.storage: denied"))).expect("decided");
        assert!(d.create.is_none());
        assert_eq!(
            d.annotate,
            Some((HANDLED_TRIGGER_ANNOTATION, "now-2".to_string()))
        );
        assert_eq!(ready_of(status_of(&d)).reason, INVALID_SPEC);
    }

    #[test]
    fn finished_run_and_new_trigger_in_one_pass_make_one_status() {
        let obj = backup(
            json!({}),
            json!({"phase": "Running"}),
            json!({TRIGGER_ANNOTATION: "again", STARTED_ANNOTATION: "x"}),
        );
        let mut done = job("orders-once", Some(("Complete", "")));
        done.pods = vec![pod(
            0,
            "Completed",
            &success(3, 30).to_termination_message(),
            "2024-12-01T12:00:20Z",
        )];
        let d = decide_with(&obj, vec![done], Some(Ok(()))).expect("decided");
        let status = status_of(&d);
        assert_eq!(
            status.phase,
            Some(Phase::Running),
            "the new run is what status shows"
        );
        assert_eq!(
            status.last_backup_records,
            Some(3),
            "and the finished one is kept"
        );
        assert_eq!(d.mark_recorded, vec!["orders-once".to_string()]);
        let reasons: Vec<&str> = d.events.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(reasons, ["BackupCompleted", "BackupStarted"]);
    }

    #[test]
    fn scheduled_completion_says_when_the_next_runs() {
        let obj = backup(
            hourly(),
            json!({"phase": "Running"}),
            json!({LAST_SLOT_ANNOTATION: "2024-12-01T12:00:00Z"}),
        );
        let mut done = job("orders-s1", Some(("Complete", "")));
        done.pods = vec![reported(&success(1, 1))];
        let d = decide_with(&obj, vec![done], Some(Ok(()))).expect("decided");
        let ready = ready_of(status_of(&d));
        assert_eq!(ready.reason, "BackupScheduled");
        assert_eq!(
            ready.message,
            "Next backup scheduled for 2024-12-01T13:00:00Z"
        );
    }

    #[test]
    fn worker_killed_for_memory_fails_naming_the_limit() {
        let obj = backup(
            json!({}),
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut done = job("orders-once", Some(("Failed", "BackoffLimitExceeded")));
        done.pods = vec![with_memory_limit(
            pod(137, "OOMKilled", "reading", "2024-12-01T12:00:05Z"),
            "1Gi",
        )];
        let d = decide_with(&obj, vec![done], None).expect("decided");
        assert_eq!(
            ready_of(status_of(&d)).message,
            "Backup failed: the worker in Job orders-once ran out of memory (OOMKilled, limit 1Gi); raise spec.resources.limits.memory"
        );
    }

    #[test]
    fn unschedulable_pod_turns_ready_false_until_it_is_placed() {
        let obj = backup(
            json!({}),
            json!({"phase": "Running"}),
            json!({STARTED_ANNOTATION: "x"}),
        );
        let mut active = job("orders-once", None);
        active.pods = vec![unschedulable(
            "0/1 nodes are available: node(s) didn't match Pod's node affinity/selector.",
        )];
        let d = decide_with(&obj, vec![active.clone()], None).expect("decided");
        let ready = ready_of(status_of(&d));
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "BackupUnschedulable")
        );
        assert!(
            ready
                .message
                .contains("cannot be scheduled: 0/1 nodes are available")
        );
        // Placed: running again.
        active.pods.clear();
        let d = decide_with(&obj, vec![active], None).expect("decided");
        assert_eq!(ready_of(status_of(&d)).reason, "BackupRunning");
    }
}
