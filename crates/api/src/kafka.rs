//! How to reach a Kafka cluster: `spec.kafkaCluster` of a KafkaBackup and `spec.targetCluster` of a
//! KafkaRestore.

use std::collections::BTreeMap;

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
    /// OAUTHBEARER token endpoint (OIDC client credentials); required when
    /// `saslSecret.mechanism` is OAUTHBEARER, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauthbearer: Option<OAuthBearerSpec>,
    /// Kerberos principal and service name; required when `saslSecret.mechanism` is GSSAPI,
    /// refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kerberos: Option<KerberosSpec>,
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

/// A Secret holding SASL credentials: a user name and password (PLAIN, SCRAM-SHA-256,
/// SCRAM-SHA-512), an OIDC client id and client secret (OAUTHBEARER) or a Kerberos keytab (GSSAPI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SaslSecretRef {
    /// Secret name.
    pub name: String,
    /// SASL mechanism.
    pub mechanism: SaslMechanism,
    /// Key of the user name (default `username`; PLAIN and SCRAM only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_key: Option<String>,
    /// Key of the password (default `password`; PLAIN and SCRAM only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
    /// Key of the OIDC client id (default `clientId`; OAUTHBEARER only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_key: Option<String>,
    /// Key of the OIDC client secret (default `clientSecret`; OAUTHBEARER only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_key: Option<String>,
    /// Key of the Kerberos keytab (default `krb5.keytab`; GSSAPI only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keytab_key: Option<String>,
}

impl SaslSecretRef {
    pub const DEFAULT_USERNAME_KEY: &'static str = "username";
    pub const DEFAULT_PASSWORD_KEY: &'static str = "password";
    pub const DEFAULT_CLIENT_ID_KEY: &'static str = "clientId";
    pub const DEFAULT_CLIENT_SECRET_KEY: &'static str = "clientSecret";
    pub const DEFAULT_KEYTAB_KEY: &'static str = "krb5.keytab";
}

/// SASL mechanisms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// OAuth 2 bearer tokens fetched from an OIDC token endpoint with the client credentials grant.
    #[serde(rename = "OAUTHBEARER")]
    OAuthBearer,
    /// Kerberos.
    #[serde(rename = "GSSAPI")]
    Gssapi,
}

impl SaslMechanism {
    /// The value librdkafka's `sasl.mechanism` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OAuthBearer => "OAUTHBEARER",
            SaslMechanism::Gssapi => "GSSAPI",
        }
    }

    /// Whether the mechanism authenticates with a user name and password.
    pub fn uses_password(self) -> bool {
        matches!(
            self,
            SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512
        )
    }
}

/// `kafkaCluster.oauthbearer`: where and how the client obtains OAuth 2 bearer tokens. The client
/// id and client secret are read from `saslSecret`; the client sends them with HTTP Basic
/// authentication in a `grant_type=client_credentials` request to `tokenEndpointUrl`, and refreshes
/// the token before it expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OAuthBearerSpec {
    /// OIDC token endpoint (`http://` or `https://` URL).
    pub token_endpoint_url: String,
    /// Scope requested with the token (space-separated; default: none requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// SASL extensions sent to the brokers with the token (RFC 7628), e.g.
    /// `logicalCluster: lkc-abc12` for Confluent Cloud. Keys are letters only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
}

/// `kafkaCluster.kerberos`: the client's Kerberos identity. The keytab is read from `saslSecret`.
/// The worker image must provide `kinit` and the MIT Kerberos GSSAPI SASL plugin, and the pod a
/// `krb5.conf` for the realm (`/etc/krb5.conf`, or the path in the `KRB5_CONFIG` environment
/// variable, e.g. a ConfigMap mounted through `podTemplate`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KerberosSpec {
    /// Client principal, e.g. `kafka-backup@EXAMPLE.COM`; must be in the keytab.
    pub principal: String,
    /// Kerberos service name of the brokers (default `kafka`, the first part of their principal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

impl KerberosSpec {
    pub const DEFAULT_SERVICE_NAME: &'static str = "kafka";
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
        assert!(spec.oauthbearer.is_none() && spec.kerberos.is_none());
    }

    #[test]
    fn parses_oauthbearer_and_kerberos() {
        let spec: KafkaClusterSpec = serde_json::from_value(serde_json::json!({
            "bootstrapServers": ["kafka:9093"],
            "securityProtocol": "SASL_SSL",
            "saslSecret": {"name": "kafka-oidc", "mechanism": "OAUTHBEARER",
                           "clientIdKey": "id", "clientSecretKey": "secret"},
            "oauthbearer": {"tokenEndpointUrl": "https://idp.example.com/oauth2/token",
                            "scope": "kafka", "extensions": {"logicalCluster": "lkc-1"}}
        }))
        .expect("oauthbearer spec parses");
        let o = spec.oauthbearer.as_ref().expect("oauthbearer");
        assert_eq!(o.scope.as_deref(), Some("kafka"));
        assert_eq!(
            o.extensions.get("logicalCluster").map(String::as_str),
            Some("lkc-1")
        );
        assert_eq!(
            spec.sasl_secret.as_ref().map(|s| s.mechanism.as_str()),
            Some("OAUTHBEARER")
        );

        let spec: KafkaClusterSpec = serde_json::from_value(serde_json::json!({
            "bootstrapServers": ["kafka:9093"],
            "securityProtocol": "SASL_PLAINTEXT",
            "saslSecret": {"name": "kafka-keytab", "mechanism": "GSSAPI"},
            "kerberos": {"principal": "kafka-backup@EXAMPLE.COM"}
        }))
        .expect("kerberos spec parses");
        assert_eq!(
            spec.kerberos.as_ref().map(|k| k.principal.as_str()),
            Some("kafka-backup@EXAMPLE.COM")
        );

        let err = serde_json::from_value::<KafkaClusterSpec>(serde_json::json!({
            "bootstrapServers": ["kafka:9092"],
            "oauthbearer": {"tokenEndpointUrl": "https://idp/token", "clientSecret": "x"}
        }))
        .expect_err("unknown oauthbearer field rejected");
        assert!(err.to_string().contains("clientSecret"), "{err}");
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
