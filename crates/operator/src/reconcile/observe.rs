//! Observe: everything a reconcile pass reads before it decides. The decision functions take an
//! [`Observed`] and nothing else from the cluster, so each of them can be tested with objects
//! written by hand.
//!
//! An [`ObservedJob`] keeps the Job and its pods whole rather than a summary of them: a new
//! decision (a pod killed for memory, a Job past its deadline, a pod that cannot be scheduled)
//! then reads what it needs from the objects without changing what is fetched.

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kafka_backup_api::storage::StorageSpec;
use kafka_backup_api::worker::WorkerResult;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::error::{Error, Result};
use super::{Ctx, Kind, effective_spec, progress_of};
use crate::job::{self, ANNOTATION_RECORDED, LABEL_KIND, LABEL_NAME};

/// The outcome of checking a spec: the storage the run uses (for progress), or why the spec
/// cannot run, naming the field.
pub type SpecCheck = std::result::Result<Option<StorageSpec>, String>;

/// What one reconcile pass knows about a resource besides the resource itself.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The time the pass decides at: one value, so every timestamp of a pass agrees.
    pub now: DateTime<Utc>,
    /// The spec the worker runs (see [`effective_spec`]).
    pub spec: Value,
    /// The operator's Jobs for the resource, oldest first.
    pub jobs: Vec<ObservedJob>,
    /// The spec check (Secrets, storage, a probe of the cluster), when the decision asked for
    /// one: it reaches outside the API server, so it is made only when a run may start or a
    /// new spec must be reported on.
    pub check: Option<SpecCheck>,
}

/// One Job of the resource and what its pods say.
#[derive(Clone, Debug, Default)]
pub struct ObservedJob {
    pub job: Job,
    /// The Job's pods; listed only while the Job is not yet recorded in status.
    pub pods: Vec<Pod>,
    /// One line of progress from the worker's progress document, for the running Job.
    pub progress: Option<String>,
}

/// Where a Job is, from its conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Active,
    Succeeded,
    /// With a sentence naming the Job, the reason and the message of its Failed condition.
    Failed(String),
}

impl Observed {
    /// The first Job still running.
    pub fn active(&self) -> Option<&ObservedJob> {
        self.jobs.iter().find(|j| j.state() == JobState::Active)
    }

    /// Finished Jobs whose outcome is not in status yet, oldest first.
    pub fn unrecorded_finished(&self) -> impl Iterator<Item = &ObservedJob> {
        self.jobs
            .iter()
            .filter(|j| !j.recorded() && j.state() != JobState::Active)
    }
}

impl ObservedJob {
    pub fn name(&self) -> String {
        self.job.name_any()
    }

    pub fn state(&self) -> JobState {
        job_state(&self.job)
    }

    /// The Job's outcome is in the resource's status (see [`ANNOTATION_RECORDED`]).
    pub fn recorded(&self) -> bool {
        self.job.annotations().contains_key(ANNOTATION_RECORDED)
    }

    /// What the worker reported, latest pod first (see [`worker_result`]).
    pub fn result(&self) -> Option<WorkerResult> {
        worker_result(&self.pods)
    }

    /// Why the run failed, in one sentence: the worker's own error, else the Job's Failed
    /// condition, else that it ended without a result. Decisions that read the pods (a
    /// container killed for memory, a deadline passed) belong here, so that every kind says
    /// the same thing about the same failure.
    pub fn failure(&self, r: &WorkerResult) -> String {
        if let Some(m) = self.deadline_exceeded().or_else(|| self.out_of_memory()) {
            return m;
        }
        if let Some(e) = &r.error {
            return e.clone();
        }
        match self.state() {
            JobState::Failed(m) => m,
            _ => format!("Job {} ended without a result", self.name()),
        }
    }

    /// The Job was stopped at its deadline: the fix is the deadline, whatever the worker said
    /// when it was stopped.
    fn deadline_exceeded(&self) -> Option<String> {
        let conditions = self.job.status.as_ref()?.conditions.as_ref()?;
        conditions.iter().find(|c| {
            c.status == "True"
                && (c.type_ == "Failed" || c.type_ == "FailureTarget")
                && c.reason.as_deref() == Some("DeadlineExceeded")
        })?;
        let limit = self
            .job
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds);
        Some(format!(
            "Job {} ran longer than spec.job.activeDeadlineSeconds{} and was stopped; raise spec.job.activeDeadlineSeconds or remove it",
            self.name(),
            limit.map(|s| format!(" ({s}s)")).unwrap_or_default()
        ))
    }

    /// The worker that finished last was killed for going over its memory limit: the fix is
    /// the limit, which the worker never gets to report itself.
    fn out_of_memory(&self) -> Option<String> {
        let (pod, container, t) = last_terminated(&self.pods)?;
        if t.reason.as_deref() != Some("OOMKilled") {
            return None;
        }
        let limit = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == container))
            .and_then(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory"))
            .map(|q| format!(", limit {}", q.0))
            .unwrap_or_default();
        Some(format!(
            "the worker in Job {} ran out of memory (OOMKilled{limit}); raise spec.resources.limits.memory",
            self.name()
        ))
    }

    /// A pod of the Job the scheduler cannot place, in the scheduler's words: the run is not
    /// running, and waiting will not change that by itself.
    pub fn unschedulable(&self) -> Option<String> {
        self.pods.iter().find_map(|p| {
            let status = p.status.as_ref()?;
            if status.phase.as_deref() != Some("Pending") {
                return None;
            }
            let c = status.conditions.as_ref()?.iter().find(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })?;
            Some(format!(
                "pod {} cannot be scheduled: {}",
                p.name_any(),
                c.message.as_deref().unwrap_or("no reason given")
            ))
        })
    }

    /// When the Job started, as Kubernetes recorded it.
    pub fn start_time(&self) -> Option<String> {
        self.job
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
    }
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

/// The result the worker wrote to its termination message, from the container that finished
/// last. A container that ended without one (killed, out of memory, image not runnable) gives
/// its exit code and the last line of the log the kubelet kept.
pub fn worker_result(pods: &[Pod]) -> Option<WorkerResult> {
    let (_, _, t) = last_terminated(pods)?;
    Some(
        t.message
            .as_deref()
            .and_then(|m| serde_json::from_str::<WorkerResult>(m).ok())
            .unwrap_or_else(|| without_result(t)),
    )
}

/// The container that finished last (the first of those that finished at the same second),
/// with its pod and name.
fn last_terminated(pods: &[Pod]) -> Option<(&Pod, &str, &ContainerStateTerminated)> {
    let mut best: Option<(String, (&Pod, &str, &ContainerStateTerminated))> = None;
    for pod in pods {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        for cs in statuses.into_iter().flatten() {
            let Some(t) = cs.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                continue;
            };
            let finished = t
                .finished_at
                .as_ref()
                .map(|f| f.0.to_string())
                .unwrap_or_default();
            if best.as_ref().is_none_or(|(f, _)| finished > *f) {
                best = Some((finished, (pod, cs.name.as_str(), t)));
            }
        }
    }
    best.map(|(_, found)| found)
}

fn without_result(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> WorkerResult {
    WorkerResult {
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
    }
}

/// Reads the resource's Jobs, the pods of those not yet recorded, and the running Job's
/// progress.
pub async fn observe<K: Kind>(ctx: &Ctx, obj: &K) -> Result<Observed> {
    let spec = effective_spec(&ctx.config, obj);
    let namespace = obj.namespace().unwrap_or_default();
    let mut jobs = Vec::new();
    let mut progress_read = false;
    for job in jobs_of(ctx, obj).await? {
        let mut seen = ObservedJob {
            job,
            ..ObservedJob::default()
        };
        if !seen.recorded() {
            seen.pods = pods_of(ctx, &seen.job).await;
        }
        if !progress_read && seen.state() == JobState::Active {
            progress_read = true;
            seen.progress = progress_of(ctx, &namespace, &spec, &seen.job).await;
        }
        jobs.push(seen);
    }
    Ok(Observed {
        now: Utc::now(),
        spec,
        jobs,
        check: None,
    })
}

/// Jobs the operator made for `obj`, oldest first.
async fn jobs_of<K: Kind>(ctx: &Ctx, obj: &K) -> Result<Vec<Job>> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
    let selector = format!(
        "{LABEL_KIND}={},{LABEL_NAME}={}",
        K::kind(&()),
        job::label_value(&obj.name_any())
    );
    let uid = obj.uid();
    let mut jobs: Vec<Job> = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::ListJobs)?
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

/// The Job's pods. A failed list reads as no pods, as it always has: the Job then reads as
/// ended without a result.
async fn pods_of(ctx: &Ctx, job: &Job) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let selector = format!("job-name={}", job.name_any());
    match api.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!(job = %job.name_any(), error = %e, "cannot list the Job's pods");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::testing::{
        failure, job, pod, recorded, reported, success, with_memory_limit,
    };

    #[test]
    fn job_state_comes_from_its_conditions() {
        assert_eq!(job("a", None).state(), JobState::Active);
        assert_eq!(
            job("a", Some(("Complete", ""))).state(),
            JobState::Succeeded
        );
        assert_eq!(
            job("a", Some(("SuccessCriteriaMet", ""))).state(),
            JobState::Succeeded
        );
        assert_eq!(
            job("a", Some(("Failed", "DeadlineExceeded"))).state(),
            JobState::Failed("Job a failed (DeadlineExceeded): as the test says".into())
        );
        assert_eq!(
            job("a", Some(("FailureTarget", "BackoffLimitExceeded"))).state(),
            JobState::Failed("Job a failed (BackoffLimitExceeded): as the test says".into())
        );
    }

    #[test]
    fn result_is_from_the_pod_that_finished_last() {
        let early = pod(
            1,
            "Error",
            &failure("first try").to_termination_message(),
            "2024-12-01T12:00:05Z",
        );
        let late = reported(&success(5, 50));
        assert_eq!(
            worker_result(&[late.clone(), early.clone()]),
            Some(success(5, 50))
        );
        assert_eq!(worker_result(&[early, late]), Some(success(5, 50)));
        assert_eq!(worker_result(&[]), None);
    }

    #[test]
    fn container_without_a_result_gives_its_exit_and_log_tail() {
        let killed = pod(
            137,
            "OOMKilled",
            "starting\nreading orders-0",
            "2024-12-01T12:00:05Z",
        );
        let r = worker_result(&[killed]).expect("a result");
        assert_eq!(r.outcome, "failure");
        assert_eq!(
            r.error.as_deref(),
            Some("worker exited with code 137 (OOMKilled): reading orders-0")
        );
    }

    #[test]
    fn observed_jobs_sort_into_active_and_unrecorded() {
        let seen = Observed {
            now: Utc::now(),
            spec: Value::Null,
            jobs: vec![
                recorded(job("old", Some(("Complete", "")))),
                job("done", Some(("Failed", "x"))),
                job("running", None),
            ],
            check: None,
        };
        assert_eq!(
            seen.active().map(ObservedJob::name).as_deref(),
            Some("running")
        );
        let unrecorded: Vec<String> = seen.unrecorded_finished().map(ObservedJob::name).collect();
        assert_eq!(unrecorded, ["done"]);
    }

    #[test]
    fn deadline_exceeded_names_the_deadline_field() {
        let mut j = job("orders-run", Some(("Failed", "DeadlineExceeded")));
        j.job.spec = Some(k8s_openapi::api::batch::v1::JobSpec {
            active_deadline_seconds: Some(60),
            ..Default::default()
        });
        j.pods = vec![reported(&failure("interrupted"))];
        let why = j.failure(&failure("interrupted"));
        assert_eq!(
            why,
            "Job orders-run ran longer than spec.job.activeDeadlineSeconds (60s) and was stopped; raise spec.job.activeDeadlineSeconds or remove it"
        );
        // Another reason for failing is not a deadline.
        let other = job("orders-run", Some(("Failed", "BackoffLimitExceeded")));
        assert_eq!(other.failure(&failure("interrupted")), "interrupted");
    }

    #[test]
    fn out_of_memory_names_the_memory_limit() {
        let mut j = job("orders-run", Some(("Failed", "BackoffLimitExceeded")));
        j.pods = vec![with_memory_limit(
            pod(137, "OOMKilled", "reading orders-0", "2024-12-01T12:00:05Z"),
            "256Mi",
        )];
        let r = j.result().unwrap_or_default();
        assert_eq!(
            j.failure(&r),
            "the worker in Job orders-run ran out of memory (OOMKilled, limit 256Mi); raise spec.resources.limits.memory"
        );
        // A later attempt that failed otherwise is what the Job ended with.
        j.pods.push(pod(
            1,
            "Error",
            &failure("topic orders: not found").to_termination_message(),
            "2024-12-01T12:00:30Z",
        ));
        let r = j.result().unwrap_or_default();
        assert_eq!(j.failure(&r), "topic orders: not found");
    }
}
