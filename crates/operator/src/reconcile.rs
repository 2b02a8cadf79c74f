//! The reconcilers. Each run is a Job (see [`crate::job`]); a resource's status is computed from
//! its Jobs, their pods' termination messages and the progress documents workers keep in storage.
//!
//! Bookkeeping that must survive the Jobs (which are deleted `ttlSecondsAfterFinished` after they
//! finish) lives in annotations on the resource itself: the last schedule slot started, the last
//! trigger value handled, and whether a one-time run was started.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kafka_backup_api::backup::{BackupHistoryEntry, KafkaBackup, KafkaBackupStatus};
use kafka_backup_api::common::{Condition, Phase};
use kafka_backup_api::offsets::{KafkaOffsetReset, KafkaOffsetRollback, RollbackOperation};
use kafka_backup_api::restore::KafkaRestore;
use kafka_backup_api::storage::StorageSpec;
use kafka_backup_api::worker::{WorkerProgress, WorkerResult};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::Config;
use crate::http::Metrics;
use crate::job::{
    self, ANNOTATION_PROGRESS, ANNOTATION_RECORDED, JobInput, LABEL_KIND, LABEL_NAME,
};
use crate::schedule::Schedule;
use crate::validate;

/// Annotation on a KafkaBackup: each new value runs one backup.
pub const TRIGGER_ANNOTATION: &str = "kafka.oso.sh/trigger-backup";
/// Annotation on a KafkaBackup: the trigger value last acted on.
pub const HANDLED_TRIGGER_ANNOTATION: &str = "kafka.oso.sh/handled-trigger";
/// Annotation on a KafkaBackup: the last schedule slot a run was started (or skipped) for.
pub const LAST_SLOT_ANNOTATION: &str = "kafka.oso.sh/last-schedule-time";
/// Annotation on any kind: its one-time run was started.
pub const STARTED_ANNOTATION: &str = "kafka.oso.sh/run-started";
/// `status.backupHistory` keeps this many runs, newest last.
pub const HISTORY_LIMIT: usize = 20;
/// How often a running Job's progress is read into status.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often an invalid spec is checked again (a missing Secret may appear).
pub const RECHECK_INVALID_EVERY: Duration = Duration::from_secs(30);

/// What every reconcile shares.
pub struct Ctx {
    pub client: kube::Client,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Namespaces where the worker service account is known to exist.
    worker_accounts: Mutex<HashSet<String>>,
}

impl Ctx {
    pub fn new(
        client: kube::Client,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        recorder: Recorder,
    ) -> Ctx {
        Ctx {
            client,
            config,
            metrics,
            recorder,
            worker_accounts: Mutex::new(HashSet::new()),
        }
    }
}

/// A reconcile that failed on the API server; it is retried with backoff.
#[derive(Debug)]
pub struct ReconcileError(pub String);

impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReconcileError {}

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        ReconcileError(format!("Kubernetes API: {e}"))
    }
}

type Result<T, E = ReconcileError> = std::result::Result<T, E>;

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The kinds share these.
pub trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
}

impl Kind for KafkaBackup {
    const KIND: &'static str = "KafkaBackup";
}
impl Kind for KafkaRestore {
    const KIND: &'static str = "KafkaRestore";
}
impl Kind for KafkaOffsetReset {
    const KIND: &'static str = "KafkaOffsetReset";
}
impl Kind for KafkaOffsetRollback {
    const KIND: &'static str = "KafkaOffsetRollback";
}

fn json_of<K: Serialize>(obj: &K) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

fn conditions_of(status: &Value) -> Vec<Condition> {
    status
        .get("conditions")
        .cloned()
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default()
}

/// The Ready condition, keeping its transition time when its status does not change.
fn ready(
    old: &[Condition],
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Vec<Condition> {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| rfc3339(now()));
    vec![Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: generation,
    }]
}

async fn patch_status<K: Kind>(ctx: &Ctx, obj: &K, status: Value) -> Result<()> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

async fn annotate<K: Kind>(ctx: &Ctx, obj: &K, key: &str, value: &str) -> Result<()> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { key: value } } })),
    )
    .await?;
    Ok(())
}

async fn publish<K: Kind>(ctx: &Ctx, obj: &K, warning: bool, reason: &str, note: String) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "cannot publish event");
    }
}

/// Jobs the operator made for `obj`, oldest first.
async fn jobs_of<K: Kind>(ctx: &Ctx, obj: &K) -> Result<Vec<Job>> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let selector = format!(
        "{LABEL_KIND}={},{LABEL_NAME}={}",
        K::KIND,
        job::label_value(&obj.name_any())
    );
    let uid = obj.uid();
    let mut jobs: Vec<Job> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    Ok(jobs)
}

enum JobState {
    Active,
    Succeeded,
    Failed(String),
}

fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    for c in &conditions {
        if c.status == "True" && (c.type_ == "Complete" || c.type_ == "SuccessCriteriaMet") {
            return JobState::Succeeded;
        }
    }
    for c in &conditions {
        if c.status == "True" && (c.type_ == "Failed" || c.type_ == "FailureTarget") {
            return JobState::Failed(format!(
                "Job {} failed ({}): {}",
                job.name_any(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ));
        }
    }
    JobState::Active
}

fn recorded(job: &Job) -> bool {
    job.annotations().contains_key(ANNOTATION_RECORDED)
}

/// The result the worker wrote to its termination message (latest pod first).
async fn job_result(ctx: &Ctx, job: &Job) -> Option<WorkerResult> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let pods = api
        .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
        .await
        .ok()?;
    let mut best: Option<(String, WorkerResult)> = None;
    for pod in pods.items {
        for cs in pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
        {
            let Some(t) = cs.state.and_then(|s| s.terminated) else {
                continue;
            };
            let finished = t.finished_at.map(|f| f.0.to_string()).unwrap_or_default();
            let parsed = t
                .message
                .as_deref()
                .and_then(|m| serde_json::from_str::<WorkerResult>(m).ok())
                .or_else(|| {
                    // No result (killed, out of memory, image not runnable): the exit and the
                    // tail of the log the kubelet kept.
                    Some(WorkerResult {
                        outcome: if t.exit_code == 0 {
                            "success"
                        } else {
                            "failure"
                        }
                        .into(),
                        error: Some(format!(
                            "worker exited with code {}{}{}",
                            t.exit_code,
                            t.reason
                                .as_deref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default(),
                            t.message
                                .as_deref()
                                .map(|m| format!(": {}", m.lines().last().unwrap_or_default()))
                                .unwrap_or_default()
                        )),
                        ..WorkerResult::default()
                    })
                });
            if let Some(r) = parsed
                && best.as_ref().is_none_or(|(f, _)| finished > *f)
            {
                best = Some((finished, r));
            }
        }
    }
    best.map(|(_, r)| r)
}

async fn mark_recorded(ctx: &Ctx, job: &Job) -> Result<()> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    match api
        .patch(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ANNOTATION_RECORDED: "true"}}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes the Job pods' service account: no token mounted, no role bindings.
async fn ensure_worker_account(ctx: &Ctx, namespace: &str) -> Result<()> {
    if ctx
        .worker_accounts
        .lock()
        .map(|s| s.contains(namespace))
        .unwrap_or(false)
    {
        return Ok(());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let name = &ctx.config.worker_service_account;
    if api.get_opt(name).await?.is_none() {
        let sa: ServiceAccount = serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": "kafka-backup-operator"}
            },
            "automountServiceAccountToken": false
        }))
        .map_err(|e| ReconcileError(e.to_string()))?;
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Ok(mut s) = ctx.worker_accounts.lock() {
        s.insert(namespace.to_string());
    }
    Ok(())
}

/// Creates the Job; an existing Job of the same name (this run was started before) is fine.
async fn create_job(ctx: &Ctx, job: &Job) -> Result<()> {
    let ns = job.namespace().unwrap_or_default();
    ensure_worker_account(ctx, &ns).await?;
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The resource as the worker reads it.
fn worker_manifest<K: Kind>(obj: &K, spec: &Value) -> Value {
    json!({
        "apiVersion": format!("{}/{}", kafka_backup_api::GROUP, kafka_backup_api::VERSION),
        "kind": K::KIND,
        "metadata": {"name": obj.name_any(), "namespace": obj.namespace().unwrap_or_default()},
        "spec": spec,
    })
}

/// The spec the worker runs: the resource's spec with the operator's default storage filled in
/// where the kind allows leaving storage out.
fn effective_spec<K: Kind>(ctx: &Ctx, obj: &K) -> Value {
    let mut spec = json_of(obj).get("spec").cloned().unwrap_or(Value::Null);
    if (K::KIND == "KafkaOffsetRollback" || K::KIND == "KafkaOffsetReset")
        && spec.get("storage").is_none_or(Value::is_null)
        && let Some(d) = &ctx.config.default_storage
        && let Some(map) = spec.as_object_mut()
    {
        map.insert("storage".into(), json_of(d));
    }
    spec
}

/// Checks `spec` of kind `kind` (see [`validate`]). Returns the storage the run uses (for
/// progress), if any.
async fn check_spec(
    ctx: &Ctx,
    kind: &str,
    namespace: &str,
    spec: &Value,
) -> std::result::Result<Option<StorageSpec>, String> {
    let secrets = validate::materialize(&ctx.client, namespace, spec, &ctx.config.work_dir).await?;
    let store = secrets.store();
    let parse = |e: serde_json::Error| format!("spec: {e}");
    match kind {
        "KafkaBackup" => {
            let s: kafka_backup_api::backup::KafkaBackupSpec =
                serde_json::from_value(spec.clone()).map_err(parse)?;
            if let Some(expr) = &s.schedule {
                Schedule::parse(expr, s.time_zone.as_deref())?;
            } else if let Some(tz) = &s.time_zone {
                return Err(format!(
                    "spec.timeZone: '{tz}' is set but spec.schedule is not; set a schedule or remove timeZone"
                ));
            }
            kafka_backup_engine::backup::codec_for(s.compression, s.compression_level)
                .map_err(|e| e.to_string())?;
            validate::storage_repo(&ctx.client, namespace, "spec.storage", &s.storage, store)
                .await?;
            validate::probe_cluster("spec.kafkaCluster", &s.kafka_cluster, store).await?;
            Ok(Some(s.storage))
        }
        "KafkaRestore" => {
            let s: kafka_backup_api::restore::KafkaRestoreSpec =
                serde_json::from_value(spec.clone()).map_err(parse)?;
            kafka_backup_engine::restore::pitr_window(s.pitr.as_ref())
                .map_err(|e| e.to_string())?;
            let repo =
                validate::storage_repo(&ctx.client, namespace, "spec.storage", &s.storage, store)
                    .await?;
            if let Some(repo) = repo {
                repo.find_manifest(&s.backup_id)
                    .await
                    .map_err(backup_lookup_error)?;
            }
            validate::probe_cluster("spec.targetCluster", &s.target_cluster, store).await?;
            Ok(Some(s.storage))
        }
        "KafkaOffsetReset" => {
            let s: kafka_backup_api::offsets::KafkaOffsetResetSpec =
                serde_json::from_value(spec.clone()).map_err(parse)?;
            if let Some(storage) = &s.storage {
                let repo =
                    validate::storage_repo(&ctx.client, namespace, "spec.storage", storage, store)
                        .await?;
                if let (Some(repo), Some(id)) = (repo, &s.backup_id) {
                    repo.find_manifest(id).await.map_err(backup_lookup_error)?;
                }
            }
            validate::probe_cluster("spec.kafkaCluster", &s.kafka_cluster, store).await?;
            Ok(None)
        }
        "KafkaOffsetRollback" => {
            let s: kafka_backup_api::offsets::KafkaOffsetRollbackSpec =
                serde_json::from_value(spec.clone()).map_err(parse)?;
            let Some(storage) = &s.storage else {
                return Err("spec.storage: not set, and the operator has no default storage (its --default-storage option, or defaultStorage in the Helm values); set spec.storage".into());
            };
            let repo =
                validate::storage_repo(&ctx.client, namespace, "spec.storage", storage, store)
                    .await?;
            if let Some(repo) = repo
                && s.operation != RollbackOperation::Snapshot
            {
                kafka_backup_engine::offsets::load_snapshot(&repo, &s.snapshot_id)
                    .await
                    .map_err(|e| {
                        let m = e.to_string();
                        if m.starts_with("spec.") {
                            m
                        } else {
                            format!("spec.snapshotId: {m}")
                        }
                    })?;
            }
            validate::probe_cluster("spec.kafkaCluster", &s.kafka_cluster, store).await?;
            Ok(None)
        }
        other => Err(format!("kind {other} is not handled by this operator")),
    }
}

/// A backup that could not be found (`spec.backupId: ...`) or storage that could not be read
/// (`spec.storage: ...`).
fn backup_lookup_error(e: kafka_backup_engine::Error) -> String {
    match e {
        kafka_backup_engine::Error::BackupNotFound { .. } => format!("spec.{e}"),
        other => format!("spec.storage: cannot look the backup up: {other}"),
    }
}

/// One line of progress for a running Job, from the progress document in storage.
async fn progress_of(ctx: &Ctx, namespace: &str, spec: &Value, job: &Job) -> Option<String> {
    let path = job.annotations().get(ANNOTATION_PROGRESS)?.clone();
    let storage: StorageSpec = serde_json::from_value(spec.get("storage")?.clone()).ok()?;
    let secrets = validate::materialize(&ctx.client, namespace, spec, &ctx.config.work_dir)
        .await
        .ok()?;
    let repo = validate::storage_repo(
        &ctx.client,
        namespace,
        "spec.storage",
        &storage,
        secrets.store(),
    )
    .await
    .ok()??;
    let bytes = tokio::time::timeout(Duration::from_secs(5), repo.get(&path))
        .await
        .ok()?
        .ok()?;
    let p: WorkerProgress = serde_json::from_slice(&bytes).ok()?;
    Some(format!(
        "{}% ({} of {} offsets), {} records, {} bytes, as of {}",
        p.percent(),
        p.done,
        p.total,
        p.records,
        p.bytes,
        p.updated
    ))
}

fn started_message(kind: &str, job: &str, progress: Option<String>) -> String {
    match progress {
        Some(p) => format!("{kind} running in Job {job}: {p}"),
        None => format!("{kind} running in Job {job}"),
    }
}

fn owner<K: Kind>(obj: &K) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    let mut o = obj.controller_owner_ref(&()).unwrap_or_default();
    o.block_owner_deletion = Some(true);
    o
}

// ---------------------------------------------------------------------------------------------
// KafkaBackup

/// Reconciles one KafkaBackup.
pub async fn reconcile_backup(obj: Arc<KafkaBackup>, ctx: Arc<Ctx>) -> Result<Action> {
    ctx.metrics.reconcile("KafkaBackup");
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let generation = obj.meta().generation;
    let mut status = obj.status.clone().unwrap_or_default();
    let old_conditions = status.conditions.clone();
    let spec_json = effective_spec(&ctx, obj.as_ref());
    let schedule = obj
        .spec
        .schedule
        .as_deref()
        .map(|e| Schedule::parse(e, obj.spec.time_zone.as_deref()));

    // 1. Finished runs not yet in status.
    let jobs = jobs_of(&ctx, obj.as_ref()).await?;
    for j in jobs.iter().filter(|j| !recorded(j)) {
        let state = job_state(j);
        if matches!(state, JobState::Active) {
            continue;
        }
        let result = job_result(&ctx, j).await;
        let start = j
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string());
        record_backup(&ctx, obj.as_ref(), &mut status, j, state, result, start).await;
        patch_status(&ctx, obj.as_ref(), json_of(&status)).await?;
        mark_recorded(&ctx, j).await?;
    }

    let t = now();
    let next = match &schedule {
        Some(Ok(s)) => s.next_after(t),
        _ => None,
    };
    status.next_scheduled_time = next.map(rfc3339);

    // 2. A run going on: report it.
    if let Some(active) = jobs
        .iter()
        .find(|j| matches!(job_state(j), JobState::Active))
    {
        let progress = progress_of(&ctx, &ns, &spec_json, active).await;
        status.phase = Some(Phase::Running);
        status.conditions = ready(
            &old_conditions,
            true,
            "BackupRunning",
            &started_message("Backup", &active.name_any(), progress),
            generation,
        );
        patch_status(&ctx, obj.as_ref(), json_of(&status)).await?;
        return Ok(Action::requeue(PROGRESS_EVERY));
    }

    // 3. Should a run start?
    let annotations = obj.annotations();
    let trigger = annotations.get(TRIGGER_ANNOTATION).cloned();
    let handled = annotations.get(HANDLED_TRIGGER_ANNOTATION).cloned();
    let mut want: Option<(String, String, &'static str, String)> = None; // (run, reason, annotation, value)
    if let Some(v) = trigger.filter(|v| Some(v) != handled.as_ref()) {
        want = Some((
            format!("t{}", job::short_hash(&v)),
            format!("trigger {v}"),
            HANDLED_TRIGGER_ANNOTATION,
            v,
        ));
    } else if let Some(sched) = &schedule {
        match sched {
            Err(message) => {
                return invalid_backup(&ctx, obj.as_ref(), status, message, generation).await;
            }
            Ok(s) => {
                let created = obj
                    .meta()
                    .creation_timestamp
                    .as_ref()
                    .and_then(|c| parse_time(&c.0.to_string()))
                    .unwrap_or(t);
                let last = annotations
                    .get(LAST_SLOT_ANNOTATION)
                    .and_then(|v| parse_time(v))
                    .unwrap_or(created);
                if let Some((slot, missed)) = s.latest_due(last, t) {
                    if missed > 1 {
                        publish(
                            &ctx,
                            obj.as_ref(),
                            true,
                            "ScheduleSlotsMissed",
                            format!(
                                "{} schedule slots passed without a run (a run was still going, or no operator was running); one backup runs now for the slot of {}",
                                missed,
                                rfc3339(slot)
                            ),
                        )
                        .await;
                    }
                    want = Some((
                        format!("s{}", slot.timestamp() / 60),
                        format!("schedule {}", rfc3339(slot)),
                        LAST_SLOT_ANNOTATION,
                        rfc3339(slot),
                    ));
                }
            }
        }
    } else if !annotations.contains_key(STARTED_ANNOTATION) {
        want = Some((
            "once".into(),
            "one-time backup".into(),
            STARTED_ANNOTATION,
            rfc3339(t),
        ));
    }

    let Some((run, reason, mark, mark_value)) = want else {
        // Idle: waiting for the next slot (or done, for a one-time backup).
        if status.phase.is_none() {
            status.phase = Some(Phase::Pending);
        }
        let old_reason = old_conditions.first().map(|c| c.reason.clone());
        if let Some(n) = next {
            // A new or changed spec (or one found invalid before) is checked now, not at its
            // first slot.
            let stale = old_conditions
                .first()
                .is_none_or(|c| c.observed_generation != generation || c.reason == "InvalidSpec");
            if stale {
                if let Err(message) = check_spec(&ctx, "KafkaBackup", &ns, &spec_json).await {
                    return invalid_backup(&ctx, obj.as_ref(), status, &message, generation).await;
                }
                if old_reason.as_deref() == Some("InvalidSpec") {
                    status.phase = match status.backup_history.last() {
                        None => Some(Phase::Pending),
                        Some(h) if h.outcome == "success" => Some(Phase::Completed),
                        Some(_) => Some(Phase::Failed),
                    };
                }
            }
            let old_conditions: Vec<Condition> = if stale {
                Vec::new()
            } else {
                old_conditions.clone()
            };
            let last_ok = status.phase != Some(Phase::Failed);
            let message = if last_ok {
                format!("Next backup scheduled for {}", rfc3339(n))
            } else {
                let last = old_conditions
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
                    old_conditions
                        .first()
                        .map(|c| c.reason.as_str())
                        .unwrap_or("BackupFailed"),
                )
            };
            if old_conditions
                .first()
                .is_none_or(|c| !c.message.contains(&rfc3339(n)))
            {
                status.conditions = ready(&status.conditions, ok, reason, &message, generation);
            }
        }
        patch_status(&ctx, obj.as_ref(), json_of(&status)).await?;
        return Ok(match next {
            Some(n) => Action::requeue(
                (n - t)
                    .to_std()
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(300))
                    + Duration::from_millis(200),
            ),
            None => Action::await_change(),
        });
    };

    // 4. Check the spec, then start the run.
    match check_spec(&ctx, "KafkaBackup", &ns, &spec_json).await {
        Err(message) => {
            // A slot or trigger with an invalid spec counts as handled: it is not retried.
            if mark != STARTED_ANNOTATION {
                annotate(&ctx, obj.as_ref(), mark, &mark_value).await?;
            }
            invalid_backup(&ctx, obj.as_ref(), status, &message, generation).await
        }
        Ok(_) => {
            let job_name = job::job_name(&name, &run);
            let progress_path = format!("{name}/progress/{job_name}.json");
            let job = job::build(JobInput {
                name: job_name.clone(),
                namespace: ns.clone(),
                owner: owner(obj.as_ref()),
                kind: "KafkaBackup",
                resource_name: &name,
                run: run.clone(),
                reason: reason.clone(),
                manifest: worker_manifest(obj.as_ref(), &spec_json),
                image: ctx.config.worker_image.clone(),
                service_account: ctx.config.worker_service_account.clone(),
                resources: obj.spec.resources.clone(),
                job: obj.spec.job.clone(),
                pod_template: obj.spec.pod_template.clone(),
                progress_path: Some(progress_path),
            });
            create_job(&ctx, &job).await?;
            annotate(&ctx, obj.as_ref(), mark, &mark_value).await?;
            status.phase = Some(Phase::Running);
            status.conditions = ready(
                &old_conditions,
                true,
                "BackupRunning",
                &started_message("Backup", &job_name, None),
                generation,
            );
            patch_status(&ctx, obj.as_ref(), json_of(&status)).await?;
            publish(
                &ctx,
                obj.as_ref(),
                false,
                "BackupStarted",
                format!("Backup started in Job {job_name} ({reason})"),
            )
            .await;
            Ok(Action::requeue(PROGRESS_EVERY))
        }
    }
}

async fn invalid_backup(
    ctx: &Ctx,
    obj: &KafkaBackup,
    mut status: KafkaBackupStatus,
    message: &str,
    generation: Option<i64>,
) -> Result<Action> {
    let old = status.conditions.clone();
    let changed = old.first().is_none_or(|c| c.message != message);
    status.phase = Some(Phase::Failed);
    status.conditions = ready(&old, false, "InvalidSpec", message, generation);
    patch_status(ctx, obj, json_of(&status)).await?;
    if changed {
        publish(ctx, obj, true, "InvalidSpec", message.to_string()).await;
    }
    Ok(Action::requeue(RECHECK_INVALID_EVERY))
}

async fn record_backup(
    ctx: &Ctx,
    obj: &KafkaBackup,
    status: &mut KafkaBackupStatus,
    job: &Job,
    state: JobState,
    result: Option<WorkerResult>,
    start: Option<String>,
) {
    let generation = obj.meta().generation;
    let old = status.conditions.clone();
    let succeeded = matches!(state, JobState::Succeeded)
        && result.as_ref().is_some_and(|r| r.outcome == "success");
    let r = result.unwrap_or_default();
    let completion = if r.completion_time.is_empty() {
        rfc3339(now())
    } else {
        r.completion_time.clone()
    };
    let start = if r.start_time.is_empty() {
        start.unwrap_or_else(|| completion.clone())
    } else {
        r.start_time.clone()
    };
    let secs = match (parse_time(&start), parse_time(&completion)) {
        (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as f64 / 1000.0,
        _ => 0.0,
    };
    ctx.metrics.run(
        "KafkaBackup",
        if succeeded { "success" } else { "failure" },
        r.records,
        r.bytes,
        secs,
    );
    let backup_id = r.backup_id.clone().unwrap_or_default();
    if !status
        .backup_history
        .iter()
        .any(|h| h.start_time == start && h.backup_id == backup_id)
    {
        status.backup_history.push(BackupHistoryEntry {
            backup_id: backup_id.clone(),
            start_time: start.clone(),
            completion_time: Some(completion.clone()),
            size: succeeded.then_some(r.bytes),
            records: succeeded.then_some(r.records),
            outcome: if succeeded { "success" } else { "failure" }.into(),
        });
        let excess = status.backup_history.len().saturating_sub(HISTORY_LIMIT);
        status.backup_history.drain(..excess);
    }
    if succeeded {
        status.phase = Some(Phase::Completed);
        status.last_backup_id = Some(backup_id.clone());
        status.last_backup_time = Some(completion.clone());
        status.last_backup_size = Some(r.bytes);
        status.last_backup_records = Some(r.records);
        let message = match obj
            .spec
            .schedule
            .as_deref()
            .and_then(|e| Schedule::parse(e, obj.spec.time_zone.as_deref()).ok())
            .and_then(|s| s.next_after(now()))
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
        status.conditions = ready(&old, true, reason, &message, generation);
        publish(
            ctx,
            obj,
            false,
            "BackupCompleted",
            format!(
                "Backup {backup_id} completed in Job {}: {} records, {} bytes",
                job.name_any(),
                r.records,
                r.bytes
            ),
        )
        .await;
    } else {
        let why = r
            .error
            .clone()
            .or(match &state {
                JobState::Failed(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| format!("Job {} ended without a result", job.name_any()));
        status.phase = Some(Phase::Failed);
        let message = format!("Backup failed: {why}");
        status.conditions = ready(&old, false, "BackupFailed", &message, generation);
        publish(ctx, obj, true, "BackupFailed", message).await;
    }
}

// ---------------------------------------------------------------------------------------------
// KafkaRestore, KafkaOffsetReset, KafkaOffsetRollback: one run each.

fn noun(kind: &str) -> &'static str {
    match kind {
        "KafkaRestore" => "Restore",
        "KafkaOffsetReset" => "OffsetReset",
        _ => "OffsetRollback",
    }
}

/// The kind-specific status fields of a finished run.
fn result_fields(kind: &str, r: &WorkerResult) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    match kind {
        "KafkaRestore" => {
            m.insert("restoredRecords".into(), json!(r.records));
            m.insert("restoredTopics".into(), json!(r.restored_topics));
            if let Some(o) = &r.offset_reset_status {
                m.insert("offsetResetStatus".into(), json!(o));
            }
            if let Some(s) = &r.snapshot_id {
                m.insert("rollbackSnapshotId".into(), json!(s));
            }
        }
        "KafkaOffsetReset" => {
            m.insert("groups".into(), json!(r.groups));
            if let Some(s) = &r.snapshot_id {
                m.insert("snapshotId".into(), json!(s));
            }
        }
        _ => {
            m.insert("groups".into(), json!(r.groups));
            if let Some(v) = r.verified {
                m.insert("verified".into(), json!(v));
            }
        }
    }
    m
}

/// Reconciles a resource that runs once.
pub async fn reconcile_once<K: Kind>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action> {
    let kind = K::KIND;
    let noun = noun(kind);
    ctx.metrics.reconcile(kind);
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let generation = obj.meta().generation;
    let whole = json_of(obj.as_ref());
    let status = whole.get("status").cloned().unwrap_or(json!({}));
    let old = conditions_of(&status);
    let phase = status.get("phase").and_then(Value::as_str).unwrap_or("");
    let spec = effective_spec(&ctx, obj.as_ref());

    let jobs = jobs_of(&ctx, obj.as_ref()).await?;
    // A finished run: its result becomes the status, once.
    for j in jobs.iter().filter(|j| !recorded(j)) {
        let state = job_state(j);
        if matches!(state, JobState::Active) {
            continue;
        }
        let r = job_result(&ctx, j).await.unwrap_or_default();
        let ok = matches!(state, JobState::Succeeded) && r.outcome == "success";
        let mut fields = result_fields(kind, &r);
        let completion = if r.completion_time.is_empty() {
            rfc3339(now())
        } else {
            r.completion_time.clone()
        };
        fields.insert("completionTime".into(), json!(completion));
        let start = status
            .get("startTime")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| r.start_time.clone());
        let secs = match (parse_time(&start), parse_time(&completion)) {
            (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as f64 / 1000.0,
            _ => 0.0,
        };
        ctx.metrics.run(
            kind,
            if ok { "success" } else { "failure" },
            r.records,
            r.bytes,
            secs,
        );
        let (reason, message) = if ok {
            (
                format!("{noun}Completed"),
                match kind {
                    "KafkaRestore" => format!(
                        "Restore completed successfully: {} records into {} topics",
                        r.records,
                        r.restored_topics.len()
                    ),
                    _ => format!(
                        "{noun} completed successfully for {} groups{}",
                        r.groups.len(),
                        match r.verified {
                            Some(true) => "; every group matches the snapshot",
                            _ => "",
                        }
                    ),
                },
            )
        } else {
            let why = r
                .error
                .clone()
                .or(match &state {
                    JobState::Failed(m) => Some(m.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| format!("Job {} ended without a result", j.name_any()));
            (format!("{noun}Failed"), format!("{noun} failed: {why}"))
        };
        fields.insert(
            "phase".into(),
            json!(if ok { Phase::Completed } else { Phase::Failed }),
        );
        fields.insert(
            "conditions".into(),
            json!(ready(&old, ok, &reason, &message, generation)),
        );
        patch_status(&ctx, obj.as_ref(), Value::Object(fields)).await?;
        publish(&ctx, obj.as_ref(), !ok, &reason, message).await;
        mark_recorded(&ctx, j).await?;
        return Ok(Action::await_change());
    }

    let invalid_now = old.first().is_some_and(|c| c.reason == "InvalidSpec");
    if (phase == "Completed" || phase == "Failed") && !invalid_now {
        return Ok(Action::await_change());
    }

    if let Some(active) = jobs
        .iter()
        .find(|j| matches!(job_state(j), JobState::Active))
    {
        let progress = progress_of(&ctx, &ns, &spec, active).await;
        let message = started_message(noun, &active.name_any(), progress);
        let mut fields = serde_json::Map::new();
        fields.insert("phase".into(), json!(Phase::Running));
        if status.get("startTime").is_none() {
            fields.insert("startTime".into(), json!(rfc3339(now())));
        }
        fields.insert(
            "conditions".into(),
            json!(ready(
                &old,
                true,
                &format!("{noun}Running"),
                &message,
                generation
            )),
        );
        patch_status(&ctx, obj.as_ref(), Value::Object(fields)).await?;
        return Ok(Action::requeue(PROGRESS_EVERY));
    }
    if obj.annotations().contains_key(STARTED_ANNOTATION) && !invalid_now {
        // Started, and its Job is gone before its result was recorded (deleted by hand).
        let message = format!("{noun} failed: its Job was deleted before it finished");
        let fields = json!({
            "phase": Phase::Failed,
            "completionTime": rfc3339(now()),
            "conditions": ready(&old, false, &format!("{noun}Failed"), &message, generation),
        });
        patch_status(&ctx, obj.as_ref(), fields).await?;
        publish(&ctx, obj.as_ref(), true, &format!("{noun}Failed"), message).await;
        return Ok(Action::await_change());
    }

    match check_spec(&ctx, kind, &ns, &spec).await {
        Err(message) => {
            let changed = old.first().is_none_or(|c| c.message != message);
            let fields = json!({
                "phase": Phase::Failed,
                "conditions": ready(&old, false, "InvalidSpec", &message, generation),
            });
            patch_status(&ctx, obj.as_ref(), fields).await?;
            if changed {
                publish(&ctx, obj.as_ref(), true, "InvalidSpec", message).await;
            }
            Ok(Action::requeue(RECHECK_INVALID_EVERY))
        }
        Ok(storage) => {
            let job_name = job::job_name(&name, "run");
            let progress_path = match (kind, &storage) {
                ("KafkaRestore", Some(_)) => Some(format!(
                    "{}/progress/{job_name}.json",
                    progress_prefix(&spec)
                )),
                _ => None,
            };
            let typed_spec: TypedJobBits = serde_json::from_value(spec.clone()).unwrap_or_default();
            let job = job::build(JobInput {
                name: job_name.clone(),
                namespace: ns.clone(),
                owner: owner(obj.as_ref()),
                kind,
                resource_name: &name,
                run: "run".into(),
                reason: "one-time run".into(),
                manifest: worker_manifest(obj.as_ref(), &spec),
                image: ctx.config.worker_image.clone(),
                service_account: ctx.config.worker_service_account.clone(),
                resources: typed_spec.resources,
                job: typed_spec.job,
                pod_template: typed_spec.pod_template,
                progress_path,
            });
            create_job(&ctx, &job).await?;
            annotate(&ctx, obj.as_ref(), STARTED_ANNOTATION, &rfc3339(now())).await?;
            let fields = json!({
                "phase": Phase::Running,
                "startTime": rfc3339(now()),
                "conditions": ready(&old, true, &format!("{noun}Running"), &started_message(noun, &job_name, None), generation),
            });
            patch_status(&ctx, obj.as_ref(), fields).await?;
            publish(
                &ctx,
                obj.as_ref(),
                false,
                &format!("{noun}Started"),
                format!("{noun} started in Job {job_name}"),
            )
            .await;
            Ok(Action::requeue(PROGRESS_EVERY))
        }
    }
}

/// The operator-only Job settings every kind has.
#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypedJobBits {
    #[serde(default)]
    resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    #[serde(default)]
    job: Option<kafka_backup_api::common::JobSettings>,
    #[serde(default)]
    pod_template: Option<kafka_backup_api::common::PodTemplate>,
}

/// Where a restore's progress document goes: under the backup's name (the backup id minus its
/// `-YYYYMMDD-HHMMSS` suffix), next to its `restores/` records.
fn progress_prefix(spec: &Value) -> String {
    let id = spec
        .get("backupId")
        .and_then(Value::as_str)
        .unwrap_or("restore");
    kafka_backup_format::backup_name_of(id)
        .unwrap_or(id)
        .to_string()
}

/// Error policy: retry with a pause, count the error.
pub fn error_policy<K: Kind>(_obj: Arc<K>, err: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    ctx.metrics.reconcile_error(K::KIND);
    tracing::warn!(kind = K::KIND, error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_progress_goes_under_the_backup_name() {
        assert_eq!(
            progress_prefix(&json!({"backupId": "orders-backup-20241201-120000"})),
            "orders-backup"
        );
        assert_eq!(progress_prefix(&json!({"backupId": "latest"})), "latest");
    }

    #[test]
    fn ready_keeps_transition_time_while_status_holds() {
        let first = ready(&[], true, "A", "a", Some(1));
        let mut older = first.clone();
        older[0].last_transition_time = "2020-01-01T00:00:00Z".into();
        let again = ready(&older, true, "B", "b", Some(2));
        assert_eq!(again[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert_eq!(again[0].reason, "B");
        let flipped = ready(&older, false, "C", "c", Some(2));
        assert_ne!(flipped[0].last_transition_time, "2020-01-01T00:00:00Z");
    }
}
