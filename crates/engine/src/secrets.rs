//! Secrets as files, in the layout Kubernetes uses when it mounts a Secret as a volume:
//! `<dir>/<secret-name>/<key>`. The Job pod mounts each Secret the spec names under one directory;
//! the CLI points `--secrets-dir` at a directory of the same shape. One code path serves both.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Secrets are mounted.
#[derive(Clone, Debug)]
pub struct SecretStore {
    dir: PathBuf,
}

/// A secret value. Its `Debug` and `Display` never show the value, so it cannot leak into logs,
/// errors or status by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value read from elsewhere (an environment variable).
    pub fn new(value: String) -> Self {
        SecretString(value)
    }

    /// The value itself, for handing to a client library. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl SecretStore {
    /// Secrets under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SecretStore { dir: dir.into() }
    }

    /// The directory Secrets are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `key` of `secret`, which must exist. `field` is the spec field that named
    /// the secret, for the error message.
    pub fn path(&self, field: &str, secret: &str, key: &str) -> Result<PathBuf> {
        let path = self.file(secret, key);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::SecretKeyMissing {
                field: field.to_string(),
                secret: secret.to_string(),
                key: key.to_string(),
                path,
            })
        }
    }

    /// The file holding `key` of `secret` if it exists; for keys that are optional with a default.
    pub fn optional_path(&self, secret: &str, key: &str) -> Option<PathBuf> {
        let path = self.file(secret, key);
        path.is_file().then_some(path)
    }

    /// The value of `key` of `secret` as text. One trailing newline (as left by
    /// `kubectl create secret --from-file` on a file written by an editor) is removed.
    pub fn read_string(&self, field: &str, secret: &str, key: &str) -> Result<SecretString> {
        let path = self.path(field, secret, key)?;
        let unreadable = |reason: String| Error::SecretKeyUnreadable {
            field: field.to_string(),
            secret: secret.to_string(),
            key: key.to_string(),
            reason,
        };
        let bytes = std::fs::read(&path).map_err(|e| unreadable(e.to_string()))?;
        let mut value =
            String::from_utf8(bytes).map_err(|_| unreadable("value is not UTF-8 text".into()))?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        if value.is_empty() {
            return Err(unreadable("value is empty".into()));
        }
        Ok(SecretString(value))
    }

    fn file(&self, secret: &str, key: &str) -> PathBuf {
        self.dir.join(secret).join(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(secret: &str, key: &str, value: &[u8]) -> (SecretStore, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("kb-secrets-{}-{}", std::process::id(), secret));
        std::fs::create_dir_all(dir.join(secret)).expect("create secret dir");
        std::fs::write(dir.join(secret).join(key), value).expect("write secret");
        (SecretStore::new(&dir), dir)
    }

    #[test]
    fn reads_value_and_strips_one_newline() {
        let (store, dir) = store_with("creds", "password", b"s3cr3t\n");
        let v = store
            .read_string("saslSecret", "creds", "password")
            .expect("read");
        assert_eq!(v.expose(), "s3cr3t");
        assert_eq!(format!("{v:?} {v}"), "SecretString(<redacted>) <redacted>");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn missing_key_names_field_secret_and_key_but_no_value() {
        let (store, dir) = store_with("creds2", "username", b"alice");
        let err = store
            .read_string("kafkaCluster.saslSecret", "creds2", "password")
            .expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("kafkaCluster.saslSecret"), "{msg}");
        assert!(
            msg.contains("'password'") && msg.contains("'creds2'"),
            "{msg}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn empty_value_is_an_error() {
        let (store, dir) = store_with("creds3", "password", b"\n");
        let err = store
            .read_string("saslSecret", "creds3", "password")
            .expect_err("empty");
        assert!(err.to_string().contains("empty"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
