//! Kafka helpers: cluster specs for each listener of the test broker, topic creation, and
//! produce/consume of records whose every field (key, value, headers with null values, timestamp,
//! partition) can be compared.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_backup_api::kafka::{
    KafkaClusterSpec, SaslMechanism, SaslSecretRef, SecurityProtocol, TlsSecretRef,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, Timestamp, TopicPartitionList};

use crate::TestEnv;

/// The listeners of the single test broker started by `scripts/testenv up kafka`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Plaintext,
    /// SASL over TLS, with the given mechanism.
    SaslSsl(SaslMechanism),
    /// TLS with a client certificate (mutual TLS).
    Ssl,
    /// SASL without TLS, with the given mechanism.
    SaslPlaintext(SaslMechanism),
}

impl Listener {
    /// Every listener and mechanism the test broker offers.
    pub const ALL: [Listener; 8] = [
        Listener::Plaintext,
        Listener::Ssl,
        Listener::SaslSsl(SaslMechanism::Plain),
        Listener::SaslSsl(SaslMechanism::ScramSha256),
        Listener::SaslSsl(SaslMechanism::ScramSha512),
        Listener::SaslPlaintext(SaslMechanism::Plain),
        Listener::SaslPlaintext(SaslMechanism::ScramSha256),
        Listener::SaslPlaintext(SaslMechanism::ScramSha512),
    ];

    /// The name of the Secret (in `TESTENV_SECRETS_DIR`) holding the credentials of `mechanism`.
    pub fn sasl_secret_name(mechanism: SaslMechanism) -> &'static str {
        match mechanism {
            SaslMechanism::Plain => "kafka-plain",
            SaslMechanism::ScramSha256 => "kafka-scram-sha-256",
            SaslMechanism::ScramSha512 => "kafka-scram-sha-512",
            // The shared test broker has no OAUTHBEARER or GSSAPI listener; tests of those start
            // their own broker (crates/cli/tests/auth_oauthbearer.rs).
            SaslMechanism::OAuthBearer | SaslMechanism::Gssapi => {
                panic!(
                    "the shared test broker has no {} listener",
                    mechanism.as_str()
                )
            }
        }
    }

    /// A `kafkaCluster` spec for this listener, naming the test Secrets as a user's manifest would.
    pub fn cluster_spec(self) -> KafkaClusterSpec {
        let env = TestEnv::get();
        let tls = || TlsSecretRef {
            name: "kafka-tls".into(),
            ca_key: None,
            cert_key: None,
            key_key: None,
        };
        // Server-authenticated TLS only: a spec that names just the CA.
        let ca_only = || TlsSecretRef {
            name: "kafka-tls-ca".into(),
            ca_key: Some("ca.crt".into()),
            cert_key: None,
            key_key: None,
        };
        let sasl = |mechanism| SaslSecretRef {
            name: Self::sasl_secret_name(mechanism).into(),
            mechanism,
            username_key: None,
            password_key: None,
            client_id_key: None,
            client_secret_key: None,
            keytab_key: None,
        };
        let (servers, protocol, tls_secret, sasl_secret) = match self {
            Listener::Plaintext => (
                env.var("KAFKA_BOOTSTRAP"),
                SecurityProtocol::Plaintext,
                None,
                None,
            ),
            Listener::Ssl => (
                env.var("KAFKA_SSL_BOOTSTRAP"),
                SecurityProtocol::Ssl,
                Some(tls()),
                None,
            ),
            Listener::SaslSsl(m) => (
                env.var("KAFKA_SASL_SSL_BOOTSTRAP"),
                SecurityProtocol::SaslSsl,
                Some(ca_only()),
                Some(sasl(m)),
            ),
            Listener::SaslPlaintext(m) => (
                env.var("KAFKA_SASL_PLAINTEXT_BOOTSTRAP"),
                SecurityProtocol::SaslPlaintext,
                None,
                Some(sasl(m)),
            ),
        };
        KafkaClusterSpec {
            bootstrap_servers: servers.split(',').map(str::to_string).collect(),
            security_protocol: protocol,
            tls_secret,
            sasl_secret,
            oauthbearer: None,
            kerberos: None,
        }
    }
}

/// A client configuration for the PLAINTEXT listener of the single test broker.
pub fn plaintext_config() -> ClientConfig {
    config_for(TestEnv::get().var("KAFKA_BOOTSTRAP"))
}

/// A client configuration for PLAINTEXT brokers at `bootstrap`.
pub fn config_for(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Deletes the records of `topic`/`partition` before `offset` (Kafka's DeleteRecords): the log
/// then starts at `offset`, as after retention, so backups and restores meet offset gaps.
pub async fn delete_records_before(
    config: &ClientConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        config.create().expect("admin client");
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, rdkafka::Offset::Offset(offset))
        .expect("partition list");
    admin
        .delete_records(&tpl, &rdkafka::admin::AdminOptions::new())
        .await
        .expect("delete records");
}

/// Creates `topic` with `partitions` partitions and the given topic configs; waits until it exists.
pub async fn create_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
) {
    let admin: AdminClient<DefaultClientContext> = config.create().expect("create admin client");
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .expect("create_topics request");
    for r in results {
        if let Err((name, code)) = r {
            assert_eq!(
                code,
                RDKafkaErrorCode::TopicAlreadyExists,
                "creating topic {name} failed: {code}"
            );
        }
    }
    // Wait until every partition has a leader, so producing right away works.
    let consumer: BaseConsumer = config.create().expect("create consumer");
    crate::poll::wait_until(
        &format!("topic {topic} to have a leader for each partition"),
        Duration::from_secs(30),
        || {
            consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .is_ok_and(|md| {
                    md.topics().first().is_some_and(|t| {
                        t.error().is_none()
                            && t.partitions().len() == partitions as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
        },
    );
}

/// Compares stored records with produced ones, field by field, in partition order.
pub fn assert_same(stored: &[kafka_backup_format::Record], produced: &[TestRecord], what: &str) {
    assert_eq!(stored.len(), produced.len(), "{what}: record count");
    for (i, (s, p)) in stored.iter().zip(produced).enumerate() {
        assert_eq!(s.key, p.key, "{what}: key of record {i}");
        assert_eq!(s.value, p.value, "{what}: value of record {i}");
        let headers: Vec<(String, Option<Vec<u8>>)> = s
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect();
        assert_eq!(headers, p.headers, "{what}: headers of record {i}");
        if let Some(ts) = p.timestamp {
            assert_eq!(s.timestamp, ts, "{what}: timestamp of record {i}");
        }
    }
}

/// One record, every field of which a backup must preserve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRecord {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Milliseconds since the epoch; `None` lets the producer set it when producing.
    pub timestamp: Option<i64>,
}

/// `n` keyed records spread round-robin over `partitions`, each with two headers (one with a null
/// value) and an explicit timestamp; every 10th has a null key and every 13th a null value
/// (a tombstone).
pub fn sample_records(n: usize, partitions: i32) -> Vec<TestRecord> {
    let base_ts = 1_700_000_000_000i64;
    (0..n)
        .map(|i| TestRecord {
            partition: (i as i32) % partitions,
            key: (i % 10 != 9).then(|| format!("key-{i}").into_bytes()),
            value: (i % 13 != 12).then(|| format!("value-{i}-{}", "x".repeat(i % 50)).into_bytes()),
            headers: vec![
                ("trace-id".to_string(), Some(format!("t-{i}").into_bytes())),
                ("nullable".to_string(), None),
            ],
            timestamp: Some(base_ts + i as i64),
        })
        .collect()
}

#[derive(Default)]
struct CountingContext {
    failures: Mutex<Vec<String>>,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((err, _)) = result
            && let Ok(mut f) = self.failures.lock()
        {
            f.push(err.to_string());
        }
    }
}

/// Produces `records` to `topic` in order (idempotent producer, so order within a partition is
/// kept) and waits until every one is acknowledged. Panics on any delivery failure.
pub fn produce(config: &ClientConfig, topic: &str, records: &[TestRecord]) {
    let mut config = config.clone();
    config
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    let producer: ThreadedProducer<CountingContext> = config
        .create_with_context(CountingContext::default())
        .expect("create producer");
    for r in records {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: v.as_ref(),
            });
        }
        let mut rec: BaseRecord<'_, Vec<u8>, Vec<u8>> = BaseRecord::to(topic)
            .partition(r.partition)
            .headers(headers);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        if let Some(v) = &r.value {
            rec = rec.payload(v);
        }
        if let Some(ts) = r.timestamp {
            rec = rec.timestamp(ts);
        }
        let mut rec = rec;
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("producing to {topic} failed: {e}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("flush producer");
    let failures = producer.context().failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} deliveries to {topic} failed, first: {}",
        failures.len(),
        failures[0]
    );
}

/// A consumed record with its offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub offset: i64,
    pub record: TestRecord,
}

/// Reads every partition of `topic` from the beginning (no consumer group) until `expected`
/// records arrived; panics after `timeout`. Records come back sorted by (partition, offset).
pub fn consume_all(
    config: &ClientConfig,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<ConsumedRecord> {
    let mut config = config.clone();
    config
        .set("group.id", crate::unique_name("testkit-reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer = config.create().expect("create consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let partitions = md
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("add partition");
    }
    consumer.assign(&tpl).expect("assign partitions");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {expected} records from {topic} within {timeout:?}",
            out.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => panic!("consuming {topic} failed: {e}"),
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                let timestamp = match m.timestamp() {
                    Timestamp::NotAvailable => None,
                    Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
                };
                out.push(ConsumedRecord {
                    offset: m.offset(),
                    record: TestRecord {
                        partition: m.partition(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                        timestamp,
                    },
                });
            }
        }
    }
    out.sort_by_key(|r| (r.record.partition, r.offset));
    out
}
