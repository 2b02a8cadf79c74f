//! The node agent against the test API server and controller manager: Jobs whose Pods it runs as
//! local processes complete or fail, deleted Jobs stop their processes, and Pods whose Secret is
//! missing wait for it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ContainerStateTerminated, Namespace, Pod, Secret, ServiceAccount,
};
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};

use kafka_backup_testkit::node_agent::{NodeAgent, NodeAgentOptions};
use kafka_backup_testkit::{k8s, unique_name};

const SERVICE_ACCOUNT: &str = "worker";
const TIMEOUT: Duration = Duration::from_secs(60);

/// A namespace with a ServiceAccount and a node agent running `/bin/sh` for its Pods.
struct Cluster {
    client: kube::Client,
    ns: String,
    agent: NodeAgent,
}

impl Cluster {
    async fn new(prefix: &str) -> Cluster {
        let client = k8s::client().await;
        let ns = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &from_json(json!({"metadata": {"name": ns}})),
            )
            .await
            .expect("create namespace");
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        accounts
            .create(
                &PostParams::default(),
                &from_json(json!({
                    "metadata": {"name": SERVICE_ACCOUNT},
                    "automountServiceAccountToken": false,
                })),
            )
            .await
            .expect("create service account");
        let agent = NodeAgent::start(
            client.clone(),
            &ns,
            NodeAgentOptions {
                binary: PathBuf::from("/bin/sh"),
                extra_env: vec![("KB_EXTRA".to_string(), "extra-value".to_string())],
            },
        )
        .await;
        Cluster { client, ns, agent }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + k8s_openapi::serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create_secret(&self, name: &str, data: &[(&str, &str)]) {
        let string_data: BTreeMap<&str, &str> = data.iter().copied().collect();
        self.api::<Secret>()
            .create(
                &PostParams::default(),
                &from_json(json!({"metadata": {"name": name}, "stringData": string_data})),
            )
            .await
            .expect("create secret");
    }

    /// A Job with one Pod running `sh -c <script> sh <script_args...>`.
    async fn create_job(&self, name: &str, script: &str, script_args: &[&str], extra: Value) {
        let mut args = vec!["-c".to_string(), script.to_string(), "sh".to_string()];
        args.extend(script_args.iter().map(|a| a.to_string()));
        let mut container = json!({
            "name": "worker",
            "image": "kafka-backup:test",
            "command": ["sh"],
            "args": args,
        });
        merge(&mut container, extra["container"].clone());
        let mut pod_spec = json!({
            "restartPolicy": "Never",
            "serviceAccountName": SERVICE_ACCOUNT,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
        });
        merge(&mut pod_spec, extra["pod"].clone());
        let job = json!({
            "metadata": {"name": name},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": pod_spec},
            },
        });
        self.api::<Job>()
            .create(&PostParams::default(), &from_json(job))
            .await
            .expect("create job");
    }

    /// Waits until the Job has condition `type_` True.
    async fn wait_job_condition(&self, name: &str, type_: &str) -> Job {
        let api = self.api::<Job>();
        eventually(&format!("job {name} {type_}"), || async {
            let job = api.get(name).await.expect("get job");
            let done = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"));
            done.then_some(job)
        })
        .await
    }

    /// The only Pod of a Job.
    async fn job_pod(&self, job: &str) -> Pod {
        let api = self.api::<Pod>();
        let selector = format!("batch.kubernetes.io/job-name={job}");
        eventually(&format!("pod of job {job}"), || async {
            let pods = api
                .list(&ListParams::default().labels(&selector))
                .await
                .expect("list pods");
            pods.items.into_iter().next()
        })
        .await
    }

    async fn delete(self) {
        let Cluster { client, ns, agent } = self;
        agent.stop().await;
        let namespaces: Api<Namespace> = Api::all(client);
        namespaces
            .delete(&ns, &DeleteParams::default())
            .await
            .expect("delete namespace");
    }
}

fn from_json<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

/// JSON merge of `patch` into `target` (objects merge, everything else replaces).
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (_, Value::Null) => {}
        (t, p) => *t = p,
    }
}

/// Polls `f` every 200 ms until it returns something; panics after [`TIMEOUT`].
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn terminated(pod: &Pod) -> Option<ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .clone()
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[tokio::test]
async fn job_reads_its_secret_writes_its_volume_and_completes() {
    let cluster = Cluster::new("node-agent-ok").await;
    let secret_value = unique_name("s3cr3t");
    cluster
        .create_secret("creds", &[("password", &secret_value), ("other", "x")])
        .await;
    // $1 is the secret file (an argument mapped from its mount path); DATA and MSG come from env.
    let script = r#"set -eu
echo "worker running in $(pwd)"
echo "to stderr" >&2
pw=$(cat "$1")
printf '%s' "$pw" > "$DATA/copied-secret"
printf '%s %s %s' "$POD_NAME" "$POD_NAMESPACE" "$KB_EXTRA" > "$DATA/report/who"
printf 'done: %s bytes of secret' "${#pw}" > "$MSG"
"#;
    let extra = json!({
        "container": {
            "env": [
                {"name": "DATA", "value": "/data"},
                {"name": "MSG", "value": "/dev/termination-log"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE",
                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            ],
            "volumeMounts": [
                {"name": "creds", "mountPath": "/var/run/secrets/kafka-backup/creds",
                 "readOnly": true},
                {"name": "data", "mountPath": "/data"},
            ],
        },
        "pod": {
            "volumes": [
                {"name": "creds", "secret": {"secretName": "creds",
                  "items": [{"key": "password", "path": "password"}]}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "backup-data"}},
            ],
        },
    });
    std::fs::create_dir_all(cluster.agent.pvc_dir("backup-data").join("report")).unwrap();
    cluster
        .create_job(
            "ok",
            script,
            &["/var/run/secrets/kafka-backup/creds/password"],
            extra,
        )
        .await;

    let job = cluster.wait_job_condition("ok", "Complete").await;
    assert_eq!(job.status.as_ref().and_then(|s| s.succeeded), Some(1));
    let pod = cluster.job_pod("ok").await;
    let pod_name = pod.metadata.name.clone().unwrap();
    assert_eq!(phase(&pod), Some("Succeeded"));
    let state = terminated(&pod).expect("terminated state");
    assert_eq!(state.exit_code, 0);
    assert_eq!(state.reason.as_deref(), Some("Completed"));
    assert_eq!(
        state.message.as_deref(),
        Some(format!("done: {} bytes of secret", secret_value.len()).as_str())
    );

    let pvc = cluster.agent.pvc_dir("backup-data");
    assert_eq!(read(&pvc.join("copied-secret")), secret_value);
    assert_eq!(
        read(&pvc.join("report/who")),
        format!("{pod_name} {} extra-value", cluster.ns)
    );
    assert_eq!(cluster.agent.started_pods(), vec![pod_name.clone()]);
    let log = read(&cluster.agent.log_path(&pod_name));
    assert!(log.contains("worker running in "), "{log}");
    assert!(log.contains("to stderr"), "{log}");
    assert!(!log.contains(&secret_value), "the log shows the secret");

    cluster.delete().await;
}

#[tokio::test]
async fn deleting_a_job_stops_its_process() {
    let cluster = Cluster::new("node-agent-delete").await;
    // Kubernetes expands `$(VAR)` in arguments and turns `$$` into `$`: `$$$$` is the shell's `$$`.
    let script = r#"echo $$$$ > "$DATA/pid"
sleep 60
touch "$DATA/marker"
"#;
    let extra = json!({
        "container": {
            "env": [{"name": "DATA", "value": "/work"}],
            "volumeMounts": [{"name": "data", "mountPath": "/work"}],
        },
        "pod": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}]},
    });
    cluster.create_job("sleeper", script, &[], extra).await;
    let pod = cluster.job_pod("sleeper").await;
    let pods = cluster.api::<Pod>();
    let pod_name = pod.metadata.name.clone().unwrap();
    eventually("pod running", || async {
        let pod = pods.get(&pod_name).await.expect("get pod");
        (phase(&pod) == Some("Running")).then_some(())
    })
    .await;
    let pid_file = cluster.agent.pvc_dir("d").join("pid");
    let pid: u32 = eventually("pid file", || async {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await;
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists());

    cluster
        .api::<Job>()
        .delete(
            "sleeper",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("delete job");
    let start = tokio::time::Instant::now();
    while proc_dir.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "process {pid} still runs after the job was deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!cluster.agent.pvc_dir("d").join("marker").exists());
    let log = read(&cluster.agent.log_path(&pod_name));
    assert!(!log.contains("marker"), "{log}");

    cluster.delete().await;
}

#[tokio::test]
async fn failing_process_fails_the_job() {
    let cluster = Cluster::new("node-agent-fail").await;
    let extra = json!({
        "container": {"terminationMessagePolicy": "FallbackToLogsOnError"},
    });
    cluster
        .create_job("fails", "echo 'boom: no brokers' >&2; exit 3", &[], extra)
        .await;
    cluster.wait_job_condition("fails", "Failed").await;
    let pod = cluster.job_pod("fails").await;
    assert_eq!(phase(&pod), Some("Failed"));
    let state = terminated(&pod).expect("terminated state");
    assert_eq!(state.exit_code, 3);
    assert_eq!(state.reason.as_deref(), Some("Error"));
    assert_eq!(state.message.as_deref(), Some("boom: no brokers"));

    cluster.delete().await;
}

/// A bare Pod running `sh -c <script>` with the given extra container and pod fields.
async fn create_pod(cluster: &Cluster, name: &str, script: &str, extra: Value) {
    let mut container = json!({
        "name": "worker",
        "image": "kafka-backup:test",
        "command": ["sh"],
        "args": ["-c", script],
    });
    merge(&mut container, extra["container"].clone());
    let mut spec = json!({
        "restartPolicy": "Never",
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 1,
        "containers": [container],
    });
    merge(&mut spec, extra["pod"].clone());
    cluster
        .api::<Pod>()
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": name}, "spec": spec})),
        )
        .await
        .expect("create pod");
}

async fn wait_phase(cluster: &Cluster, name: &str, want: &str) -> Pod {
    let pods = cluster.api::<Pod>();
    eventually(&format!("pod {name} {want}"), || async {
        let pod = pods.get(name).await.expect("get pod");
        (phase(&pod) == Some(want)).then_some(pod)
    })
    .await
}

#[tokio::test]
async fn pod_waits_for_its_secret() {
    let cluster = Cluster::new("node-agent-wait").await;
    let extra = json!({
        "container": {
            "volumeMounts": [{"name": "creds", "mountPath": "/var/run/creds"}],
            "env": [{"name": "F", "value": "/var/run/creds/key"}],
        },
        "pod": {"volumes": [{"name": "creds", "secret": {"secretName": "late"}}]},
    });
    create_pod(&cluster, "waiter", r#"test -s "$F""#, extra).await;

    let pods = cluster.api::<Pod>();
    let pod = eventually("waiting message", || async {
        let pod = pods.get("waiter").await.expect("get pod");
        let waiting = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.message.clone());
        waiting
            .filter(|m| m.contains("secret \"late\" not found"))
            .map(|_| pod)
    })
    .await;
    assert_eq!(phase(&pod), Some("Pending"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pod = pods.get("waiter").await.expect("get pod");
    assert_eq!(phase(&pod), Some("Pending"));
    assert!(cluster.agent.started_pods().is_empty());

    // Once the Secret exists, the Pod starts and its process sees the key.
    cluster.create_secret("late", &[("key", "value")]).await;
    let pod = wait_phase(&cluster, "waiter", "Succeeded").await;
    assert_eq!(terminated(&pod).map(|t| t.exit_code), Some(0));
    assert_eq!(cluster.agent.started_pods(), vec!["waiter".to_string()]);

    cluster.delete().await;
}

#[tokio::test]
async fn unsupported_and_deadline_pods_fail() {
    let cluster = Cluster::new("node-agent-unsupported").await;
    cluster.create_secret("creds", &[("key", "value")]).await;
    let extra = json!({
        "container": {"env": [{"name": "PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}}]},
    });
    create_pod(&cluster, "secret-env", "true", extra).await;
    let extra = json!({"pod": {"activeDeadlineSeconds": 2}});
    create_pod(&cluster, "deadline", "sleep 60", extra).await;

    let pod = wait_phase(&cluster, "secret-env", "Failed").await;
    let message = pod.status.as_ref().and_then(|s| s.message.clone());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("secrets in env are not supported")),
        "{message:?}"
    );

    let pod = wait_phase(&cluster, "deadline", "Failed").await;
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    let state = terminated(&pod).expect("terminated state");
    assert_eq!(state.exit_code, 143);
    assert_eq!(cluster.agent.started_pods(), vec!["deadline".to_string()]);

    cluster.delete().await;
}
