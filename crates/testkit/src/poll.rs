//! Waiting in tests for something the services do in their own time: poll a condition until it
//! holds, and fail naming what was awaited once a time limit passes. A polled condition, unlike a
//! fixed sleep, is as fast as the services allow and still right when they are slow (a loaded
//! machine, a cold build), and its failure says what never happened.

use std::future::Future;
use std::time::{Duration, Instant};

/// Time between two looks at a condition: short against the seconds the services take, long
/// enough that polling a broker or an API server adds no load worth measuring.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Some`, and returns that; panics naming `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Polls `cond` until it holds, blocking the thread (for tests without a runtime, or code that
/// only blocks); panics naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_for_returns_the_first_value() {
        let mut n = 0;
        let got = wait_for("three looks", Duration::from_secs(5), || {
            n += 1;
            let v = (n == 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "timed out after 200ms waiting for nothing")]
    fn wait_until_names_what_never_happened() {
        wait_until("nothing", Duration::from_millis(200), || false);
    }
}
