//! The test cluster's node and the operator installed on it the way users install it: the chart
//! of `deploy/helm/kafka-backup`, with `helm upgrade --install`, running the image that
//! `scripts/image --load` built and loaded into the node (its name is `KB_TEST_IMAGE`).
//!
//! Each test installs its own release into its own namespace, watching that namespace only, so
//! tests run in parallel without seeing each other's resources, and a test may kill its
//! operator's pods. Pods reach the test services through the cluster's DNS: see
//! [`pod_kafka_bootstrap`] and [`pod_s3_endpoint`].

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use serde_json::json;

use crate::env::{TestEnv, repo_root};

/// The chart, relative to the repository root.
pub const CHART: &str = "deploy/helm/kafka-backup";

/// The image the node runs for the operator and its Jobs.
pub fn image() -> String {
    TestEnv::get().var("KB_TEST_IMAGE").to_string()
}

/// Kafka's listener for Pods (PLAINTEXT), by its in-cluster name.
pub fn pod_kafka_bootstrap() -> String {
    TestEnv::get().var("KB_POD_KAFKA_BOOTSTRAP").to_string()
}

/// MinIO's endpoint for Pods, by its in-cluster name.
pub fn pod_s3_endpoint() -> String {
    TestEnv::get().var("KB_POD_S3_ENDPOINT").to_string()
}

/// Runs `program args` with `stdin`, returning standard output; panics with standard error when
/// it fails. helm keeps its state in the test's target directory, away from the user's.
pub fn run(program: &PathBuf, args: &[&str], stdin: Option<&str>) -> String {
    let out = try_run(program, args, stdin);
    assert!(
        out.status.success(),
        "{} {} failed: {}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// [`run`] without the check of the exit status.
pub fn try_run(program: &PathBuf, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let env = TestEnv::get();
    let helm_home = std::env::temp_dir().join("kafka-backup-tests-helm");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(repo_root())
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_DATA_HOME", helm_home.join("data"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

/// kubectl of the test cluster.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let mut all = vec!["--request-timeout=60s"];
    all.extend_from_slice(args);
    run(&TestEnv::get().path("KUBECTL"), &all, stdin)
}

/// helm of the test environment.
pub fn helm(args: &[&str]) -> String {
    run(&TestEnv::get().path("HELM"), args, None)
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
}

/// Deletes namespace `name` (background: the test does not wait for it to go).
pub async fn delete_namespace(client: &kube::Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await;
}

/// How a test's operator is installed.
#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// Operator replicas (the chart's `replicaCount`); more than one elect a leader.
    pub replicas: u32,
    /// Environment of the Job pods (the chart's `worker.env`).
    pub worker_env: Vec<(String, String)>,
    /// Further `--set` values.
    pub set: Vec<String>,
}

impl Default for ReleaseOptions {
    fn default() -> Self {
        ReleaseOptions {
            replicas: 1,
            // Progress every second, so that tests see it in status; every log line.
            worker_env: vec![
                ("KAFKA_BACKUP_PROGRESS_INTERVAL_SECS".into(), "1".into()),
                ("KAFKA_BACKUP_LOG".into(), "debug".into()),
            ],
            set: Vec::new(),
        }
    }
}

/// The operator of one namespace, installed with helm into that namespace.
#[derive(Clone)]
pub struct Release {
    pub client: kube::Client,
    pub namespace: String,
    pub name: String,
}

/// The label the chart puts on the operator's pods.
const OPERATOR_SELECTOR: &str =
    "app.kubernetes.io/name=kafka-backup,app.kubernetes.io/component=operator";

impl Release {
    /// `helm upgrade --install` of the chart into `namespace`, watching it only, with the test
    /// image; returns once the Deployment is available (helm's `--wait`).
    pub async fn install(client: &kube::Client, namespace: &str, opts: &ReleaseOptions) -> Release {
        let image = image();
        let (repo, tag) = image.rsplit_once(':').expect("KB_TEST_IMAGE is NAME:TAG");
        let worker_env: Vec<_> = opts
            .worker_env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        let name = "kafka-backup".to_string();
        let mut args = vec![
            "upgrade".to_string(),
            "--install".into(),
            name.clone(),
            CHART.into(),
            "--namespace".into(),
            namespace.into(),
            "--skip-crds".into(),
            "--wait".into(),
            "--timeout".into(),
            "180s".into(),
            "--set".into(),
            format!("image.repository={repo},image.tag={tag},image.pullPolicy=Never"),
            "--set".into(),
            format!("watchNamespace={namespace},replicaCount={}", opts.replicas),
            "--set".into(),
            "logLevel=debug,logFormat=text".into(),
            "--set-json".into(),
            format!("worker.env={}", serde_json::Value::Array(worker_env)),
        ];
        for s in &opts.set {
            args.push("--set".into());
            args.push(s.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        helm(&args);
        Release {
            client: client.clone(),
            namespace: namespace.to_string(),
            name,
        }
    }

    /// The operator's pods, oldest first.
    pub async fn pods(&self) -> Vec<Pod> {
        let mut pods = Api::<Pod>::namespaced(self.client.clone(), &self.namespace)
            .list(&ListParams::default().labels(OPERATOR_SELECTOR))
            .await
            .expect("operator pods")
            .items;
        pods.sort_by_key(|p| p.metadata.creation_timestamp.clone());
        pods
    }

    /// Everything the operator's pods logged, including their previous containers.
    pub async fn logs(&self) -> String {
        let mut all = String::new();
        for pod in self.pods().await {
            let name = pod.metadata.name.clone().unwrap_or_default();
            all.push_str(&pod_logs(&self.client, &self.namespace, &name).await);
        }
        all
    }
}

/// The logs of a pod's containers, the previous instances included where there were any.
pub async fn pod_logs(client: &kube::Client, namespace: &str, pod: &str) -> String {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let mut text = String::new();
    for previous in [true, false] {
        let params = LogParams {
            previous,
            ..LogParams::default()
        };
        if let Ok(t) = api.logs(pod, &params).await {
            text.push_str(&t);
        }
    }
    text
}
