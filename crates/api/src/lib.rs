//! The `kafka.oso.sh/v1alpha1` API: the one schema that both the `kafka-backup` CLI (reading YAML
//! manifests) and the operator (reconciling custom resources) use, so a manifest means the same thing
//! wherever it runs.

pub mod backup;
pub mod common;
pub mod kafka;
pub mod offsets;
pub mod restore;
pub mod storage;

/// API group of every kafka-backup custom resource.
pub const GROUP: &str = "kafka.oso.sh";
/// API version of every kafka-backup custom resource.
pub const VERSION: &str = "v1alpha1";
