//! Failures of the storage and of the source, against the genuine services: the object store
//! going away in the middle of a backup (a private MinIO, so the shared one is untouched), a
//! filesystem repository that turns read-only or fills up, and a topic deleted and created again
//! between two backups. Each test checks that earlier backups stay intact and that what is
//! restored equals what was produced, record for record.

mod common;
mod reliability;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kafka_backup_engine::limits::{Backoff, CircuitBreaker};
use kafka_backup_engine::repo::Repository;
use kafka_backup_engine::secrets::SecretStore;
use kafka_backup_engine::storage::{self, StorageOptions};
use kafka_backup_testkit::kafka::{
    TestRecord, create_topic, plaintext_config, produce, sample_records,
};
use kafka_backup_testkit::poll::wait_until;
use kafka_backup_testkit::{TestEnv, env::repo_root, unique_name};
use reliability::*;

/// `n` records over `partitions` with `value_len`-byte values that do not compress.
fn incompressible(n: usize, partitions: i32, value_len: usize, seed: u64) -> Vec<TestRecord> {
    let mut x = seed | 1;
    sample_records(n, partitions)
        .into_iter()
        .map(|mut r| {
            r.value = Some(
                (0..value_len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect(),
            );
            r
        })
        .collect()
}

fn concat(a: &[TestRecord], b: &[TestRecord]) -> Vec<TestRecord> {
    a.iter().chain(b).cloned().collect()
}

/// Restores backup `id` from `storage` into a new topic `<topic>-<suffix>` on the test broker and
/// checks that it holds exactly `want`.
fn restore_exact(
    dir: &Path,
    storage: &serde_json::Value,
    id: &str,
    topic: &str,
    suffix: &str,
    want: &[TestRecord],
    partitions: i32,
) {
    let restored = format!("{topic}-{suffix}");
    let m = restore_manifest_mapped(
        &unique_name("fl-rs"),
        id,
        &Target::Storage(storage.clone()),
        topic,
        &restored,
    );
    let out = restore(&write_manifest(dir, &m));
    assert_ok(&out, &format!("restore of {id}"));
    assert_topic_holds(&plaintext_config(), &restored, want, partitions);
}

fn repository(storage: &serde_json::Value, secrets: &Path) -> Repository {
    let spec = serde_json::from_value(storage.clone()).expect("storage spec");
    let storage = storage::open(
        "spec.storage",
        &spec,
        &SecretStore::new(secrets.to_path_buf()),
        &StorageOptions::default(),
    )
    .expect("open storage");
    Repository::new(
        storage,
        std::sync::Arc::new(CircuitBreaker::new("storage", None)),
        Backoff::default(),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A MinIO server of this test alone: the binary `scripts/testenv` built, the shared server's
/// credentials, its own loopback ports and data directory. Killed on drop.
struct PrivateMinio {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    console_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl PrivateMinio {
    fn start(dir: &Path) -> PrivateMinio {
        let env = TestEnv::get();
        let cache = std::env::var_os("KB_TESTENV_CACHE")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/kafka-backup-testenv"))
            })
            .expect("HOME or KB_TESTENV_CACHE");
        let bin = cache.join(env.var("S3_SERVER")).join("bin/minio");
        assert!(
            bin.exists(),
            "{} is missing: run `scripts/testenv up s3` first",
            bin.display()
        );
        let mut m = PrivateMinio {
            bin,
            data: dir.join("minio-data"),
            port: free_port(),
            console_port: free_port(),
            log: dir.join("minio.log"),
            child: None,
        };
        m.spawn();
        let out = Command::new("python3")
            .arg(repo_root().join("scripts/testenv.d/stores/objreq.py"))
            .args(["s3", "PUT", &format!("{}/{}", m.endpoint(), Self::BUCKET)])
            .args(["--region", env.var("S3_REGION"), "--ok", "409"])
            .arg("--access-key-file")
            .arg(env.path("S3_ACCESS_KEY_FILE"))
            .arg("--secret-key-file")
            .arg(env.path("S3_SECRET_KEY_FILE"))
            .output()
            .expect("run objreq.py");
        assert!(
            out.status.success(),
            "creating the bucket failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m
    }

    const BUCKET: &'static str = "kafka-backup-failures";

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server (on the same port and data as before) and waits until it is live.
    fn spawn(&mut self) {
        let env = TestEnv::get();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("minio log");
        let child = Command::new(&self.bin)
            .args(["server", "--quiet", "--anonymous", "--address"])
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--console-address")
            .arg(format!("127.0.0.1:{}", self.console_port))
            .arg(&self.data)
            .env("MINIO_ROOT_USER", env.file_contents("S3_ACCESS_KEY_FILE"))
            .env(
                "MINIO_ROOT_PASSWORD",
                env.file_contents("S3_SECRET_KEY_FILE"),
            )
            .env("MINIO_SITE_REGION", env.var("S3_REGION"))
            .env("MINIO_UPDATE", "off")
            .env("MINIO_CALLHOME_ENABLE", "off")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start minio");
        self.child = Some(child);
        let port = self.port;
        wait_until("private MinIO is live", Duration::from_secs(60), || {
            http_status(port, "/minio/health/ready") == Some(200)
        });
    }

    /// kill -9.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `spec.storage` for this server's bucket, with the test Secrets.
    fn storage_json(&self) -> serde_json::Value {
        serde_json::json!({
            "storageType": "s3",
            "s3": {
                "bucket": Self::BUCKET,
                "region": TestEnv::get().var("S3_REGION"),
                "endpoint": self.endpoint(),
                "credentialsSecret": {"name": "s3-credentials"}
            }
        })
    }
}

impl Drop for PrivateMinio {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The status of `GET path` on 127.0.0.1:`port`, or `None` when nothing answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `text` without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Values of `key=<number>` in the log lines containing `message`.
fn logged_numbers(log: &str, message: &str, key: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(message))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.trim_matches('"').parse().ok())
        })
        .collect()
}

/// A new topic `fl-<tag>-…` of `records` sample records over `partitions`, and the manifest of a
/// backup `<tag>-…` of it to `minio`: (topic, records, backup name, manifest).
async fn topic_backed_up_to(
    minio: &PrivateMinio,
    tag: &str,
    partitions: i32,
    records: usize,
) -> (String, Vec<TestRecord>, String, serde_json::Value) {
    let topic = unique_name(&format!("fl-{tag}"));
    create_topic(&plaintext_config(), &topic, partitions, 1, &[]).await;
    let produced = sample_records(records, partitions);
    produce(&plaintext_config(), &topic, &produced);
    let name = unique_name(tag);
    let manifest = backup_manifest(
        &name,
        &plaintext(),
        &[&topic],
        &Target::Storage(minio.storage_json()),
    );
    (topic, produced, name, manifest)
}

#[tokio::test(flavor = "multi_thread")]
async fn object_store_down_mid_backup_trips_the_breaker_and_the_backup_stays_exact() {
    let started = Instant::now();
    let dir = TempDir::new("kb-s3down");
    let mut minio = PrivateMinio::start(dir.path());
    let storage = minio.storage_json();
    let (topic, first, name, mut m) = topic_backed_up_to(&minio, "s3down", 4, 2_000).await;
    m["spec"]["circuitBreaker"] =
        serde_json::json!({"enabled": true, "failureThreshold": 3, "resetTimeoutSecs": 2});
    let file = write_manifest(dir.path(), &m);
    let s1 = json_of(&backup(&file));
    let id1 = s1["backupId"].as_str().expect("id").to_string();

    // The second run is slowed down so the store can go away while it uploads.
    let second = sample_records(30_000, 4)
        .into_iter()
        .map(|mut r| {
            r.value = Some(format!("second-{}", r.key.is_some()).into_bytes());
            r
        })
        .collect::<Vec<_>>();
    produce(&plaintext_config(), &topic, &second);
    m["spec"]["rateLimit"] = serde_json::json!({"recordsPerSecond": 2500});
    let file = write_manifest(dir.path(), &m);
    let mut run = Running::start(dir.path(), &["backup", "-o", "json"], &file);
    let segments = minio
        .data
        .join(PrivateMinio::BUCKET)
        .join(&name)
        .join("segments");
    // Wait for this run's first segment (the first run's are in `segments` already: count them).
    let before = count_files(&segments);
    tokio::task::block_in_place(|| {
        wait_until(
            "the second run stores a segment",
            Duration::from_secs(60),
            || {
                assert!(run.running(), "the backup ended before the store went away");
                count_files(&segments) > before
            },
        )
    });
    minio.kill();
    let down_at = Instant::now();
    eprintln!("MinIO killed {:?} into the run", run.started.elapsed());
    // Down for 12 s, with the run still going.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        run.running(),
        "the run ended while the store was down:\n{}",
        std::fs::read_to_string(&run.stderr).unwrap_or_default()
    );
    tokio::task::block_in_place(|| minio.spawn());
    eprintln!("MinIO back after {:?}", down_at.elapsed());

    let done = tokio::task::block_in_place(|| run.wait(Duration::from_secs(150)));
    let log = strip_ansi(&done.stderr);
    eprintln!(
        "second run took {:?}; exit {}; log (first 60 lines):\n{}",
        done.took,
        done.status,
        log.lines().take(60).collect::<Vec<_>>().join("\n")
    );
    // Bounded retries with growing delays, never more than the policy's attempts per call.
    let delays = logged_numbers(&log, "call failed; retrying", "retry_in_ms");
    assert!(
        delays.iter().any(|&d| d >= 1000) && delays.contains(&500),
        "retries back off: {delays:?}"
    );
    let attempts = logged_numbers(&log, "call failed; retrying", "attempt");
    assert!(
        attempts
            .iter()
            .all(|&a| a < Backoff::default().max_attempts as u64),
        "attempts per call are bounded: {attempts:?}"
    );
    // A segment whose upload failed is read again from its first record; progress counts those
    // records once, and never passes the run's target.
    let done_offsets = logged_numbers(&log, "backup progress", "offsets_done");
    let total_offsets = logged_numbers(&log, "backup progress", "offsets_total");
    let read = logged_numbers(&log, "backup progress", "records");
    assert!(!read.is_empty(), "progress is logged: {log}");
    assert!(
        done_offsets
            .iter()
            .zip(&total_offsets)
            .all(|(done, total)| done <= total && *total == 30_000),
        "offsets passed stay within the target: {done_offsets:?} of {total_offsets:?}"
    );
    assert!(
        read.iter().all(|&r| r <= 30_000),
        "records read are counted once: {read:?}"
    );
    // The circuit opened while the store was down, probed, and closed once it was back.
    assert!(log.contains("circuit open"), "{log}");
    assert!(log.contains("circuit half-open"), "{log}");
    assert!(log.contains("circuit closed"), "{log}");
    let summary = if done.status.success() {
        done.json()
    } else {
        // A clean failure is allowed (exit 1, naming the storage object); the run resumes.
        assert_eq!(done.status.code(), Some(1), "{log}");
        assert!(log.contains("error: storage"), "{log}");
        let s = json_of(&backup(&file));
        assert_eq!(s["resumed"], true, "{s}");
        s
    };
    let breaker = &summary["circuitBreaker"];
    if done.status.success() {
        assert!(
            breaker["storageOpened"].as_u64() >= Some(1)
                && breaker["storageFailures"].as_u64() >= Some(3),
            "{summary}"
        );
    }
    assert_eq!(summary["records"], 32_000, "{summary}");
    let id2 = summary["backupId"].as_str().expect("id").to_string();

    // The earlier backup is intact, the new one complete, and both restore exactly.
    for id in [&id1, &id2] {
        let out = verify(&file, id, true);
        assert_ok(&out, &format!("verify --deep {id}"));
    }
    let repo = repository(&storage, &TestEnv::get().secrets_dir());
    let (_, stored) = read_backup(&repo, &name, &id2).await;
    for p in 0..4 {
        let want = concat(&of_partition(&first, p), &of_partition(&second, p));
        assert_same(&stored[&(topic.clone(), p)], &want, "second backup");
    }
    tokio::task::block_in_place(|| {
        restore_exact(dir.path(), &storage, &id1, &topic, "r1", &first, 4);
        restore_exact(
            dir.path(),
            &storage,
            &id2,
            &topic,
            "r2",
            &concat(&first, &second),
            4,
        );
    });
    eprintln!("test took {:?}", started.elapsed());
}

/// A segment whose upload fails is read again from its first record. The records it read the
/// first time must leave the run's progress (the CLI's bar and log, the operator's status), or
/// they would be counted twice and the progress would pass its target.
#[tokio::test(flavor = "multi_thread")]
async fn a_segment_read_again_after_a_failed_upload_is_counted_once() {
    use kafka_backup_engine::backup::{BackupOptions, Progress};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let dir = TempDir::new("kb-segretry");
    let mut minio = PrivateMinio::start(dir.path());
    let (topic, produced, name, mut m) = topic_backed_up_to(&minio, "segretry", 2, 8_000).await;
    // Slow enough that the store goes away before the segments are uploaded.
    m["spec"]["rateLimit"] = serde_json::json!({"recordsPerSecond": 2000});
    // Short pauses, so a segment's upload fails (and the segment is retried) within seconds of
    // the store going away, and enough attempts to outlast the restart.
    let options = BackupOptions {
        backoff: Backoff {
            max_attempts: 8,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
        ..BackupOptions::default()
    };
    let progress = Arc::new(Progress::default());
    let run = {
        let progress = progress.clone();
        tokio::spawn(async move { engine_backup(&m, &options, progress).await })
    };

    // Stop the store once some records are read; start it again once progress has given back
    // what a failed segment counted. Meanwhile, progress never passes what there is to read.
    let total = produced.len() as u64;
    let mut most = 0;
    let mut taken_back = false;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.is_finished() {
        assert!(Instant::now() < deadline, "the backup took over 120 s");
        let read = progress.records.load(Ordering::Relaxed);
        let offsets = progress.offsets_done.load(Ordering::Relaxed);
        let target = progress.target_offsets.load(Ordering::Relaxed);
        assert!(
            read <= total && offsets <= target,
            "progress passed its target: {read} records of {total}, {offsets} offsets of {target}"
        );
        if read < most && !taken_back {
            taken_back = true;
            eprintln!("progress went back from {most} to {read} records: starting the store");
            tokio::task::block_in_place(|| minio.spawn());
        }
        most = most.max(read);
        if read >= 1_000 && most == read && !taken_back && minio.child.is_some() {
            minio.kill();
            eprintln!("store stopped after {read} records");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let summary = run.await.expect("join").expect("the backup succeeds");
    assert!(
        taken_back,
        "a failed segment's records were never taken back from the progress"
    );
    assert_eq!(summary.records, total);
    assert_eq!(progress.records.load(Ordering::Relaxed), total);
    assert_eq!(
        progress.offsets_done.load(Ordering::Relaxed),
        progress.target_offsets.load(Ordering::Relaxed)
    );
    let repo = repository(&minio.storage_json(), &TestEnv::get().secrets_dir());
    let (_, stored) = read_backup(&repo, &name, &summary.backup_id).await;
    for p in 0..2 {
        assert_same(
            &stored[&(topic.clone(), p)],
            &of_partition(&produced, p),
            "backup after a retried segment",
        );
    }
}

/// S3 over HTTPS, as AWS and most object stores speak it, against the MinIO of `scripts/testenv`
/// that serves HTTPS with a certificate from its own CA. The CLI trusts that CA through
/// `SSL_CERT_FILE` (`common::cli` sets it); request bodies go unsigned there (TLS protects them).
/// Backup, deep verify and restore are exact. A client that does not trust the CA fails at once
/// with an error naming the certificate, instead of retrying the same handshake.
#[tokio::test(flavor = "multi_thread")]
async fn s3_over_https_is_exact_and_an_untrusted_certificate_fails_at_once() {
    let env = TestEnv::get();
    let dir = TempDir::new("kb-s3tls");
    let topic = unique_name("fl-s3tls");
    create_topic(&plaintext_config(), &topic, 3, 1, &[]).await;
    let produced = sample_records(3_000, 3);
    produce(&plaintext_config(), &topic, &produced);
    let storage = serde_json::json!({
        "storageType": "s3",
        "s3": {
            "bucket": env.var("S3_BUCKET"),
            "region": env.var("S3_REGION"),
            "prefix": unique_name("s3tls"),
            "endpoint": env.var("S3_TLS_ENDPOINT"),
            "credentialsSecret": {"name": "s3-credentials"}
        }
    });
    assert!(env.var("S3_TLS_ENDPOINT").starts_with("https://"));
    let name = unique_name("s3tls");
    let mut m = backup_manifest(
        &name,
        &plaintext(),
        &[&topic],
        &Target::Storage(storage.clone()),
    );
    m["spec"]["compression"] = "lz4".into();
    let file = write_manifest(dir.path(), &m);

    let summary = json_of(&backup(&file));
    assert_eq!(summary["records"], 3_000, "{summary}");
    let id = summary["backupId"].as_str().expect("id").to_string();
    assert_ok(&verify(&file, &id, true), "verify --deep over HTTPS");
    tokio::task::block_in_place(|| {
        restore_exact(dir.path(), &storage, &id, &topic, "restored", &produced, 3)
    });

    // Trusting another CA (the test Kafka's) only: the server's certificate has an unknown issuer.
    let started = Instant::now();
    let out = cli()
        .env(
            "SSL_CERT_FILE",
            env.secrets_dir().join("kafka-tls-ca/ca.crt"),
        )
        .args(["backup", "-o", "json", "-f"])
        .arg(&file)
        .output()
        .expect("run kafka-backup");
    let took = started.elapsed();
    let stderr = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let err = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert!(
        err.contains("invalid peer certificate") && err.contains(env.var("S3_TLS_ENDPOINT")),
        "the error names the certificate and the endpoint: {err}"
    );
    assert!(
        !stderr.contains("call failed; retrying"),
        "a rejected certificate is not retried:\n{stderr}"
    );
    assert!(took < Duration::from_secs(30), "failing took {took:?}");
    eprintln!("untrusted certificate: failed after {took:?}: {err}");
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `2m`) at `dir`; `None` where mounting is not permitted.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if out.status.success() {
            Some(Tmpfs(dir.to_path_buf()))
        } else {
            eprintln!(
                "mount -t tmpfs not permitted ({}): testing a read-only directory only",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
    }

    fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .output()
            .expect("mount -o remount");
        assert!(
            out.status.success(),
            "remount {options}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Asserts a clean failure: exit status 1 within `limit`, an error naming `problem` and the
/// repository path, and no manifest of the failed run.
fn assert_clean_failure(done: &Finished, problem: &str, repo_dir: &Path, limit: Duration) {
    assert_eq!(
        done.status.code(),
        Some(1),
        "expected exit 1:\n{}",
        done.stderr
    );
    let err = done
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line:\n{}", done.stderr));
    eprintln!("failed after {:?} as expected: {err}", done.took);
    assert!(
        err.contains(problem) && err.contains(&repo_dir.display().to_string()),
        "the error names the problem ({problem}) and the path: {err}"
    );
    assert!(
        done.took < limit,
        "failing took {:?} (limit {limit:?})",
        done.took
    );
}

fn backup_ids(repo_dir: &Path, name: &str) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(repo_dir.join(name).join("manifests"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|f| f.strip_suffix(".json"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_and_full_filesystems_fail_cleanly_and_earlier_backups_stay_intact() {
    let started = Instant::now();
    let dir = TempDir::new("kb-fsfail");
    let mnt = dir.path().join("mnt");
    let tmpfs = Tmpfs::mount(&mnt, "2m");
    let repo_dir = mnt.join("repo");
    let topic = unique_name("fl-fs");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let a = sample_records(300, 2);
    produce(&plaintext_config(), &topic, &a);
    let name = unique_name("fsfail");
    let target = Target::Filesystem(repo_dir.clone());
    let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    m["spec"]["compression"] = "none".into();
    let file = write_manifest(dir.path(), &m);
    let storage = target.storage_json();
    let id1 = json_of(&backup(&file))["backupId"]
        .as_str()
        .expect("id")
        .to_string();
    let limit = Duration::from_secs(45);

    // A read-only repository: the run fails at once, naming the path; nothing is committed.
    let b = sample_records(300, 2);
    produce(&plaintext_config(), &topic, &b);
    match &tmpfs {
        Some(fs) => fs.remount("ro"),
        None => set_mode(&repo_dir, 0o555),
    }
    // Without a mount, a directory without write permission stands in; it binds only processes
    // without CAP_DAC_OVERRIDE (not root).
    let probe = repo_dir.join(&name).join("probe");
    if std::fs::write(&probe, b"x").is_err() {
        let done = Running::start(dir.path(), &["backup", "-o", "json"], &file).wait(limit);
        let problem = if tmpfs.is_some() {
            "Read-only file system"
        } else {
            "Permission denied"
        };
        assert_clean_failure(&done, problem, &repo_dir, limit);
        assert_eq!(backup_ids(&repo_dir, &name), vec![id1.clone()]);
        assert_ok(
            &verify(&file, &id1, true),
            "verify --deep of the earlier backup",
        );
    } else {
        let _ = std::fs::remove_file(&probe);
        eprintln!(
            "neither a mount nor directory permissions refuse writes here: read-only case not run"
        );
    }
    match &tmpfs {
        Some(fs) => fs.remount("rw"),
        None => set_mode(&repo_dir, 0o755),
    }

    let mut produced = concat(&a, &b);
    if tmpfs.is_some() {
        // A full file system: leave 16 KiB, then back up 1 MiB more.
        let filler = mnt.join("filler");
        fill(&filler);
        let c = incompressible(1_000, 2, 1024, 7);
        produce(&plaintext_config(), &topic, &c);
        let done = Running::start(dir.path(), &["backup", "-o", "json"], &file).wait(limit);
        assert_clean_failure(&done, "No space left on device", &repo_dir, limit);
        assert!(
            !done.stderr.contains("retrying"),
            "a full disk is not retried: {}",
            done.stderr
        );
        assert_eq!(backup_ids(&repo_dir, &name), vec![id1.clone()]);
        assert_ok(&verify(&file, &id1, true), "verify --deep after ENOSPC");
        // Space freed: the next run completes what the failed one started.
        std::fs::remove_file(&filler).expect("remove filler");
        produced = concat(&produced, &c);
    }
    let s = json_of(&backup(&file));
    assert_eq!(s["records"], produced.len() as u64, "{s}");
    // The run that hit the full disk had checkpointed its start: this one completes it.
    assert_eq!(s["resumed"], tmpfs.is_some(), "{s}");
    let id_last = s["backupId"].as_str().expect("id").to_string();
    assert_ok(
        &verify(&file, &id_last, true),
        "verify --deep of the last backup",
    );
    assert_ok(
        &verify(&file, &id1, true),
        "verify --deep of the first backup",
    );
    tokio::task::block_in_place(|| {
        restore_exact(dir.path(), &storage, &id1, &topic, "r1", &a, 2);
        restore_exact(dir.path(), &storage, &id_last, &topic, "r2", &produced, 2);
    });
    drop(tmpfs);
    eprintln!("test took {:?}", started.elapsed());
}

/// chmod of `dir` and every directory below it.
fn set_mode(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if mode & 0o200 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        if e.path().is_dir() {
            set_mode(&e.path(), mode);
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Fills the file system holding `path` with a file there, leaving 16 KiB free.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0x5au8; 16 << 10];
    let mut written = 0u64;
    while f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    let _ = f.flush();
    f.set_len(written.saturating_sub(16 << 10))
        .expect("truncate");
    f.sync_all().expect("sync");
}

/// Deletes `topic` and creates it again (a new topic id) with `partitions` partitions.
async fn delete_and_create_again(topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let admin: AdminClient<DefaultClientContext> = plaintext_config().create().expect("admin");
    for r in admin
        .delete_topics(&[topic], &AdminOptions::new())
        .await
        .expect("delete request")
    {
        r.expect("topic deleted");
    }
    let consumer: BaseConsumer = plaintext_config().create().expect("consumer");
    tokio::task::block_in_place(|| {
        wait_until("the topic is gone", Duration::from_secs(30), || {
            consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .is_ok_and(|md| md.topics().first().is_some_and(|t| t.error().is_some()))
        })
    });
    create_topic(&plaintext_config(), topic, partitions, 1, &[]).await;
}

fn relabelled(records: Vec<TestRecord>, value: &[u8]) -> Vec<TestRecord> {
    records
        .into_iter()
        .map(|mut r| {
            r.value = Some(value.to_vec());
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_deleted_and_created_again_starts_a_new_history() {
    let started = Instant::now();
    let dir = TempDir::new("kb-recreate");
    let topic = unique_name("fl-recreate");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let old = sample_records(400, 2);
    produce(&plaintext_config(), &topic, &old);
    let name = unique_name("recreate");
    let target = Target::Filesystem(dir.path().join("repo"));
    let file = write_manifest(
        dir.path(),
        &backup_manifest(&name, &plaintext(), &[&topic], &target),
    );
    let s1 = json_of(&backup(&file));
    let id1 = s1["backupId"].as_str().expect("id").to_string();
    let repo = target.repository();
    let m1 = repo.manifest(&name, &id1).await.expect("manifest");
    let old_id = m1.topics[0].topic_id.clone().expect("topic id recorded");
    // The id is Kafka's own, as its tools print it.
    let described = Command::new(repo_root().join("scripts/kafka-run-class"))
        .args([
            "org.apache.kafka.tools.TopicCommand",
            "--bootstrap-server",
            TestEnv::get().var("KAFKA_BOOTSTRAP"),
            "--describe",
            "--topic",
            &topic,
        ])
        .output()
        .expect("kafka-topics --describe");
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(
        text.contains(&format!("TopicId: {old_id}")),
        "{old_id} vs\n{text}"
    );

    // Delete it and create it again, with more records than before so its end offsets grow.
    delete_and_create_again(&topic, 2).await;
    let new = relabelled(sample_records(1_000, 2), b"recreated");
    produce(&plaintext_config(), &topic, &new);

    let s2 = json_of(&backup(&file));
    let id2 = s2["backupId"].as_str().expect("id").to_string();
    let warnings = s2["warnings"].to_string();
    assert!(
        warnings.contains(&topic)
            && warnings.contains("deleted and created again")
            && warnings.contains(&old_id),
        "the recreation is reported: {s2}"
    );
    assert_eq!(
        (&s2["records"], &s2["newRecords"]),
        (&1000.into(), &1000.into()),
        "{s2}"
    );
    let m2 = repo.manifest(&name, &id2).await.expect("manifest");
    let new_id = m2.topics[0].topic_id.clone().expect("topic id");
    assert_ne!(new_id, old_id);
    let old_segments: Vec<&str> = m1.topics[0]
        .partitions
        .iter()
        .flat_map(|p| &p.segments)
        .map(|s| s.path.as_str())
        .collect();
    for p in &m2.topics[0].partitions {
        assert_eq!((p.start_offset, p.end_offset, p.records), (0, 500, 500));
        assert!(
            p.segments
                .iter()
                .all(|s| !old_segments.contains(&s.path.as_str())),
            "no segment of the old topic in the new history"
        );
    }
    let (_, b1) = read_backup(&repo, &name, &id1).await;
    let (_, b2) = read_backup(&repo, &name, &id2).await;
    for p in 0..2 {
        assert_same(
            &b1[&(topic.clone(), p)],
            &of_partition(&old, p),
            "old topic",
        );
        assert_same(
            &b2[&(topic.clone(), p)],
            &of_partition(&new, p),
            "new topic",
        );
    }

    // The next run continues the new history quietly.
    let s3 = json_of(&backup(&file));
    assert_eq!(s3["uploadedBytes"], 0, "{s3}");
    assert_eq!(s3["previousBackupId"], id2.as_str());
    assert!(
        !s3["warnings"].to_string().contains("created again"),
        "{s3}"
    );

    // Each backup restores exactly its own topic's records.
    let storage = target.storage_json();
    tokio::task::block_in_place(|| {
        restore_exact(dir.path(), &storage, &id1, &topic, "r1", &old, 2);
        restore_exact(dir.path(), &storage, &id2, &topic, "r2", &new, 2);
    });
    eprintln!("test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_created_again_while_a_run_was_unfinished_is_not_mixed_in() {
    let started = Instant::now();
    let dir = TempDir::new("kb-recreate-mid");
    let topic = unique_name("fl-recreate-mid");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    let old = sample_records(6_000, 1);
    produce(&plaintext_config(), &topic, &old);
    let name = unique_name("recreate-mid");
    let SlowBackup { target, file, .. } =
        SlowBackup::new(dir.path(), &name, &plaintext(), &[&topic], 1500);
    let repo = target.repository();

    // A run killed with kill -9 after it checkpointed a segment of the old topic.
    let mut run = Running::start(dir.path(), &["backup", "-o", "json"], &file);
    wait_for_checkpointed_segment(&repo, &name, &mut run).await;
    run.child.kill().expect("kill -9");
    let _ = run.child.wait();

    delete_and_create_again(&topic, 1).await;
    let new = relabelled(sample_records(8_000, 1), b"recreated");
    produce(&plaintext_config(), &topic, &new);

    // Resumed: the old topic's part ends where it was read; nothing of the new topic enters it.
    let s1 = json_of(&backup(&file));
    assert_eq!(s1["resumed"], true, "{s1}");
    assert!(
        s1["warnings"]
            .to_string()
            .contains("deleted and created again while run"),
        "{s1}"
    );
    let id1 = s1["backupId"].as_str().expect("id").to_string();
    let (m1, b1) = read_backup(&repo, &name, &id1).await;
    let got = &b1[&(topic.clone(), 0)];
    let n = got.len();
    assert!(n > 0 && n < old.len(), "{n} records");
    assert_same(
        got,
        &old[..n],
        "the old topic's records read before the kill",
    );
    let p = &m1.topics[0].partitions[0];
    assert_eq!((p.start_offset, p.end_offset), (0, n as i64));

    // The next run starts the new topic's history.
    let s2 = json_of(&backup(&file));
    assert!(
        s2["warnings"]
            .to_string()
            .contains("deleted and created again since backup"),
        "{s2}"
    );
    let id2 = s2["backupId"].as_str().expect("id").to_string();
    let (_, b2) = read_backup(&repo, &name, &id2).await;
    assert_same(&b2[&(topic.clone(), 0)], &new, "the new topic");

    let storage = target.storage_json();
    tokio::task::block_in_place(|| {
        restore_exact(dir.path(), &storage, &id1, &topic, "r1", &old[..n], 1);
        restore_exact(dir.path(), &storage, &id2, &topic, "r2", &new, 1);
    });
    eprintln!("test took {:?}", started.elapsed());
}
