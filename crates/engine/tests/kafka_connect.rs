//! The engine's Kafka connection code against every listener of the genuine test broker:
//! PLAINTEXT, mutual TLS, SASL_SSL and SASL_PLAINTEXT with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.

use std::path::Path;
use std::time::{Duration, Instant};

use kafka_backup_api::kafka::SaslMechanism;
use kafka_backup_engine::Error;
use kafka_backup_engine::kafka::{client_config, probe};
use kafka_backup_engine::secrets::SecretStore;
use kafka_backup_testkit::kafka::{
    Listener, consume_all, create_topic, plaintext_config, produce, sample_records,
};
use kafka_backup_testkit::{TestEnv, unique_name};

fn secrets() -> SecretStore {
    SecretStore::new(TestEnv::get().secrets_dir())
}

/// 1000 keyed records with headers (one with a null value) produced and consumed through `listener`.
async fn round_trip(listener: Listener) {
    let spec = listener.cluster_spec();
    let config = client_config("kafkaCluster", &spec, &secrets()).expect("client config");
    let info = probe(&config, Duration::from_secs(30)).expect("probe");
    assert_eq!(info.brokers, 1, "{listener:?}: single test broker");
    assert!(info.cluster_id.is_some(), "{listener:?}: cluster id");

    let topic = unique_name("smoke-listener");
    create_topic(&plaintext_config(), &topic, 3, 1, &[]).await;
    let records = sample_records(1000, 3);
    produce(&config, &topic, &records);
    let got = consume_all(&config, &topic, records.len(), Duration::from_secs(60));
    assert_eq!(got.len(), 1000);
    let mut want = records;
    want.sort_by_key(|r| r.partition);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(&g.record, w, "{listener:?}: record at offset {}", g.offset);
    }
    // Offsets within each partition are dense 0..n, as produced.
    for p in 0..3 {
        let offsets: Vec<i64> = got
            .iter()
            .filter(|r| r.record.partition == p)
            .map(|r| r.offset)
            .collect();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn plaintext() {
    round_trip(Listener::Plaintext).await;
}

#[tokio::test]
async fn mutual_tls() {
    round_trip(Listener::Ssl).await;
}

#[tokio::test]
async fn sasl_ssl_plain() {
    round_trip(Listener::SaslSsl(SaslMechanism::Plain)).await;
}

#[tokio::test]
async fn sasl_ssl_scram_sha_256() {
    round_trip(Listener::SaslSsl(SaslMechanism::ScramSha256)).await;
}

#[tokio::test]
async fn sasl_ssl_scram_sha_512() {
    round_trip(Listener::SaslSsl(SaslMechanism::ScramSha512)).await;
}

#[tokio::test]
async fn sasl_plaintext_plain() {
    round_trip(Listener::SaslPlaintext(SaslMechanism::Plain)).await;
}

#[tokio::test]
async fn sasl_plaintext_scram_sha_256() {
    round_trip(Listener::SaslPlaintext(SaslMechanism::ScramSha256)).await;
}

#[tokio::test]
async fn sasl_plaintext_scram_sha_512() {
    round_trip(Listener::SaslPlaintext(SaslMechanism::ScramSha512)).await;
}

/// A copy of the test Secrets where `secret`'s password is replaced.
fn secrets_with_password(secret: &str, password: &str) -> (SecretStore, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(unique_name("kb-wrong-secrets"));
    let src = TestEnv::get().secrets_dir().join(secret);
    std::fs::create_dir_all(dir.join(secret)).expect("mkdir");
    std::fs::copy(src.join("username"), dir.join(secret).join("username")).expect("copy user");
    std::fs::write(dir.join(secret).join("password"), password).expect("write password");
    copy_dir(
        &TestEnv::get().secrets_dir().join("kafka-tls-ca"),
        &dir.join("kafka-tls-ca"),
    );
    (SecretStore::new(&dir), dir)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[tokio::test]
async fn wrong_scram_password_is_an_authentication_error() {
    for listener in [
        Listener::SaslSsl(SaslMechanism::ScramSha256),
        Listener::SaslPlaintext(SaslMechanism::ScramSha512),
    ] {
        let wrong = "definitely-not-the-password";
        let spec = listener.cluster_spec();
        let secret = spec.sasl_secret.as_ref().expect("sasl").name.clone();
        let (store, dir) = secrets_with_password(&secret, wrong);
        let config = client_config("kafkaCluster", &spec, &store).expect("client config");
        let started = Instant::now();
        let err = probe(&config, Duration::from_secs(30)).expect_err("wrong password must fail");
        assert!(
            matches!(err, Error::KafkaAuthentication { .. }),
            "{listener:?}: expected an authentication error, got: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("authentication"), "{msg}");
        assert!(!msg.contains(wrong), "the password leaked into: {msg}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "authentication failure is reported before the time-out"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}

#[tokio::test]
async fn unreachable_brokers_fail_within_the_timeout_naming_them() {
    let mut spec = Listener::Plaintext.cluster_spec();
    spec.bootstrap_servers = vec!["127.0.0.1:1".into()];
    let config = client_config("kafkaCluster", &spec, &secrets()).expect("client config");
    let started = Instant::now();
    let err = probe(&config, Duration::from_secs(3)).expect_err("nothing listens on port 1");
    assert!(matches!(err, Error::KafkaUnreachable { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn sasl_protocol_without_sasl_secret_names_the_field() {
    let mut spec = Listener::SaslSsl(SaslMechanism::Plain).cluster_spec();
    spec.sasl_secret = None;
    let err = client_config("targetCluster", &spec, &secrets()).expect_err("missing secret");
    assert!(
        err.to_string().starts_with("targetCluster.saslSecret:"),
        "{err}"
    );
}

#[tokio::test]
async fn missing_secret_key_names_secret_and_key() {
    let mut spec = Listener::SaslSsl(SaslMechanism::ScramSha256).cluster_spec();
    if let Some(s) = spec.sasl_secret.as_mut() {
        s.password_key = Some("no-such-key".into());
    }
    let err = client_config("kafkaCluster", &spec, &secrets()).expect_err("missing key");
    let msg = err.to_string();
    assert!(
        msg.contains("kafkaCluster.saslSecret.passwordKey") && msg.contains("'no-such-key'"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_untrusted_ca_is_a_tls_error_naming_the_brokers() {
    // A CA that did not sign the broker's certificate.
    let dir = std::env::temp_dir().join(unique_name("kb-other-ca"));
    std::fs::create_dir_all(dir.join("kafka-tls-ca")).expect("mkdir");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=not the kafka CA",
        ])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("kafka-tls-ca/ca.crt"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success());
    copy_dir(
        &TestEnv::get().secrets_dir().join("kafka-scram-sha-256"),
        &dir.join("kafka-scram-sha-256"),
    );
    let spec = Listener::SaslSsl(SaslMechanism::ScramSha256).cluster_spec();
    let config =
        client_config("kafkaCluster", &spec, &SecretStore::new(&dir)).expect("client config");
    let started = Instant::now();
    let err = probe(&config, Duration::from_secs(30)).expect_err("untrusted CA must fail");
    assert!(
        matches!(err, Error::KafkaTls { .. }),
        "expected a TLS error, got: {err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("TLS handshake") && msg.contains(&spec.bootstrap_servers[0]),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    std::fs::remove_dir_all(dir).ok();
}
