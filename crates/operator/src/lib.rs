//! The Kubernetes side of kafka-backup: controllers that turn KafkaBackup, KafkaRestore,
//! KafkaOffsetReset and KafkaOffsetRollback resources into Jobs running the `kafka-backup` binary,
//! and report their outcome in status. Long work never runs inside a reconcile: it runs in the Job.
//!
//! - [`job`]: the Job of one run (Secrets as volumes, never as values).
//! - [`reconcile`]: status from Jobs, termination messages and progress documents; schedules,
//!   the trigger annotation, invalid specs.
//! - [`schedule`]: 5-field cron with a time zone, and the policy for missed slots.
//! - [`leader`]: leader election through a Lease.
//! - [`http`]: /metrics, /healthz, /readyz.

pub mod http;
pub mod job;
pub mod leader;
pub mod reconcile;
pub mod schedule;
pub mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kafka_backup_api::backup::KafkaBackup;
use kafka_backup_api::offsets::{KafkaOffsetReset, KafkaOffsetRollback};
use kafka_backup_api::restore::KafkaRestore;
use kafka_backup_api::storage::StorageSpec;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::http::Metrics;
use crate::reconcile::{Ctx, Kind};

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Only this namespace; `None` for every namespace.
    pub namespace: Option<String>,
    pub worker_image: String,
    pub worker_service_account: String,
    /// Further environment of every worker (`--worker-env NAME=VALUE`).
    pub worker_env: Vec<(String, String)>,
    pub http_addr: SocketAddr,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    /// Storage for KafkaOffsetRollback (and KafkaOffsetReset) resources without spec.storage.
    pub default_storage: Option<StorageSpec>,
    pub work_dir: PathBuf,
}

/// Runs until SIGTERM or SIGINT: serves HTTP, campaigns for the Lease and, while leader, runs
/// the four controllers. Losing the Lease ends the process (a restart campaigns again), so a
/// replica never acts on a Lease it no longer holds.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot configure the Kubernetes client: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let listener = http::bind(config.http_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
    tokio::spawn(http::serve(listener, metrics.clone()));

    // The API server must answer before we call ourselves ready.
    let version = tokio::time::timeout(Duration::from_secs(30), client.apiserver_version())
        .await
        .map_err(|_| anyhow::anyhow!("the Kubernetes API server did not answer within 30s"))?
        .map_err(|e| anyhow::anyhow!("the Kubernetes API server is not usable: {e}"))?;
    tracing::info!(version = %version.git_version, identity = %config.identity, "connected to the API server");
    metrics.ready.store(true, Ordering::Relaxed);

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        kafka_backup_engine::shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let elector = leader::Elector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        &config.identity,
    );
    if !campaign(&elector, stop_rx.clone()).await {
        return Ok(());
    }
    tracing::info!(lease = %config.lease_name, namespace = %config.lease_namespace, "became leader");
    metrics.leader.store(true, Ordering::Relaxed);

    let config = Arc::new(config);
    std::fs::create_dir_all(&config.work_dir).map_err(|e| {
        anyhow::anyhow!(
            "--work-dir {}: cannot create it: {e}",
            config.work_dir.display()
        )
    })?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "kafka-backup-operator".into(),
            instance: Some(config.identity.clone()),
        },
    );
    let ctx = Arc::new(Ctx::new(
        client.clone(),
        config.clone(),
        metrics.clone(),
        recorder,
    ));

    // Controllers stop when asked to, or when leadership is lost.
    let (lost_tx, lost_rx) = watch::channel(false);
    let renew = tokio::spawn(keep_lease(
        elector,
        stop_rx.clone(),
        lost_tx,
        metrics.clone(),
    ));
    run_controllers(&client, ctx, stop_rx, lost_rx.clone()).await;

    let lost = *lost_rx.borrow();
    let elector = renew.await?;
    if lost {
        anyhow::bail!("lost the leader Lease; exiting so that a restart campaigns again");
    }
    elector.release().await;
    metrics.leader.store(false, Ordering::Relaxed);
    tracing::info!("stopped; Lease released");
    Ok(())
}

/// Campaigns for the Lease until it is held (`true`) or the process is asked to stop (`false`).
async fn campaign(elector: &leader::Elector, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "leader election: cannot read or write the Lease"),
        }
        tokio::select! {
            _ = tokio::time::sleep(leader::RENEW_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Renews the Lease until the process is asked to stop; sends on `lost` when another replica
/// took it or it could not be renewed before it expired. Returns the elector, to release it.
async fn keep_lease(
    elector: leader::Elector,
    mut stop: watch::Receiver<bool>,
    lost: watch::Sender<bool>,
    metrics: Arc<Metrics>,
) -> leader::Elector {
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(leader::RENEW_EVERY) => {}
            _ = stop.changed() => { return elector; }
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!("leader Lease taken by another replica; stopping");
                metrics.leader.store(false, Ordering::Relaxed);
                let _ = lost.send(true);
                return elector;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the leader Lease");
                if last_ok.elapsed() >= leader::LEASE_DURATION - leader::RENEW_EVERY {
                    tracing::error!("leader Lease not renewed in time; stopping");
                    metrics.leader.store(false, Ordering::Relaxed);
                    let _ = lost.send(true);
                    return elector;
                }
            }
        }
    }
}

/// Runs the four controllers until the process is asked to stop or leadership is lost.
async fn run_controllers(
    client: &Client,
    ctx: Arc<Ctx>,
    stop: watch::Receiver<bool>,
    lost: watch::Receiver<bool>,
) {
    let shutdown = move || {
        let mut stop = stop.clone();
        let mut lost = lost.clone();
        async move {
            tokio::select! {
                _ = stop.wait_for(|v| *v) => {}
                _ = lost.wait_for(|v| *v) => {}
            }
        }
    };
    let ns = ctx.config.namespace.clone();
    let backups = controller::<KafkaBackup>(client, ns.as_deref())
        .graceful_shutdown_on(shutdown())
        .run(
            reconcile::reconcile_backup,
            reconcile::error_policy::<KafkaBackup>,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let restores = controller::<KafkaRestore>(client, ns.as_deref())
        .graceful_shutdown_on(shutdown())
        .run(
            reconcile::reconcile_once::<KafkaRestore>,
            reconcile::error_policy::<KafkaRestore>,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let resets = controller::<KafkaOffsetReset>(client, ns.as_deref())
        .graceful_shutdown_on(shutdown())
        .run(
            reconcile::reconcile_once::<KafkaOffsetReset>,
            reconcile::error_policy::<KafkaOffsetReset>,
            ctx.clone(),
        )
        .for_each(|_| async {});
    let rollbacks = controller::<KafkaOffsetRollback>(client, ns.as_deref())
        .graceful_shutdown_on(shutdown())
        .run(
            reconcile::reconcile_once::<KafkaOffsetRollback>,
            reconcile::error_policy::<KafkaOffsetRollback>,
            ctx.clone(),
        )
        .for_each(|_| async {});
    tokio::join!(backups, restores, resets, rollbacks);
}

fn controller<K: Kind>(client: &Client, namespace: Option<&str>) -> Controller<K> {
    let (api, jobs): (Api<K>, Api<Job>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let selector = format!("{}={}", job::LABEL_KIND, K::kind(&()));
    Controller::new(api, watcher::Config::default())
        .owns(jobs, watcher::Config::default().labels(&selector))
}
