//! The `kafka.oso.sh/v1alpha1` API: the one schema that both the `kafka-backup` CLI (reading YAML
//! manifests) and the operator (reconciling custom resources) use, so a manifest means the same thing
//! wherever it runs.

pub mod backup;
pub mod common;
pub mod encryption;
pub mod kafka;
pub mod offsets;
pub mod restore;
pub mod storage;
pub mod worker;

/// API group of every kafka-backup custom resource.
pub const GROUP: &str = "kafka.oso.sh";
/// API version of every kafka-backup custom resource.
pub const VERSION: &str = "v1alpha1";

/// The CustomResourceDefinitions of every kind, generated from the types above: what
/// `kafka-backup crd` prints and `deploy/` holds.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        backup::KafkaBackup::crd(),
        restore::KafkaRestore::crd(),
        offsets::KafkaOffsetReset::crd(),
        offsets::KafkaOffsetRollback::crd(),
    ]
}
