//! Secret values never appear in what the tool prints: a backup and a restore over SASL_SSL (SCRAM)
//! to S3 with an access key, at debug log level, and their failures with wrong credentials.

mod common;

use common::*;
use kafka_backup_api::kafka::SaslMechanism;
use kafka_backup_testkit::kafka::{
    Listener, create_topic, plaintext_config, produce, sample_records,
};
use kafka_backup_testkit::{TestEnv, unique_name};

fn secret_values() -> Vec<String> {
    let env = TestEnv::get();
    let mut v: Vec<String> = [
        "KAFKA_SCRAM512_PASSWORD_FILE",
        "KAFKA_SCRAM256_PASSWORD_FILE",
        "KAFKA_PLAIN_PASSWORD_FILE",
        "S3_SECRET_KEY_FILE",
        "AZURE_STORAGE_KEY_FILE",
    ]
    .iter()
    .map(|f| env.file_contents(f))
    .collect();
    v.push(
        std::fs::read_to_string(env.secrets_dir().join("kafka-tls/tls.key"))
            .expect("key")
            .lines()
            .nth(1)
            .expect("key line")
            .to_string(),
    );
    v
}

fn assert_clean(what: &str, out: &std::process::Output) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.len() > 200,
        "{what}: expected some debug output, got {text}"
    );
    for s in secret_values() {
        assert!(
            !text.contains(&s),
            "{what}: a secret value appears in the output"
        );
    }
}

#[tokio::test]
async fn no_secret_in_debug_logs_output_or_errors() {
    let dir = TempDir::new("sec");
    let topic = unique_name("sec");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &sample_records(100, 1));
    let name = unique_name("sec");
    let target = Target::S3 {
        prefix: unique_name("sec"),
    };
    let cluster = Listener::SaslSsl(SaslMechanism::ScramSha512).cluster_spec();
    let file = write_manifest(
        dir.path(),
        &backup_manifest(&name, &cluster, &[&topic], &target),
    );
    let out = cli()
        .env("KAFKA_BACKUP_LOG", "debug")
        .args(["backup", "-o", "json", "-f"])
        .arg(&file)
        .output()
        .expect("backup");
    assert_clean("backup", &out);
    let s = json_of(&out);
    let id = s["backupId"].as_str().expect("id");

    let m = serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaRestore", "metadata": {"name": unique_name("secr")},
        "spec": {"backupId": id, "targetCluster": serde_json::to_value(Listener::Ssl.cluster_spec()).expect("c"),
                 "storage": target.storage_json(), "topicMapping": {&topic: format!("{topic}-r")}, "createTopics": true}
    });
    let out = cli()
        .env("KAFKA_BACKUP_LOG", "debug")
        .args(["restore", "-f"])
        .arg(write_manifest(dir.path(), &m))
        .output()
        .expect("restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean("restore", &out);

    // Failures with wrong credentials name what failed, not the values.
    let wrong = TempDir::new("sec-wrong");
    for (secret, key, value) in [
        ("kafka-scram-sha-512", "username", "kb-scram512"),
        ("kafka-scram-sha-512", "password", "wrong-password-1"),
        ("s3-credentials", "accessKey", "x"),
        ("s3-credentials", "secretKey", "wrong-secret-2"),
        ("kafka-tls-ca", "ca.crt", ""),
    ] {
        let d = wrong.path().join(secret);
        std::fs::create_dir_all(&d).expect("mkdir");
        if value.is_empty() {
            std::fs::copy(
                TestEnv::get().secrets_dir().join("kafka-tls-ca/ca.crt"),
                d.join(key),
            )
            .expect("copy ca");
        } else {
            std::fs::write(d.join(key), value).expect("write");
        }
    }
    let out = cli()
        .env("KAFKA_BACKUP_LOG", "debug")
        .env("KAFKA_BACKUP_SECRETS_DIR", wrong.path())
        .args(["backup", "-f"])
        .arg(&file)
        .output()
        .expect("backup");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("wrong-password-1") && !text.contains("wrong-secret-2"),
        "a wrong credential appears in the output"
    );
    assert_clean("failed backup", &out);
}
