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
