//! The operator's HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the process
//! is alive) and `/readyz` (it has reached the API server and, as leader or standby, is doing its
//! part).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counters and sums the operator exports.
#[derive(Default)]
pub struct Metrics {
    /// Set once the API server answered.
    pub ready: AtomicBool,
    /// Whether this replica holds the Lease.
    pub leader: AtomicBool,
    counters: Mutex<BTreeMap<(String, String), f64>>,
}

impl Metrics {
    /// Adds `v` to metric `name` with `labels` (already rendered: `kind="KafkaBackup"`).
    pub fn add(&self, name: &str, labels: &str, v: f64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name.to_string(), labels.to_string())).or_default() += v;
        }
    }

    /// One more reconcile of `kind`.
    pub fn reconcile(&self, kind: &str) {
        self.add(
            "kafka_backup_reconciles_total",
            &format!("kind=\"{kind}\""),
            1.0,
        );
    }

    /// One more failed reconcile of `kind`; `error` names what failed (an error variant), so a
    /// dashboard can tell a missing permission from a slow API server.
    pub fn reconcile_error(&self, kind: &str, error: &str) {
        self.add(
            "kafka_backup_reconcile_errors_total",
            &format!("kind=\"{kind}\",error=\"{error}\""),
            1.0,
        );
    }

    /// A finished run: outcome, records, bytes and duration.
    pub fn run(&self, kind: &str, outcome: &str, records: u64, bytes: u64, secs: f64) {
        self.add(
            "kafka_backup_runs_total",
            &format!("kind=\"{kind}\",outcome=\"{outcome}\""),
            1.0,
        );
        let k = format!("kind=\"{kind}\"");
        self.add("kafka_backup_run_records_total", &k, records as f64);
        self.add("kafka_backup_run_bytes_total", &k, bytes as f64);
        self.add("kafka_backup_run_duration_seconds_sum", &k, secs);
        self.add("kafka_backup_run_duration_seconds_count", &k, 1.0);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let help = [
            (
                "kafka_backup_reconciles_total",
                "counter",
                "Reconciles, by kind.",
            ),
            (
                "kafka_backup_reconcile_errors_total",
                "counter",
                "Reconciles that failed and were retried, by kind and by what failed.",
            ),
            (
                "kafka_backup_runs_total",
                "counter",
                "Finished runs (Jobs), by kind and outcome.",
            ),
            (
                "kafka_backup_run_records_total",
                "counter",
                "Records backed up or restored by finished runs.",
            ),
            (
                "kafka_backup_run_bytes_total",
                "counter",
                "Bytes stored by backups or restored by restores.",
            ),
            (
                "kafka_backup_run_duration_seconds",
                "summary",
                "Duration of finished runs.",
            ),
        ];
        let counters = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        let mut out = String::new();
        out.push_str("# HELP kafka_backup_leader Whether this replica holds the leader Lease.\n# TYPE kafka_backup_leader gauge\n");
        out.push_str(&format!(
            "kafka_backup_leader {}\n",
            u8::from(self.leader.load(Ordering::Relaxed))
        ));
        for (name, kind, text) in help {
            out.push_str(&format!("# HELP {name} {text}\n# TYPE {name} {kind}\n"));
            for ((n, labels), v) in &counters {
                if n == name
                    || n.strip_suffix("_sum") == Some(name)
                    || n.strip_suffix("_count") == Some(name)
                {
                    out.push_str(&format!("{n}{{{labels}}} {v}\n"));
                }
            }
        }
        out
    }
}

/// Serves the endpoints on `listener` until the process ends.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            let read = async {
                while len < buf.len() {
                    let n = stream.read(&mut buf[len..]).await?;
                    if n == 0 {
                        break;
                    }
                    len += n;
                    if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            if tokio::time::timeout(std::time::Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            // The query (the API server's proxy passes e.g. `?timeout=30s`) does not pick the page.
            let path = request
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|target| target.split('?').next())
                .unwrap_or("/");
            let (status, body, ctype) = match path {
                "/metrics" => ("200 OK", metrics.render(), "text/plain; version=0.0.4"),
                "/healthz" => ("200 OK", "ok\n".to_string(), "text/plain"),
                "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "ok\n".to_string(), "text/plain")
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "not ready: the API server has not answered yet\n".to_string(),
                    "text/plain",
                ),
                _ => ("404 Not Found", "not found\n".to_string(), "text/plain"),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Binds `addr`, with the error naming it.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--http-addr {addr}: cannot listen: {e}"))
}
