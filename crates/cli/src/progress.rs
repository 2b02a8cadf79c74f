//! Progress of a long run: a bar on a terminal, a log line every few seconds otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kafka_backup_engine::backup::Progress;

use crate::output;

/// Reports `progress` until dropped.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    extra: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// Starts reporting on standard error.
    pub fn start(progress: Arc<Progress>, what: &'static str) -> Reporter {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix} [{bar:30}] {pos}/{len}  {msg}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(what);
            let b = bar.clone();
            let task = tokio::spawn(async move {
                let started = Instant::now();
                loop {
                    b.set_length(progress.target_offsets.load(Ordering::Relaxed));
                    b.set_position(progress.offsets_done.load(Ordering::Relaxed));
                    let bytes = progress.bytes.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    b.set_message(format!(
                        "{} records, {} ({}/s)",
                        progress.records.load(Ordering::Relaxed),
                        output::bytes(bytes),
                        output::bytes((bytes as f64 / secs) as u64)
                    ));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            Reporter {
                task,
                extra: None,
                bar: Some(bar),
            }
        } else {
            let task = tokio::spawn(async move {
                let started = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let target = progress.target_offsets.load(Ordering::Relaxed);
                    let done = progress.offsets_done.load(Ordering::Relaxed);
                    let bytes = progress.bytes.load(Ordering::Relaxed);
                    let secs = started.elapsed().as_secs_f64();
                    let rate = bytes as f64 / secs.max(0.001);
                    let eta = if done > 0 && target > done {
                        format!("{:.0}s", secs * (target - done) as f64 / done as f64)
                    } else {
                        "-".into()
                    };
                    tracing::info!(
                        offsets_done = done,
                        offsets_total = target,
                        records = progress.records.load(Ordering::Relaxed),
                        bytes,
                        rate_bytes_per_sec = rate as u64,
                        eta = %eta,
                        "{what} progress"
                    );
                }
            });
            Reporter {
                task,
                extra: None,
                bar: None,
            }
        }
    }
}

impl Reporter {
    /// Reports a restore's progress: records against the records to write.
    pub fn start_restore(progress: Arc<kafka_backup_engine::restore::Progress>) -> Reporter {
        let shared = Arc::new(Progress::default());
        let mirror = shared.clone();
        let copier = tokio::spawn(async move {
            loop {
                mirror.target_offsets.store(
                    progress.target_records.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                let done = progress.records.load(Ordering::Relaxed);
                mirror.offsets_done.store(done, Ordering::Relaxed);
                mirror.records.store(done, Ordering::Relaxed);
                mirror
                    .bytes
                    .store(progress.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut r = Reporter::start(shared, "restore");
        r.extra = Some(copier);
        r
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(t) = &self.extra {
            t.abort();
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
