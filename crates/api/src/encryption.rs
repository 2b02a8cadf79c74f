//! `spec.encryption` of a KafkaBackup and a KafkaRestore: client-side encryption of record data
//! at rest, with a key from a Kubernetes Secret.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Client-side encryption: every block of record data is compressed, then encrypted with
/// AES-256-GCM before it leaves the process. Manifests (topics, offsets, sizes) stay readable, so
/// backups can be listed and described without the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Encryption {
    /// The Secret holding the 256-bit key as base64 text (44 characters, e.g. the output of
    /// `openssl rand -base64 32`).
    pub key_secret: EncryptionKeySecret,
    /// The key's id, recorded in every backup's manifest and named by errors (default: the
    /// Secret's name). Every backup of one KafkaBackup name uses one key id; on a KafkaRestore it
    /// must match the backup's, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    )]
    pub key_id: Option<String>,
}

impl Encryption {
    /// The key id: `keyId`, else the Secret's name.
    pub fn key_id(&self) -> &str {
        self.key_id.as_deref().unwrap_or(&self.key_secret.name)
    }
}

/// A Secret holding an encryption key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionKeySecret {
    /// Secret name.
    pub name: String,
    /// Key of the encryption key in the Secret (default `encryption.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl EncryptionKeySecret {
    pub const DEFAULT_KEY: &'static str = "encryption.key";

    /// The key within the Secret: `key`, else [`Self::DEFAULT_KEY`].
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(Self::DEFAULT_KEY)
    }
}
