//! Small helpers shared by the engine's operations.

use crate::error::{Error, Result};

/// Runs a blocking Kafka client call off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("worker thread failed: {e}")))?
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An ISO 8601 / RFC 3339 time from spec field `field`, in milliseconds since the epoch.
pub(crate) fn parse_time(field: &str, value: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| Error::InvalidSpec {
            field: field.to_string(),
            message: format!("'{value}' is not an ISO 8601 time like 2024-12-01T12:00:00Z: {e}"),
        })
}

/// Resolves at the first SIGINT or SIGTERM: how runs and the operator learn they must stop.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
