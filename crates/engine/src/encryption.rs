//! Encryption keys (docs/format.md §2.5): read from the Secret `spec.encryption.keySecret` names,
//! or from [`KEY_ENV`] when the CLI is given it, and checked against what a backup's manifest
//! records before any block is read or written.
//!
//! A key is base64 text of 32 bytes (44 characters; `openssl rand -base64 32`); surrounding
//! whitespace, such as the newline an editor leaves, is ignored. Nothing here ever puts a key, or
//! any part of one, into an error or a log line: messages name the field, the Secret and the key
//! id.
//!
//! One backup name, one key: an incremental backup references the segments of the backup it
//! continues, so its key id and key must be the ones that backup recorded, and encryption cannot
//! be switched on or off for an existing name.

use base64::Engine;
use kafka_backup_api::encryption::Encryption;
use kafka_backup_format::{ENCRYPTION_ALGORITHM, EncryptionInfo, EncryptionKey, KEY_LEN, Manifest};

use crate::error::{Error, Result};
use crate::secrets::{SecretStore, SecretString};

/// The environment variable from which the CLI takes a key (base64), in place of the Secret that
/// `spec.encryption.keySecret` names.
pub const KEY_ENV: &str = "KAFKA_BACKUP_ENCRYPTION_KEY";

/// A key given outside the spec, e.g. from [`KEY_ENV`]. When present it is used instead of
/// `spec.encryption.keySecret`, which is then not read.
#[derive(Clone, Debug)]
pub struct KeyOverride {
    /// Where the value came from, for messages (e.g. [`KEY_ENV`]).
    pub source: String,
    /// The base64 text.
    pub value: SecretString,
}

impl KeyOverride {
    /// The key in environment variable [`KEY_ENV`], if it is set.
    pub fn from_env() -> Option<KeyOverride> {
        std::env::var_os(KEY_ENV).map(|v| KeyOverride {
            source: KEY_ENV.to_string(),
            value: SecretString::new(v.to_string_lossy().into_owned()),
        })
    }
}

fn invalid(field: &str, message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        field: field.to_string(),
        message: message.into(),
    }
}

const HOW_TO_MAKE_ONE: &str =
    "an AES-256 key is 32 bytes written as base64 text (44 characters): `openssl rand -base64 32`";

/// Decodes base64 text of a 32-byte key. The reason for a refusal never quotes the text.
fn decode_key(bytes: &[u8]) -> std::result::Result<[u8; KEY_LEN], String> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(format!("value is not base64 text; {HOW_TO_MAKE_ONE}"));
    };
    let text = text.trim();
    if text.is_empty() {
        return Err("value is empty".to_string());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| format!("value is not base64 text; {HOW_TO_MAKE_ONE}"))?;
    let len = decoded.len();
    decoded
        .try_into()
        .map_err(|_: Vec<u8>| format!("value decodes to {len} bytes, not 32; {HOW_TO_MAKE_ONE}"))
}

/// Where a key was read from, for messages about it.
fn source_field(field: &str, enc: Option<&Encryption>, over: Option<&KeyOverride>) -> String {
    match (over, enc) {
        (Some(o), _) => o.source.clone(),
        (None, Some(e)) => format!(
            "{field}.keySecret (key '{}' of secret '{}')",
            e.key_secret.key(),
            e.key_secret.name
        ),
        (None, None) => field.to_string(),
    }
}

/// The key bytes: from the override when given, else from the Secret `enc` names.
fn key_bytes(
    field: &str,
    enc: Option<&Encryption>,
    secrets: &SecretStore,
    over: Option<&KeyOverride>,
) -> Result<[u8; KEY_LEN]> {
    if let Some(o) = over {
        return decode_key(o.value.expose().as_bytes())
            .map_err(|reason| invalid(&o.source, reason));
    }
    let Some(enc) = enc else {
        return Err(Error::Internal(format!("{field}: no key source")));
    };
    let secret_field = format!("{field}.keySecret");
    let (name, key) = (&enc.key_secret.name, enc.key_secret.key());
    let path = secrets.path(&secret_field, name, key)?;
    let unusable = |reason: String| Error::SecretKeyUnreadable {
        field: secret_field.clone(),
        secret: name.clone(),
        key: key.to_string(),
        reason,
    };
    let bytes = std::fs::read(&path).map_err(|e| unusable(e.to_string()))?;
    decode_key(&bytes).map_err(unusable)
}

/// Checks a key id: it is written into manifests and error messages.
pub fn check_key_id(field: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 253
        && id.starts_with(|c: char| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '/' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "'{id}' is not a valid key id: use up to 253 letters, digits, '.', '_', ':', '/' and '-', starting with a letter or digit"
            ),
        ))
    }
}

/// The key a backup encrypts with, per its `spec.encryption` (`None` when it has none). `over`,
/// when given, replaces the Secret as the source of the key bytes. Fails, naming the field, when
/// the key id is invalid, the Secret or its key is missing, or the value is not a base64 256-bit
/// key.
pub fn key_for_backup(
    enc: Option<&Encryption>,
    secrets: &SecretStore,
    over: Option<&KeyOverride>,
) -> Result<Option<EncryptionKey>> {
    let Some(enc) = enc else {
        return Ok(None);
    };
    let id = enc.key_id();
    let id_field = if enc.key_id.is_some() {
        "spec.encryption.keyId"
    } else {
        "spec.encryption.keySecret.name"
    };
    check_key_id(id_field, id)?;
    let bytes = key_bytes("spec.encryption", Some(enc), secrets, over)?;
    Ok(Some(EncryptionKey::new(id, &bytes)))
}

/// Checks that a backup run may add segments encrypted with `key` (or unencrypted, `None`) to
/// what `recorded` describes: the encryption of `what` (the backup this run continues, or the
/// unfinished run it resumes), whose segments it references. One name keeps one key.
pub fn check_continuation(
    what: &str,
    recorded: Option<&EncryptionInfo>,
    key: Option<&EncryptionKey>,
    spec: Option<&Encryption>,
    over: Option<&KeyOverride>,
) -> Result<()> {
    match (recorded, key) {
        (None, None) => Ok(()),
        (Some(r), None) => Err(invalid(
            "spec.encryption",
            format!(
                "{what} is encrypted (key id '{}') and this backup continues it, referencing its segments; set spec.encryption with that key, or use a new metadata.name for unencrypted backups",
                r.key_id
            ),
        )),
        (None, Some(_)) => Err(invalid(
            "spec.encryption",
            format!(
                "{what} is not encrypted and this backup continues it, referencing its unencrypted segments; use a new metadata.name for encrypted backups"
            ),
        )),
        (Some(r), Some(k)) => {
            check_algorithm(what, r)?;
            if r.key_id != k.key_id() {
                return Err(invalid(
                    "spec.encryption.keyId",
                    format!(
                        "key id '{}' is not key id '{}' of {what}, which this backup continues, referencing its segments; every backup of a name uses one key: set keyId: {} with that key, or use a new metadata.name for a new key",
                        k.key_id(),
                        r.key_id,
                        r.key_id
                    ),
                ));
            }
            if r.key_check.as_deref().is_some_and(|c| c != k.key_check()) {
                return Err(invalid(
                    &source_field("spec.encryption", spec, over),
                    format!(
                        "is not the key with id '{}' that {what} was encrypted with; every backup of a name uses one key: give that key, or use a new metadata.name (and key id) for a new key",
                        r.key_id
                    ),
                ));
            }
            Ok(())
        }
    }
}

fn check_algorithm(what: &str, info: &EncryptionInfo) -> Result<()> {
    if info.algorithm != ENCRYPTION_ALGORITHM {
        return Err(Error::Internal(format!(
            "{what} is encrypted with '{}', which this version does not know (it reads {ENCRYPTION_ALGORITHM})",
            info.algorithm
        )));
    }
    Ok(())
}

/// What reading a backup needs the key for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A restore: a key given for an unencrypted backup is refused, so a backup expected to be
    /// encrypted is never restored from data that is not.
    Restore,
    /// Deep verification: a key given for an unencrypted backup is not needed, and not read.
    Verify,
}

/// The key to read backup `manifest` with: `None` for an unencrypted backup. `enc` is the
/// reading spec's `spec.encryption`; `over`, when given, replaces its Secret as the source of the
/// key bytes (and is enough on its own). The key is checked against the manifest's key id and key
/// check value, so a wrong key fails here, naming where it came from and the key id, before any
/// block is read.
pub fn key_for_reading(
    manifest: &Manifest,
    enc: Option<&Encryption>,
    secrets: &SecretStore,
    over: Option<&KeyOverride>,
    purpose: Purpose,
) -> Result<Option<EncryptionKey>> {
    let backup = format!("backup {}", manifest.backup_id);
    let Some(info) = &manifest.encryption else {
        if enc.is_some() && purpose == Purpose::Restore {
            return Err(invalid(
                "spec.encryption",
                format!("{backup} is not encrypted; remove spec.encryption to restore it"),
            ));
        }
        return Ok(None);
    };
    check_algorithm(&backup, info)?;
    if enc.is_none() && over.is_none() {
        return Err(invalid(
            "spec.encryption",
            format!(
                "{backup} is encrypted ({}, key id '{}'); set spec.encryption.keySecret to the Secret holding that key (the CLI also takes it from {KEY_ENV})",
                info.algorithm, info.key_id
            ),
        ));
    }
    if let Some(id) = enc.and_then(|e| e.key_id.as_deref())
        && id != info.key_id
    {
        return Err(invalid(
            "spec.encryption.keyId",
            format!(
                "'{id}' is not the key id of {backup}, which was encrypted with key id '{}'",
                info.key_id
            ),
        ));
    }
    let bytes = key_bytes("spec.encryption", enc, secrets, over)?;
    let key = EncryptionKey::new(info.key_id.clone(), &bytes);
    if info
        .key_check
        .as_deref()
        .is_some_and(|c| c != key.key_check())
    {
        return Err(invalid(
            &source_field("spec.encryption", enc, over),
            format!(
                "is not the key with id '{}' that {backup} was encrypted with",
                info.key_id
            ),
        ));
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_B64: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

    #[test]
    fn keys_are_base64_of_32_bytes_and_refusals_never_quote_them() {
        assert_eq!(decode_key(KEY_B64.as_bytes()).expect("key"), [0x42; 32]);
        assert_eq!(
            decode_key(format!("{KEY_B64}\n").as_bytes()).expect("newline"),
            [0x42; 32]
        );
        for (bad, want) in [
            ("QkJCQkJCQkJCQkJCQkJCQg==", "decodes to 16 bytes, not 32"),
            ("not base64 at all!", "not base64 text"),
            ("  \n", "empty"),
        ] {
            let e = decode_key(bad.as_bytes()).expect_err(bad);
            assert!(e.contains(want), "{e}");
            assert!(!e.contains(bad.trim()) || bad.trim().is_empty(), "{e}");
        }
        // 32 raw bytes are not accepted: one format, base64, everywhere.
        let e = decode_key(&[0xa5; 32]).expect_err("raw");
        assert!(e.contains("not base64 text"), "{e}");
        let e = decode_key(&[b'A'; 32]).expect_err("32 base64 characters are 24 bytes");
        assert!(e.contains("24 bytes"), "{e}");
    }

    #[test]
    fn key_ids_are_checked() {
        check_key_id("f", "orders-key-2024/v1").expect("valid");
        for bad in ["", "-x", "a b", "ключ", &"a".repeat(254)] {
            let e = check_key_id("spec.encryption.keyId", bad).expect_err(bad);
            assert!(e.to_string().starts_with("spec.encryption.keyId: "), "{e}");
        }
    }
}
