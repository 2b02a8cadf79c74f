//! A single KRaft broker of one test alone: the Kafka jars `scripts/testenv` cached, free loopback
//! ports, its own log directory, killed on drop. For listener setups the shared test broker does
//! not have (OAUTHBEARER, GSSAPI); the shared broker is never touched.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kafka_backup_testkit::kafka::config_for;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub struct PrivateKafka {
    /// PLAINTEXT listener, for the test's own set-up and checks.
    pub plaintext: String,
    /// The SASL listener under test.
    pub sasl: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl PrivateKafka {
    /// Starts a broker in `dir` with a PLAINTEXT listener, a `sasl_protocol` listener (e.g.
    /// `SASL_PLAINTEXT`) and `extra` server properties (the listener's SASL settings), and waits
    /// until its PLAINTEXT listener answers metadata requests. `env` is passed to the JVM.
    pub fn start(
        dir: &Path,
        sasl_protocol: &str,
        extra: &str,
        env: &[(&str, String)],
    ) -> PrivateKafka {
        let (controller, plain, sasl) = (free_port(), free_port(), free_port());
        let h = "127.0.0.1";
        let props = dir.join("server.properties");
        std::fs::write(
            &props,
            format!(
                "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{h}:{controller}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://{h}:{plain},{sasl_protocol}://{h}:{sasl},CONTROLLER://{h}:{controller}
advertised.listeners=PLAINTEXT://{h}:{plain},{sasl_protocol}://{h}:{sasl}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,{sasl_protocol}:{sasl_protocol},CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.ms=-1
{extra}
",
                data = dir.join("data").display()
            ),
        )
        .expect("write server.properties");
        let log = dir.join("kafka.log");
        let run_class = repo_root().join("scripts/kafka-run-class");
        let format = Command::new(&run_class)
            .args([
                "kafka.tools.StorageTool",
                "format",
                "-t",
                "kb-private-kafka-0001",
                "-c",
            ])
            .arg(&props)
            .env("KAFKA_HEAP_OPTS", "-Xmx256m")
            .output()
            .expect("run kafka-run-class StorageTool");
        assert!(
            format.status.success(),
            "formatting the private broker failed:\n{}{}",
            String::from_utf8_lossy(&format.stdout),
            String::from_utf8_lossy(&format.stderr)
        );
        let out = std::fs::File::create(&log).expect("broker log");
        let mut cmd = Command::new(&run_class);
        cmd.arg("kafka.Kafka")
            .arg(&props)
            .env("KAFKA_HEAP_OPTS", "-Xmx512m -Xms128m")
            .env(
                "KAFKA_LOG4J_OPTS",
                format!(
                    "-Dlog4j.configuration=file:{}",
                    repo_root()
                        .join("scripts/testenv.d/kafka/log4j.properties")
                        .display()
                ),
            )
            .stdout(Stdio::from(out.try_clone().expect("log")))
            .stderr(Stdio::from(out));
        let mut opts = "-Djava.net.preferIPv4Stack=true".to_string();
        for (k, v) in env {
            if *k == "KAFKA_OPTS" {
                opts = format!("{opts} {v}");
            } else {
                cmd.env(k, v);
            }
        }
        cmd.env("KAFKA_OPTS", opts);
        let child = cmd.spawn().expect("start the private broker");
        let broker = PrivateKafka {
            plaintext: format!("{h}:{plain}"),
            sasl: format!("{h}:{sasl}"),
            log,
            child: Some(child),
        };
        broker.wait_ready(Duration::from_secs(60));
        broker
    }

    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let consumer: BaseConsumer = config_for(&self.plaintext).create().expect("consumer");
        loop {
            if let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(2))
                && !md.brokers().is_empty()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private broker did not start within {timeout:?}; log {}:\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
