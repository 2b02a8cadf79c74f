//! Shared by the failure tests (`failures.rs`, `failures_cluster.rs`): restores through the CLI,
//! exact comparison of a restored topic with the records produced to the source, `verify`, and
//! running a `kafka-backup` child whose output goes to files so it can be killed or waited on.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kafka_backup_testkit::kafka::{TestRecord, consume_all};
use kafka_backup_testkit::poll::wait_for;
use rdkafka::config::ClientConfig;

use kafka_backup_engine::repo::Repository;

use crate::common::{checkpointed_records, cli};

/// Runs `kafka-backup restore -o json -f manifest`.
pub fn restore(manifest: &Path) -> Output {
    cli()
        .args(["restore", "-o", "json", "-f"])
        .arg(manifest)
        .output()
        .expect("run kafka-backup restore")
}

/// Runs `kafka-backup verify BACKUP_ID -f manifest [--deep]`.
pub fn verify(manifest: &Path, backup_id: &str, deep: bool) -> Output {
    let mut c = cli();
    c.args(["verify", backup_id, "-f"]).arg(manifest);
    if deep {
        c.arg("--deep");
    }
    c.output().expect("run kafka-backup verify")
}

/// Asserts that `out` succeeded, printing its output otherwise.
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asserts that `topic` holds exactly `produced`: per partition the same records (key, value,
/// headers, timestamp) in the same order at offsets `0..n`, nothing lost and nothing duplicated.
pub fn assert_topic_holds(
    config: &ClientConfig,
    topic: &str,
    produced: &[TestRecord],
    partitions: i32,
) {
    let got = consume_all(config, topic, produced.len(), Duration::from_secs(120));
    assert_eq!(got.len(), produced.len(), "{topic}: record count");
    for p in 0..partitions {
        let want: Vec<&TestRecord> = produced.iter().filter(|r| r.partition == p).collect();
        let have: Vec<&TestRecord> = got
            .iter()
            .filter(|c| c.record.partition == p)
            .map(|c| &c.record)
            .collect();
        assert_eq!(have.len(), want.len(), "{topic}/{p}: record count");
        for (i, (h, w)) in have.iter().zip(&want).enumerate() {
            assert_eq!(h, w, "{topic}/{p}: record {i}");
        }
        let offsets: Vec<i64> = got
            .iter()
            .filter(|c| c.record.partition == p)
            .map(|c| c.offset)
            .collect();
        assert_eq!(
            offsets,
            (0..want.len() as i64).collect::<Vec<_>>(),
            "{topic}/{p}: offsets are dense from 0"
        );
    }
    // Nothing beyond: the high watermarks are exactly the record counts.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = config.create().expect("consumer");
    for p in 0..partitions {
        let (_, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .expect("watermarks");
        let want = produced.iter().filter(|r| r.partition == p).count() as i64;
        assert_eq!(high, want, "{topic}/{p}: end offset");
    }
}

/// A `kafka-backup` child process whose stdout and stderr go to files.
pub struct Running {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub started: Instant,
}

impl Running {
    /// Starts `kafka-backup ARGS`, with output into files under `dir`.
    pub fn start(dir: &Path, args: &[&str], manifest: &Path) -> Running {
        Self::start_with(cli(), dir, args, manifest)
    }

    /// Like [`Running::start`] with a prepared command (extra environment).
    pub fn start_with(mut cmd: Command, dir: &Path, args: &[&str], manifest: &Path) -> Running {
        let tag = kafka_backup_testkit::unique_name("run");
        let stdout = dir.join(format!("{tag}.out"));
        let stderr = dir.join(format!("{tag}.err"));
        let child = cmd
            .args(args)
            .arg("-f")
            .arg(manifest)
            .stdout(Stdio::from(
                std::fs::File::create(&stdout).expect("stdout file"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(&stderr).expect("stderr file"),
            ))
            .spawn()
            .expect("spawn kafka-backup");
        Running {
            child,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits at most `limit` (from its start) for it to end; kills it and panics past that.
    pub fn wait(mut self, limit: Duration) -> Finished {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Finished {
                    status,
                    stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                    stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                    took: self.started.elapsed(),
                };
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "kafka-backup did not end within {limit:?}; its log:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a [`Running`] child ended.
pub struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Finished {
    /// The JSON summary of a successful run; panics with the log otherwise.
    pub fn json(&self) -> serde_json::Value {
        assert!(
            self.status.success(),
            "kafka-backup failed ({}):\n{}",
            self.status,
            self.stderr
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Waits (up to 60 s) until `run`, a backup named `name` writing to `repo`, has checkpointed a
/// stored segment, so killing it now leaves an unfinished run with data behind.
pub async fn wait_for_checkpointed_segment(repo: &Repository, name: &str, run: &mut Running) {
    wait_for(
        "a stored segment in the checkpoint",
        Duration::from_secs(60),
        move || {
            let running = run.running();
            async move {
                if checkpointed_records(repo, name).await > 0 {
                    return Some(());
                }
                assert!(running, "the backup ended before it stored a segment");
                None
            }
        },
    )
    .await;
}
