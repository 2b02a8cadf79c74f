//! `kafka-backup worker`: what the operator's Jobs run. It reads the resource from
//! `KAFKA_BACKUP_MANIFEST`, does the one run it describes with the same engine calls as the other
//! commands, keeps a progress document in storage up to date, and writes a
//! [`WorkerResult`] to the termination message file for the operator to put into status.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use kafka_backup_api::backup::KafkaBackup;
use kafka_backup_api::common::Phase;
use kafka_backup_api::offsets::{GroupResult, KafkaOffsetReset, KafkaOffsetRollback};
use kafka_backup_api::restore::{KafkaRestore, OffsetResetStatus, RestoredTopic};
use kafka_backup_api::storage::StorageSpec;
use kafka_backup_api::worker::{MANIFEST_ENV, PROGRESS_PATH_ENV, WorkerProgress, WorkerResult};
use kafka_backup_engine::backup::{self, BackupOptions};
use kafka_backup_engine::limits::Backoff;
use kafka_backup_engine::offsets::OffsetsReport;
use kafka_backup_engine::repo::Repository;
use kafka_backup_engine::restore::{self, RestoreOptions};
use kafka_backup_engine::secrets::SecretStore;
use kafka_backup_engine::storage::StorageOptions;

use crate::commands::{exit_code, render_error, stop_on_signals};
use crate::manifest::{self, ManifestError};

/// Options of `kafka-backup worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Where the Secrets the resource names are mounted: DIR/<secret-name>/<key>.
    #[arg(
        long,
        value_name = "DIR",
        env = "KAFKA_BACKUP_SECRETS_DIR",
        default_value = "/var/run/kafka-backup/secrets"
    )]
    pub secrets_dir: PathBuf,
    /// Where `storageType: pvc` volumes are mounted: DIR/<claimName>/<subPath>.
    #[arg(long, value_name = "DIR", env = "KAFKA_BACKUP_PVC_ROOT", default_value = kafka_backup_engine::storage::DEFAULT_PVC_ROOT)]
    pub pvc_root: PathBuf,
    /// Where the result (JSON, at most 4096 bytes) is written: the container's termination
    /// message file.
    #[arg(
        long,
        value_name = "FILE",
        env = "KAFKA_BACKUP_RESULT_FILE",
        default_value = "/dev/termination-log"
    )]
    pub result_file: PathBuf,
    /// Seconds between progress documents.
    #[arg(long, env = "KAFKA_BACKUP_PROGRESS_INTERVAL_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub progress_interval_secs: u64,
    /// Partitions read or restored at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Runs the resource and writes the result file; the error (if any) is returned for the exit code.
pub async fn run(args: &WorkerArgs) -> Result<()> {
    let start_time = now();
    let outcome = run_inner(args).await;
    let result = match &outcome {
        Ok(r) => WorkerResult {
            start_time: start_time.clone(),
            completion_time: now(),
            ..r.clone()
        },
        Err(e) => WorkerResult {
            outcome: "failure".into(),
            error: Some(render_error(e)),
            bad_input: exit_code(e) == 2,
            start_time: start_time.clone(),
            completion_time: now(),
            ..WorkerResult::default()
        },
    };
    if let Err(e) = std::fs::write(&args.result_file, result.to_termination_message()) {
        tracing::warn!(file = %args.result_file.display(), error = %e, "cannot write the result file");
    }
    outcome.and_then(|r| match r.error {
        Some(e) if r.outcome != "success" => Err(anyhow::anyhow!(e)),
        _ => Ok(()),
    })
}

async fn run_inner(args: &WorkerArgs) -> Result<WorkerResult> {
    let text = std::env::var(MANIFEST_ENV).map_err(|_| {
        ManifestError(format!(
            "{MANIFEST_ENV}: not set; it must hold the resource (JSON) to run"
        ))
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ManifestError(format!("{MANIFEST_ENV}: not valid JSON: {e}")))?;
    let kind = value
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    let secrets = SecretStore::new(&args.secrets_dir);
    let storage_options = StorageOptions {
        pvc_root: args.pvc_root.clone(),
        ..StorageOptions::default()
    };
    let timeout = Duration::from_secs(30);
    match kind.as_str() {
        "KafkaBackup" => {
            let kb: KafkaBackup = manifest::parse(&text, "KafkaBackup")?;
            let progress = Arc::new(backup::Progress::default());
            let reporter = ProgressWriter::start(
                args,
                &kb.spec.storage,
                &secrets,
                &storage_options,
                Counters {
                    records: progress_ref(&progress, |p| &p.records),
                    bytes: progress_ref(&progress, |p| &p.stored_bytes),
                    done: progress_ref(&progress, |p| &p.offsets_done),
                    total: progress_ref(&progress, |p| &p.target_offsets),
                },
            )
            .await;
            let options = BackupOptions {
                workers: args.workers as usize,
                storage: storage_options.clone(),
                stop: Some(stop_on_signals()),
                ..BackupOptions::default()
            };
            let result = backup::run(&kb, &secrets, &options, progress).await;
            reporter.finish().await;
            let s = result?;
            Ok(WorkerResult {
                outcome: "success".into(),
                backup_id: Some(s.backup_id),
                records: s.records,
                bytes: s.stored_bytes,
                ..WorkerResult::default()
            })
        }
        "KafkaRestore" => {
            let kr: KafkaRestore = manifest::parse(&text, "KafkaRestore")?;
            let progress = Arc::new(restore::Progress::default());
            let reporter = ProgressWriter::start(
                args,
                &kr.spec.storage,
                &secrets,
                &storage_options,
                Counters {
                    records: progress_ref(&progress, |p| &p.records),
                    bytes: progress_ref(&progress, |p| &p.bytes),
                    done: progress_ref(&progress, |p| &p.records),
                    total: progress_ref(&progress, |p| &p.target_records),
                },
            )
            .await;
            let options = RestoreOptions {
                workers: args.workers as usize,
                storage: storage_options.clone(),
                stop: Some(stop_on_signals()),
                ..RestoreOptions::default()
            };
            let result = restore::run(&kr, &secrets, &options, progress.clone()).await;
            reporter.finish().await;
            let s = result?;
            Ok(WorkerResult {
                outcome: "success".into(),
                backup_id: Some(s.backup_id),
                records: s.restored_records,
                bytes: progress.bytes.load(Ordering::Relaxed),
                restored_topics: s
                    .restored_topics
                    .iter()
                    .map(|t| RestoredTopic {
                        name: t.name.clone(),
                        records: t.records,
                    })
                    .collect(),
                offset_reset_status: s.offset_reset.as_ref().map(|r| OffsetResetStatus {
                    phase: if r.phase == "Completed" {
                        Phase::Completed
                    } else {
                        Phase::Pending
                    },
                    groups_reset: r.groups.iter().map(|g| g.group_id.clone()).collect(),
                }),
                snapshot_id: s.rollback_snapshot_id,
                ..WorkerResult::default()
            })
        }
        "KafkaOffsetReset" => {
            let kor: KafkaOffsetReset = manifest::parse(&text, "KafkaOffsetReset")?;
            let report = kafka_backup_engine::offsets::reset(
                &kor,
                &secrets,
                &storage_options,
                None,
                timeout,
            )
            .await?;
            Ok(offsets_result(report))
        }
        "KafkaOffsetRollback" => {
            let korb: KafkaOffsetRollback = manifest::parse(&text, "KafkaOffsetRollback")?;
            let report = kafka_backup_engine::offsets::rollback(
                &korb,
                &secrets,
                &storage_options,
                None,
                timeout,
            )
            .await?;
            Ok(offsets_result(report))
        }
        other => Err(ManifestError(format!(
            "{MANIFEST_ENV}: kind: expected KafkaBackup, KafkaRestore, KafkaOffsetReset or KafkaOffsetRollback, found '{other}'"
        ))
        .into()),
    }
}

fn offsets_result(report: OffsetsReport) -> WorkerResult {
    let failed = report.failed();
    let bad: Vec<&str> = report
        .groups
        .iter()
        .filter(|g| g.outcome == "failure" || g.outcome == "differs")
        .map(|g| g.group_id.as_str())
        .collect();
    WorkerResult {
        outcome: if failed { "failure" } else { "success" }.into(),
        error: failed.then(|| {
            format!(
                "{} of {} groups {}: {}",
                bad.len(),
                report.groups.len(),
                if report.operation == "verify" {
                    "differ from the snapshot"
                } else {
                    "failed"
                },
                bad.join(", ")
            )
        }),
        snapshot_id: report.snapshot_id.clone(),
        verified: report.verified,
        groups: report
            .groups
            .iter()
            .map(|g| GroupResult {
                group_id: g.group_id.clone(),
                outcome: g.outcome.clone(),
                message: g.message.clone(),
                partitions: Some(g.offsets.len() as u32),
            })
            .collect(),
        ..WorkerResult::default()
    }
}

/// A counter inside a shared progress struct.
type Counter = Arc<dyn Fn() -> u64 + Send + Sync>;

fn progress_ref<P: Send + Sync + 'static>(p: &Arc<P>, field: fn(&P) -> &AtomicU64) -> Counter {
    let p = p.clone();
    Arc::new(move || field(&p).load(Ordering::Relaxed))
}

struct Counters {
    records: Counter,
    bytes: Counter,
    done: Counter,
    total: Counter,
}

impl Counters {
    fn snapshot(&self) -> WorkerProgress {
        WorkerProgress {
            updated: now(),
            records: (self.records)(),
            bytes: (self.bytes)(),
            done: (self.done)(),
            total: (self.total)(),
        }
    }
}

/// Rewrites the progress document every interval while the run goes on; deletes it at the end.
/// Without `KAFKA_BACKUP_PROGRESS_PATH` (a run not started by the operator) it does nothing.
struct ProgressWriter {
    task: Option<(tokio::task::JoinHandle<()>, Repository, String)>,
}

impl ProgressWriter {
    async fn start(
        args: &WorkerArgs,
        spec: &StorageSpec,
        secrets: &SecretStore,
        options: &StorageOptions,
        counters: Counters,
    ) -> ProgressWriter {
        let Ok(path) = std::env::var(PROGRESS_PATH_ENV) else {
            return ProgressWriter { task: None };
        };
        // A storage problem surfaces in the run itself with its own error; progress is best effort.
        let Ok(repo) = Repository::open("spec.storage", spec, secrets, options, Backoff::default())
        else {
            return ProgressWriter { task: None };
        };
        let interval = Duration::from_secs(args.progress_interval_secs);
        let (r, p) = (repo.clone(), path.clone());
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let body = counters.snapshot().to_json();
                if let Err(e) = r.put(&p, Bytes::from(body), false).await {
                    tracing::debug!(error = %e, "progress document not written");
                }
            }
        });
        ProgressWriter {
            task: Some((task, repo, path)),
        }
    }

    async fn finish(self) {
        if let Some((task, repo, path)) = self.task {
            task.abort();
            let _ = task.await;
            let _ = repo.delete(&path).await;
        }
    }
}
