//! `saslSecret.mechanism: GSSAPI` end to end: a backup and a restore by the `kafka-backup` binary
//! over SASL/GSSAPI (Kerberos), against a genuine Kafka broker and an MIT Kerberos KDC, both of
//! this test alone on free loopback ports (the shared test broker is not touched).
//!
//! The worker gets the keytab from the Secret, librdkafka runs `kinit` with it and authenticates
//! through the Cyrus SASL GSSAPI plugin. Needs the Debian packages krb5-kdc, krb5-admin-server,
//! krb5-user and libsasl2-modules-gssapi-mit (`scripts/testenv up kafka` installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::private_kafka::{PrivateKafka, free_port};
use common::*;
use kafka_backup_api::kafka::KafkaClusterSpec;
use kafka_backup_testkit::kafka::{config_for, consume_all, create_topic, produce, sample_records};
use kafka_backup_testkit::unique_name;

const REALM: &str = "KB.TEST";
const CLIENT: &str = "kb-backup@KB.TEST";
const BROKER: &str = "kafka/127.0.0.1@KB.TEST";

/// An MIT KDC for realm KB.TEST with the broker's and the client's principals, killed on drop.
struct PrivateKdc {
    krb5_conf: PathBuf,
    broker_keytab: PathBuf,
    client_keytab: PathBuf,
    child: Option<Child>,
}

impl PrivateKdc {
    fn start(dir: &Path) -> PrivateKdc {
        for tool in ["krb5kdc", "kdb5_util", "kadmin.local", "kinit"] {
            assert!(
                ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                    .iter()
                    .any(|d| Path::new(d).join(tool).exists()),
                "{tool} is missing: install krb5-kdc krb5-admin-server krb5-user \
                 libsasl2-modules-gssapi-mit (scripts/testenv up kafka does)"
            );
        }
        let port = free_port();
        let d = dir.join("kdc");
        std::fs::create_dir_all(&d).expect("mkdir");
        let krb5_conf = d.join("krb5.conf");
        std::fs::write(
            &krb5_conf,
            format!(
                "[libdefaults]
  default_realm = {REALM}
  dns_lookup_realm = false
  dns_lookup_kdc = false
  dns_canonicalize_hostname = false
  rdns = false
  udp_preference_limit = 1
[realms]
  {REALM} = {{
    kdc = 127.0.0.1:{port}
  }}
"
            ),
        )
        .expect("krb5.conf");
        let kdc_conf = d.join("kdc.conf");
        std::fs::write(
            &kdc_conf,
            format!(
                "[kdcdefaults]
  kdc_ports = {port}
  kdc_tcp_ports = {port}
[realms]
  {REALM} = {{
    database_name = {db}
    key_stash_file = {stash}
    acl_file = {acl}
    kdc_listen = 127.0.0.1:{port}
    kdc_tcp_listen = 127.0.0.1:{port}
  }}
[logging]
  kdc = FILE:{log}
",
                db = d.join("principal").display(),
                stash = d.join("stash").display(),
                acl = d.join("kadm5.acl").display(),
                log = d.join("kdc.log").display(),
            ),
        )
        .expect("kdc.conf");
        let run = |args: &[&str]| {
            let out = Command::new(args[0])
                .args(&args[1..])
                .env("KRB5_CONFIG", &krb5_conf)
                .env("KRB5_KDC_PROFILE", &kdc_conf)
                .output()
                .expect("run a Kerberos tool");
            assert!(
                out.status.success(),
                "{args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let broker_keytab = d.join("broker.keytab");
        let client_keytab = d.join("client.keytab");
        run(&[
            "kdb5_util",
            "create",
            "-s",
            "-r",
            REALM,
            "-P",
            "kb-test-master",
        ]);
        for p in [BROKER, CLIENT] {
            run(&["kadmin.local", "-q", &format!("addprinc -randkey {p}")]);
        }
        run(&[
            "kadmin.local",
            "-q",
            &format!("ktadd -k {} {BROKER}", broker_keytab.display()),
        ]);
        run(&[
            "kadmin.local",
            "-q",
            &format!("ktadd -k {} {CLIENT}", client_keytab.display()),
        ]);
        let child = Command::new("krb5kdc")
            .args(["-n", "-P"])
            .arg(d.join("kdc.pid"))
            .env("KRB5_CONFIG", &krb5_conf)
            .env("KRB5_KDC_PROFILE", &kdc_conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start krb5kdc");
        let kdc = PrivateKdc {
            krb5_conf,
            broker_keytab,
            client_keytab,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the KDC did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        kdc
    }
}

impl Drop for PrivateKdc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn gssapi_cluster(bootstrap: &str) -> KafkaClusterSpec {
    serde_json::from_value(serde_json::json!({
        "bootstrapServers": [bootstrap],
        "securityProtocol": "SASL_PLAINTEXT",
        "saslSecret": {"name": "kafka-keytab", "mechanism": "GSSAPI", "keytabKey": "kb.keytab"},
        "kerberos": {"principal": CLIENT, "serviceName": "kafka"}
    }))
    .expect("cluster spec")
}

#[tokio::test]
async fn backup_and_restore_over_gssapi() {
    let dir = TempDir::new("kb-gssapi");
    let kdc = PrivateKdc::start(dir.path());
    let kafka = PrivateKafka::start(
        dir.path(),
        "SASL_PLAINTEXT",
        &format!(
            "sasl.enabled.mechanisms=GSSAPI
sasl.kerberos.service.name=kafka
listener.name.sasl_plaintext.sasl.enabled.mechanisms=GSSAPI
listener.name.sasl_plaintext.gssapi.sasl.jaas.config=com.sun.security.auth.module.Krb5LoginModule required useKeyTab=true storeKey=true keyTab=\"{}\" principal=\"{BROKER}\";",
            kdc.broker_keytab.display()
        ),
        &[(
            "KAFKA_OPTS",
            format!("-Djava.security.krb5.conf={}", kdc.krb5_conf.display()),
        )],
    );
    let plain = config_for(&kafka.plaintext);
    let topic = unique_name("gssapi-src");
    create_topic(&plain, &topic, 2, 1, &[]).await;
    let records = sample_records(1000, 2);
    produce(&plain, &topic, &records);

    // The keytab as a Secret; krb5.conf and the ticket cache from the environment, as in a pod.
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("kafka-keytab")).expect("mkdir");
    std::fs::copy(&kdc.client_keytab, secrets.join("kafka-keytab/kb.keytab")).expect("keytab");
    let ccache = format!("FILE:{}", dir.path().join("ccache").display());
    let run_with = |ccache: &str, args: &[&str], manifest: &Path| {
        cli()
            .env("KAFKA_BACKUP_SECRETS_DIR", &secrets)
            .env("KRB5_CONFIG", &kdc.krb5_conf)
            .env("KRB5CCNAME", ccache)
            .args(args)
            .arg(manifest)
            .output()
            .expect("run kafka-backup")
    };
    let run = |args: &[&str], manifest: &Path| run_with(&ccache, args, manifest);

    let cluster = gssapi_cluster(&kafka.sasl);
    let target = Target::Filesystem(dir.path().join("repo"));
    let name = unique_name("gssapi");
    let file = write_manifest(
        dir.path(),
        &backup_manifest(&name, &cluster, &[&topic], &target),
    );
    let summary = json_of(&run(&["backup", "-o", "json", "-f"], &file));
    assert_eq!(summary["records"], 1000, "{summary}");
    let id = summary["backupId"].as_str().expect("backupId").to_string();
    let (_, stored) = read_backup(&target.repository(), &name, &id).await;
    for p in 0..2 {
        assert_same(
            &stored[&(topic.clone(), p)],
            &of_partition(&records, p),
            &format!("{topic}/{p}"),
        );
    }

    let restored = format!("{topic}-restored");
    let restore = serde_json::json!({
        "apiVersion": "kafka.oso.sh/v1alpha1",
        "kind": "KafkaRestore",
        "metadata": {"name": unique_name("gssapi-rs")},
        "spec": {
            "backupId": id,
            "targetCluster": serde_json::to_value(&cluster).expect("cluster"),
            "storage": target.storage_json(),
            "topicMapping": {&topic: &restored},
            "createTopics": true,
            "defaultReplicationFactor": 1
        }
    });
    let summary = json_of(&run(
        &["restore", "-o", "json", "-f"],
        &write_manifest(dir.path(), &restore),
    ));
    assert_eq!(summary["restoredRecords"], 1000, "{summary}");
    let got = consume_all(&plain, &restored, records.len(), Duration::from_secs(30));
    for p in 0..2 {
        let got_p: Vec<_> = got
            .iter()
            .filter(|r| r.record.partition == p)
            .map(|r| r.record.clone())
            .collect();
        assert_eq!(got_p, of_partition(&records, p), "{restored}/{p}");
    }

    // A principal the keytab does not hold (in a fresh pod: an empty ticket cache): kinit fails,
    // the run fails and says so.
    let mut wrong = cluster.clone();
    if let Some(k) = wrong.kerberos.as_mut() {
        k.principal = format!("nobody@{REALM}");
    }
    let file = write_manifest(
        dir.path(),
        &backup_manifest(&unique_name("gssapi-wrong"), &wrong, &[&topic], &target),
    );
    let started = Instant::now();
    let fresh = format!("FILE:{}", dir.path().join("ccache-fresh").display());
    let out = run_with(&fresh, &["backup", "-o", "json", "-f"], &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("authentication to Kafka at") && stderr.contains("GSSAPI"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nobody@KB.TEST"),
        "kinit's reason is shown: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
}
