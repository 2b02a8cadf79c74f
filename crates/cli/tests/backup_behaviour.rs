//! How a backup run behaves over time and under trouble: continuous mode, rate limits, the circuit
//! breaker, topics deleted or grown between and during runs, retention gaps, credential chains.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_backup_format::GapReason;
use kafka_backup_testkit::kafka::{create_topic, plaintext_config, produce, sample_records};
use kafka_backup_testkit::poll::wait_for;
use kafka_backup_testkit::{TestEnv, unique_name};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;

fn admin() -> AdminClient<DefaultClientContext> {
    plaintext_config().create().expect("admin client")
}

#[tokio::test]
async fn rate_limit_is_global_across_partitions() {
    let dir = TempDir::new("kb-rate");
    let topic = unique_name("bk-rate");
    create_topic(&plaintext_config(), &topic, 4, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(1200, 4));
    let name = unique_name("rate");
    let target = Target::Filesystem(dir.path().join("repo"));
    let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    // 1200 records at 400/s over 4 partitions read in parallel: at least 2 s in all (the bucket
    // lets one second's worth through at once), not 0.5 s per partition.
    m["spec"]["rateLimit"] = serde_json::json!({"recordsPerSecond": 400});
    let started = Instant::now();
    let s = json_of(&backup(&write_manifest(dir.path(), &m)));
    let took = started.elapsed();
    assert_eq!(s["records"], 1200);
    assert!(
        took >= Duration::from_millis(1900),
        "1200 records at 400/s took only {took:?}"
    );

    let name = unique_name("rate-bytes");
    let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    let bytes: u64 = sample_records(1200, 4)
        .iter()
        .map(|r| {
            (r.key.as_ref().map_or(0, Vec::len)
                + r.value.as_ref().map_or(0, Vec::len)
                + r.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()) as u64
        })
        .sum();
    m["spec"]["rateLimit"] = serde_json::json!({"bytesPerSecond": bytes / 3});
    let started = Instant::now();
    json_of(&backup(&write_manifest(dir.path(), &m)));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "{bytes} bytes at {}/s took only {took:?}",
        bytes / 3
    );
}

#[tokio::test]
async fn circuit_breaker_opens_on_an_unreachable_store_and_the_run_fails_in_bounded_time() {
    let dir = TempDir::new("kb-cb");
    let topic = unique_name("bk-cb");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(10, 1));
    let mut m = backup_manifest(
        &unique_name("cb"),
        &plaintext(),
        &[&topic],
        &Target::S3 { prefix: "x".into() },
    );
    m["spec"]["storage"]["s3"]["endpoint"] = "http://127.0.0.1:1".into();
    m["spec"]["circuitBreaker"] =
        serde_json::json!({"enabled": true, "failureThreshold": 2, "resetTimeoutSecs": 1});
    let started = Instant::now();
    let out = backup(&write_manifest(dir.path(), &m));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("circuit open"), "{stderr}");
    assert!(stderr.contains("circuit half-open"), "{stderr}");
    assert!(stderr.contains("error: storage list of s3://"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn continuous_mode_commits_a_backup_per_interval_until_stopped() {
    let dir = TempDir::new("kb-cont");
    let topic = unique_name("bk-cont");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(100, 1));
    let name = unique_name("cont");
    let target = Target::Filesystem(dir.path().join("repo"));
    let m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    let child = cli()
        .args(["backup", "--continuous", "-o", "json", "-f"])
        .arg(write_manifest(dir.path(), &m))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let repo = target.repository();
    let (repo, name) = (&repo, &name);
    wait_for("a first backup", Duration::from_secs(60), move || async move {
        (!repo.backup_ids(name).await.expect("ids").is_empty()).then_some(())
    })
    .await;
    produce(&plaintext_config(), &topic, &sample_records(50, 1));
    // A later backup picks the new records up without restarting the process.
    wait_for(
        "a backup of the new records",
        Duration::from_secs(60),
        move || async move {
            let ids = repo.backup_ids(name).await.expect("ids");
            let last = ids.last().expect("one backup");
            let m = repo.manifest(name, last).await.expect("manifest");
            (m.totals.records == 150).then_some(())
        },
    )
    .await;
    // SIGTERM stops it cleanly.
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{:?}", out.status);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    assert!(summary["records"].as_u64().expect("records") >= 150);
    assert!(repo.backup_ids(name).await.expect("ids").len() >= 2);
}

#[tokio::test]
async fn new_partitions_and_topics_are_picked_up_by_the_next_run() {
    let dir = TempDir::new("kb-grow");
    let base = unique_name("bk-grow");
    let t1 = format!("{base}-a");
    create_topic(&plaintext_config(), &t1, 1, 1, &[]).await;
    produce(&plaintext_config(), &t1, &sample_records(20, 1));
    let name = unique_name("grow");
    let target = Target::Filesystem(dir.path().join("repo"));
    let mut m = backup_manifest(&name, &plaintext(), &[], &target);
    m["spec"]["topics"] = serde_json::json!([format!("{base}-*")]);
    let file = write_manifest(dir.path(), &m);
    json_of(&backup(&file));

    admin()
        .create_partitions(&[NewPartitions::new(&t1, 3)], &AdminOptions::new())
        .await
        .expect("add partitions");
    let t2 = format!("{base}-b");
    create_topic(&plaintext_config(), &t2, 2, 1, &[]).await;
    produce(&plaintext_config(), &t1, &sample_records(30, 3));
    produce(&plaintext_config(), &t2, &sample_records(10, 2));
    let s = json_of(&backup(&file));
    assert_eq!(s["records"], 60, "{s}");
    let (manifest, stored) = read_backup(
        &target.repository(),
        &name,
        s["backupId"].as_str().expect("id"),
    )
    .await;
    let a = manifest
        .topics
        .iter()
        .find(|t| t.name == t1)
        .expect("topic a");
    assert_eq!((a.partition_count, a.partitions.len()), (3, 3));
    assert_eq!(stored[&(t1.clone(), 2)].len(), 10);
    assert_eq!(stored[&(t2.clone(), 1)].len(), 5);
}

#[tokio::test]
async fn records_deleted_by_retention_before_a_run_are_recorded_as_a_gap() {
    let dir = TempDir::new("kb-gap");
    let topic = unique_name("bk-gap");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(100, 1));
    let name = unique_name("gap");
    let target = Target::Filesystem(dir.path().join("repo"));
    let file = write_manifest(
        dir.path(),
        &backup_manifest(&name, &plaintext(), &[&topic], &target),
    );
    json_of(&backup(&file));
    produce(&plaintext_config(), &topic, &sample_records(100, 1));
    // Records 100..150 disappear before the next run sees them.
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(150))
        .expect("tpl");
    admin()
        .delete_records(&tpl, &AdminOptions::new())
        .await
        .expect("delete records");
    let s = json_of(&backup(&file));
    assert_eq!(s["newRecords"], 50, "{s}");
    assert_eq!(s["gaps"][0]["from"], 100);
    assert_eq!(s["gaps"][0]["to"], 150);
    let (manifest, stored) = read_backup(
        &target.repository(),
        &name,
        s["backupId"].as_str().expect("id"),
    )
    .await;
    let p = &manifest.topics[0].partitions[0];
    assert_eq!((p.start_offset, p.end_offset, p.records), (0, 200, 150));
    assert_eq!(p.gaps[0].reason, GapReason::LogStart);
    let offsets: Vec<i64> = stored[&(topic.clone(), 0)]
        .iter()
        .map(|r| r.offset)
        .collect();
    assert_eq!(offsets, (0..100).chain(150..200).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_topic_deleted_during_the_run_is_reported() {
    let dir = TempDir::new("kb-del");
    let base = unique_name("bk-del");
    let keep = format!("{base}-keep");
    let gone = format!("{base}-gone");
    for t in [&keep, &gone] {
        create_topic(&plaintext_config(), t, 1, 1, &[]).await;
        produce(&plaintext_config(), t, &sample_records(2000, 1));
    }
    let name = unique_name("del");
    let target = Target::Filesystem(dir.path().join("repo"));
    let mut m = backup_manifest(&name, &plaintext(), &[], &target);
    m["spec"]["topics"] = serde_json::json!([format!("{base}-*")]);
    m["spec"]["rateLimit"] = serde_json::json!({"recordsPerSecond": 500});
    let child = cli()
        .args(["backup", "-o", "json", "-f"])
        .arg(write_manifest(dir.path(), &m))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Deleted once the run has stored some of it, so that it is deleted while being read.
    let repo = target.repository();
    let (repo, name_ref, gone_ref) = (&repo, &name, &gone);
    wait_for(
        "records of the topic to delete in a checkpoint",
        Duration::from_secs(60),
        move || async move {
            let ids = repo.checkpoint_ids(name_ref).await.ok()?;
            let cp = repo.checkpoint(name_ref, ids.first()?).await.ok()?;
            let t = cp.topics.iter().find(|t| &t.name == gone_ref)?;
            t.partitions.iter().any(|p| p.records > 0).then_some(())
        },
    )
    .await;
    admin()
        .delete_topics(&[&gone], &AdminOptions::new())
        .await
        .expect("delete topic");
    let out = child.wait_with_output().expect("wait");
    let s = json_of(&out);
    let warnings = s["warnings"].to_string();
    assert!(
        warnings.contains(&gone) && warnings.contains("deleted during the backup"),
        "{s}"
    );
    let (_, stored) = read_backup(
        &target.repository(),
        &name,
        s["backupId"].as_str().expect("id"),
    )
    .await;
    assert_eq!(stored[&(keep.clone(), 0)].len(), 2000);
    assert!(stored[&(gone.clone(), 0)].len() < 2000);
}

#[tokio::test]
async fn s3_credentials_from_the_environment_and_azure_sas_tokens_work() {
    let env = TestEnv::get();
    let dir = TempDir::new("kb-creds");
    let topic = unique_name("bk-creds");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(50, 1));

    // No credentialsSecret: the standard AWS chain (here: environment variables).
    let name = unique_name("envcreds");
    let target = Target::S3 {
        prefix: unique_name("bk-env"),
    };
    let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    m["spec"]["storage"]["s3"]
        .as_object_mut()
        .expect("s3")
        .remove("credentialsSecret");
    let out = cli()
        .env("AWS_ACCESS_KEY_ID", env.file_contents("S3_ACCESS_KEY_FILE"))
        .env(
            "AWS_SECRET_ACCESS_KEY",
            env.file_contents("S3_SECRET_KEY_FILE"),
        )
        .args(["backup", "-o", "json", "-f"])
        .arg(write_manifest(dir.path(), &m))
        .output()
        .expect("run");
    let s = json_of(&out);
    assert_eq!(s["records"], 50);
    read_backup(
        &target.repository(),
        &name,
        s["backupId"].as_str().expect("id"),
    )
    .await;

    // Azure with a SAS token instead of the account key.
    let name = unique_name("sas");
    let target = Target::Azure {
        prefix: unique_name("bk-sas"),
    };
    let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    let az = m["spec"]["storage"]["azure"]
        .as_object_mut()
        .expect("azure");
    az.remove("credentialsSecret");
    az.insert(
        "sasTokenSecret".into(),
        serde_json::json!({"name": "azure-sas"}),
    );
    let s = json_of(&backup(&write_manifest(dir.path(), &m)));
    assert_eq!(s["records"], 50);
    read_backup(
        &target.repository(),
        &name,
        s["backupId"].as_str().expect("id"),
    )
    .await;

    // Two Azure authentication methods at once are refused, naming both.
    let mut m = backup_manifest(&unique_name("two"), &plaintext(), &[&topic], &target);
    m["spec"]["storage"]["azure"]["sasTokenSecret"] = serde_json::json!({"name": "azure-sas"});
    let out = backup(&write_manifest(dir.path(), &m));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("spec.storage.azure") && err.contains("credentialsSecret and sasTokenSecret"),
        "{err}"
    );
}

#[tokio::test]
async fn backs_up_over_sasl_ssl_and_mutual_tls_and_records_the_source() {
    use kafka_backup_api::kafka::SaslMechanism;
    use kafka_backup_testkit::kafka::Listener;
    let dir = TempDir::new("kb-sec");
    let topic = unique_name("bk-sec");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let records = sample_records(300, 2);
    produce(&plaintext_config(), &topic, &records);
    for listener in [
        Listener::SaslSsl(SaslMechanism::ScramSha512),
        Listener::Ssl,
        Listener::SaslPlaintext(SaslMechanism::Plain),
    ] {
        let name = unique_name("sec");
        let target = Target::Filesystem(dir.path().join(&name));
        let mut m = backup_manifest(&name, &listener.cluster_spec(), &[&topic], &target);
        m["spec"]["sourceClusterId"] = "production-us-west-2".into();
        m["spec"]["includeOffsetHeaders"] = true.into();
        let s = json_of(&backup(&write_manifest(dir.path(), &m)));
        let (manifest, stored) = read_backup(
            &target.repository(),
            &name,
            s["backupId"].as_str().expect("id"),
        )
        .await;
        assert_eq!(
            manifest.source_cluster_id.as_deref(),
            Some("production-us-west-2")
        );
        assert!(manifest.include_offset_headers);
        assert!(manifest.kafka_cluster_id.is_some());
        for p in 0..2 {
            assert_same(
                &stored[&(topic.clone(), p)],
                &of_partition(&records, p),
                &format!("{listener:?}"),
            );
        }
    }
}

#[tokio::test]
async fn consumer_group_offsets_on_backed_up_topics_are_recorded() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let dir = TempDir::new("kb-groups");
    let topic = unique_name("bk-groups");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(100, 2));
    let group = unique_name("orders-processor");
    let mut cfg = plaintext_config();
    cfg.set("group.id", &group)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = cfg.create().expect("consumer");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(20))
        .expect("tpl");
    tpl.add_partition_offset(&topic, 1, rdkafka::Offset::Offset(35))
        .expect("tpl");
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    drop(consumer);

    let name = unique_name("groups");
    let target = Target::Filesystem(dir.path().join("repo"));
    let s = json_of(&backup(&write_manifest(
        dir.path(),
        &backup_manifest(&name, &plaintext(), &[&topic], &target),
    )));
    let (manifest, _) = read_backup(
        &target.repository(),
        &name,
        s["backupId"].as_str().expect("id"),
    )
    .await;
    let g = manifest
        .consumer_groups
        .iter()
        .find(|g| g.group_id == group)
        .expect("group recorded");
    let offsets: Vec<(i32, i64)> = g.offsets.iter().map(|o| (o.partition, o.offset)).collect();
    assert_eq!(offsets, vec![(0, 20), (1, 35)]);
    assert!(g.offsets.iter().all(|o| o.topic == topic));
}

#[tokio::test]
async fn pvc_storage_is_a_directory_under_the_pvc_root() {
    let dir = TempDir::new("kb-pvc");
    let topic = unique_name("bk-pvc");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(20, 1));
    let name = unique_name("pvc");
    let mut m = backup_manifest(
        &name,
        &plaintext(),
        &[&topic],
        &Target::Filesystem(dir.path().into()),
    );
    m["spec"]["storage"] = serde_json::json!({"storageType": "pvc", "pvc": {"claimName": "backup-storage", "subPath": "kafka/production"}});
    let out = cli()
        .env("KAFKA_BACKUP_PVC_ROOT", dir.path().join("mounts"))
        .args(["backup", "-o", "json", "-f"])
        .arg(write_manifest(dir.path(), &m))
        .output()
        .expect("run");
    let s = json_of(&out);
    let repo_dir = dir.path().join("mounts/backup-storage/kafka/production");
    let target = Target::Filesystem(repo_dir.clone());
    read_backup(
        &target.repository(),
        &name,
        s["backupId"].as_str().expect("id"),
    )
    .await;
    assert!(repo_dir.join(&name).join("manifests").is_dir());

    // A subPath that climbs out of the volume is refused.
    m["spec"]["storage"]["pvc"]["subPath"] = "../elsewhere".into();
    let out = cli()
        .env("KAFKA_BACKUP_PVC_ROOT", dir.path().join("mounts"))
        .args(["backup", "-f"])
        .arg(write_manifest(dir.path(), &m))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("spec.storage.pvc.subPath") && err.contains("../elsewhere"),
        "{err}"
    );
}
