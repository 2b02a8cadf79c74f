//! Throughput limits, retries and the circuit breaker, as values that can be read and tested rather
//! than loops scattered through the code.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A global limit on bytes and records per second, shared by every partition of a run. A token
/// bucket holding at most one second of budget: short bursts pass, the long-run rate is the limit.
#[derive(Debug)]
pub struct RateLimiter {
    bytes: Option<Mutex<Bucket>>,
    records: Option<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Self {
        Bucket {
            rate: rate as f64,
            tokens: rate as f64,
            last: now,
        }
    }

    /// Takes `n` tokens (going into debt if needed) and says how long to wait until the debt is paid.
    fn take(&mut self, n: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

impl RateLimiter {
    /// A limiter; `None` for a dimension means unlimited.
    pub fn new(bytes_per_second: Option<u64>, records_per_second: Option<u64>) -> Self {
        let now = Instant::now();
        RateLimiter {
            bytes: bytes_per_second.map(|r| Mutex::new(Bucket::new(r, now))),
            records: records_per_second.map(|r| Mutex::new(Bucket::new(r, now))),
        }
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.bytes.is_some() || self.records.is_some()
    }

    /// How long the caller must wait before passing `bytes` and `records` on.
    pub fn reserve(&self, bytes: u64, records: u64) -> Duration {
        let now = Instant::now();
        let wait = |b: &Option<Mutex<Bucket>>, n: u64| {
            b.as_ref()
                .and_then(|m| m.lock().ok().map(|mut b| b.take(n as f64, now)))
                .unwrap_or(Duration::ZERO)
        };
        wait(&self.bytes, bytes).max(wait(&self.records, records))
    }

    /// Waits until `bytes` and `records` fit in the limits.
    pub async fn acquire(&self, bytes: u64, records: u64) {
        if !self.is_limited() {
            return;
        }
        let wait = self.reserve(bytes, records);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Exponential backoff with a bounded number of attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            max_attempts: 5,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// Delay before attempt `attempt` (1-based; the first attempt has none).
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(attempt.saturating_sub(2).min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Settings of a [`CircuitBreaker`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe call is let through.
    pub reset_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// After `failure_threshold` consecutive failures against a dependency (Kafka or storage), stop
/// calling it for `reset_timeout`, then let one probe through: success closes the circuit, failure
/// opens it again. Disabled breakers only count.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: &'static str,
    config: Option<BreakerConfig>,
    state: Mutex<State>,
    /// `state` is `Closed { failures: 0 }`: lets the per-record `success` skip the lock. Written
    /// only with the lock held.
    clean: AtomicBool,
    opened: AtomicU64,
    failures: AtomicU64,
}

impl CircuitBreaker {
    /// A breaker for the dependency `name` ("kafka", "storage"); `None` disables it.
    pub fn new(name: &'static str, config: Option<BreakerConfig>) -> Self {
        CircuitBreaker {
            name,
            config,
            state: Mutex::new(State::Closed { failures: 0 }),
            clean: AtomicBool::new(true),
            opened: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// How many times the circuit opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// How many failures were recorded.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// How long a caller must wait before calling now (zero when closed or half-open). When the
    /// open period has passed, the breaker moves to half-open and lets this caller probe.
    pub fn wait_time(&self, now: Instant) -> Duration {
        let Ok(mut state) = self.state.lock() else {
            return Duration::ZERO;
        };
        match *state {
            State::Open { until } if now < until => until - now,
            State::Open { .. } => {
                tracing::info!(dependency = self.name, "circuit half-open: probing");
                *state = State::HalfOpen;
                Duration::ZERO
            }
            _ => Duration::ZERO,
        }
    }

    /// Records a successful call. An open circuit closes too: a call started before it opened
    /// (or retrying inside the client) got through, so the dependency answers again.
    pub fn success(&self) {
        if self.clean.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            match *state {
                State::HalfOpen => {
                    tracing::info!(dependency = self.name, "circuit closed: probe succeeded")
                }
                State::Open { .. } => {
                    tracing::info!(dependency = self.name, "circuit closed: a call succeeded")
                }
                State::Closed { .. } => {}
            }
            *state = State::Closed { failures: 0 };
            self.clean.store(true, Ordering::Release);
        }
    }

    /// Records a failed call.
    pub fn failure(&self, now: Instant) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let Some(config) = &self.config else { return };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        self.clean.store(false, Ordering::Release);
        let open = match *state {
            State::Closed { failures } if failures + 1 >= config.failure_threshold => true,
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::HalfOpen => true,
            State::Open { .. } => false,
        };
        if open {
            *state = State::Open {
                until: now + config.reset_timeout,
            };
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                dependency = self.name,
                reset_timeout_secs = config.reset_timeout.as_secs(),
                "circuit open: {} consecutive failures; pausing calls",
                config.failure_threshold
            );
        }
    }

    /// Runs `op` with retries: waits while the circuit is open, retries failures that
    /// `retryable` accepts with `backoff`, and returns the last error once attempts run out.
    pub async fn call<T, E, F, Fut>(
        &self,
        what: &str,
        backoff: &Backoff,
        retryable: impl Fn(&E) -> bool,
        mut op: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = self.wait_time(Instant::now());
            if !wait.is_zero() {
                tracing::warn!(
                    dependency = self.name,
                    what,
                    wait_secs = wait.as_secs_f64(),
                    "circuit open: waiting before next call"
                );
                tokio::time::sleep(wait).await;
                let _ = self.wait_time(Instant::now());
            }
            match op().await {
                Ok(v) => {
                    self.success();
                    return Ok(v);
                }
                Err(e) => {
                    self.failure(Instant::now());
                    if attempt >= backoff.max_attempts || !retryable(&e) {
                        return Err(e);
                    }
                    let delay = backoff.delay(attempt + 1);
                    tracing::warn!(dependency = self.name, what, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_one_second_burst_then_paces() {
        let now = Instant::now();
        let mut b = Bucket::new(100, now);
        assert_eq!(b.take(100.0, now), Duration::ZERO);
        // 50 more tokens at once: half a second of debt.
        assert_eq!(b.take(50.0, now), Duration::from_millis(500));
        // After a second, the debt is paid and 50 tokens are available again.
        assert_eq!(b.take(50.0, now + Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn unlimited_limiter_never_waits() {
        let l = RateLimiter::new(None, None);
        assert!(!l.is_limited());
        assert_eq!(l.reserve(u64::MAX / 2, u64::MAX / 2), Duration::ZERO);
    }

    #[test]
    fn the_tighter_limit_wins() {
        let l = RateLimiter::new(Some(1000), Some(10));
        assert_eq!(l.reserve(100, 10), Duration::ZERO);
        let wait = l.reserve(100, 10);
        assert!(wait >= Duration::from_millis(990), "{wait:?}");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let b = Backoff {
            max_attempts: 10,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(450),
        };
        let delays: Vec<u64> = (1..=6).map(|a| b.delay(a).as_millis() as u64).collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 450, 450]);
    }

    #[test]
    fn breaker_opens_after_threshold_and_probes_after_timeout() {
        let cb = CircuitBreaker::new(
            "storage",
            Some(BreakerConfig {
                failure_threshold: 3,
                reset_timeout: Duration::from_secs(60),
            }),
        );
        let t0 = Instant::now();
        cb.failure(t0);
        cb.failure(t0);
        assert_eq!(cb.wait_time(t0), Duration::ZERO);
        cb.failure(t0);
        assert_eq!(cb.times_opened(), 1);
        assert_eq!(cb.wait_time(t0), Duration::from_secs(60));
        // After the timeout one probe is let through (half-open) ...
        assert_eq!(cb.wait_time(t0 + Duration::from_secs(61)), Duration::ZERO);
        // ... whose failure opens the circuit again at once.
        cb.failure(t0 + Duration::from_secs(61));
        assert_eq!(cb.times_opened(), 2);
        assert!(cb.wait_time(t0 + Duration::from_secs(62)) > Duration::from_secs(50));
        // A successful probe closes it.
        assert_eq!(cb.wait_time(t0 + Duration::from_secs(200)), Duration::ZERO);
        cb.success();
        cb.failure(t0 + Duration::from_secs(201));
        assert_eq!(cb.wait_time(t0 + Duration::from_secs(201)), Duration::ZERO);
        assert_eq!(cb.failures(), 5);
    }

    #[test]
    fn disabled_breaker_only_counts() {
        let cb = CircuitBreaker::new("kafka", None);
        let t0 = Instant::now();
        for _ in 0..100 {
            cb.failure(t0);
        }
        assert_eq!(cb.wait_time(t0), Duration::ZERO);
        assert_eq!((cb.times_opened(), cb.failures()), (0, 100));
    }

    #[tokio::test]
    async fn call_retries_retryable_errors_a_bounded_number_of_times() {
        let cb = CircuitBreaker::new("storage", None);
        let backoff = Backoff {
            max_attempts: 3,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let mut calls = 0;
        let r: Result<(), String> = cb
            .call(
                "put",
                &backoff,
                |_| true,
                || {
                    calls += 1;
                    async { Err("down".to_string()) }
                },
            )
            .await;
        assert_eq!(r, Err("down".to_string()));
        assert_eq!(calls, 3);

        let mut calls = 0;
        let r: Result<u32, String> = cb
            .call(
                "put",
                &backoff,
                |_| false,
                || {
                    calls += 1;
                    async { Err("forbidden".to_string()) }
                },
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "non-retryable errors are not retried");
    }
}
