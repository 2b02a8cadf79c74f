//! The operator end to end, against the genuine API server and controller-manager, Kafka and
//! MinIO: `kafka-backup operator` reconciles resources into Jobs, the controller-manager makes
//! their Pods, the test kit's node agent runs each Pod's `kafka-backup worker` as a local process
//! (Secrets and PVCs mapped to local directories, termination message written back), and the
//! statuses are checked field by field against the spec.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Target, TempDir, commit, committed, plaintext};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kafka_backup_api::backup::KafkaBackup;
use kafka_backup_api::offsets::{KafkaOffsetReset, KafkaOffsetRollback};
use kafka_backup_api::restore::KafkaRestore;
use kafka_backup_testkit::kafka::{
    consume_all, create_topic, plaintext_config, produce, sample_records,
};
use kafka_backup_testkit::node_agent::{NodeAgent, NodeAgentOptions};
use kafka_backup_testkit::{TestEnv, k8s, unique_name};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kafka-backup");

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A running `kafka-backup operator`; killed on drop.
struct Operator {
    child: Child,
    port: u16,
    log: PathBuf,
    identity: String,
}

impl Operator {
    fn start(ns: &str, identity: &str, work: &TempDir) -> Operator {
        Operator::launch(Command::new(BIN), ns, identity, work)
    }

    /// Runs `command` (the binary, or a wrapper whose last argument is the binary) as the
    /// operator for namespace `ns`, logging at debug level into the work directory.
    fn launch(mut command: Command, ns: &str, identity: &str, work: &TempDir) -> Operator {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = work.path().join(format!("operator-{identity}.log"));
        let out = std::fs::File::create(&log).expect("operator log");
        let child = command
            .args(["operator", "--namespace", ns, "--lease-namespace", ns])
            .args([
                "--identity",
                identity,
                "--worker-image",
                "kafka-backup:test",
            ])
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--work-dir")
            .arg(work.path().join(format!("work-{identity}")))
            .env("KUBECONFIG", TestEnv::get().path("KUBECONFIG"))
            // Everything at debug level: the tests look for Secret values in the log.
            .env("KAFKA_BACKUP_LOG", "debug")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start the operator");
        Operator {
            child,
            port,
            log,
            identity: identity.to_string(),
        }
    }

    /// An operator that can only reach loopback addresses: a private mount namespace whose
    /// /etc/hosts maps `hosts` to 127.0.0.1 and whose resolver is 127.0.0.1 (so no other name
    /// resolves), and AWS settings that keep the S3 client off instance metadata and AWS.
    fn start_sandboxed(ns: &str, identity: &str, work: &TempDir, hosts: &[String]) -> Operator {
        let hosts_file = work.path().join("hosts");
        let mut text = String::from("127.0.0.1 localhost\n");
        for h in hosts {
            text.push_str(&format!("127.0.0.1 {h}\n"));
        }
        std::fs::write(&hosts_file, text).expect("hosts");
        let resolv = work.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .expect("resolv");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf && shift 2 && exec \"$@\"")
            .arg("sh")
            .arg(&hosts_file)
            .arg(&resolv)
            .arg(BIN)
            .env("AWS_ENDPOINT", "http://127.0.0.1:1")
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:1")
            .env("AWS_ACCESS_KEY_ID", "none")
            .env("AWS_SECRET_ACCESS_KEY", "none");
        Operator::launch(command, ns, identity, work)
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "operator did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A namespace with the storage Secret, a node agent and an operator.
struct Setup {
    client: kube::Client,
    ns: String,
    agent: Option<NodeAgent>,
    operator: Option<Operator>,
    work: TempDir,
    target: Target,
}

impl Setup {
    async fn new(prefix: &str) -> Setup {
        let client = k8s::client().await;
        k8s::apply_crds(&client).await;
        let ns = unique_name(prefix);
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
        let secrets = TestEnv::get().secrets_dir();
        let mut data = BTreeMap::new();
        for key in ["accessKey", "secretKey"] {
            let v = std::fs::read_to_string(secrets.join("s3-credentials").join(key))
                .expect("s3 credential");
            data.insert(key.to_string(), v.trim().to_string());
        }
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "s3-credentials"}, "stringData": data
        }))
        .expect("secret");
        Api::<Secret>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret");
        let agent = NodeAgent::start(
            client.clone(),
            &ns,
            NodeAgentOptions {
                binary: PathBuf::from(BIN),
                extra_env: vec![
                    ("KAFKA_BACKUP_PROGRESS_INTERVAL_SECS".into(), "1".into()),
                    ("KAFKA_BACKUP_LOG".into(), "debug".into()),
                ],
            },
        )
        .await;
        let work = TempDir::new("operator");
        let operator = Operator::start(&ns, "op-1", &work);
        Setup {
            client,
            target: Target::S3 {
                prefix: unique_name("op"),
            },
            ns,
            agent: Some(agent),
            operator: Some(operator),
            work,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create<K>(&self, manifest: Value) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(manifest).expect("object");
        self.api::<K>()
            .create(&PostParams::default(), &obj)
            .await
            .expect("create resource")
    }

    /// Waits until the resource's status.phase is `phase`; returns the whole object as JSON.
    async fn wait_phase<K>(&self, name: &str, phase: &str, timeout: Duration) -> Value
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        let mut last = Value::Null;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(obj) = api.get(name).await {
                last = serde_json::to_value(&obj).expect("json");
                if last["status"]["phase"] == phase {
                    return last;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name}: phase {phase} not reached in {timeout:?}; last: {}\noperator log:\n{}",
                last["status"],
                self.operator
                    .as_ref()
                    .map(Operator::log_text)
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn jobs(&self) -> Vec<Job> {
        self.api::<Job>()
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
    }

    /// (reason, note) of the events about `name`.
    async fn events(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = self.api();
        api.list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    fn secret_value(&self) -> String {
        std::fs::read_to_string(
            TestEnv::get()
                .secrets_dir()
                .join("s3-credentials")
                .join("secretKey"),
        )
        .expect("secret")
        .trim()
        .to_string()
    }

    async fn finish(mut self) {
        if let Some(a) = self.agent.take() {
            a.stop().await;
        }
        self.operator.take();
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await;
    }
}

fn meta(name: &str) -> Value {
    json!({"name": name})
}

fn backup_manifest(name: &str, topic: &str, target: &Target, extra: Value) -> Value {
    let mut spec = json!({
        "kafkaCluster": serde_json::to_value(plaintext()).expect("cluster"),
        "topics": [topic],
        "storage": target.storage_json(),
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaBackup", "metadata": meta(name), "spec": spec})
}

fn condition(obj: &Value) -> &Value {
    &obj["status"]["conditions"][0]
}

fn assert_ready(obj: &Value, status: &str, reason: &str) {
    let c = condition(obj);
    assert_eq!(c["type"], "Ready", "{c}");
    assert_eq!(c["status"], status, "{c}");
    assert_eq!(c["reason"], reason, "{c}");
    assert!(c["message"].as_str().is_some_and(|m| !m.is_empty()), "{c}");
    assert!(
        c["lastTransitionTime"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{c}"
    );
}

fn is_time(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_restore_reset_rollback_run_as_jobs() {
    let s = Setup::new("op-e2e").await;
    let topic = unique_name("op-src");
    let restored = format!("{topic}-restored");
    create_topic(&plaintext_config(), &topic, 3, 1, &[]).await;
    let records = sample_records(300, 3);
    produce(&plaintext_config(), &topic, &records);

    // Backup, one-time.
    let name = "orders-backup";
    s.create::<KafkaBackup>(backup_manifest(
        name,
        &topic,
        &s.target,
        json!({
            "job": {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600},
            "podTemplate": {"labels": {"team": "data"}, "annotations": {"note": "x"}},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}
        }),
    ))
    .await;
    let kb = s
        .wait_phase::<KafkaBackup>(name, "Completed", Duration::from_secs(120))
        .await;
    let st = &kb["status"];
    let id = st["lastBackupId"].as_str().expect("lastBackupId");
    assert!(id.starts_with("orders-backup-"), "{st}");
    assert_eq!(st["lastBackupRecords"], 300, "{st}");
    assert!(st["lastBackupSize"].as_u64().is_some_and(|b| b > 0), "{st}");
    assert!(is_time(&st["lastBackupTime"]), "{st}");
    assert!(st.get("nextScheduledTime").is_none(), "{st}");
    let history = st["backupHistory"].as_array().expect("history");
    assert_eq!(history.len(), 1, "{st}");
    assert_eq!(history[0]["backupId"], id);
    assert_eq!(history[0]["outcome"], "success");
    assert_eq!(history[0]["records"], 300);
    assert_eq!(history[0]["size"], st["lastBackupSize"]);
    assert!(is_time(&history[0]["startTime"]) && is_time(&history[0]["completionTime"]));
    assert_ready(&kb, "True", "BackupCompleted");

    // The Job: settings from the spec; Secrets as volumes; no Secret value anywhere.
    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 1);
    let job = serde_json::to_value(&jobs[0]).expect("job");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 3600);
    let pod = &job["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["team"], "data");
    assert_eq!(pod["metadata"]["annotations"]["note"], "x");
    assert_eq!(pod["spec"]["serviceAccountName"], "kafka-backup-worker");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(pod["spec"]["containers"][0]["image"], "kafka-backup:test");
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["requests"]["memory"],
        "128Mi"
    );
    assert!(
        pod["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["secret"]["secretName"] == "s3-credentials")
    );
    let secret = s.secret_value();
    assert!(
        !job.to_string().contains(&secret),
        "secret value in the Job"
    );
    assert!(!kb.to_string().contains(&secret), "secret value in status");
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = s.api();
    let sa = sa.get("kafka-backup-worker").await.expect("worker SA");
    assert_eq!(sa.automount_service_account_token, Some(false));
    let events = s.events(name).await;
    let reasons: Vec<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    assert!(reasons.contains(&"BackupStarted"), "{events:?}");
    assert!(reasons.contains(&"BackupCompleted"), "{events:?}");

    // Restore into a new topic.
    s.create::<KafkaRestore>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": meta("orders-restore"),
        "spec": {
            "backupId": id,
            "targetCluster": serde_json::to_value(plaintext()).expect("cluster"),
            "storage": s.target.storage_json(),
            "topicMapping": {&topic: &restored},
            "createTopics": true
        }
    }))
    .await;
    let kr = s
        .wait_phase::<KafkaRestore>("orders-restore", "Completed", Duration::from_secs(120))
        .await;
    let st = &kr["status"];
    assert_eq!(st["restoredRecords"], 300, "{st}");
    assert_eq!(
        st["restoredTopics"],
        json!([{"name": restored, "records": 300}]),
        "{st}"
    );
    assert!(
        is_time(&st["startTime"]) && is_time(&st["completionTime"]),
        "{st}"
    );
    assert_ready(&kr, "True", "RestoreCompleted");
    let got = consume_all(&plaintext_config(), &restored, 300, Duration::from_secs(30));
    for p in 0..3 {
        let want = common::of_partition(&records, p);
        let have: Vec<_> = got
            .iter()
            .filter(|c| c.record.partition == p)
            .map(|c| c.record.clone())
            .collect();
        assert_eq!(have.len(), want.len(), "partition {p}");
        for (h, w) in have.iter().zip(&want) {
            assert_eq!(h.key, w.key);
            assert_eq!(h.value, w.value);
            assert_eq!(h.headers, w.headers);
            assert_eq!(h.timestamp, w.timestamp);
        }
    }

    // Offsets: snapshot, reset to earliest, roll back to the snapshot, verify.
    let group = unique_name("op-group");
    commit(&group, &restored, &[(0, 10), (1, 20), (2, 30)]);
    let korb = |name: &str, op: &str| {
        json!({
            "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaOffsetRollback", "metadata": meta(name),
            "spec": {
                "kafkaCluster": serde_json::to_value(plaintext()).expect("cluster"),
                "operation": op, "snapshotId": format!("snap-{group}"),
                "consumerGroups": [&group], "storage": s.target.storage_json()
            }
        })
    };
    s.create::<KafkaOffsetRollback>(korb("take-snapshot", "snapshot"))
        .await;
    let snap = s
        .wait_phase::<KafkaOffsetRollback>("take-snapshot", "Completed", Duration::from_secs(90))
        .await;
    assert_eq!(snap["status"]["groups"][0]["groupId"], group.as_str());
    assert_eq!(snap["status"]["groups"][0]["outcome"], "success");
    assert_ready(&snap, "True", "OffsetRollbackCompleted");

    s.create::<KafkaOffsetReset>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaOffsetReset", "metadata": meta("to-earliest"),
        "spec": {
            "kafkaCluster": serde_json::to_value(plaintext()).expect("cluster"),
            "consumerGroups": [&group], "strategy": "earliest",
            "storage": s.target.storage_json()
        }
    }))
    .await;
    let kor = s
        .wait_phase::<KafkaOffsetReset>("to-earliest", "Completed", Duration::from_secs(90))
        .await;
    let st = &kor["status"];
    assert_eq!(st["groups"][0]["groupId"], group.as_str(), "{st}");
    assert_eq!(st["groups"][0]["outcome"], "success", "{st}");
    assert_eq!(st["groups"][0]["partitions"], 3, "{st}");
    assert!(
        is_time(&st["startTime"]) && is_time(&st["completionTime"]),
        "{st}"
    );
    assert_ready(&kor, "True", "OffsetResetCompleted");
    assert_eq!(
        committed(&group, &restored, 3),
        vec![(0, 0), (1, 0), (2, 0)]
    );

    s.create::<KafkaOffsetRollback>(korb("roll-back", "rollback"))
        .await;
    let rb = s
        .wait_phase::<KafkaOffsetRollback>("roll-back", "Completed", Duration::from_secs(90))
        .await;
    assert_eq!(rb["status"]["verified"], true, "{}", rb["status"]);
    assert_eq!(
        committed(&group, &restored, 3),
        vec![(0, 10), (1, 20), (2, 30)]
    );
    s.create::<KafkaOffsetRollback>(korb("check", "verify"))
        .await;
    let v = s
        .wait_phase::<KafkaOffsetRollback>("check", "Completed", Duration::from_secs(90))
        .await;
    assert_eq!(v["status"]["verified"], true, "{}", v["status"]);

    // Metrics count the runs.
    let (code, metrics) = s
        .operator
        .as_ref()
        .expect("operator")
        .get("/metrics")
        .expect("metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("kafka_backup_runs_total{kind=\"KafkaBackup\",outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kafka_backup_leader 1"), "{metrics}");
    // No Secret value (nor its base64 form) in metrics, events, the operator's or any worker's
    // debug log.
    let encoded = {
        use k8s_openapi::ByteString;
        serde_json::to_value(ByteString(secret.as_bytes().to_vec()))
            .expect("base64")
            .as_str()
            .expect("string")
            .to_string()
    };
    let operator_log = s.operator.as_ref().expect("operator").log_text();
    assert!(
        operator_log.contains("DEBUG"),
        "the operator logged at debug level"
    );
    let agent = s.agent.as_ref().expect("agent");
    let mut worker_logs = String::new();
    for pod in agent.started_pods() {
        worker_logs.push_str(&std::fs::read_to_string(agent.log_path(&pod)).unwrap_or_default());
    }
    assert!(
        worker_logs.contains("DEBUG"),
        "workers logged at debug level"
    );
    let all_events: Vec<String> = {
        let api: Api<k8s_openapi::api::events::v1::Event> = s.api();
        api.list(&ListParams::default())
            .await
            .expect("events")
            .items
            .iter()
            .map(|e| serde_json::to_string(e).expect("json"))
            .collect()
    };
    for (what, text) in [
        ("metrics", metrics.as_str()),
        ("operator log", operator_log.as_str()),
        ("worker logs", worker_logs.as_str()),
        ("events", &all_events.join("\n")),
    ] {
        assert!(!text.contains(&secret), "a Secret value in {what}");
        assert!(!text.contains(&encoded), "a base64 Secret value in {what}");
    }
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_specs_fail_with_the_field_named_and_no_job() {
    let s = Setup::new("op-invalid").await;
    let topic = unique_name("op-inv");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    let cluster = serde_json::to_value(plaintext()).expect("cluster");
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "missing-secret",
            backup_manifest(
                "missing-secret",
                &topic,
                &s.target,
                json!({
                    "kafkaCluster": {"bootstrapServers": cluster["bootstrapServers"].clone(),
                        "securityProtocol": "SASL_PLAINTEXT",
                        "saslSecret": {"name": "no-such-secret", "mechanism": "PLAIN"}}
                }),
            ),
            "spec.kafkaCluster.saslSecret: Secret 'no-such-secret' not found",
        ),
        (
            "missing-key",
            backup_manifest(
                "missing-key",
                &topic,
                &s.target,
                json!({
                    "kafkaCluster": {"bootstrapServers": cluster["bootstrapServers"].clone(),
                        "securityProtocol": "SASL_PLAINTEXT",
                        "saslSecret": {"name": "s3-credentials", "mechanism": "PLAIN"}}
                }),
            ),
            "spec.kafkaCluster.saslSecret.usernameKey: key 'username' of secret 's3-credentials' not found",
        ),
        (
            "bad-cron",
            backup_manifest(
                "bad-cron",
                &topic,
                &s.target,
                json!({"schedule": "0 * * *"}),
            ),
            "spec.schedule: '0 * * *' has 4 fields",
        ),
        (
            "bad-zone",
            backup_manifest(
                "bad-zone",
                &topic,
                &s.target,
                json!({"schedule": "0 * * * *", "timeZone": "Mars/Olympus"}),
            ),
            "spec.timeZone: 'Mars/Olympus'",
        ),
        (
            "unreachable",
            backup_manifest(
                "unreachable",
                &topic,
                &s.target,
                json!({
                    "kafkaCluster": {"bootstrapServers": ["127.0.0.1:1"]}
                }),
            ),
            "spec.kafkaCluster.bootstrapServers: Kafka at 127.0.0.1:1 not reachable",
        ),
    ];
    for (_, m, _) in &cases {
        s.create::<KafkaBackup>(m.clone()).await;
    }
    s.create::<KafkaRestore>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": meta("no-backup"),
        "spec": {"backupId": "nothing-20240101-000000", "targetCluster": cluster,
                 "storage": s.target.storage_json()}
    }))
    .await;
    s.create::<KafkaRestore>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": meta("pitr-no-time"),
        "spec": {"backupId": "nothing-20240101-000000", "targetCluster": cluster,
                 "storage": s.target.storage_json(), "pitr": {"enabled": true}}
    }))
    .await;
    s.create::<KafkaOffsetRollback>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaOffsetRollback", "metadata": meta("no-storage"),
        "spec": {"kafkaCluster": cluster, "snapshotId": "s1"}
    }))
    .await;

    for (name, _, message) in &cases {
        let kb = s
            .wait_phase::<KafkaBackup>(name, "Failed", Duration::from_secs(60))
            .await;
        assert_ready(&kb, "False", "InvalidSpec");
        let m = condition(&kb)["message"].as_str().expect("message");
        assert!(m.starts_with(message), "{name}: {m}");
    }
    let r = s
        .wait_phase::<KafkaRestore>("no-backup", "Failed", Duration::from_secs(60))
        .await;
    let m = condition(&r)["message"].as_str().expect("message");
    assert!(
        m.starts_with("spec.backupId: backup 'nothing-20240101-000000' not found"),
        "{m}"
    );
    let r = s
        .wait_phase::<KafkaRestore>("pitr-no-time", "Failed", Duration::from_secs(60))
        .await;
    let m = condition(&r)["message"].as_str().expect("message");
    assert!(m.starts_with("spec.pitr: enabled needs timestamp"), "{m}");
    let r = s
        .wait_phase::<KafkaOffsetRollback>("no-storage", "Failed", Duration::from_secs(60))
        .await;
    let m = condition(&r)["message"].as_str().expect("message");
    assert!(m.starts_with("spec.storage: not set"), "{m}");
    let events = s.events("missing-secret").await;
    assert!(events.iter().any(|(r, _)| r == "InvalidSpec"), "{events:?}");

    // Not one Job for any of them.
    assert!(s.jobs().await.is_empty());

    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedule_trigger_and_retention() {
    let s = Setup::new("op-sched").await;
    let topic = unique_name("op-sched");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(50, 1));
    let name = "every-minute";
    s.create::<KafkaBackup>(backup_manifest(
        name,
        &topic,
        &s.target,
        json!({"schedule": "* * * * *", "timeZone": "Europe/Berlin", "retention": {"backups": 1}}),
    ))
    .await;
    // Before the first slot: Pending, with the next slot in status.
    let api = s.api::<KafkaBackup>();
    let first = wait_for("nextScheduledTime", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let kb = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            kb["status"]["nextScheduledTime"].is_string().then_some(kb)
        }
    })
    .await;
    let next = first["status"]["nextScheduledTime"]
        .as_str()
        .expect("next")
        .to_string();
    assert!(next.ends_with(":00Z"), "{next}");

    // The slot fires.
    let kb = wait_for("a scheduled backup", Duration::from_secs(150), || {
        let api = api.clone();
        async move {
            let kb = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            (kb["status"]["backupHistory"].as_array().map_or(0, Vec::len) >= 1
                && kb["status"]["phase"] == "Completed")
                .then_some(kb)
        }
    })
    .await;
    assert_ready(&kb, "True", "BackupScheduled");
    assert!(
        condition(&kb)["message"]
            .as_str()
            .expect("message")
            .starts_with("Next backup scheduled for "),
    );
    assert!(is_time(&kb["status"]["nextScheduledTime"]));
    let runs_before = kb["status"]["backupHistory"].as_array().map_or(0, Vec::len);

    // The trigger annotation runs one more backup, once per value.
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"kafka.oso.sh/trigger-backup": "one"}}})),
    )
    .await
    .expect("annotate");
    wait_for("the triggered backup", Duration::from_secs(120), || {
        let api = api.clone();
        async move {
            let kb = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            (kb["status"]["backupHistory"].as_array().map_or(0, Vec::len) > runs_before
                && kb["status"]["phase"] == "Completed"
                && kb["metadata"]["annotations"]["kafka.oso.sh/handled-trigger"] == "one")
                .then_some(())
        }
    })
    .await;
    let jobs = s.jobs().await;
    let triggered: Vec<_> = jobs
        .iter()
        .filter(|j| {
            j.labels()
                .get("kafka.oso.sh/run")
                .is_some_and(|r| r.starts_with('t'))
        })
        .collect();
    assert_eq!(triggered.len(), 1, "one Job per trigger value");
    // No two Jobs for one slot.
    let mut runs: Vec<&String> = jobs
        .iter()
        .filter_map(|j| j.labels().get("kafka.oso.sh/run"))
        .collect();
    let n = runs.len();
    runs.dedup();
    assert_eq!(runs.len(), n);

    // Retention keeps one backup in storage.
    let repo = s.target.repository();
    let ids = repo.backup_ids(name).await.expect("ids");
    assert_eq!(ids.len(), 1, "{ids:?}");
    // The kept backup is one the operator recorded (the newest, unless a later slot ran since).
    let kb = serde_json::to_value(api.get(name).await.expect("get")).expect("json");
    let history: Vec<&str> = kb["status"]["backupHistory"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|h| h["backupId"].as_str())
        .collect();
    assert!(history.contains(&ids[0].as_str()), "{ids:?} {history:?}");
    assert!(history.len() >= 2, "{history:?}");
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_running_backup_stops_its_worker() {
    let s = Setup::new("op-cancel").await;
    let topic = unique_name("op-slow");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(2000, 1));
    let name = "slow-backup";
    s.create::<KafkaBackup>(backup_manifest(
        name,
        &topic,
        &s.target,
        json!({"rateLimit": {"recordsPerSecond": 20}, "checkpointIntervalSecs": 1}),
    ))
    .await;
    // Progress shows in status while it runs.
    let api = s.api::<KafkaBackup>();
    let kb = wait_for("progress in status", Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let kb = serde_json::to_value(api.get(name).await.ok()?).ok()?;
            (kb["status"]["phase"] == "Running"
                && kb["status"]["conditions"][0]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("% (")))
            .then_some(kb)
        }
    })
    .await;
    assert_ready(&kb, "True", "BackupRunning");
    let agent = s.agent.as_ref().expect("agent");
    let pod = agent.started_pods().first().cloned().expect("a pod ran");
    api.delete(name, &DeleteParams::foreground())
        .await
        .expect("delete");
    // The Job goes (owner reference), its Pod goes, and the agent kills the process.
    wait_for("the Job deleted", Duration::from_secs(60), || async {
        s.jobs().await.is_empty().then_some(())
    })
    .await;
    let log = agent.log_path(&pod);
    wait_for("the worker stopped", Duration::from_secs(30), || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("interrupted").then_some(())
        }
    })
    .await;
    s.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_operators_one_leader() {
    let mut s = Setup::new("op-leader").await;
    let second = Operator::start(&s.ns, "op-2", &s.work);
    let leases: Api<Lease> = s.api();
    let holder = wait_for("a Lease holder", Duration::from_secs(30), || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt("kafka-backup-operator")
                .await
                .ok()??
                .spec?
                .holder_identity
        }
    })
    .await;
    let first = s.operator.take().expect("operator");
    let (leader, mut standby) = if holder == first.identity {
        (first, second)
    } else {
        (second, first)
    };
    // Both are healthy and ready; only one leads.
    for op in [&leader, &standby] {
        assert_eq!(op.get("/healthz").map(|r| r.0), Some(200));
        wait_for("ready", Duration::from_secs(30), || async {
            (op.get("/readyz").map(|r| r.0) == Some(200)).then_some(())
        })
        .await;
    }
    let gauge = |op: &Operator| {
        op.get("/metrics")
            .map(|(_, b)| b.contains("kafka_backup_leader 1"))
            .unwrap_or(false)
    };
    wait_for("leader gauge", Duration::from_secs(10), || async {
        gauge(&leader).then_some(())
    })
    .await;
    assert!(!gauge(&standby), "the standby must not lead");

    // The standby does nothing: a backup created now is reconciled by the leader only.
    let topic = unique_name("op-lead");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(10, 1));
    s.create::<KafkaBackup>(backup_manifest("led", &topic, &s.target, json!({})))
        .await;
    s.wait_phase::<KafkaBackup>("led", "Completed", Duration::from_secs(90))
        .await;
    assert!(!standby.log_text().contains("BackupStarted"));

    // The leader stops gracefully and releases the Lease: the standby takes over.
    let mut leader = leader;
    let status = leader.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let new_holder = wait_for("the standby takes over", Duration::from_secs(30), || {
        let leases = leases.clone();
        let standby_id = standby.identity.clone();
        async move {
            let h = leases
                .get_opt("kafka-backup-operator")
                .await
                .ok()??
                .spec?
                .holder_identity?;
            (h == standby_id).then_some(h)
        }
    })
    .await;
    assert_eq!(new_holder, standby.identity);
    s.create::<KafkaBackup>(backup_manifest(
        "after-failover",
        &topic,
        &s.target,
        json!({}),
    ))
    .await;
    s.operator = None;
    s.wait_phase::<KafkaBackup>("after-failover", "Completed", Duration::from_secs(90))
        .await;
    standby.terminate();
    s.finish().await;
}

/// Every example of the CRD reference, applied as written, is reconciled: none of them can run
/// here (their Secrets, claims, brokers and buckets do not exist), so each ends Failed with
/// InvalidSpec, a message naming the field, and no Job. The operator runs sandboxed: the
/// examples' host names resolve to 127.0.0.1 only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_spec_example_is_reconciled_as_written() {
    let mut s = Setup::new("op-examples").await;
    let examples = common::spec_examples();
    let mut hosts: Vec<String> = examples
        .iter()
        .flat_map(|(_, e)| {
            ["kafkaCluster", "targetCluster"]
                .iter()
                .filter_map(|k| e["spec"][k]["bootstrapServers"].as_array().cloned())
                .flatten()
                .filter_map(|b| {
                    b.as_str()
                        .and_then(|a| a.rsplit_once(':'))
                        .map(|(h, _)| h.to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    s.operator = Some(Operator::start_sandboxed(
        &s.ns,
        "op-sandboxed",
        &s.work,
        &hosts,
    ));
    let gvk = |kind: &str| {
        kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "kafka.oso.sh",
            "v1alpha1",
            kind,
        ))
    };
    for (where_, example) in &examples {
        let ar = gvk(example["kind"].as_str().expect("kind"));
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(s.client.clone(), &s.ns, &ar);
        let mut obj: kube::api::DynamicObject =
            serde_json::from_value(example.clone()).expect("object");
        // Examples name their own namespace; they go into the test's.
        obj.metadata.namespace = None;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            // The same name appears in both documents' examples.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => panic!("{where_}: {e}"),
        }
    }
    for (where_, example) in &examples {
        let kind = example["kind"].as_str().expect("kind");
        let name = example["metadata"]["name"].as_str().expect("name");
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(s.client.clone(), &s.ns, &gvk(kind));
        let obj = wait_for(
            &format!("{where_}: a status"),
            Duration::from_secs(120),
            || {
                let api = api.clone();
                async move {
                    let o = serde_json::to_value(api.get(name).await.ok()?).ok()?;
                    (o["status"]["phase"] == "Failed").then_some(o)
                }
            },
        )
        .await;
        assert_ready(&obj, "False", "InvalidSpec");
        let m = condition(&obj)["message"].as_str().expect("message");
        assert!(m.starts_with("spec."), "{where_}: {m}");
        eprintln!("{where_}: {kind} {name}: {m}");
    }
    assert!(s.jobs().await.is_empty(), "no Job for an invalid spec");
    s.finish().await;
}

/// The worker without its resource: exit 2, and a result the operator can read.
#[test]
fn worker_without_a_manifest_is_bad_input_with_a_result() {
    let dir = TempDir::new("worker");
    let result = dir.path().join("termination-log");
    let out = Command::new(BIN)
        .arg("worker")
        .arg("--result-file")
        .arg(&result)
        .env_remove("KAFKA_BACKUP_MANIFEST")
        .output()
        .expect("run worker");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("KAFKA_BACKUP_MANIFEST: not set"),
        "{stderr}"
    );
    let r: kafka_backup_api::worker::WorkerResult =
        serde_json::from_str(&std::fs::read_to_string(&result).expect("result")).expect("json");
    assert_eq!(r.outcome, "failure");
    assert!(r.bad_input);
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("KAFKA_BACKUP_MANIFEST"))
    );
}

/// `storageType: pvc`: the claim is mounted into the Job's pod at the path the worker reads, so a
/// backup lands on the volume and a restore reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pvc_storage_is_mounted_into_the_jobs() {
    let s = Setup::new("op-pvc").await;
    let pvc: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "backup-storage"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("pvc");
    s.api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create pvc");
    let topic = unique_name("op-pvc");
    let restored = format!("{topic}-restored");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let records = sample_records(100, 2);
    produce(&plaintext_config(), &topic, &records);
    let storage = json!({"storageType": "pvc", "pvc": {"claimName": "backup-storage", "subPath": "kafka/backups"}});
    s.create::<KafkaBackup>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaBackup", "metadata": meta("local-backup"),
        "spec": {"kafkaCluster": serde_json::to_value(plaintext()).expect("cluster"),
                 "topics": [&topic], "storage": storage}
    }))
    .await;
    let kb = s
        .wait_phase::<KafkaBackup>("local-backup", "Completed", Duration::from_secs(120))
        .await;
    assert_eq!(kb["status"]["lastBackupRecords"], 100);
    let id = kb["status"]["lastBackupId"]
        .as_str()
        .expect("id")
        .to_string();
    let on_volume = s
        .agent
        .as_ref()
        .expect("agent")
        .pvc_dir("backup-storage")
        .join("kafka/backups/local-backup/manifests")
        .join(format!("{id}.json"));
    assert!(on_volume.is_file(), "{} missing", on_volume.display());
    s.create::<KafkaRestore>(json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": meta("local-restore"),
        "spec": {"backupId": id, "targetCluster": serde_json::to_value(plaintext()).expect("cluster"),
                 "storage": storage, "topicMapping": {&topic: &restored}, "createTopics": true}
    }))
    .await;
    let kr = s
        .wait_phase::<KafkaRestore>("local-restore", "Completed", Duration::from_secs(120))
        .await;
    assert_eq!(kr["status"]["restoredRecords"], 100);
    let got = consume_all(&plaintext_config(), &restored, 100, Duration::from_secs(30));
    assert_eq!(got.len(), 100);
    s.finish().await;
}
