//! The operator's end-to-end tests on the test cluster's real node: each test gets a namespace,
//! the storage Secret and its own operator installed there with the chart (`helm upgrade
//! --install`, the image `scripts/image --load` built); the kubelet runs every Job's pod from
//! the same image. Specs name the test services as Pods see them (cluster DNS); the test itself
//! reads Kafka and storage through 127.0.0.1.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use kafka_backup_testkit::cluster::{self, Release, ReleaseOptions};
pub use kafka_backup_testkit::poll::wait_for;
use kafka_backup_testkit::{TestEnv, k8s, unique_name};

use super::Target;

/// The namespaced objects the tests create, read and wait for (typed resources of the API).
pub trait Namespaced:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

/// A namespace with the storage Secret and an operator.
pub struct Setup {
    pub client: kube::Client,
    pub ns: String,
    pub release: Release,
    /// Where backups go, as the test reads them (127.0.0.1); [`Setup::storage`] is the same
    /// location as Pods reach it.
    pub target: Target,
}

impl Setup {
    pub async fn new(prefix: &str) -> Setup {
        Setup::with(prefix, ReleaseOptions::default()).await
    }

    pub async fn with(prefix: &str, opts: ReleaseOptions) -> Setup {
        let client = k8s::client().await;
        k8s::apply_crds(&client).await;
        let ns = unique_name(prefix);
        cluster::create_namespace(&client, &ns).await;
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
        let release = Release::install(&client, &ns, &opts).await;
        Setup {
            client,
            target: Target::S3 {
                prefix: unique_name("op"),
            },
            ns,
            release,
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Namespaced,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The storage spec as Pods reach it: the test's S3 location through the cluster's DNS.
    pub fn storage(&self) -> Value {
        let mut s = self.target.storage_json();
        if s["storageType"] == "s3" {
            s["s3"]["endpoint"] = json!(cluster::pod_s3_endpoint());
        }
        s
    }

    pub async fn create<K>(&self, manifest: Value) -> K
    where
        K: Namespaced,
    {
        let obj: K = serde_json::from_value(manifest).expect("object");
        self.api::<K>()
            .create(&PostParams::default(), &obj)
            .await
            .expect("create resource")
    }

    /// The resource as JSON, if it exists.
    pub async fn get<K>(&self, name: &str) -> Option<Value>
    where
        K: Namespaced,
    {
        let obj = self.api::<K>().get(name).await.ok()?;
        serde_json::to_value(&obj).ok()
    }

    /// Waits until the resource's status.phase is `phase`; returns the whole object as JSON.
    pub async fn wait_phase<K>(&self, name: &str, phase: &str, timeout: Duration) -> Value
    where
        K: Namespaced,
    {
        let mut last = Value::Null;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(obj) = self.get::<K>(name).await {
                if obj["status"]["phase"] == phase {
                    return obj;
                }
                last = obj;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{name}: phase {phase} not reached in {timeout:?}; last: {}\noperator log:\n{}\nworker pods:\n{}",
                    last["status"],
                    self.release.logs().await,
                    self.worker_summary().await
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn jobs(&self) -> Vec<Job> {
        self.api::<Job>()
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
    }

    /// The Job pods of this namespace (the operator's pods excluded), oldest first.
    pub async fn worker_pods(&self) -> Vec<Pod> {
        let mut pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels("job-name"))
            .await
            .expect("pods")
            .items;
        pods.sort_by_key(|p| p.metadata.creation_timestamp.clone());
        pods
    }

    /// Whether resource `name` has no Job and no worker pod left.
    pub async fn runs_gone(&self, name: &str) -> bool {
        let lp = ListParams::default().labels(&format!("kafka.oso.sh/name={name}"));
        let jobs = self.api::<Job>().list(&lp).await.map(|l| l.items.len());
        let pods = self.api::<Pod>().list(&lp).await.map(|l| l.items.len());
        matches!((jobs, pods), (Ok(0), Ok(0)))
    }

    /// Each worker pod's phase and container states, for failure messages.
    pub async fn worker_summary(&self) -> String {
        let mut s = String::new();
        for p in self.worker_pods().await {
            let st = serde_json::to_value(&p.status).unwrap_or_default();
            s.push_str(&format!(
                "{}: {} {}\n",
                p.name_any(),
                st["phase"],
                st["containerStatuses"]
            ));
        }
        s
    }

    /// Everything the worker pods that still exist logged.
    pub async fn worker_logs(&self) -> String {
        let mut all = String::new();
        for p in self.worker_pods().await {
            all.push_str(&cluster::pod_logs(&self.client, &self.ns, &p.name_any()).await);
        }
        all
    }

    /// Follows the log of resource `name`'s running worker pod (once its container has started)
    /// until the container ends or `timeout` passes; the task returns what it read. For pods that
    /// are deleted while they run, whose logs go with them.
    pub async fn follow_worker_log(
        &self,
        name: &str,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<String> {
        use futures::{AsyncBufReadExt, StreamExt};
        let api = self.api::<Pod>();
        let selector = format!("kafka.oso.sh/name={name}");
        let pod = wait_for("a running worker pod", Duration::from_secs(120), || async {
            let pods = api
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            pods.items.into_iter().find_map(|p| {
                let st = p
                    .status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .first()?
                    .state
                    .clone()?;
                st.running.is_some().then(|| p.name_any())
            })
        })
        .await;
        tokio::spawn(async move {
            let params = kube::api::LogParams {
                follow: true,
                ..Default::default()
            };
            let mut text = String::new();
            let Ok(reader) = api.log_stream(&pod, &params).await else {
                return text;
            };
            let mut lines = reader.lines();
            let deadline = tokio::time::Instant::now() + timeout;
            while let Ok(Some(Ok(line))) = tokio::time::timeout_at(deadline, lines.next()).await {
                text.push_str(&line);
                text.push('\n');
            }
            text
        })
    }

    /// (reason, note) of the events about `name`.
    pub async fn events(&self, name: &str) -> Vec<(String, String)> {
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

    /// An operator pod's HTTP endpoint (`/metrics`, `/healthz`, `/readyz`), through the API
    /// server's proxy: (HTTP status, body).
    pub fn operator_http(&self, pod: &str, path: &str) -> (u16, String) {
        let raw = format!("/api/v1/namespaces/{}/pods/{pod}:8080/proxy{path}", self.ns);
        let out = cluster::try_run(
            &TestEnv::get().path("KUBECTL"),
            &["--request-timeout=30s", "get", "--raw", &raw],
            None,
        );
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            (200, body)
        } else {
            (503, String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    pub fn secret_value(&self) -> String {
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

    pub async fn finish(self) {
        cluster::delete_namespace(&self.client, &self.ns).await;
    }
}

/// The Kafka cluster spec as Pods reach the test broker (PLAINTEXT listener for Pods).
pub fn pod_cluster() -> Value {
    json!({"bootstrapServers": [cluster::pod_kafka_bootstrap()]})
}

pub fn meta(name: &str) -> Value {
    json!({"name": name})
}

/// A KafkaBackup of `topic` to the setup's storage; `extra` adds or replaces spec fields.
pub fn backup_manifest(s: &Setup, name: &str, topic: &str, extra: Value) -> Value {
    let mut spec = json!({
        "kafkaCluster": pod_cluster(),
        "topics": [topic],
        "storage": s.storage(),
    });
    if let (Some(sp), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            sp.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaBackup", "metadata": meta(name), "spec": spec})
}

/// A KafkaRestore of backup `id` to the setup's Kafka; `extra` adds or replaces spec fields.
pub fn restore_manifest(s: &Setup, name: &str, id: &str, extra: Value) -> Value {
    let mut spec = json!({
        "backupId": id,
        "targetCluster": pod_cluster(),
        "storage": s.storage(),
    });
    if let (Some(sp), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            sp.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": meta(name), "spec": spec})
}

pub fn condition(obj: &Value) -> &Value {
    &obj["status"]["conditions"][0]
}

pub fn assert_ready(obj: &Value, status: &str, reason: &str) {
    let c = condition(obj);
    assert_eq!(c["type"], "Ready", "{c}");
    assert_eq!(c["status"], status, "{c}");
    assert_eq!(c["reason"], reason, "{c}");
    assert!(c["message"].as_str().is_some_and(|m| !m.is_empty()), "{c}");
    assert!(is_time(&c["lastTransitionTime"]), "{c}");
}

pub fn is_time(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
}
