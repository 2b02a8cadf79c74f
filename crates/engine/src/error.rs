//! One error type for the engine. Messages name the field, value or object at fault and never carry
//! a secret value.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Secret key named by the spec is not present where Secrets are mounted.
    #[error("{field}: key '{key}' of secret '{secret}' not found (looked for {path})")]
    SecretKeyMissing {
        field: String,
        secret: String,
        key: String,
        path: PathBuf,
    },
    /// A Secret key exists but cannot be read or is not usable.
    #[error("{field}: key '{key}' of secret '{secret}' cannot be used: {reason}")]
    SecretKeyUnreadable {
        field: String,
        secret: String,
        key: String,
        reason: String,
    },
    /// The spec combines settings that cannot work together.
    #[error("{field}: {message}")]
    InvalidSpec { field: String, message: String },
    /// The brokers rejected the credentials.
    #[error("authentication to Kafka at {brokers} failed: {reason}")]
    KafkaAuthentication { brokers: String, reason: String },
    /// The TLS handshake failed (untrusted CA, wrong host name, bad client certificate).
    #[error("TLS handshake with Kafka at {brokers} failed: {reason}")]
    KafkaTls { brokers: String, reason: String },
    /// No broker answered in time.
    #[error("Kafka at {brokers} not reachable within {:?}{}", timeout, last_error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    KafkaUnreachable {
        brokers: String,
        timeout: Duration,
        last_error: Option<String>,
    },
    /// A storage operation failed (after retries, where retrying made sense).
    #[error("storage {operation} of {location} failed: {source}")]
    Storage {
        operation: String,
        location: String,
        #[source]
        source: object_store::Error,
    },
    /// An object in storage is not in the expected format or is corrupt.
    #[error("{object}: {source}")]
    Format {
        object: String,
        #[source]
        source: kafka_backup_format::FormatError,
    },
    /// No topic of the cluster matches the spec's patterns.
    #[error("spec.topics: no topic matches {patterns:?}{} ({available} topics available to this client)", if excludes.is_empty() { String::new() } else { format!(" after excluding {excludes:?}") })]
    NoTopicsMatch {
        patterns: Vec<String>,
        excludes: Vec<String>,
        available: usize,
    },
    /// A backup id that is not in the repository.
    #[error("backupId: backup '{backup_id}' not found at {location}{}", if nearest.is_empty() { "; it holds no backups".to_string() } else { format!("; nearest available: {}", nearest.join(", ")) })]
    BackupNotFound {
        backup_id: String,
        location: String,
        nearest: Vec<String>,
    },
    /// The run was asked to stop; what was stored is checkpointed.
    #[error("interrupted: what was stored is checkpointed; run the same command again to resume")]
    Interrupted,
    /// A bug or an unexpected failure inside the process.
    #[error("internal error: {0}")]
    Internal(String),
    /// Any other error from the Kafka client.
    #[error("Kafka {operation} failed: {source}")]
    Kafka {
        operation: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A Kafka admin request made through librdkafka directly failed.
    #[error("Kafka {operation} failed: {message}")]
    KafkaRequest { operation: String, message: String },
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
