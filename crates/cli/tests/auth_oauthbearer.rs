//! `kafkaCluster.oauthbearer` end to end: a backup and a restore by the `kafka-backup` binary over
//! SASL/OAUTHBEARER with OIDC client credentials, against a genuine Kafka broker of this test
//! alone (the shared test broker has no OAUTHBEARER listener and is not touched) and a token
//! endpoint on 127.0.0.1 served by the test.
//!
//! The broker validates tokens with Kafka's default OAUTHBEARER validator, which accepts
//! unsecured JWS tokens (`alg: none`); what this test proves is the client side: the client id and
//! secret from the Secret reach the token endpoint as HTTP Basic credentials in a
//! `grant_type=client_credentials` request, with the configured scope, and the token it returns
//! authenticates every connection of the backup and of the restore.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::private_kafka::PrivateKafka;
use common::*;
use kafka_backup_api::kafka::KafkaClusterSpec;
use kafka_backup_testkit::kafka::{config_for, consume_all, create_topic, produce, sample_records};
use kafka_backup_testkit::unique_name;

const CLIENT_ID: &str = "kb-backup-client";
const CLIENT_SECRET: &str = "kb-oidc-secret-Zq7uN3";
const SCOPE: &str = "kafka.read kafka.write";

/// What the token endpoint saw.
#[derive(Default)]
struct Seen {
    ok: AtomicUsize,
    refused: AtomicUsize,
    bodies: Mutex<Vec<String>>,
}

/// An OIDC token endpoint on 127.0.0.1: `POST /token` with `grant_type=client_credentials` and
/// HTTP Basic client credentials answers an unsecured JWT for subject `kb-backup`; anything else
/// answers 401. Serves until the process ends.
fn token_endpoint() -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind token endpoint");
    let url = format!("http://{}/token", listener.local_addr().expect("addr"));
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(conn.try_clone().expect("clone stream"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut auth = None;
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    match name.trim().to_ascii_lowercase().as_str() {
                        "authorization" => auth = Some(value.trim().to_string()),
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            let want_auth = format!(
                "Basic {}",
                STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            );
            let form: Vec<&str> = body.split('&').collect();
            let good = request_line.starts_with("POST /token ")
                && auth.as_deref() == Some(want_auth.as_str())
                && form.contains(&"grant_type=client_credentials");
            s.bodies.lock().expect("lock").push(body);
            let (status, json) = if good {
                s.ok.fetch_add(1, Ordering::SeqCst);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock")
                    .as_secs();
                let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
                let claims = URL_SAFE_NO_PAD.encode(
                    serde_json::json!({"sub": "kb-backup", "iat": now, "exp": now + 3600,
                                       "scope": SCOPE.split(' ').collect::<Vec<_>>()})
                    .to_string(),
                );
                let token = format!("{header}.{claims}.");
                (
                    "200 OK",
                    serde_json::json!({"access_token": token, "token_type": "bearer",
                                       "expires_in": 3600})
                    .to_string(),
                )
            } else {
                s.refused.fetch_add(1, Ordering::SeqCst);
                (
                    "401 Unauthorized",
                    r#"{"error":"invalid_client","error_description":"client authentication failed"}"#
                        .to_string(),
                )
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                json.len()
            );
            let _ = conn.flush();
        }
    });
    (url, seen)
}

/// The private broker: PLAINTEXT for the test's own set-up, SASL_PLAINTEXT with OAUTHBEARER only.
fn broker(dir: &Path) -> PrivateKafka {
    PrivateKafka::start(
        dir,
        "SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=OAUTHBEARER
listener.name.sasl_plaintext.sasl.enabled.mechanisms=OAUTHBEARER
listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub=\"broker\" unsecuredValidatorRequiredScope=\"kafka.read\";",
        &[],
    )
}

/// A Secrets directory holding `kafka-oidc/{clientId,clientSecret}`.
fn secrets_dir(dir: &Path, secret: &str) -> std::path::PathBuf {
    let s = dir.join(unique_name("secrets"));
    std::fs::create_dir_all(s.join("kafka-oidc")).expect("mkdir");
    std::fs::write(s.join("kafka-oidc/clientId"), format!("{CLIENT_ID}\n")).expect("id");
    std::fs::write(s.join("kafka-oidc/clientSecret"), secret).expect("secret");
    s
}

fn oauth_cluster(bootstrap: &str, token_url: &str) -> KafkaClusterSpec {
    serde_json::from_value(serde_json::json!({
        "bootstrapServers": [bootstrap],
        "securityProtocol": "SASL_PLAINTEXT",
        "saslSecret": {"name": "kafka-oidc", "mechanism": "OAUTHBEARER"},
        "oauthbearer": {"tokenEndpointUrl": token_url, "scope": SCOPE,
                        "extensions": {"traceId": "kb-test"}}
    }))
    .expect("cluster spec")
}

#[tokio::test]
async fn backup_and_restore_over_oauthbearer_oidc() {
    let dir = TempDir::new("kb-oauth");
    let kafka = broker(dir.path());
    let (token_url, seen) = token_endpoint();
    let plain = config_for(&kafka.plaintext);

    let topic = unique_name("oauth-src");
    create_topic(&plain, &topic, 3, 1, &[]).await;
    let records = sample_records(1500, 3);
    produce(&plain, &topic, &records);

    // Backup over OAUTHBEARER.
    let secrets = secrets_dir(dir.path(), CLIENT_SECRET);
    let cluster = oauth_cluster(&kafka.sasl, &token_url);
    let target = Target::Filesystem(dir.path().join("repo"));
    let name = unique_name("oauth");
    let file = write_manifest(
        dir.path(),
        &backup_manifest(&name, &cluster, &[&topic], &target),
    );
    let out = cli()
        .env("KAFKA_BACKUP_SECRETS_DIR", &secrets)
        .args(["backup", "-o", "json", "-f"])
        .arg(&file)
        .output()
        .expect("run backup");
    let summary = json_of(&out);
    assert_eq!(summary["records"], 1500, "{summary}");
    let id = summary["backupId"].as_str().expect("backupId").to_string();
    assert!(
        seen.ok.load(Ordering::SeqCst) >= 1,
        "token endpoint not used"
    );
    assert_eq!(seen.refused.load(Ordering::SeqCst), 0);
    let bodies = seen.bodies.lock().expect("lock").clone();
    assert!(
        bodies
            .iter()
            .all(|b| b.contains("grant_type=client_credentials") && b.contains("scope=kafka.read")),
        "{bodies:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(CLIENT_SECRET),
        "secret in the log:\n{stderr}"
    );

    let (_, stored) = read_backup(&target.repository(), &name, &id).await;
    for p in 0..3 {
        assert_same(
            &stored[&(topic.clone(), p)],
            &of_partition(&records, p),
            &format!("{topic}/{p}"),
        );
    }

    // Restore over OAUTHBEARER into a new topic.
    let restored = format!("{topic}-restored");
    let restore = serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1",
        "kind": "KafkaRestore",
        "metadata": {"name": unique_name("oauth-rs")},
        "spec": {
            "backupId": id,
            "targetCluster": serde_json::to_value(&cluster).expect("cluster"),
            "storage": target.storage_json(),
            "topicMapping": {&topic: &restored},
            "createTopics": true,
            "defaultReplicationFactor": 1
        }
    });
    let out = cli()
        .env("KAFKA_BACKUP_SECRETS_DIR", &secrets)
        .args(["restore", "-o", "json", "-f"])
        .arg(write_manifest(dir.path(), &restore))
        .output()
        .expect("run restore");
    let summary = json_of(&out);
    assert_eq!(summary["restoredRecords"], 1500, "{summary}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(CLIENT_SECRET));
    let got = consume_all(&plain, &restored, records.len(), Duration::from_secs(30));
    assert_eq!(got.len(), records.len());
    for p in 0..3 {
        let got_p: Vec<_> = got
            .iter()
            .filter(|r| r.record.partition == p)
            .map(|r| r.record.clone())
            .collect();
        assert_eq!(got_p, of_partition(&records, p), "{restored}/{p}");
    }
    assert_eq!(seen.refused.load(Ordering::SeqCst), 0);

    // A wrong client secret: the token endpoint answers 401, the run fails clearly, no secret shown.
    let wrong = "wrong-secret-Xk29Pq";
    let secrets = secrets_dir(dir.path(), wrong);
    let started = std::time::Instant::now();
    let out = cli()
        .env("KAFKA_BACKUP_SECRETS_DIR", &secrets)
        .args(["backup", "-o", "json", "-f"])
        .arg(&file)
        .output()
        .expect("run backup");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("authentication to Kafka at") && stderr.contains("OAUTHBEARER token"),
        "{stderr}"
    );
    assert!(stderr.contains("401"), "{stderr}");
    assert!(
        !stderr.contains(wrong) && !stderr.contains(CLIENT_SECRET),
        "secret in the output:\n{stderr}"
    );
    assert!(seen.refused.load(Ordering::SeqCst) >= 1);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "took {:?}",
        started.elapsed()
    );
}
