//! The reconcilers. Each run is a Job (see [`crate::job`]); a resource's status is computed from
//! its Jobs, their pods' termination messages and the progress documents workers keep in storage.
//!
//! Every pass has three steps, after kube-rs' controller-rs:
//! - [`observe`]: read the resource's Jobs, their pods and the running Job's progress (and, when
//!   the decision asks for it, check the spec);
//! - decide ([`backup::decide`], [`once::decide`]): a pure function from the resource and what
//!   was observed to a [`Decision`]: the Job to create, the one status patch, events, the
//!   [`Action`];
//! - [`apply`]: carry the decision out.
//!
//! Bookkeeping that must survive the Jobs (which are deleted `ttlSecondsAfterFinished` after they
//! finish) lives in annotations on the resource itself: the last schedule slot started, the last
//! trigger value handled, and whether a one-time run was started.

mod apply;
mod backup;
mod error;
mod observe;
mod once;

use std::collections::HashSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kafka_backup_api::backup::KafkaBackup;
use kafka_backup_api::common::Condition;
use kafka_backup_api::offsets::{KafkaOffsetReset, KafkaOffsetRollback, RollbackOperation};
use kafka_backup_api::restore::KafkaRestore;
use kafka_backup_api::storage::StorageSpec;
use kafka_backup_api::worker::WorkerProgress;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::Config;
use crate::http::Metrics;
use crate::job::ANNOTATION_PROGRESS;
use crate::schedule::Schedule;
use crate::validate;

pub use apply::{Decision, FinishedRun, Note};
pub use backup::reconcile_backup;
pub use error::Error;
pub use observe::{JobState, Observed, ObservedJob, SpecCheck};
pub use once::{RunOnce, reconcile_once};

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
/// The Ready reason of a spec that cannot run; it is checked again while it holds.
pub const INVALID_SPEC: &str = "InvalidSpec";

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

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Seconds from `start` to `end` (both RFC 3339), 0 when either cannot be read.
fn seconds_between(start: &str, end: &str) -> f64 {
    match (parse_time(start), parse_time(end)) {
        (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as f64 / 1000.0,
        _ => 0.0,
    }
}

/// The kinds share these. The kind's name comes from its type (`K::kind(&())`), so it is spelled
/// once, in the API crate.
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
    /// What a run of this kind is called in reasons and messages (`BackupFailed`,
    /// `Restore running in Job ...`).
    const NOUN: &'static str;
    /// Whether a spec without `storage` runs on the operator's default storage.
    const DEFAULT_STORAGE: bool = false;

    /// Checks the spec of resource `name` before a run starts: Secrets, storage, the cluster
    /// (see [`validate`]).
    fn check_spec<'a>(
        ctx: &'a Ctx,
        namespace: &'a str,
        name: &'a str,
        spec: &'a Value,
    ) -> impl Future<Output = SpecCheck> + Send + 'a;
}

impl Kind for KafkaBackup {
    const NOUN: &'static str = "Backup";
    fn check_spec<'a>(
        ctx: &'a Ctx,
        namespace: &'a str,
        _name: &'a str,
        spec: &'a Value,
    ) -> impl Future<Output = SpecCheck> + Send + 'a {
        check_backup(ctx, namespace, spec)
    }
}
impl Kind for KafkaRestore {
    const NOUN: &'static str = "Restore";
    fn check_spec<'a>(
        ctx: &'a Ctx,
        namespace: &'a str,
        name: &'a str,
        spec: &'a Value,
    ) -> impl Future<Output = SpecCheck> + Send + 'a {
        check_restore(ctx, namespace, name, spec)
    }
}
impl Kind for KafkaOffsetReset {
    const NOUN: &'static str = "OffsetReset";
    const DEFAULT_STORAGE: bool = true;
    fn check_spec<'a>(
        ctx: &'a Ctx,
        namespace: &'a str,
        _name: &'a str,
        spec: &'a Value,
    ) -> impl Future<Output = SpecCheck> + Send + 'a {
        check_offset_reset(ctx, namespace, spec)
    }
}
impl Kind for KafkaOffsetRollback {
    const NOUN: &'static str = "OffsetRollback";
    const DEFAULT_STORAGE: bool = true;
    fn check_spec<'a>(
        ctx: &'a Ctx,
        namespace: &'a str,
        _name: &'a str,
        spec: &'a Value,
    ) -> impl Future<Output = SpecCheck> + Send + 'a {
        check_offset_rollback(ctx, namespace, spec)
    }
}

fn json_of<K: Serialize>(obj: &K) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

/// The Ready condition, keeping its transition time when its status does not change.
fn ready(
    old: &[Condition],
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| rfc3339(now));
    vec![Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: generation,
    }]
}

/// The resource as the worker reads it.
fn worker_manifest<K: Kind>(obj: &K, spec: &Value) -> Value {
    json!({
        "apiVersion": format!("{}/{}", kafka_backup_api::GROUP, kafka_backup_api::VERSION),
        "kind": K::kind(&()),
        "metadata": {"name": obj.name_any(), "namespace": obj.namespace().unwrap_or_default()},
        "spec": spec,
    })
}

/// The spec the worker runs: the resource's spec with the operator's default storage filled in
/// where the kind allows leaving storage out.
fn effective_spec<K: Kind>(config: &Config, obj: &K) -> Value {
    let mut spec = json_of(obj).get("spec").cloned().unwrap_or(Value::Null);
    if !K::DEFAULT_STORAGE {
        return spec;
    }
    let own = spec.get("storage").filter(|v| !v.is_null()).cloned();
    let default = config.default_storage.as_ref().map(json_of);
    let chosen = kafka_backup_api::storage::own_or_default(own.as_ref(), default.as_ref())
        .map(|(s, _)| s.clone());
    if let (Some(storage), Some(map)) = (chosen, spec.as_object_mut()) {
        map.insert("storage".into(), storage);
    }
    spec
}

fn started_message(kind: &str, job: &str, progress: Option<String>) -> String {
    match progress {
        Some(p) => format!("{kind} running in Job {job}: {p}"),
        None => format!("{kind} running in Job {job}"),
    }
}

/// Ready while a run's Job is active: running (with its progress), or not running because
/// the scheduler cannot place its pod, which only a change to the cluster or to the spec's
/// resources, nodeSelector or tolerations fixes.
struct Active {
    ok: bool,
    reason: String,
    message: String,
}

impl Active {
    fn of(noun: &str, job: &ObservedJob) -> Active {
        match job.unschedulable() {
            Some(why) => Active {
                ok: false,
                reason: format!("{noun}Unschedulable"),
                message: format!("{noun} waiting in Job {}: {why}", job.name()),
            },
            None => Active {
                ok: true,
                reason: format!("{noun}Running"),
                message: started_message(noun, &job.name(), job.progress.clone()),
            },
        }
    }
}

fn owner<K: Kind>(obj: &K) -> OwnerReference {
    let mut o = obj.controller_owner_ref(&()).unwrap_or_default();
    o.block_owner_deletion = Some(true);
    o
}

/// Decides for `obj`. When the decision depends on whether the spec can run, checks the spec
/// (which reads Secrets and storage and probes the cluster, so only then) and decides again.
async fn decide_checked<K: Kind, S>(
    ctx: &Ctx,
    obj: &K,
    mut seen: Observed,
    decide: fn(&K, &Observed, &Config) -> Option<Decision<S>>,
) -> Decision<S> {
    if let Some(d) = decide(obj, &seen, &ctx.config) {
        return d;
    }
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    seen.check = Some(K::check_spec(ctx, &namespace, &name, &seen.spec).await);
    // A decision function asks for the check only while it has none, so this is answered.
    decide(obj, &seen, &ctx.config)
        .unwrap_or_else(|| Decision::status(None, Action::requeue(RECHECK_INVALID_EVERY)))
}

/// Checks a KafkaBackup spec (see [`validate`]): its schedule, compression, storage and cluster.
async fn check_backup(ctx: &Ctx, namespace: &str, spec: &Value) -> SpecCheck {
    let secrets = validate::materialize(&ctx.client, namespace, spec, &ctx.config.work_dir).await?;
    let store = secrets.store();
    let parse = |e: serde_json::Error| format!("spec: {e}");
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
    validate::storage_repo(&ctx.client, namespace, "spec.storage", &s.storage, store).await?;
    validate::probe_cluster("spec.kafkaCluster", &s.kafka_cluster, store).await?;
    Ok(Some(s.storage))
}

/// Checks a KafkaRestore spec with the restore's own plan: the request (fields alone and
/// together, the point-in-time window), that the backup exists and that the plan of restoring it
/// holds (topics, mappings, groups), then the target cluster. The dry run and the run plan with
/// the same functions.
async fn check_restore(ctx: &Ctx, namespace: &str, name: &str, spec: &Value) -> SpecCheck {
    use kafka_backup_engine::restore::{Plan, Request};
    let secrets = validate::materialize(&ctx.client, namespace, spec, &ctx.config.work_dir).await?;
    let store = secrets.store();
    let parse = |e: serde_json::Error| format!("spec: {e}");
    let s: kafka_backup_api::restore::KafkaRestoreSpec =
        serde_json::from_value(spec.clone()).map_err(parse)?;
    let request = Request::new(Some(name), &s).map_err(|e| e.to_string())?;
    let repo =
        validate::storage_repo(&ctx.client, namespace, "spec.storage", &s.storage, store).await?;
    if let Some(repo) = repo {
        let manifest = repo
            .find_manifest(&s.backup_id)
            .await
            .map_err(backup_lookup_error)?;
        Plan::new(&s, request, &manifest, None).map_err(|e| e.to_string())?;
    }
    validate::probe_cluster("spec.targetCluster", &s.target_cluster, store).await?;
    Ok(Some(s.storage))
}

/// Checks a KafkaOffsetReset spec: its storage and backup (when named) and the cluster.
async fn check_offset_reset(ctx: &Ctx, namespace: &str, spec: &Value) -> SpecCheck {
    let secrets = validate::materialize(&ctx.client, namespace, spec, &ctx.config.work_dir).await?;
    let store = secrets.store();
    let parse = |e: serde_json::Error| format!("spec: {e}");
    let s: kafka_backup_api::offsets::KafkaOffsetResetSpec =
        serde_json::from_value(spec.clone()).map_err(parse)?;
    if let Some(storage) = &s.storage {
        let repo =
            validate::storage_repo(&ctx.client, namespace, "spec.storage", storage, store).await?;
        if let (Some(repo), Some(id)) = (repo, &s.backup_id) {
            repo.find_manifest(id).await.map_err(backup_lookup_error)?;
        }
    }
    validate::probe_cluster("spec.kafkaCluster", &s.kafka_cluster, store).await?;
    Ok(None)
}

/// Checks a KafkaOffsetRollback spec: its storage (its own or the default), its snapshot and the cluster.
async fn check_offset_rollback(ctx: &Ctx, namespace: &str, spec: &Value) -> SpecCheck {
    let secrets = validate::materialize(&ctx.client, namespace, spec, &ctx.config.work_dir).await?;
    let store = secrets.store();
    let parse = |e: serde_json::Error| format!("spec: {e}");
    let s: kafka_backup_api::offsets::KafkaOffsetRollbackSpec =
        serde_json::from_value(spec.clone()).map_err(parse)?;
    let Some(storage) = &s.storage else {
        return Err("spec.storage: not set, and the operator has no default storage (its --default-storage option, or defaultStorage in the Helm values); set spec.storage".into());
    };
    let repo =
        validate::storage_repo(&ctx.client, namespace, "spec.storage", storage, store).await?;
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

/// Error policy: retry with a pause, count the error by kind and by what failed.
pub fn error_policy<K: Kind>(_obj: Arc<K>, err: &Error, ctx: Arc<Ctx>) -> Action {
    let kind = K::kind(&());
    ctx.metrics.reconcile_error(&kind, err.metric_label());
    tracing::warn!(kind = %kind, error = %err, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod testing;

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
        let first = ready(&[], true, "A", "a", Some(1), Utc::now());
        let mut older = first.clone();
        older[0].last_transition_time = "2020-01-01T00:00:00Z".into();
        let again = ready(&older, true, "B", "b", Some(2), Utc::now());
        assert_eq!(again[0].last_transition_time, "2020-01-01T00:00:00Z");
        assert_eq!(again[0].reason, "B");
        let flipped = ready(&older, false, "C", "c", Some(2), Utc::now());
        assert_ne!(flipped[0].last_transition_time, "2020-01-01T00:00:00Z");
    }

    #[test]
    fn kind_names_come_from_the_types() {
        assert_eq!(KafkaBackup::kind(&()), "KafkaBackup");
        assert_eq!(KafkaRestore::kind(&()), "KafkaRestore");
        assert_eq!(KafkaOffsetReset::kind(&()), "KafkaOffsetReset");
        assert_eq!(KafkaOffsetRollback::kind(&()), "KafkaOffsetRollback");
    }
}
