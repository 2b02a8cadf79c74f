//! Smoke tests against the genuine kube-apiserver and kube-controller-manager started by
//! `scripts/testenv up k8s`: a CRD applies and serves custom objects (with a status subresource),
//! and a Job gets its Pod from the Job controller, which the garbage collector removes with the Job.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kafka_backup_testkit::{k8s, unique_name};

/// A throwaway resource kind, only for proving the API server serves custom resources.
#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "smoke.kafka.oso.sh",
    version = "v1",
    kind = "SmokeWidget",
    namespaced,
    status = "SmokeWidgetStatus"
)]
struct SmokeWidgetSpec {
    size: i64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
struct SmokeWidgetStatus {
    phase: String,
}

/// The test kit's polling helper, for conditions that are true or false.
async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    kafka_backup_testkit::poll::wait_for(what, timeout, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await
}

async fn namespace(client: &kube::Client) -> String {
    let name = unique_name("smoke");
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

#[tokio::test]
async fn crd_applies_and_serves_custom_objects() {
    let client = k8s::client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = SmokeWidget::crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply("kafka-backup-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    wait_for("CRD established", Duration::from_secs(30), || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            crds.get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        }
    })
    .await;

    let ns = namespace(&client).await;
    let widgets: Api<SmokeWidget> = Api::namespaced(client.clone(), &ns);
    // The CRD may be established before its endpoint is served by every handler; retry briefly.
    let widget = SmokeWidget::new("w1", SmokeWidgetSpec { size: 3 });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match widgets.create(&PostParams::default(), &widget).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("create widget not yet possible: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("create custom object: {e}"),
        }
    }
    let status = serde_json::json!({"status": {"phase": "Ready"}});
    widgets
        .patch_status("w1", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("patch status subresource");
    let got = widgets.get("w1").await.expect("get custom object");
    assert_eq!(got.spec.size, 3);
    assert_eq!(got.status.map(|s| s.phase).as_deref(), Some("Ready"));

    // A wrongly typed field is rejected by the schema with a message naming it.
    let gvk = kube::api::GroupVersionKind::gvk("smoke.kafka.oso.sh", "v1", "SmokeWidget");
    let ar = kube::api::ApiResource::from_gvk(&gvk);
    let dynamic: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    let obj: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "smoke.kafka.oso.sh/v1", "kind": "SmokeWidget",
        "metadata": {"name": "bad2"}, "spec": {"size": "three"}
    }))
    .expect("dynamic object");
    let err = dynamic
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("schema rejects a string size");
    assert!(err.to_string().contains("spec.size"), "{err}");

    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
}

#[tokio::test]
async fn job_gets_a_pod_that_is_collected_with_it() {
    let client = k8s::client().await;
    let ns = namespace(&client).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "smoke"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "containers": [{"name": "main", "image": "kafka-backup:test", "command": ["true"]}]
            }}
        }
    }))
    .expect("job object");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create job");

    let selector = ListParams::default().labels("job-name=smoke");
    wait_for(
        "the Job controller to create a Pod",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let selector = selector.clone();
            async move { pods.list(&selector).await.is_ok_and(|l| l.items.len() == 1) }
        },
    )
    .await;
    let pod = pods
        .list(&selector)
        .await
        .expect("list pods")
        .items
        .remove(0);
    let owner = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.first())
        .expect("pod has an owner");
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", "smoke"));

    jobs.delete("smoke", &DeleteParams::background())
        .await
        .expect("delete job");
    wait_for(
        "the garbage collector to delete the Pod",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let selector = selector.clone();
            async move { pods.list(&selector).await.is_ok_and(|l| l.items.is_empty()) }
        },
    )
    .await;

    Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::default())
        .await
        .expect("delete namespace");
}
