//! Test kit for kafka-backup's integration tests. Tests talk to the genuine services that
//! `scripts/testenv up` starts; this crate tells them where those are and keeps tests short:
//! unique names so tests run in parallel on one broker, Kafka produce/consume helpers, clients for
//! each object store and for the Kubernetes API server, and polling for a condition with a time
//! limit.
//!
//! A missing service is a test failure, never a skip: the panic message says which variable is
//! missing and how to start the services.

pub mod cluster;
pub mod env;
pub mod k8s;
pub mod kafka;
pub mod poll;
pub mod stores;

pub use env::TestEnv;

use std::sync::atomic::{AtomicU64, Ordering};

/// A name no other test (in this process or another) uses: `<prefix>-<pid>-<n>-<random>`, in
/// lower case so it is valid as a Kafka topic, a Kubernetes object name and an object-store prefix.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}-{n}-{}", std::process::id(), &rand[..8]).to_lowercase()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_names_differ_and_are_lower_case() {
        let a = super::unique_name("Topic");
        let b = super::unique_name("Topic");
        assert_ne!(a, b);
        assert!(a.starts_with("topic-"), "{a}");
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{a}"
        );
    }
}
