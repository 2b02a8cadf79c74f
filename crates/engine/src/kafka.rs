//! Kafka client configuration from a [`KafkaClusterSpec`], and a connectivity probe that turns the
//! client library's endless retries into a bounded wait with a clear error.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kafka_backup_api::kafka::{
    KafkaClusterSpec, KerberosSpec, OAuthBearerSpec, SaslMechanism, SaslSecretRef, TlsSecretRef,
};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::util::Timeout;

use crate::error::{Error, Result};
use crate::secrets::SecretStore;

mod batch;
mod ffi;
mod group_offsets;
mod topic_ids;
pub(crate) use batch::{Fetched, MessageBatch};
pub use topic_ids::{TopicIdError, format_topic_id, topic_ids};

/// The librdkafka configuration for `spec`, reading credentials from `secrets`. `field` is the spec
/// path of the cluster (`kafkaCluster` or `targetCluster`), used in error messages.
///
/// TLS material and Kerberos keytabs are passed to librdkafka as file paths; SASL passwords and
/// OIDC client secrets are read into the configuration (never logged: the engine does not log the
/// configuration, and librdkafka does not log these properties).
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
    // Mechanism settings without that mechanism are refused, not ignored.
    let mechanism = spec
        .sasl_secret
        .as_ref()
        .filter(|_| protocol.uses_sasl())
        .map(|s| s.mechanism);
    for (set, block, wanted) in [
        (
            spec.oauthbearer.is_some(),
            "oauthbearer",
            SaslMechanism::OAuthBearer,
        ),
        (spec.kerberos.is_some(), "kerberos", SaslMechanism::Gssapi),
    ] {
        if set && mechanism != Some(wanted) {
            let now = match mechanism {
                Some(m) => format!("saslSecret.mechanism is {}", m.as_str()),
                None => format!("securityProtocol is {} without SASL", protocol.as_str()),
            };
            return Err(Error::InvalidSpec {
                field: format!("{field}.{block}"),
                message: format!(
                    "is only used with saslSecret.mechanism {}, but {now}; remove it or switch the mechanism",
                    wanted.as_str()
                ),
            });
        }
    }
    match (&spec.sasl_secret, protocol.uses_sasl()) {
        (Some(sasl), true) => apply_sasl(&mut config, field, spec, sasl, secrets)?,
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
    spec: &KafkaClusterSpec,
    sasl: &SaslSecretRef,
    secrets: &SecretStore,
) -> Result<()> {
    let cluster = field;
    let field = format!("{cluster}.saslSecret");
    let mechanism = sasl.mechanism;
    // Keys of another mechanism are refused, not ignored.
    for (key, set, used) in [
        (
            "usernameKey",
            sasl.username_key.is_some(),
            mechanism.uses_password(),
        ),
        (
            "passwordKey",
            sasl.password_key.is_some(),
            mechanism.uses_password(),
        ),
        (
            "clientIdKey",
            sasl.client_id_key.is_some(),
            mechanism == SaslMechanism::OAuthBearer,
        ),
        (
            "clientSecretKey",
            sasl.client_secret_key.is_some(),
            mechanism == SaslMechanism::OAuthBearer,
        ),
        (
            "keytabKey",
            sasl.keytab_key.is_some(),
            mechanism == SaslMechanism::Gssapi,
        ),
    ] {
        if set && !used {
            return Err(Error::InvalidSpec {
                field: format!("{field}.{key}"),
                message: format!(
                    "is not used with mechanism {}; remove it",
                    mechanism.as_str()
                ),
            });
        }
    }
    config.set("sasl.mechanism", mechanism.as_str());
    match mechanism {
        SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let user_key = sasl
                .username_key
                .as_deref()
                .unwrap_or(SaslSecretRef::DEFAULT_USERNAME_KEY);
            let pass_key = sasl
                .password_key
                .as_deref()
                .unwrap_or(SaslSecretRef::DEFAULT_PASSWORD_KEY);
            let user =
                secrets.read_string(&format!("{field}.usernameKey"), &sasl.name, user_key)?;
            let pass =
                secrets.read_string(&format!("{field}.passwordKey"), &sasl.name, pass_key)?;
            config
                .set("sasl.username", user.expose())
                .set("sasl.password", pass.expose());
        }
        SaslMechanism::OAuthBearer => {
            let Some(oauth) = &spec.oauthbearer else {
                return Err(Error::InvalidSpec {
                    field: format!("{cluster}.oauthbearer"),
                    message: "is required when saslSecret.mechanism is OAUTHBEARER (tokenEndpointUrl, and optionally scope and extensions)".into(),
                });
            };
            apply_oauthbearer(config, cluster, oauth)?;
            let id_key = sasl
                .client_id_key
                .as_deref()
                .unwrap_or(SaslSecretRef::DEFAULT_CLIENT_ID_KEY);
            let secret_key = sasl
                .client_secret_key
                .as_deref()
                .unwrap_or(SaslSecretRef::DEFAULT_CLIENT_SECRET_KEY);
            let id = secrets.read_string(&format!("{field}.clientIdKey"), &sasl.name, id_key)?;
            let secret =
                secrets.read_string(&format!("{field}.clientSecretKey"), &sasl.name, secret_key)?;
            config
                .set("sasl.oauthbearer.client.id", id.expose())
                .set("sasl.oauthbearer.client.secret", secret.expose());
        }
        SaslMechanism::Gssapi => {
            let Some(krb) = &spec.kerberos else {
                return Err(Error::InvalidSpec {
                    field: format!("{cluster}.kerberos"),
                    message: "is required when saslSecret.mechanism is GSSAPI (principal, and optionally serviceName)".into(),
                });
            };
            apply_kerberos(config, cluster, krb)?;
            let keytab_key = sasl
                .keytab_key
                .as_deref()
                .unwrap_or(SaslSecretRef::DEFAULT_KEYTAB_KEY);
            let keytab = secrets.path(&format!("{field}.keytabKey"), &sasl.name, keytab_key)?;
            config.set("sasl.kerberos.keytab", path_str(&keytab));
        }
    }
    Ok(())
}

fn apply_oauthbearer(
    config: &mut ClientConfig,
    cluster: &str,
    oauth: &OAuthBearerSpec,
) -> Result<()> {
    let field = format!("{cluster}.oauthbearer");
    let url = oauth.token_endpoint_url.trim();
    check_http_url(url).map_err(|why| Error::InvalidSpec {
        field: format!("{field}.tokenEndpointUrl"),
        message: format!("'{url}' is not an http:// or https:// URL: {why}"),
    })?;
    config
        .set("sasl.oauthbearer.method", "oidc")
        .set("sasl.oauthbearer.token.endpoint.url", url);
    if let Some(scope) = &oauth.scope {
        if scope.trim().is_empty() || scope.chars().any(char::is_control) {
            return Err(Error::InvalidSpec {
                field: format!("{field}.scope"),
                message: "must be space-separated scope names; leave it out to request none".into(),
            });
        }
        config.set("sasl.oauthbearer.scope", scope.trim());
    }
    if !oauth.extensions.is_empty() {
        let mut pairs = Vec::new();
        for (key, value) in &oauth.extensions {
            // RFC 7628: key = 1*(ALPHA), "auth" is reserved; librdkafka separates pairs with ','.
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphabetic()) || key == "auth" {
                return Err(Error::InvalidSpec {
                    field: format!("{field}.extensions"),
                    message: format!(
                        "key '{key}' is not a SASL extension name (letters only, not 'auth')"
                    ),
                });
            }
            if value.contains(',') || value.contains('=') || value.chars().any(char::is_control) {
                return Err(Error::InvalidSpec {
                    field: format!("{field}.extensions.{key}"),
                    message: "value must not contain ',', '=' or control characters".into(),
                });
            }
            pairs.push(format!("{key}={value}"));
        }
        config.set("sasl.oauthbearer.extensions", pairs.join(","));
    }
    Ok(())
}

/// Checks that `url` is an absolute `http://` or `https://` URL with a host; the reason otherwise.
fn check_http_url(url: &str) -> std::result::Result<(), &'static str> {
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(rest) = lower.strip_prefix("https://") {
        rest
    } else if let Some(rest) = lower.strip_prefix("http://") {
        rest
    } else {
        return Err("the scheme must be http or https");
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains white space");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|h| h.trim_start_matches('['))
            .unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err("it has no host");
    }
    if authority.contains('@') {
        return Err("credentials belong in saslSecret, not in the URL");
    }
    Ok(())
}

fn apply_kerberos(config: &mut ClientConfig, cluster: &str, krb: &KerberosSpec) -> Result<()> {
    let field = format!("{cluster}.kerberos");
    let principal = krb.principal.trim();
    // librdkafka puts the principal into the kinit command line: plain principal characters only.
    if principal.is_empty()
        || !principal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./@".contains(c))
    {
        return Err(Error::InvalidSpec {
            field: format!("{field}.principal"),
            message: format!(
                "'{principal}' is not a Kerberos principal (e.g. kafka-backup@EXAMPLE.COM)"
            ),
        });
    }
    let service = krb
        .service_name
        .as_deref()
        .unwrap_or(KerberosSpec::DEFAULT_SERVICE_NAME)
        .trim();
    if service.is_empty()
        || !service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::InvalidSpec {
            field: format!("{field}.serviceName"),
            message: format!("'{service}' is not a Kerberos service name (e.g. kafka)"),
        });
    }
    config
        .set("sasl.kerberos.principal", principal)
        .set("sasl.kerberos.service.name", service);
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
        // A failed TLS handshake is also logged; keep it even when the matching error event is
        // not served before a probe gives up (a loaded machine).
        if message.contains("SSL handshake failed")
            && let Ok(mut last) = self.last_error.lock()
            && last
                .as_ref()
                .is_none_or(|(c, _)| *c != RDKafkaErrorCode::SSL)
        {
            *last = Some((RDKafkaErrorCode::SSL, message.to_string()));
        }
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
        .map(topic_info)
        .collect())
}

/// Like [`list_topics`], for the named topics only (those that exist): one small request per
/// name instead of the metadata of every topic of the cluster, which can be thousands.
pub fn named_topics(
    consumer: &BaseConsumer<KafkaContext>,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<TopicInfo>> {
    let mut out = Vec::new();
    for name in names {
        let md = consumer
            .fetch_metadata(Some(name), Timeout::After(timeout))
            .map_err(|source| Error::Kafka {
                operation: format!("fetching the metadata of topic {name}"),
                source,
            })?;
        out.extend(
            md.topics()
                .iter()
                .filter(|t| t.error().is_none() && t.name() == name)
                .map(topic_info),
        );
    }
    Ok(out)
}

fn topic_info(t: &rdkafka::metadata::MetadataTopic) -> TopicInfo {
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
    let client: BaseConsumer<KafkaContext> = create(config, "offset reader")?;
    committed_offsets_of_groups(&client, &[group.to_string()], partitions, timeout)
}

/// The offsets each of `groups` has committed on `partitions`, read through `client` (requests
/// pipelined, not a client per group). Blocks for at most about `timeout` per 64 groups.
pub fn committed_offsets_of_groups(
    client: &BaseConsumer<KafkaContext>,
    groups: &[String],
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<Vec<CommittedOffset>> {
    group_offsets::committed_offsets(client.client(), groups, partitions, timeout).map_err(|e| {
        Error::KafkaRequest {
            operation: match &e.group {
                Some(g) => format!("reading the committed offsets of group {g}"),
                None => "reading committed offsets".into(),
            },
            message: e.message,
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A secrets dir holding `files` as `(secret, key, value)`.
    fn store(tag: &str, files: &[(&str, &str, &str)]) -> (SecretStore, Dir) {
        let dir = std::env::temp_dir().join(format!("kb-kafka-cfg-{}-{tag}", std::process::id()));
        for (secret, key, value) in files {
            std::fs::create_dir_all(dir.join(secret)).expect("mkdir");
            std::fs::write(dir.join(secret).join(key), value).expect("write");
        }
        (SecretStore::new(&dir), Dir(dir))
    }

    fn spec(json: serde_json::Value) -> KafkaClusterSpec {
        serde_json::from_value(json).expect("spec parses")
    }

    fn oidc_spec() -> serde_json::Value {
        serde_json::json!({
            "bootstrapServers": ["127.0.0.1:9093"],
            "securityProtocol": "SASL_SSL",
            "saslSecret": {"name": "oidc", "mechanism": "OAUTHBEARER"},
            "oauthbearer": {"tokenEndpointUrl": "https://idp.example.com/oauth2/token",
                            "scope": "kafka.read kafka.write",
                            "extensions": {"logicalCluster": "lkc-1", "identityPoolId": "pool-2"}}
        })
    }

    fn err_of(r: Result<ClientConfig>) -> (String, String) {
        match r {
            Err(Error::InvalidSpec { field, message }) => (field, message),
            Err(other) => panic!("expected InvalidSpec, got {other}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn oauthbearer_maps_to_librdkafka_oidc_properties() {
        let (secrets, _d) = store(
            "oidc",
            &[
                ("oidc", "clientId", "kb-client\n"),
                ("oidc", "clientSecret", "s3cr3t"),
            ],
        );
        let cfg = client_config("kafkaCluster", &spec(oidc_spec()), &secrets).expect("config");
        let get = |k| cfg.get(k).map(str::to_string);
        assert_eq!(get("security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(get("sasl.mechanism").as_deref(), Some("OAUTHBEARER"));
        assert_eq!(get("sasl.oauthbearer.method").as_deref(), Some("oidc"));
        assert_eq!(
            get("sasl.oauthbearer.token.endpoint.url").as_deref(),
            Some("https://idp.example.com/oauth2/token")
        );
        assert_eq!(
            get("sasl.oauthbearer.client.id").as_deref(),
            Some("kb-client")
        );
        assert_eq!(
            get("sasl.oauthbearer.client.secret").as_deref(),
            Some("s3cr3t")
        );
        assert_eq!(
            get("sasl.oauthbearer.scope").as_deref(),
            Some("kafka.read kafka.write")
        );
        assert_eq!(
            get("sasl.oauthbearer.extensions").as_deref(),
            Some("identityPoolId=pool-2,logicalCluster=lkc-1")
        );
        assert!(get("sasl.username").is_none() && get("sasl.password").is_none());
        // librdkafka accepts the configuration (it is built with libcurl for OIDC).
        let _: BaseConsumer<KafkaContext> = create(&cfg, "test").expect("librdkafka accepts it");
    }

    #[test]
    fn oauthbearer_keys_are_configurable_and_checked() {
        let mut j = oidc_spec();
        j["saslSecret"]["clientIdKey"] = "id".into();
        j["saslSecret"]["clientSecretKey"] = "secret".into();
        let (secrets, _d) = store("oidc-keys", &[("oidc", "id", "a"), ("oidc", "secret", "b")]);
        let cfg = client_config("kafkaCluster", &spec(j.clone()), &secrets).expect("config");
        assert_eq!(cfg.get("sasl.oauthbearer.client.id"), Some("a"));
        let (secrets, _d2) = store("oidc-missing", &[("oidc", "id", "a")]);
        let err = client_config("kafkaCluster", &spec(j), &secrets).expect_err("missing key");
        assert!(
            err.to_string()
                .contains("kafkaCluster.saslSecret.clientSecretKey"),
            "{err}"
        );
    }

    #[test]
    fn oauthbearer_inconsistencies_name_the_field() {
        let (secrets, _d) = store(
            "oidc-bad",
            &[
                ("oidc", "clientId", "a"),
                ("oidc", "clientSecret", "b"),
                ("oidc", "username", "u"),
            ],
        );
        let check = |j: serde_json::Value, field: &str, words: &str| {
            let (f, m) = err_of(client_config("kafkaCluster", &spec(j), &secrets));
            assert_eq!(f, field, "{m}");
            assert!(m.contains(words), "{f}: {m}");
            assert!(!m.contains("s3cr3t"));
        };
        let mut j = oidc_spec();
        j.as_object_mut().unwrap().remove("oauthbearer");
        check(
            j,
            "kafkaCluster.oauthbearer",
            "is required when saslSecret.mechanism is OAUTHBEARER",
        );

        for bad in [
            "ftp://idp/token",
            "idp.example.com/token",
            "https:///token",
            "https://u:p@idp/t",
            "http://idp/a b",
        ] {
            let mut j = oidc_spec();
            j["oauthbearer"]["tokenEndpointUrl"] = bad.into();
            check(
                j,
                "kafkaCluster.oauthbearer.tokenEndpointUrl",
                "is not an http:// or https:// URL",
            );
        }
        let mut j = oidc_spec();
        j["oauthbearer"]["tokenEndpointUrl"] = "http://127.0.0.1:8080/token".into();
        client_config("kafkaCluster", &spec(j), &secrets).expect("http URL with port is fine");

        let mut j = oidc_spec();
        j["oauthbearer"]["extensions"] = serde_json::json!({"auth": "x"});
        check(
            j,
            "kafkaCluster.oauthbearer.extensions",
            "not a SASL extension name",
        );
        let mut j = oidc_spec();
        j["oauthbearer"]["extensions"] = serde_json::json!({"pool": "a,b"});
        check(
            j,
            "kafkaCluster.oauthbearer.extensions.pool",
            "must not contain ','",
        );

        let mut j = oidc_spec();
        j["saslSecret"]["usernameKey"] = "username".into();
        check(
            j,
            "kafkaCluster.saslSecret.usernameKey",
            "is not used with mechanism OAUTHBEARER",
        );

        let mut j = oidc_spec();
        j["saslSecret"]["mechanism"] = "SCRAM-SHA-256".into();
        j["saslSecret"]["clientSecretKey"] = "clientSecret".into();
        j.as_object_mut().unwrap().remove("oauthbearer");
        check(
            j,
            "kafkaCluster.saslSecret.clientSecretKey",
            "is not used with mechanism SCRAM-SHA-256",
        );

        let mut j = oidc_spec();
        j["saslSecret"]["mechanism"] = "PLAIN".into();
        check(
            j,
            "kafkaCluster.oauthbearer",
            "is only used with saslSecret.mechanism OAUTHBEARER, but saslSecret.mechanism is PLAIN",
        );

        let j = serde_json::json!({
            "bootstrapServers": ["127.0.0.1:9092"],
            "oauthbearer": {"tokenEndpointUrl": "https://idp/token"}
        });
        check(
            j,
            "kafkaCluster.oauthbearer",
            "securityProtocol is PLAINTEXT without SASL",
        );
    }

    fn krb_spec() -> serde_json::Value {
        serde_json::json!({
            "bootstrapServers": ["127.0.0.1:9093"],
            "securityProtocol": "SASL_PLAINTEXT",
            "saslSecret": {"name": "keytab", "mechanism": "GSSAPI"},
            "kerberos": {"principal": "kafka-backup/worker@EXAMPLE.COM"}
        })
    }

    #[test]
    fn gssapi_maps_to_librdkafka_kerberos_properties() {
        let (secrets, d) = store("krb", &[("keytab", "krb5.keytab", "not a real keytab")]);
        let cfg = client_config("targetCluster", &spec(krb_spec()), &secrets).expect("config");
        let get = |k| cfg.get(k).map(str::to_string);
        assert_eq!(get("security.protocol").as_deref(), Some("SASL_PLAINTEXT"));
        assert_eq!(get("sasl.mechanism").as_deref(), Some("GSSAPI"));
        assert_eq!(
            get("sasl.kerberos.principal").as_deref(),
            Some("kafka-backup/worker@EXAMPLE.COM")
        );
        assert_eq!(get("sasl.kerberos.service.name").as_deref(), Some("kafka"));
        assert_eq!(
            get("sasl.kerberos.keytab"),
            Some(
                d.0.join("keytab")
                    .join("krb5.keytab")
                    .to_string_lossy()
                    .into_owned()
            )
        );
        // The default kinit command is kept; no password-style properties.
        assert!(get("sasl.kerberos.kinit.cmd").is_none());
        assert!(get("sasl.username").is_none() && get("sasl.oauthbearer.method").is_none());

        let mut j = krb_spec();
        j["kerberos"]["serviceName"] = "kafka-prod".into();
        j["saslSecret"]["keytabKey"] = "kb.keytab".into();
        let (secrets, _d2) = store("krb2", &[("keytab", "kb.keytab", "x")]);
        let cfg = client_config("targetCluster", &spec(j), &secrets).expect("config");
        assert_eq!(cfg.get("sasl.kerberos.service.name"), Some("kafka-prod"));
        assert!(
            cfg.get("sasl.kerberos.keytab")
                .is_some_and(|p| p.ends_with("kb.keytab"))
        );
    }

    #[test]
    fn gssapi_inconsistencies_name_the_field() {
        let (secrets, _d) = store("krb-bad", &[("keytab", "krb5.keytab", "x")]);
        let check = |j: serde_json::Value, field: &str, words: &str| {
            let r = client_config("targetCluster", &spec(j), &secrets);
            let msg = match &r {
                Err(e) => e.to_string(),
                Ok(_) => panic!("expected an error"),
            };
            assert!(msg.contains(field) && msg.contains(words), "{msg}");
        };
        let mut j = krb_spec();
        j.as_object_mut().unwrap().remove("kerberos");
        check(
            j,
            "targetCluster.kerberos",
            "is required when saslSecret.mechanism is GSSAPI",
        );
        let mut j = krb_spec();
        j["kerberos"]["principal"] = "x; rm -rf /".into();
        check(
            j,
            "targetCluster.kerberos.principal",
            "is not a Kerberos principal",
        );
        let mut j = krb_spec();
        j["kerberos"]["serviceName"] = "".into();
        check(
            j,
            "targetCluster.kerberos.serviceName",
            "is not a Kerberos service name",
        );
        let mut j = krb_spec();
        j["saslSecret"]["passwordKey"] = "password".into();
        check(
            j,
            "targetCluster.saslSecret.passwordKey",
            "is not used with mechanism GSSAPI",
        );
        let mut j = krb_spec();
        j["saslSecret"]["keytabKey"] = "nope".into();
        check(
            j,
            "targetCluster.saslSecret.keytabKey",
            "key 'nope' of secret 'keytab' not found",
        );
        let mut j = krb_spec();
        j["saslSecret"]["mechanism"] = "OAUTHBEARER".into();
        j["oauthbearer"] = serde_json::json!({"tokenEndpointUrl": "https://idp/token"});
        check(
            j,
            "targetCluster.kerberos",
            "is only used with saslSecret.mechanism GSSAPI",
        );
    }

    #[test]
    fn kerberos_block_with_scram_is_refused() {
        let (secrets, _d) = store(
            "krb-scram",
            &[("s", "username", "u"), ("s", "password", "p")],
        );
        let j = serde_json::json!({
            "bootstrapServers": ["127.0.0.1:9093"],
            "securityProtocol": "SASL_PLAINTEXT",
            "saslSecret": {"name": "s", "mechanism": "SCRAM-SHA-512"},
            "kerberos": {"principal": "kb@EXAMPLE.COM"}
        });
        let (f, m) = err_of(client_config("kafkaCluster", &spec(j), &secrets));
        assert_eq!(f, "kafkaCluster.kerberos");
        assert!(
            m.contains("only used with saslSecret.mechanism GSSAPI"),
            "{m}"
        );
    }
}
