//! Kafka client configuration from a [`KafkaClusterSpec`], and a connectivity probe that turns the
//! client library's endless retries into a bounded wait with a clear error.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_backup_api::kafka::{KafkaClusterSpec, SaslSecretRef, TlsSecretRef};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::util::Timeout;

use crate::error::{Error, Result};
use crate::secrets::SecretStore;

mod topic_ids;
pub use topic_ids::{TopicIdError, format_topic_id, topic_ids};

/// The librdkafka configuration for `spec`, reading credentials from `secrets`. `field` is the spec
/// path of the cluster (`kafkaCluster` or `targetCluster`), used in error messages.
///
/// TLS material is passed to librdkafka as file paths; SASL credentials are read into the
/// configuration (librdkafka's `Debug` of the configuration omits them).
pub fn client_config(
    field: &str,
    spec: &KafkaClusterSpec,
    secrets: &SecretStore,
) -> Result<ClientConfig> {
    if spec.bootstrap_servers.is_empty() {
        return Err(Error::InvalidSpec {
            field: format!("{field}.bootstrapServers"),
            message: "at least one broker address (host:port) is required".into(),
        });
    }
    if let Some(bad) = spec
        .bootstrap_servers
        .iter()
        .find(|s| s.trim().is_empty() || !s.contains(':'))
    {
        return Err(Error::InvalidSpec {
            field: format!("{field}.bootstrapServers"),
            message: format!("'{bad}' is not a host:port address"),
        });
    }
    let protocol = spec.security_protocol;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", spec.bootstrap_servers.join(","))
        .set("security.protocol", protocol.as_str())
        .set("client.id", "kafka-backup")
        .set_log_level(RDKafkaLogLevel::Warning);

    match (&spec.tls_secret, protocol.uses_tls()) {
        (Some(tls), true) => apply_tls(&mut config, field, tls, secrets)?,
        (Some(_), false) => {
            return Err(Error::InvalidSpec {
                field: format!("{field}.tlsSecret"),
                message: format!(
                    "is set but securityProtocol is {}; use SSL or SASL_SSL to connect over TLS",
                    protocol.as_str()
                ),
            });
        }
        // TLS with the system trust store.
        (None, _) => {}
    }
    match (&spec.sasl_secret, protocol.uses_sasl()) {
        (Some(sasl), true) => apply_sasl(&mut config, field, sasl, secrets)?,
        (Some(_), false) => {
            return Err(Error::InvalidSpec {
                field: format!("{field}.saslSecret"),
                message: format!(
                    "is set but securityProtocol is {}; use SASL_PLAINTEXT or SASL_SSL to authenticate with SASL",
                    protocol.as_str()
                ),
            });
        }
        (None, true) => {
            return Err(Error::InvalidSpec {
                field: format!("{field}.saslSecret"),
                message: format!("is required when securityProtocol is {}", protocol.as_str()),
            });
        }
        (None, false) => {}
    }
    Ok(config)
}

fn apply_tls(
    config: &mut ClientConfig,
    field: &str,
    tls: &TlsSecretRef,
    secrets: &SecretStore,
) -> Result<()> {
    let field = format!("{field}.tlsSecret");
    let ca_key = tls
        .ca_key
        .as_deref()
        .unwrap_or(TlsSecretRef::DEFAULT_CA_KEY);
    let ca = secrets.path(&format!("{field}.caKey"), &tls.name, ca_key)?;
    config.set("ssl.ca.location", path_str(&ca));

    // A client certificate is used when the spec names one, or when the default keys are present.
    let cert = match tls.cert_key.as_deref() {
        Some(key) => Some(secrets.path(&format!("{field}.certKey"), &tls.name, key)?),
        None => secrets.optional_path(&tls.name, TlsSecretRef::DEFAULT_CERT_KEY),
    };
    let key = match tls.key_key.as_deref() {
        Some(key) => Some(secrets.path(&format!("{field}.keyKey"), &tls.name, key)?),
        None => secrets.optional_path(&tls.name, TlsSecretRef::DEFAULT_KEY_KEY),
    };
    match (cert, key) {
        (Some(cert), Some(key)) => {
            config
                .set("ssl.certificate.location", path_str(&cert))
                .set("ssl.key.location", path_str(&key));
        }
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::InvalidSpec {
                field,
                message: format!(
                    "secret '{}' has a client certificate or a key but not both; mutual TLS needs both",
                    tls.name
                ),
            });
        }
    }
    Ok(())
}

fn apply_sasl(
    config: &mut ClientConfig,
    field: &str,
    sasl: &SaslSecretRef,
    secrets: &SecretStore,
) -> Result<()> {
    let field = format!("{field}.saslSecret");
    let user_key = sasl
        .username_key
        .as_deref()
        .unwrap_or(SaslSecretRef::DEFAULT_USERNAME_KEY);
    let pass_key = sasl
        .password_key
        .as_deref()
        .unwrap_or(SaslSecretRef::DEFAULT_PASSWORD_KEY);
    let user = secrets.read_string(&format!("{field}.usernameKey"), &sasl.name, user_key)?;
    let pass = secrets.read_string(&format!("{field}.passwordKey"), &sasl.name, pass_key)?;
    config
        .set("sasl.mechanism", sasl.mechanism.as_str())
        .set("sasl.username", user.expose())
        .set("sasl.password", pass.expose());
    Ok(())
}

fn path_str(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Client context shared by every client the engine creates: routes librdkafka's logs and errors
/// to `tracing` and remembers the last error, so a failed operation can say why (an authentication
/// failure rather than a bare time-out).
#[derive(Default)]
pub struct KafkaContext {
    last_error: Mutex<Option<(RDKafkaErrorCode, String)>>,
}

impl KafkaContext {
    /// The most recent error librdkafka reported, if any.
    pub fn last_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac}: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        tracing::debug!(target: "librdkafka", %error, reason, "client error");
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some((code, reason.to_string()));
        }
    }
}

impl ConsumerContext for KafkaContext {}

/// What a successful probe learned about the cluster.
#[derive(Clone, Debug)]
pub struct ClusterInfo {
    /// The cluster id the brokers report, if they report one.
    pub cluster_id: Option<String>,
    /// Number of brokers in the metadata.
    pub brokers: usize,
    /// Number of topics visible to this client.
    pub topics: usize,
}

/// Connects with `config` and fetches cluster metadata, waiting at most `timeout`. Fails fast with
/// [`Error::KafkaAuthentication`] when the brokers reject the credentials, and with
/// [`Error::KafkaUnreachable`] naming the brokers when none answers in time.
pub fn probe(config: &ClientConfig, timeout: Duration) -> Result<ClusterInfo> {
    let brokers = config.get("bootstrap.servers").unwrap_or("").to_string();
    let consumer: BaseConsumer<KafkaContext> = config
        .create_with_context(KafkaContext::default())
        .map_err(|source| Error::Kafka {
            operation: "client creation".into(),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    let step = Duration::from_millis(500);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let attempt = remaining.min(step).max(Duration::from_millis(50));
        match consumer.fetch_metadata(None, Timeout::After(attempt)) {
            Ok(md) => {
                let cluster_id = consumer
                    .client()
                    .fetch_cluster_id(Timeout::After(remaining.max(step)));
                return Ok(ClusterInfo {
                    cluster_id,
                    brokers: md.brokers().len(),
                    topics: md.topics().len(),
                });
            }
            Err(err) => {
                // Errors reach the context only when the client's queue is served.
                let _ = consumer.poll(Duration::ZERO);
                let last = consumer.context().last_error();
                if let Some((code, reason)) = &last {
                    if *code == RDKafkaErrorCode::SSL {
                        return Err(Error::KafkaTls {
                            brokers,
                            reason: reason.clone(),
                        });
                    }
                    if is_auth_failure(*code) {
                        return Err(Error::KafkaAuthentication {
                            brokers,
                            reason: reason.clone(),
                        });
                    }
                }
                if Instant::now() >= deadline {
                    return Err(Error::KafkaUnreachable {
                        brokers,
                        timeout,
                        last_error: Some(
                            last.map(|(_, reason)| reason)
                                .unwrap_or_else(|| err.to_string()),
                        ),
                    });
                }
            }
        }
    }
}

fn is_auth_failure(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
}

/// Creates a client of type `T` (consumer, producer, admin) with the engine's context.
pub fn create<T>(config: &ClientConfig, what: &str) -> Result<T>
where
    T: rdkafka::config::FromClientConfigAndContext<KafkaContext>,
{
    config
        .create_with_context(KafkaContext::default())
        .map_err(|source| Error::Kafka {
            operation: format!("creating the {what} client"),
            source,
        })
}

/// A topic as the cluster describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<i32>,
    pub replication_factor: i32,
}

/// Every topic the client can see, with partitions.
pub fn list_topics(
    consumer: &BaseConsumer<KafkaContext>,
    timeout: Duration,
) -> Result<Vec<TopicInfo>> {
    let md = consumer
        .fetch_metadata(None, Timeout::After(timeout))
        .map_err(|source| Error::Kafka {
            operation: "fetching cluster metadata".into(),
            source,
        })?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| {
            let mut partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            partitions.sort_unstable();
            TopicInfo {
                name: t.name().to_string(),
                replication_factor: t
                    .partitions()
                    .first()
                    .map(|p| p.replicas().len() as i32)
                    .unwrap_or(0),
                partitions,
            }
        })
        .collect())
}

/// `(low, high)` watermarks of a partition: the log start offset and the high watermark. Answers
/// that say leadership is moving (a broker went away, a topic was just created) are asked again
/// until `timeout` has passed; "unknown topic" only for a few seconds, as long as a new topic may
/// take to reach every broker.
pub fn watermarks(
    consumer: &BaseConsumer<KafkaContext>,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<(i64, i64)> {
    const NEW_TOPIC_GRACE: Duration = Duration::from_secs(5);
    let started = Instant::now();
    let deadline = started + timeout;
    let mut pause = Duration::from_millis(100);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match consumer.fetch_watermarks(topic, partition, Timeout::After(left)) {
            Ok(marks) => return Ok(marks),
            Err(e)
                if e.rdkafka_error_code().is_some_and(|c| {
                    is_transient(c)
                        || (matches!(
                            c,
                            RDKafkaErrorCode::UnknownTopicOrPartition
                                | RDKafkaErrorCode::UnknownTopic
                                | RDKafkaErrorCode::UnknownPartition
                        ) && started.elapsed() < NEW_TOPIC_GRACE)
                }) && Instant::now() + pause < deadline =>
            {
                tracing::debug!(topic, partition, error = %e, "offsets not available yet; asking again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(source) => {
                return Err(Error::Kafka {
                    operation: format!("fetching the offsets of {topic}/{partition}"),
                    source,
                });
            }
        }
    }
}

/// Errors that say the cluster is moving partition leadership or a broker is briefly away: the
/// same request succeeds a little later.
pub fn is_transient(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::NotLeaderForPartition
            | RDKafkaErrorCode::LeaderNotAvailable
            | RDKafkaErrorCode::ReplicaNotAvailable
            | RDKafkaErrorCode::FencedLeaderEpoch
            | RDKafkaErrorCode::UnknownLeaderEpoch
            | RDKafkaErrorCode::OffsetNotAvailable
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::CoordinatorLoadInProgress
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::OperationTimedOut
    )
}

/// Topic configs that differ from the broker defaults (set on the topic), as the broker describes
/// them, for each of `topics`. Sensitive values are never returned by brokers and are skipped.
pub async fn topic_configs(
    config: &ClientConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>> {
    use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
    let admin: AdminClient<KafkaContext> = create(config, "admin")?;
    let specs: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let results = admin
        .describe_configs(specs.iter(), &opts)
        .await
        .map_err(|source| Error::Kafka {
            operation: "describing topic configs".into(),
            source,
        })?;
    let mut out = std::collections::BTreeMap::new();
    for (topic, result) in topics.iter().zip(results) {
        let resource = result.map_err(|code| Error::Kafka {
            operation: format!("describing the configs of topic {topic}"),
            source: KafkaError::AdminOp(code),
        })?;
        let configs = resource
            .entries
            .into_iter()
            .filter(|e| e.source == ConfigSource::DynamicTopic && !e.is_sensitive)
            .filter_map(|e| e.value.map(|v| (e.name, v)))
            .collect();
        out.insert(topic.clone(), configs);
    }
    Ok(out)
}

/// One consumer group's committed offset on one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: Option<String>,
}

/// Names of the consumer groups the cluster knows (classic consumer protocol groups and empty
/// groups that only hold committed offsets).
pub fn consumer_groups(
    consumer: &BaseConsumer<KafkaContext>,
    timeout: Duration,
) -> Result<Vec<String>> {
    let list = consumer
        .fetch_group_list(None, Timeout::After(timeout))
        .map_err(|source| Error::Kafka {
            operation: "listing consumer groups".into(),
            source,
        })?;
    let mut names: Vec<String> = list
        .groups()
        .iter()
        .filter(|g| g.protocol_type() == "consumer" || g.protocol_type().is_empty())
        .map(|g| g.name().to_string())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The offsets `group` has committed on `partitions`. Reading committed offsets does not join the
/// group, so it is safe while the group's consumers run.
pub fn committed_offsets(
    config: &ClientConfig,
    group: &str,
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<Vec<CommittedOffset>> {
    use rdkafka::consumer::Consumer;
    let mut config = config.clone();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer<KafkaContext> = create(&config, "offset reader")?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, Timeout::After(timeout))
        .map_err(|source| Error::Kafka {
            operation: format!("reading the committed offsets of group {group}"),
            source,
        })?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some(CommittedOffset {
                group: group.to_string(),
                topic: e.topic().to_string(),
                partition: e.partition(),
                offset: o,
                metadata: Some(e.metadata().to_string()).filter(|m| !m.is_empty()),
            }),
            _ => None,
        })
        .collect())
}

/// `(low, high)` watermarks of every partition in `partitions`, fetched off the async runtime.
pub async fn watermarks_of(
    config: &ClientConfig,
    partitions: Vec<(String, i32)>,
    timeout: Duration,
) -> Result<std::collections::BTreeMap<(String, i32), (i64, i64)>> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<KafkaContext> = create(&config, "metadata")?;
        let mut out = std::collections::BTreeMap::new();
        for (t, p) in partitions {
            let marks = watermarks(&consumer, &t, p, timeout)?;
            out.insert((t, p), marks);
        }
        Ok(out)
    })
    .await
    .map_err(|e| Error::Internal(format!("offset lookup failed: {e}")))?
}
