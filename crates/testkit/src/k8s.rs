//! The test Kubernetes API server.

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::TestEnv;

/// A client for the test API server, authenticated as cluster admin with the kubeconfig
/// `scripts/testenv` wrote.
pub async fn client() -> kube::Client {
    let path = TestEnv::get().path("KUBECONFIG");
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", path.display()));
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    kube::Client::try_from(config).expect("kube client")
}

/// Applies `crd` (server-side apply, idempotent, so tests running in parallel may all call it)
/// and waits up to 30 s until the API server serves it.
pub async fn apply_crd(
    client: &kube::Client,
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::ResourceExt;
    use kube::api::{Api, Patch, PatchParams};
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply("kafka-backup-tests").force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|e| panic!("apply CRD {name}: {e}"));
    let crds = &crds;
    let name = name.as_str();
    crate::poll::wait_for(
        &format!("CRD {name} to be established"),
        std::time::Duration::from_secs(30),
        move || async move {
            crds.get(name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
                .then_some(())
        },
    )
    .await;
}

/// Applies the CustomResourceDefinitions of every kafka-backup kind; see [`apply_crd`].
pub async fn apply_crds(client: &kube::Client) {
    for crd in kafka_backup_api::crds() {
        apply_crd(client, &crd).await;
    }
}
