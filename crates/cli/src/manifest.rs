//! Reading KafkaBackup / KafkaRestore manifests: the same YAML the operator reconciles.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;

/// A manifest file could not be used; the message names the file, the field and what is accepted.
#[derive(Debug)]
pub struct ManifestError(pub String);

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ManifestError {}

/// Reads the YAML manifest at `path` as a `kind` of `kafka.oso.sh/v1alpha1`. Unknown fields and
/// wrong values are errors naming the field path (`spec.kafkaCluster.bootstrapServer`).
pub fn load<T: DeserializeOwned>(path: &Path, kind: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    parse(&text, kind).map_err(|e| ManifestError(format!("{}: {e}", path.display())).into())
}

/// Parses manifest text; see [`load`].
pub fn parse<T: DeserializeOwned>(text: &str, kind: &str) -> Result<T> {
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| ManifestError(format!("not valid YAML: {e}")))?;
    let api_version = value.get("apiVersion").and_then(|v| v.as_str());
    let expected_api = format!("{}/{}", kafka_backup_api::GROUP, kafka_backup_api::VERSION);
    if api_version != Some(expected_api.as_str()) {
        bail!(ManifestError(format!(
            "apiVersion: expected {expected_api}, found {}",
            api_version.map_or("nothing".to_string(), |v| format!("'{v}'"))
        )));
    }
    let found_kind = value.get("kind").and_then(|v| v.as_str());
    if found_kind != Some(kind) {
        bail!(ManifestError(format!(
            "kind: expected {kind}, found {}",
            found_kind.map_or("nothing".to_string(), |v| format!("'{v}'"))
        )));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ManifestError(if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
        .into()
    })
}

/// The storage of a manifest of any kind.
pub fn load_storage(path: &Path) -> Result<kafka_backup_api::storage::StorageSpec> {
    load_storage_if_set(path)?
        .ok_or_else(|| ManifestError(format!("{}: spec.storage: missing", path.display())).into())
}

/// The `spec.storage` of a manifest of any kind, `None` where it has none (kinds that may use a
/// default storage); a storage that is set but invalid is an error, never replaced by a default.
pub fn load_storage_if_set(path: &Path) -> Result<Option<kafka_backup_api::storage::StorageSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| ManifestError(format!("{}: not valid YAML: {e}", path.display())))?;
    let Some(storage) = value
        .get("spec")
        .and_then(|s| s.get("storage"))
        .filter(|s| !s.is_null())
        .cloned()
    else {
        return Ok(None);
    };
    serde_path_to_error::deserialize(storage)
        .map(Some)
        .map_err(|e| {
            ManifestError(format!(
                "{}: spec.storage.{}: {}",
                path.display(),
                e.path(),
                e.inner()
            ))
            .into()
        })
}

/// The `spec.encryption` of a manifest of any kind, if it has one.
pub fn load_encryption(path: &Path) -> Result<Option<kafka_backup_api::encryption::Encryption>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| ManifestError(format!("{}: not valid YAML: {e}", path.display())))?;
    let Some(encryption) = value.get("spec").and_then(|s| s.get("encryption")).cloned() else {
        return Ok(None);
    };
    serde_path_to_error::deserialize(encryption)
        .map(Some)
        .map_err(|e| {
            ManifestError(format!(
                "{}: spec.encryption.{}: {}",
                path.display(),
                e.path(),
                e.inner()
            ))
            .into()
        })
}

#[cfg(test)]
mod tests {
    use kafka_backup_api::backup::KafkaBackup;

    const SIMPLE: &str = r#"
apiVersion: kafka.oso.sh/v1alpha1
kind: KafkaBackup
metadata:
  name: simple-backup
spec:
  kafkaCluster:
    bootstrapServers:
      - kafka:9092
  topics:
    - my-topic
  storage:
    storageType: s3
    s3:
      bucket: my-backups
      region: us-west-2
"#;

    #[test]
    fn spec_example_parses() {
        let kb: KafkaBackup = super::parse(SIMPLE, "KafkaBackup").expect("parses");
        assert_eq!(kb.metadata.name.as_deref(), Some("simple-backup"));
        assert_eq!(kb.spec.topics, vec!["my-topic"]);
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let text = SIMPLE.replace("bootstrapServers:", "bootstrapServer:");
        let err = super::parse::<KafkaBackup>(&text, "KafkaBackup").expect_err("unknown field");
        let msg = err.to_string();
        assert!(msg.contains("spec.kafkaCluster"), "{msg}");
        assert!(msg.contains("bootstrapServer"), "{msg}");
    }

    #[test]
    fn wrong_kind_and_api_version_are_named() {
        let err = super::parse::<KafkaBackup>(SIMPLE, "KafkaRestore").expect_err("kind");
        assert!(
            err.to_string().contains("kind: expected KafkaRestore"),
            "{err}"
        );
        let text = SIMPLE.replace("kafka.oso.sh/v1alpha1", "kafka.oso.sh/v1");
        let err = super::parse::<KafkaBackup>(&text, "KafkaBackup").expect_err("apiVersion");
        assert!(
            err.to_string()
                .contains("apiVersion: expected kafka.oso.sh/v1alpha1"),
            "{err}"
        );
    }

    #[test]
    fn bad_enum_value_lists_accepted_values() {
        let text = SIMPLE.replace("  storage:\n", "  compression: brotli\n  storage:\n");
        let err = super::parse::<KafkaBackup>(&text, "KafkaBackup").expect_err("compression");
        let msg = err.to_string();
        assert!(
            msg.contains("spec.compression") && msg.contains("brotli") && msg.contains("zstd"),
            "{msg}"
        );
    }
}
