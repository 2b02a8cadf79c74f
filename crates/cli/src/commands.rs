//! The subcommands.

use std::sync::Arc;

use anyhow::{Context, Result};
use kafka_backup_api::backup::KafkaBackup;
use kafka_backup_engine::Error as EngineError;
use kafka_backup_engine::backup::{self, BackupOptions, BackupSummary, Progress};
use kafka_backup_engine::encryption::KeyOverride;
use kafka_backup_engine::limits::Backoff;
use kafka_backup_engine::repo::Repository;
use kafka_backup_engine::secrets::SecretStore;
use kafka_backup_engine::storage::StorageOptions;
use serde::Serialize;
use tokio::sync::watch;

use crate::manifest::{self, ManifestError};
use crate::output;
use crate::progress::Reporter;
use crate::{ManifestArgs, OutputFormat};

/// Exit status for an error: 2 for bad input (manifest, spec, secrets, nothing to back up), 130
/// when interrupted, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ManifestError>().is_some() {
        return 2;
    }
    match e.downcast_ref::<EngineError>() {
        Some(
            EngineError::InvalidSpec { .. }
            | EngineError::SecretKeyMissing { .. }
            | EngineError::SecretKeyUnreadable { .. }
            | EngineError::NoTopicsMatch { .. }
            | EngineError::BackupNotFound { .. },
        ) => 2,
        Some(EngineError::Interrupted) => 130,
        _ => 1,
    }
}

/// The error with its causes, one clause each.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn storage_options(args: &ManifestArgs) -> StorageOptions {
    StorageOptions {
        pvc_root: args.pvc_root.clone(),
        ..StorageOptions::default()
    }
}

/// Stops the run on SIGINT or SIGTERM: it checkpoints what is stored and exits.
pub(crate) fn stop_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        kafka_backup_engine::shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

pub async fn backup(args: &ManifestArgs, continuous: bool, workers: usize) -> Result<()> {
    let kb: KafkaBackup = manifest::load(&args.file, "KafkaBackup")?;
    let secrets = SecretStore::new(&args.secrets_dir);
    let options = BackupOptions {
        continuous,
        workers,
        storage: storage_options(args),
        stop: Some(stop_on_signals()),
        encryption_key: KeyOverride::from_env(),
        ..BackupOptions::default()
    };
    let progress = Arc::new(Progress::default());
    let reporter = Reporter::start(progress.clone(), "backup");
    let result = backup::run(&kb, &secrets, &options, progress).await;
    drop(reporter);
    let summary = result?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        OutputFormat::Text => print!("{}", backup_text(&summary)),
    }
    Ok(())
}

fn backup_text(s: &BackupSummary) -> String {
    let mut out = format!(
        "backup {} {} in {:.1}s\n  storage:  {}\n  records:  {} ({} new)\n  stored:   {} ({} uploaded, {} raw)\n  segments: {} new, {} reused{}\n",
        s.backup_id,
        if s.resumed {
            "completed (resumed)"
        } else {
            "completed"
        },
        s.duration_secs,
        s.storage,
        s.records,
        s.new_records,
        output::bytes(s.stored_bytes),
        output::bytes(s.uploaded_bytes),
        output::bytes(s.raw_bytes),
        s.new_segments,
        s.reused_segments,
        s.previous_backup_id
            .as_ref()
            .map(|p| format!("\n  continues {p}"))
            .unwrap_or_default(),
    );
    out.push_str(&format!("  consumer groups: {}\n", s.consumer_groups));
    let rows: Vec<Vec<String>> = s
        .topics
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.partitions.to_string(),
                t.records.to_string(),
                t.new_records.to_string(),
                output::bytes(t.stored_bytes),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&output::table(
        &["TOPIC", "PARTITIONS", "RECORDS", "NEW", "STORED"],
        &rows,
    ));
    let cb = &s.circuit_breaker;
    if cb.enabled || cb.kafka_failures + cb.storage_failures > 0 {
        out.push_str(&format!(
            "\ncircuit breaker: {}; kafka {} failures, opened {} times; storage {} failures, opened {} times\n",
            if cb.enabled { "enabled" } else { "disabled" },
            cb.kafka_failures,
            cb.kafka_opened,
            cb.storage_failures,
            cb.storage_opened
        ));
    }
    if let Some(r) = &s.retention {
        out.push_str(&format!(
            "retention: kept {} backups, deleted {} ({} segments, {})\n",
            r.kept_backups.len(),
            r.deleted_backups.len(),
            r.deleted_segments,
            output::bytes(r.deleted_bytes)
        ));
    }
    for g in &s.gaps {
        out.push_str(&format!(
            "gap: {}/{} offsets {}..{} ({})\n",
            g.topic, g.partition, g.from, g.to, g.reason
        ));
    }
    for w in &s.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

pub async fn restore(args: &ManifestArgs, dry_run: bool, workers: usize) -> Result<()> {
    use kafka_backup_api::restore::KafkaRestore;
    use kafka_backup_engine::restore::{self, RestoreOptions};
    let kr: KafkaRestore = manifest::load(&args.file, "KafkaRestore")?;
    let secrets = SecretStore::new(&args.secrets_dir);
    let options = RestoreOptions {
        dry_run,
        workers,
        storage: storage_options(args),
        stop: Some(stop_on_signals()),
        encryption_key: KeyOverride::from_env(),
        ..RestoreOptions::default()
    };
    let progress = Arc::new(restore::Progress::default());
    let reporter = Reporter::start_restore(progress.clone());
    let result = restore::run(&kr, &secrets, &options, progress).await;
    drop(reporter);
    let s = result?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        OutputFormat::Text => {
            let verb = if s.dry_run {
                "would restore"
            } else {
                "restored"
            };
            println!(
                "{} {verb} {} records from {} in {:.1}s{}",
                s.restore_name,
                s.restored_records,
                s.backup_id,
                s.duration_secs,
                if s.resumed { " (resumed)" } else { "" }
            );
            match (s.pitr_from_timestamp_millis, s.pitr_timestamp_millis) {
                (None, Some(t)) => {
                    println!("  point in time: {} ({t} ms)", output::millis(Some(t)))
                }
                (Some(f), None) => {
                    println!("  from time: {} ({f} ms) on", output::millis(Some(f)))
                }
                (Some(f), Some(t)) => println!(
                    "  time window: {} ({f} ms) to {} ({t} ms)",
                    output::millis(Some(f)),
                    output::millis(Some(t))
                ),
                (None, None) => {}
            }
            if !s.topics_created.is_empty() {
                println!(
                    "  topics {}: {}",
                    if s.dry_run { "to create" } else { "created" },
                    s.topics_created.join(", ")
                );
            }
            let rows: Vec<Vec<String>> = s
                .restored_topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(move |p| {
                        vec![
                            t.source.clone(),
                            t.name.clone(),
                            p.partition.to_string(),
                            p.records.to_string(),
                            if s.dry_run {
                                "-".to_string()
                            } else {
                                format!("{}..{}", p.target_start_offset, p.target_end_offset)
                            },
                        ]
                    })
                })
                .collect();
            println!();
            print!(
                "{}",
                output::table(
                    &["SOURCE", "TARGET", "PARTITION", "RECORDS", "TARGET OFFSETS"],
                    &rows
                )
            );
            if let Some(m) = &s.offset_map {
                println!("offset map: {m}");
            }
            if let Some(r) = &s.offset_reset {
                println!(
                    "\nconsumer groups ({}, {}):",
                    serde_json::to_value(r.strategy)?.as_str().unwrap_or("?"),
                    r.phase
                );
                print!(
                    "{}",
                    group_table(
                        "OFFSET",
                        r.groups.iter().flat_map(|g| {
                            g.offsets
                                .iter()
                                .map(move |o| (&g.group_id, &o.topic, o.partition, o.offset))
                        })
                    )
                );
            }
            if let Some(id) = &s.rollback_snapshot_id {
                println!("rollback snapshot: {id}");
            }
            for w in &s.warnings {
                println!("warning: {w}");
            }
        }
    }
    Ok(())
}

pub async fn verify(args: &ManifestArgs, backup_id: &str, deep: bool) -> Result<()> {
    let repo = open_repository(args).await?;
    let manifest = repo.find_manifest(backup_id).await?;
    // Only deep verification reads records, and needs the key of an encrypted backup.
    let key = match deep {
        true => kafka_backup_engine::encryption::key_for_reading(
            &manifest,
            manifest::load_encryption(&args.file)?.as_ref(),
            &SecretStore::new(&args.secrets_dir),
            KeyOverride::from_env().as_ref(),
            kafka_backup_engine::encryption::Purpose::Verify,
        )?,
        false => None,
    };
    let report = kafka_backup_engine::verify::verify(&repo, &manifest, deep, key.as_ref()).await?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => {
            println!(
                "{} {} ({}): {} segments, {}{}",
                report.backup_id,
                if report.ok() {
                    "verified"
                } else {
                    "FAILED verification"
                },
                if deep {
                    "deep"
                } else {
                    "presence, size, SHA-256"
                },
                report.segments,
                output::bytes(report.bytes),
                if deep {
                    format!(", {} records decoded", report.records)
                } else {
                    String::new()
                }
            );
            for p in &report.problems {
                println!("  {}: {}", p.object, p.problem);
            }
        }
    }
    if !report.ok() {
        anyhow::bail!(
            "backup {} failed verification: {} problem{} (first: {}: {})",
            report.backup_id,
            report.problems.len(),
            if report.problems.len() == 1 { "" } else { "s" },
            report.problems[0].object,
            report.problems[0].problem
        );
    }
    Ok(())
}

/// Prints every CRD as one multi-document YAML stream.
pub fn crd() -> Result<()> {
    let mut out = String::from(
        "# CustomResourceDefinitions of kafka-backup, generated by `kafka-backup crd`; do not edit.\n",
    );
    for crd in kafka_backup_api::crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    print!("{out}");
    Ok(())
}

pub async fn offsets(command: crate::OffsetsCommand) -> Result<()> {
    use crate::OffsetsCommand as C;
    use kafka_backup_api::offsets::{KafkaOffsetReset, RollbackOperation};
    use kafka_backup_engine::offsets;
    let timeout = std::time::Duration::from_secs(30);
    let (args, report) = match command {
        C::List(args) => {
            let repo = offsets_repository(&args).await?;
            let snaps = offsets::list_snapshots(&repo).await?;
            match args.manifest.output {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "storage": repo.description(),
                        "snapshots": snaps.iter().map(|(id, size)| serde_json::json!({"snapshotId": id, "size": size})).collect::<Vec<_>>(),
                    }))?
                ),
                OutputFormat::Text => {
                    if snaps.is_empty() {
                        println!("no snapshots at {}", repo.description());
                    } else {
                        let rows: Vec<Vec<String>> = snaps
                            .iter()
                            .map(|(id, size)| vec![id.clone(), output::bytes(*size)])
                            .collect();
                        print!("{}", output::table(&["SNAPSHOT ID", "SIZE"], &rows));
                    }
                }
            }
            return Ok(());
        }
        C::Show { snapshot_id, args } => {
            let repo = offsets_repository(&args).await?;
            let snap = offsets::load_snapshot(&repo, &snapshot_id).await?;
            match args.manifest.output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&snap)?),
                OutputFormat::Text => {
                    println!(
                        "snapshot: {}\ncreated:  {}",
                        snap.snapshot_id, snap.created_time
                    );
                    let rows: Vec<Vec<String>> = snap
                        .groups
                        .iter()
                        .flat_map(|g| {
                            g.offsets.iter().map(move |o| {
                                vec![
                                    g.group_id.clone(),
                                    o.topic.clone(),
                                    o.partition.to_string(),
                                    o.offset.to_string(),
                                    o.metadata.clone().unwrap_or_default(),
                                ]
                            })
                        })
                        .collect();
                    print!(
                        "{}",
                        output::table(
                            &["GROUP", "TOPIC", "PARTITION", "OFFSET", "METADATA"],
                            &rows
                        )
                    );
                }
            }
            return Ok(());
        }
        C::Reset(args) => {
            let kor: KafkaOffsetReset = manifest::load(&args.manifest.file, "KafkaOffsetReset")?;
            let default = default_storage(&args)?;
            let secrets = SecretStore::new(&args.manifest.secrets_dir);
            let options = storage_options(&args.manifest);
            let r = offsets::reset(&kor, &secrets, &options, default.as_ref(), timeout).await?;
            (args, r)
        }
        C::Snapshot(args) => rollback_kind(args, RollbackOperation::Snapshot, timeout).await?,
        C::Rollback(args) => rollback_kind(args, RollbackOperation::Rollback, timeout).await?,
        C::Verify(args) => rollback_kind(args, RollbackOperation::Verify, timeout).await?,
    };
    match args.manifest.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print_offsets_report(&report),
    }
    if report.failed() {
        let bad: Vec<&str> = report
            .groups
            .iter()
            .filter(|g| g.outcome == "failure" || g.outcome == "differs")
            .map(|g| g.group_id.as_str())
            .collect();
        anyhow::bail!(
            "{} of {} groups {}: {}",
            bad.len(),
            report.groups.len(),
            if report.operation == "verify" {
                "differ"
            } else {
                "failed"
            },
            bad.join(", ")
        );
    }
    Ok(())
}

/// The text form of an offsets operation's report: one line for the operation, then a table
/// with each group's outcome and its partitions' offsets before and after.
fn print_offsets_report(report: &kafka_backup_engine::offsets::OffsetsReport) {
    println!(
        "{} {}{}{}",
        report.operation,
        report.name,
        if report.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        },
        report
            .snapshot_id
            .as_ref()
            .map(|s| format!(", snapshot {s}"))
            .unwrap_or_default()
    );
    let rows: Vec<Vec<String>> = report
        .groups
        .iter()
        .flat_map(|g| {
            let head = vec![
                g.group_id.clone(),
                g.outcome.clone(),
                String::new(),
                String::new(),
                String::new(),
                g.message.clone().unwrap_or_default(),
            ];
            std::iter::once(head).chain(g.offsets.iter().map(|o| {
                vec![
                    String::new(),
                    String::new(),
                    format!("{}/{}", o.topic, o.partition),
                    o.from.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    o.to.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
                    String::new(),
                ]
            }))
        })
        .collect();
    print!(
        "{}",
        output::table(
            &["GROUP", "OUTCOME", "PARTITION", "FROM", "TO", "MESSAGE"],
            &rows
        )
    );
    if let Some(v) = report.verified {
        println!(
            "verified: {}",
            if v {
                "every group matches the snapshot"
            } else {
                "some groups differ from the snapshot"
            }
        );
    }
}

/// Runs a KafkaOffsetRollback manifest whose operation must be `op` (the subcommand).
async fn rollback_kind(
    args: crate::OffsetArgs,
    op: kafka_backup_api::offsets::RollbackOperation,
    timeout: std::time::Duration,
) -> Result<(
    crate::OffsetArgs,
    kafka_backup_engine::offsets::OffsetsReport,
)> {
    use kafka_backup_api::offsets::KafkaOffsetRollback;
    let korb: KafkaOffsetRollback = manifest::load(&args.manifest.file, "KafkaOffsetRollback")?;
    if korb.spec.operation != op {
        let name = |o| {
            serde_json::to_value(o)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        return Err(ManifestError(format!(
            "{}: spec.operation is {}; run `kafka-backup offsets {}` for it",
            args.manifest.file.display(),
            name(korb.spec.operation),
            name(korb.spec.operation)
        ))
        .into());
    }
    let default = default_storage(&args)?;
    let secrets = SecretStore::new(&args.manifest.secrets_dir);
    let options = storage_options(&args.manifest);
    let report = kafka_backup_engine::offsets::rollback(
        &korb,
        &secrets,
        &options,
        default.as_ref(),
        timeout,
    )
    .await?;
    Ok((args, report))
}

fn default_storage(
    args: &crate::OffsetArgs,
) -> Result<Option<kafka_backup_api::storage::StorageSpec>> {
    match &args.default_storage {
        None => Ok(None),
        Some(p) => Ok(Some(read_default_storage(p)?)),
    }
}

/// Reads a default storage file: a `storage` spec, optionally under a top-level `storage` key.
pub fn read_default_storage(p: &std::path::Path) -> Result<kafka_backup_api::storage::StorageSpec> {
    {
        {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
                .map_err(|e| ManifestError(format!("{}: not valid YAML: {e}", p.display())))?;
            let storage = value.get("storage").cloned().unwrap_or(value);
            Ok(serde_path_to_error::deserialize(storage).map_err(|e| {
                ManifestError(format!(
                    "{}: storage.{}: {}",
                    p.display(),
                    e.path(),
                    e.inner()
                ))
            })?)
        }
    }
}

async fn offsets_repository(args: &crate::OffsetArgs) -> Result<Repository> {
    let own = manifest::load_storage_if_set(&args.manifest.file)?;
    let default = default_storage(args)?;
    Ok(Repository::open_or_default(
        own.as_ref(),
        default.as_ref(),
        "to find offset snapshots",
        &SecretStore::new(&args.manifest.secrets_dir),
        &storage_options(&args.manifest),
    )?)
}

/// A GROUP / TOPIC / PARTITION / <offset column> table.
fn group_table<'a>(
    offset_column: &str,
    rows: impl Iterator<Item = (&'a String, &'a String, i32, i64)>,
) -> String {
    let rows: Vec<Vec<String>> = rows
        .map(|(g, t, p, o)| vec![g.clone(), t.clone(), p.to_string(), o.to_string()])
        .collect();
    output::table(&["GROUP", "TOPIC", "PARTITION", offset_column], &rows)
}

async fn open_repository(args: &ManifestArgs) -> Result<Repository> {
    let spec = manifest::load_storage(&args.file)?;
    let secrets = SecretStore::new(&args.secrets_dir);
    Ok(Repository::open(
        "spec.storage",
        &spec,
        &secrets,
        &storage_options(args),
        Backoff::default(),
    )?)
}

/// One line of `list`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListedBackup {
    backup_id: String,
    backup_name: String,
    start_time: String,
    completion_time: String,
    topics: u64,
    partitions: u64,
    records: u64,
    stored_bytes: u64,
    /// The key id of an encrypted backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_key_id: Option<String>,
}

pub async fn list(args: &ManifestArgs, only: Option<&str>) -> Result<()> {
    let repo = open_repository(args).await?;
    let names = match only {
        Some(n) => vec![n.to_string()],
        None => repo.backup_names().await?,
    };
    let mut listed = Vec::new();
    let mut unfinished = Vec::new();
    for name in &names {
        for id in repo.backup_ids(name).await? {
            let m = repo.manifest(name, &id).await?;
            listed.push(ListedBackup {
                backup_id: m.backup_id,
                backup_name: m.backup_name,
                start_time: m.start_time,
                completion_time: m.completion_time,
                topics: m.totals.topics,
                partitions: m.totals.partitions,
                records: m.totals.records,
                stored_bytes: m.totals.stored_bytes,
                encryption_key_id: m.encryption.map(|e| e.key_id),
            });
        }
        unfinished.extend(repo.checkpoint_ids(name).await?);
    }
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "storage": repo.description(),
                "backups": listed,
                "unfinished": unfinished,
            }))?
        ),
        OutputFormat::Text => {
            if listed.is_empty() {
                println!("no backups at {}", repo.description());
            } else {
                let rows: Vec<Vec<String>> = listed
                    .iter()
                    .map(|b| {
                        vec![
                            b.backup_id.clone(),
                            b.completion_time.clone(),
                            b.topics.to_string(),
                            b.partitions.to_string(),
                            b.records.to_string(),
                            output::bytes(b.stored_bytes),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    output::table(
                        &[
                            "BACKUP ID",
                            "COMPLETED",
                            "TOPICS",
                            "PARTITIONS",
                            "RECORDS",
                            "SIZE"
                        ],
                        &rows
                    )
                );
            }
            for id in unfinished {
                println!("unfinished run (resumes on the next backup): {id}");
            }
        }
    }
    Ok(())
}

pub async fn describe(args: &ManifestArgs, backup_id: &str) -> Result<()> {
    let repo = open_repository(args).await?;
    let m = repo.find_manifest(backup_id).await?;
    match args.output {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&m)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("storage".into(), repo.description().into());
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Text => {
            println!("backup:     {}", m.backup_id);
            println!("storage:    {}", repo.description());
            println!("started:    {}", m.start_time);
            println!("completed:  {}", m.completion_time);
            if let Some(p) = &m.previous_backup_id {
                println!("continues:  {p}");
            }
            if let Some(c) = &m.source_cluster_id {
                println!("source cluster: {c}");
            }
            if let Some(c) = &m.kafka_cluster_id {
                println!("kafka cluster id: {c}");
            }
            if let Some(e) = &m.encryption {
                println!("encryption: {}, key id {}", e.algorithm, e.key_id);
            }
            println!(
                "compression: {}{}",
                serde_json::to_value(m.compression.codec)?
                    .as_str()
                    .unwrap_or("?"),
                m.compression
                    .level
                    .map(|l| format!(" level {l}"))
                    .unwrap_or_default()
            );
            println!(
                "totals:     {} topics, {} partitions, {} records, {} stored ({} raw), {} segments",
                m.totals.topics,
                m.totals.partitions,
                m.totals.records,
                output::bytes(m.totals.stored_bytes),
                output::bytes(m.totals.raw_bytes),
                m.totals.segments
            );
            println!();
            let mut rows = Vec::new();
            for t in &m.topics {
                for p in &t.partitions {
                    rows.push(vec![
                        t.name.clone(),
                        p.partition.to_string(),
                        format!("{}..{}", p.start_offset, p.end_offset),
                        p.records.to_string(),
                        output::millis(p.min_timestamp),
                        output::millis(p.max_timestamp),
                        p.segments.len().to_string(),
                        output::bytes(p.segments.iter().map(|s| s.size).sum()),
                        if p.gaps.is_empty() {
                            String::new()
                        } else {
                            p.gaps
                                .iter()
                                .map(|g| format!("{}..{}", g.from, g.to))
                                .collect::<Vec<_>>()
                                .join(",")
                        },
                    ]);
                }
            }
            print!(
                "{}",
                output::table(
                    &[
                        "TOPIC",
                        "PARTITION",
                        "OFFSETS",
                        "RECORDS",
                        "FIRST TIME",
                        "LAST TIME",
                        "SEGMENTS",
                        "SIZE",
                        "GAPS"
                    ],
                    &rows
                )
            );
            for t in &m.topics {
                if !t.configs.is_empty() {
                    let c: Vec<String> =
                        t.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("configs of {}: {}", t.name, c.join(", "));
                }
            }
            if !m.consumer_groups.is_empty() {
                println!();
                print!(
                    "{}",
                    group_table(
                        "COMMITTED",
                        m.consumer_groups.iter().flat_map(|g| {
                            g.offsets
                                .iter()
                                .map(move |o| (&g.group_id, &o.topic, o.partition, o.offset))
                        })
                    )
                );
            }
        }
    }
    Ok(())
}
