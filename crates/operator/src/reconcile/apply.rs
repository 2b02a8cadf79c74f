//! Apply: carries out a [`Decision`] against the API server. The order is chosen so that a pass
//! that fails part-way is repeated whole by the next one: the Job is created (an existing one
//! is fine), then the resource's bookkeeping annotation is set, then status is patched once,
//! and only then are finished Jobs marked recorded and events and run metrics emitted, so a
//! retried pass does not count a run twice.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};
use serde::Serialize;
use serde_json::json;

use super::error::{Error, Result};
use super::{Ctx, Kind};
use crate::job::ANNOTATION_RECORDED;

/// What one reconcile pass does, decided before anything is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision<S> {
    /// The status of this pass, written as one merge patch; `None` leaves status alone.
    pub status: Option<S>,
    /// A run to start.
    pub create: Option<Job>,
    /// Bookkeeping on the resource (see the annotation constants in [`super`]).
    pub annotate: Option<(&'static str, String)>,
    /// Finished Jobs whose outcome this status records.
    pub mark_recorded: Vec<String>,
    pub events: Vec<Note>,
    pub runs: Vec<FinishedRun>,
    pub action: Action,
}

impl<S> Decision<S> {
    /// Writes `status` and then waits for `action`; nothing else.
    pub fn status(status: Option<S>, action: Action) -> Self {
        Decision {
            status,
            create: None,
            annotate: None,
            mark_recorded: Vec::new(),
            events: Vec::new(),
            runs: Vec::new(),
            action,
        }
    }
}

/// An event on the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

impl Note {
    pub fn normal(reason: impl Into<String>, message: impl Into<String>) -> Note {
        Note {
            warning: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn warning(reason: impl Into<String>, message: impl Into<String>) -> Note {
        Note {
            warning: true,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A finished run, for the run metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedRun {
    pub success: bool,
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
}

/// Carries out `d` for `obj` and returns its action.
pub async fn apply<K: Kind, S: Serialize>(ctx: &Ctx, obj: &K, d: Decision<S>) -> Result<Action> {
    if let Some(job) = &d.create {
        create_job(ctx, job).await?;
    }
    if let Some((key, value)) = &d.annotate {
        annotate(ctx, obj, key, value).await?;
    }
    if let Some(status) = &d.status {
        patch_status(ctx, obj, status).await?;
    }
    let namespace = obj.namespace().unwrap_or_default();
    for job in &d.mark_recorded {
        mark_recorded(ctx, &namespace, job).await?;
    }
    for note in &d.events {
        publish(ctx, obj, note).await;
    }
    let kind = K::kind(&());
    for r in &d.runs {
        let outcome = if r.success { "success" } else { "failure" };
        ctx.metrics.run(&kind, outcome, r.records, r.bytes, r.secs);
    }
    Ok(d.action)
}

async fn patch_status<K: Kind, S: Serialize>(ctx: &Ctx, obj: &K, status: &S) -> Result<()> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map_err(Error::PatchStatus)?;
    Ok(())
}

async fn annotate<K: Kind>(ctx: &Ctx, obj: &K, key: &'static str, value: &str) -> Result<()> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { key: value } } })),
    )
    .await
    .map_err(|source| Error::Annotate { key, source })?;
    Ok(())
}

async fn publish<K: Kind>(ctx: &Ctx, obj: &K, note: &Note) {
    let ev = Event {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.clone(),
        note: Some(note.message.clone()),
        action: note.reason.clone(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, reason = %note.reason, "cannot publish event");
    }
}

/// Marks a Job's outcome as in status; a Job already gone is fine.
async fn mark_recorded(ctx: &Ctx, namespace: &str, job: &str) -> Result<()> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    match api
        .patch(
            job,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {ANNOTATION_RECORDED: "true"}}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::MarkRecorded {
            job: job.to_string(),
            source,
        }),
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
    let fail = |source| (namespace.to_string(), name.clone(), source);
    let found = api.get_opt(name).await.map_err(|source| {
        let (namespace, name, source) = fail(source);
        Error::ReadServiceAccount {
            namespace,
            name,
            source,
        }
    })?;
    if found.is_none() {
        match api
            .create(&PostParams::default(), &worker_account(name))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => {
                let (namespace, name, source) = fail(source);
                return Err(Error::CreateServiceAccount {
                    namespace,
                    name,
                    source,
                });
            }
        }
    }
    if let Ok(mut s) = ctx.worker_accounts.lock() {
        s.insert(namespace.to_string());
    }
    Ok(())
}

fn worker_account(name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "kafka-backup-operator".to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// Creates the Job; an existing Job of the same name (this run was started before) is fine.
async fn create_job(ctx: &Ctx, job: &Job) -> Result<()> {
    let ns = job.namespace().unwrap_or_default();
    ensure_worker_account(ctx, &ns).await?;
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(Error::CreateJob {
            job: job.name_any(),
            source,
        }),
    }
}
