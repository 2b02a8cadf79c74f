//! How to reach a Kafka cluster: `spec.kafkaCluster` of a KafkaBackup and `spec.targetCluster` of a
//! KafkaRestore.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Connection to a Kafka cluster. Credentials are never inline: they are named Kubernetes Secrets,
/// mounted into the worker pod (or read from `--secrets-dir` by the CLI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaClusterSpec {
    /// Broker addresses (`host:port`) used to bootstrap; any reachable one suffices.
    #[schemars(length(min = 1))]
    pub bootstrap_servers: Vec<String>,
    /// Transport and authentication between client and brokers.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// CA (and, for mutual TLS, client certificate and key) for SSL and SASL_SSL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<TlsSecretRef>,
    /// SASL credentials for SASL_PLAINTEXT and SASL_SSL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_secret: Option<SaslSecretRef>,
}

/// Kafka's `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The value librdkafka and the Kafka documentation use.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether the protocol runs over TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the protocol authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// A Secret holding PEM files: the CA that signed the brokers' certificates and, optionally, a
/// client certificate and key for mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSecretRef {
    /// Secret name.
    pub name: String,
    /// Key of the CA certificate (default `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<String>,
    /// Key of the client certificate (default `tls.crt`; used when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_key: Option<String>,
    /// Key of the client private key (default `tls.key`; used when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_key: Option<String>,
}

impl TlsSecretRef {
    pub const DEFAULT_CA_KEY: &'static str = "ca.crt";
    pub const DEFAULT_CERT_KEY: &'static str = "tls.crt";
    pub const DEFAULT_KEY_KEY: &'static str = "tls.key";
}

/// A Secret holding SASL credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaslSecretRef {
    /// Secret name.
    pub name: String,
    /// SASL mechanism.
    pub mechanism: SaslMechanism,
    /// Key of the user name (default `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_key: Option<String>,
    /// Key of the password (default `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
}

impl SaslSecretRef {
    pub const DEFAULT_USERNAME_KEY: &'static str = "username";
    pub const DEFAULT_PASSWORD_KEY: &'static str = "password";
}

/// SASL mechanisms that authenticate with a user name and password.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The value librdkafka's `sasl.mechanism` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let spec: KafkaClusterSpec = serde_json::from_value(serde_json::json!({
            "bootstrapServers": ["kafka-0.kafka.svc:9092"],
            "securityProtocol": "SASL_SSL",
            "tlsSecret": {"name": "kafka-tls", "caKey": "ca.crt", "certKey": "tls.crt", "keyKey": "tls.key"},
            "saslSecret": {"name": "kafka-credentials", "mechanism": "SCRAM-SHA-256",
                           "usernameKey": "username", "passwordKey": "password"}
        }))
        .expect("spec example parses");
        assert_eq!(spec.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            spec.sasl_secret.as_ref().map(|s| s.mechanism),
            Some(SaslMechanism::ScramSha256)
        );
        assert_eq!(
            spec.tls_secret.as_ref().and_then(|t| t.key_key.as_deref()),
            Some("tls.key")
        );
    }

    #[test]
    fn security_protocol_defaults_to_plaintext() {
        let spec: KafkaClusterSpec =
            serde_json::from_value(serde_json::json!({"bootstrapServers": ["kafka:9092"]}))
                .expect("minimal spec parses");
        assert_eq!(spec.security_protocol, SecurityProtocol::Plaintext);
        assert!(spec.tls_secret.is_none() && spec.sasl_secret.is_none());
    }

    #[test]
    fn unknown_fields_and_values_are_named() {
        let err = serde_json::from_value::<KafkaClusterSpec>(serde_json::json!({
            "bootstrapServers": ["kafka:9092"], "bootstrapServer": "x"
        }))
        .expect_err("unknown field rejected");
        assert!(err.to_string().contains("bootstrapServer"), "{err}");

        let err = serde_json::from_value::<KafkaClusterSpec>(serde_json::json!({
            "bootstrapServers": ["kafka:9092"], "securityProtocol": "TLS"
        }))
        .expect_err("unknown protocol rejected");
        let msg = err.to_string();
        assert!(msg.contains("TLS") && msg.contains("SASL_SSL"), "{msg}");
    }
}
