//! Where backups live: `spec.storage` of every kind.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A storage location: one backend, chosen by `storageType`, configured by the block of the same name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageSpec {
    /// Which backend holds the backups.
    pub storage_type: StorageType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureStorage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsStorage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcStorage>,
    /// A local directory; for the CLI (the operator uses `pvc` for volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemStorage>,
}

/// Storage backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    S3,
    Azure,
    Gcs,
    Pvc,
    Filesystem,
}

impl StorageType {
    /// The name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageType::S3 => "s3",
            StorageType::Azure => "azure",
            StorageType::Gcs => "gcs",
            StorageType::Pvc => "pvc",
            StorageType::Filesystem => "filesystem",
        }
    }
}

impl StorageSpec {
    /// Backend blocks present in the spec other than the one `storageType` selects. They are not used;
    /// callers warn about them so a typo in `storageType` does not go unnoticed.
    pub fn unused_blocks(&self) -> Vec<&'static str> {
        let present = [
            (StorageType::S3, self.s3.is_some()),
            (StorageType::Azure, self.azure.is_some()),
            (StorageType::Gcs, self.gcs.is_some()),
            (StorageType::Pvc, self.pvc.is_some()),
            (StorageType::Filesystem, self.filesystem.is_some()),
        ];
        present
            .into_iter()
            .filter(|(t, set)| *set && *t != self.storage_type)
            .map(|(t, _)| t.as_str())
            .collect()
    }
}

/// Amazon S3 or an S3-compatible server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Storage {
    /// Bucket name.
    pub bucket: String,
    /// AWS region of the bucket.
    pub region: String,
    /// Key prefix under which the repository lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Custom endpoint URL (MinIO and other S3-compatible servers); empty means AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Access keys; without it the standard AWS credential chain is used (environment, web identity /
    /// IRSA, container and instance credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<S3CredentialsSecret>,
}

/// A Secret with an S3 access key pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3CredentialsSecret {
    /// Secret name.
    pub name: String,
    /// Key of the access key id (default `accessKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_key: Option<String>,
    /// Key of the secret access key (default `secretKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_key: Option<String>,
}

impl S3CredentialsSecret {
    pub const DEFAULT_ACCESS_KEY_KEY: &'static str = "accessKey";
    pub const DEFAULT_SECRET_KEY_KEY: &'static str = "secretKey";
}

/// Azure Blob Storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureStorage {
    /// Storage account name.
    pub account_name: String,
    /// Blob container name.
    pub container: String,
    /// Blob name prefix under which the repository lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Custom endpoint, e.g. `https://<account>.blob.core.usgovcloudapi.net` for a sovereign cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Authenticate with AKS Workload Identity (federated token from the pod's service account).
    #[serde(default)]
    pub use_workload_identity: bool,
    /// Account key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<AzureCredentialsSecret>,
    /// Shared access signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token_secret: Option<AzureSasTokenSecret>,
    /// Service principal (client secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_principal_secret: Option<AzureServicePrincipalSecret>,
}

/// A Secret with an Azure storage account key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureCredentialsSecret {
    /// Secret name.
    pub name: String,
    /// Key of the account key (default `AZURE_STORAGE_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key_key: Option<String>,
}

impl AzureCredentialsSecret {
    pub const DEFAULT_ACCOUNT_KEY_KEY: &'static str = "AZURE_STORAGE_KEY";
}

/// A Secret with an Azure SAS token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSasTokenSecret {
    /// Secret name.
    pub name: String,
    /// Key of the SAS token (default `AZURE_SAS_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_token_key: Option<String>,
}

impl AzureSasTokenSecret {
    pub const DEFAULT_SAS_TOKEN_KEY: &'static str = "AZURE_SAS_TOKEN";
}

/// A Secret with Azure service principal credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureServicePrincipalSecret {
    /// Secret name.
    pub name: String,
    /// Key of the client id (default `AZURE_CLIENT_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_key: Option<String>,
    /// Key of the tenant id (default `AZURE_TENANT_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id_key: Option<String>,
    /// Key of the client secret (default `AZURE_CLIENT_SECRET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_key: Option<String>,
}

impl AzureServicePrincipalSecret {
    pub const DEFAULT_CLIENT_ID_KEY: &'static str = "AZURE_CLIENT_ID";
    pub const DEFAULT_TENANT_ID_KEY: &'static str = "AZURE_TENANT_ID";
    pub const DEFAULT_CLIENT_SECRET_KEY: &'static str = "AZURE_CLIENT_SECRET";
}

/// Google Cloud Storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcsStorage {
    /// Bucket name.
    pub bucket: String,
    /// Object name prefix under which the repository lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Service-account JSON; without it, application default credentials are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<GcsCredentialsSecret>,
}

/// A Secret with a Google service-account key file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcsCredentialsSecret {
    /// Secret name.
    pub name: String,
    /// Key of the service-account JSON (default `credentials.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl GcsCredentialsSecret {
    pub const DEFAULT_KEY: &'static str = "credentials.json";
}

/// A PersistentVolumeClaim, mounted into the Job's pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PvcStorage {
    /// Name of the PersistentVolumeClaim in the resource's namespace.
    pub claim_name: String,
    /// Directory inside the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

/// A directory on the machine running the CLI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilesystemStorage {
    /// Absolute or relative path of the directory.
    pub path: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_spec_example_parses_and_names_unused_blocks() {
        let spec: StorageSpec = serde_json::from_value(serde_json::json!({
            "storageType": "s3",
            "s3": {"bucket": "kafka-backups", "region": "us-west-2", "prefix": "production/hourly",
                   "endpoint": "", "credentialsSecret": {"name": "s3-credentials",
                   "accessKeyKey": "accessKey", "secretKeyKey": "secretKey"}},
            "azure": {"accountName": "kafkabackups123456", "container": "kafka-backups",
                      "prefix": "production/hourly",
                      "credentialsSecret": {"name": "azure-credentials", "accountKeyKey": "AZURE_STORAGE_KEY"}},
            "gcs": {"bucket": "kafka-backups", "prefix": "production/hourly",
                    "credentialsSecret": {"name": "gcs-credentials", "key": "credentials.json"}},
            "pvc": {"claimName": "backup-storage", "subPath": "kafka/production"}
        }))
        .expect("spec example parses");
        assert_eq!(spec.storage_type, StorageType::S3);
        assert_eq!(spec.unused_blocks(), vec!["azure", "gcs", "pvc"]);
    }

    #[test]
    fn unknown_storage_type_lists_accepted_values() {
        let err = serde_json::from_value::<StorageSpec>(serde_json::json!({"storageType": "ftp"}))
            .expect_err("ftp is not a backend");
        let msg = err.to_string();
        assert!(
            msg.contains("ftp") && msg.contains("s3") && msg.contains("filesystem"),
            "{msg}"
        );
    }
}

/// The one rule for the default storage (`--default-storage` of the operator and of the CLI): a
/// resource's own `spec.storage` wins, and the default stands in only where the resource has
/// none. Returns the storage with the name to report it by. Generic so that the operator, which
/// hands the worker a spec as JSON, and the engine, which opens a typed spec, apply the same rule.
pub fn own_or_default<'a, T>(
    own: Option<&'a T>,
    default: Option<&'a T>,
) -> Option<(&'a T, &'static str)> {
    match (own, default) {
        (Some(s), _) => Some((s, "spec.storage")),
        (None, Some(d)) => Some((d, "default storage")),
        (None, None) => None,
    }
}

#[cfg(test)]
mod own_or_default_tests {
    use super::own_or_default;

    #[test]
    fn the_own_storage_wins_and_the_default_only_stands_in() {
        assert_eq!(
            own_or_default(Some(&1), Some(&2)),
            Some((&1, "spec.storage"))
        );
        assert_eq!(
            own_or_default(None, Some(&2)),
            Some((&2, "default storage"))
        );
        assert_eq!(own_or_default(Some(&1), None), Some((&1, "spec.storage")));
        assert_eq!(own_or_default::<i32>(None, None), None);
    }
}
