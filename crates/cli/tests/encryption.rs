//! Encryption at rest (`spec.encryption`, docs/format.md §2.5) end to end against the genuine test
//! broker, a directory and MinIO: exact round trips, stored bytes that never hold the plaintext,
//! listing and describing without the key, and every missing, wrong or bad key refused with an
//! error naming the field and the key id, never any key material.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use common::*;
use kafka_backup_format::{
    BLOCK_HEADER_LEN, EncryptionKey, Manifest, Record, TRAILER_LEN, decode_index,
    decode_segment_with, decode_trailer,
};
use kafka_backup_testkit::kafka::{
    TestRecord, consume_all, create_topic, plaintext_config, produce, sample_records,
};
use kafka_backup_testkit::{TestEnv, unique_name};
use sha2::Digest;

const KEY_ENV: &str = "KAFKA_BACKUP_ENCRYPTION_KEY";
const MARKER: &str = "SECRET-PAYLOAD-7f3a9c";

/// A test key: 32 bytes derived from `seed`, and their base64 text.
struct TestKey {
    bytes: [u8; 32],
    b64: String,
}

impl TestKey {
    fn new(seed: &str) -> TestKey {
        let bytes: [u8; 32] = sha2::Sha256::digest(unique_name(seed).as_bytes()).into();
        TestKey {
            b64: base64::engine::general_purpose::STANDARD.encode(bytes),
            bytes,
        }
    }

    /// Every form of the key that must never be printed.
    fn material(&self) -> Vec<String> {
        vec![
            self.b64.clone(),
            self.b64[..16].to_string(),
            self.bytes.iter().map(|b| format!("{b:02x}")).collect(),
        ]
    }
}

/// A secrets directory holding every test service's Secret (linked) plus `extra` Secrets:
/// (secret name, key, value).
fn secrets_dir(extra: &[(&str, &str, &[u8])]) -> TempDir {
    let dir = TempDir::new("enc-secrets");
    for entry in std::fs::read_dir(TestEnv::get().secrets_dir()).expect("secrets dir") {
        let entry = entry.expect("entry");
        std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name()))
            .expect("link secret");
    }
    for (secret, key, value) in extra {
        let d = dir.path().join(secret);
        std::fs::create_dir_all(&d).expect("secret dir");
        std::fs::write(d.join(key), value).expect("write secret");
    }
    dir
}

/// The CLI with `secrets` as its Secrets and no key in the environment.
fn kb(secrets: &Path) -> Command {
    let mut c = cli();
    c.env("KAFKA_BACKUP_SECRETS_DIR", secrets)
        .env_remove(KEY_ENV);
    c
}

/// Runs `c` and checks no form of any of `keys` appears in what it printed.
fn run(c: &mut Command, keys: &[&TestKey]) -> Output {
    let out = c.output().expect("run kafka-backup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for k in keys {
        for m in k.material() {
            assert!(!text.contains(&m), "key material appears in the output");
        }
    }
    out
}

/// Asserts a run failed with `code` and an error mentioning every one of `parts`.
fn assert_refused(out: &Output, code: i32, parts: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "exit status; stderr:\n{err}");
    let last = err
        .lines()
        .rfind(|l| l.starts_with("error: "))
        .unwrap_or_default();
    for p in parts {
        assert!(last.contains(p), "error does not mention {p:?}: {last}");
    }
}

fn encryption(secret: &str, key_id: Option<&str>) -> serde_json::Value {
    let mut e = serde_json::json!({"keySecret": {"name": secret}});
    if let Some(id) = key_id {
        e["keyId"] = id.into();
    }
    e
}

/// Records whose values and a header hold [`MARKER`]; tombstones and null keys included.
fn marked_records(n: usize, partitions: i32) -> Vec<TestRecord> {
    let mut recs = sample_records(n, partitions);
    for (i, r) in recs.iter_mut().enumerate() {
        if r.value.is_some() {
            r.value = Some(format!("{MARKER} record {i} {}", "y".repeat(i % 40)).into_bytes());
        }
        r.headers
            .push(("marker".into(), Some(MARKER.as_bytes().to_vec())));
    }
    recs
}

/// Every segment file of backup `name` in a filesystem repository.
fn segment_files(repo: &Path, name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "kbseg") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo.join(name).join("segments"), &mut out);
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every record of an encrypted backup, per partition, decoded with `key` from the stored
/// segments (size and SHA-256 checked against the manifest), checking no segment holds the marker.
async fn read_encrypted(
    target: &Target,
    name: &str,
    id: &str,
    key: &EncryptionKey,
) -> (Manifest, Vec<Vec<Record>>) {
    let repo = target.repository();
    let manifest = repo.manifest(name, id).await.expect("manifest");
    let mut parts = Vec::new();
    for p in &manifest.topics[0].partitions {
        let mut records = Vec::new();
        for s in &p.segments {
            let bytes = repo.get(&s.path).await.expect("segment");
            assert_eq!(bytes.len() as u64, s.size, "{}", s.path);
            let digest: String = sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(digest, s.sha256, "{}", s.path);
            assert!(!contains(&bytes, MARKER), "{}: plaintext stored", s.path);
            records.extend(decode_segment_with(&bytes, Some(key)).expect("decodes with the key"));
        }
        parts.push(records);
    }
    (manifest, parts)
}

#[tokio::test]
async fn encrypted_round_trip_is_exact_and_stores_no_plaintext() {
    let dir = TempDir::new("enc-rt");
    let key = TestKey::new("enc-rt-key");
    let secrets = secrets_dir(&[("orders-key", "encryption.key", key.b64.as_bytes())]);
    let no_key = secrets_dir(&[]);
    let topic = unique_name("enc-rt");
    create_topic(&plaintext_config(), &topic, 3, 1, &[]).await;
    let produced = marked_records(1500, 3);
    produce(&plaintext_config(), &topic, &produced);

    let repo_dir = dir.path().join("repo");
    let target = Target::Filesystem(repo_dir.clone());
    // Uncompressed, so that only encryption can hide the records: the same backup without it
    // stores the marker in the clear.
    let plain_name = unique_name("enc-plain");
    let mut m = backup_manifest(&plain_name, &plaintext(), &[&topic], &target);
    m["spec"]["compression"] = "none".into();
    json_of(&run(
        kb(no_key.path())
            .args(["backup", "-o", "json", "-f"])
            .arg(write_manifest(dir.path(), &m)),
        &[&key],
    ));
    assert!(
        segment_files(&repo_dir, &plain_name)
            .iter()
            .any(|f| contains(&std::fs::read(f).expect("read"), MARKER)),
        "an unencrypted backup stores the marker"
    );

    let name = unique_name("enc-rt");
    let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    m["spec"]["compression"] = "none".into();
    m["spec"]["encryption"] = encryption("orders-key", Some("orders-key-2024"));
    let backup_file = write_manifest(dir.path(), &m);
    let s = json_of(&run(
        kb(secrets.path())
            .env("KAFKA_BACKUP_LOG", "debug")
            .args(["backup", "-o", "json", "-f"])
            .arg(&backup_file),
        &[&key],
    ));
    assert_eq!(s["records"], 1500);
    let id = s["backupId"].as_str().expect("id").to_string();

    // No stored byte of any segment holds the marker; the manifest names the key, never holds it.
    let files = segment_files(&repo_dir, &name);
    assert!(files.len() >= 3);
    for f in &files {
        let bytes = std::fs::read(f).expect("segment");
        assert!(
            !contains(&bytes, MARKER),
            "{}: plaintext stored",
            f.display()
        );
        assert!(!contains(&bytes, "value-") && !contains(&bytes, "trace-id"));
    }
    let manifest_text =
        std::fs::read_to_string(repo_dir.join(format!("{name}/manifests/{id}.json")))
            .expect("manifest");
    for m in key.material() {
        assert!(!manifest_text.contains(&m), "key material in the manifest");
    }
    let k = EncryptionKey::new("orders-key-2024", &key.bytes);
    let (manifest, stored) = read_encrypted(&target, &name, &id, &k).await;
    let info = manifest.encryption.expect("manifest encryption");
    assert_eq!(
        (info.algorithm.as_str(), info.key_id.as_str()),
        ("AES-256-GCM", "orders-key-2024")
    );
    assert_eq!(info.key_check.as_deref(), Some(k.key_check()));
    for (p, records) in stored.iter().enumerate() {
        assert_same(
            records,
            &of_partition(&produced, p as i32),
            &format!("partition {p}"),
        );
    }

    // Listing and describing need no key.
    let out = run(
        kb(no_key.path())
            .args(["list", "-o", "json", "-f"])
            .arg(&backup_file),
        &[&key],
    );
    let l = json_of(&out);
    let listed = l["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .find(|b| b["backupId"] == id.as_str())
        .expect("listed")
        .clone();
    assert_eq!(listed["encryptionKeyId"], "orders-key-2024");
    assert_eq!(listed["records"], 1500);
    let d = json_of(&run(
        kb(no_key.path())
            .args(["describe", &id, "-o", "json", "-f"])
            .arg(&backup_file),
        &[&key],
    ));
    assert_eq!(d["encryption"]["keyId"], "orders-key-2024");
    assert_eq!(d["totals"]["records"], 1500);
    let out = run(
        kb(no_key.path())
            .args(["describe", &id, "-f"])
            .arg(&backup_file),
        &[&key],
    );
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("encryption: AES-256-GCM, key id orders-key-2024")
    );
    // So does verification of presence, sizes and digests.
    let v = json_of(&run(
        kb(no_key.path())
            .args(["verify", &id, "-o", "json", "-f"])
            .arg(&backup_file),
        &[&key],
    ));
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["encryptionKeyId"], "orders-key-2024");
    // Deep verification decrypts every block with the key from the manifest's spec.encryption.
    let v = json_of(&run(
        kb(secrets.path())
            .args(["verify", &id, "--deep", "-o", "json", "-f"])
            .arg(&backup_file),
        &[&key],
    ));
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["records"], 1500);

    // The restore decrypts: every record back exactly, in its partition and order.
    let restored = format!("{topic}-r");
    let mut r = restore_manifest_mapped(&unique_name("encr"), &id, &target, &topic, &restored);
    r["spec"]["encryption"] = encryption("orders-key", None);
    let s = json_of(&run(
        kb(secrets.path())
            .env("KAFKA_BACKUP_LOG", "debug")
            .args(["restore", "-o", "json", "-f"])
            .arg(write_manifest(dir.path(), &r)),
        &[&key],
    ));
    assert_eq!(s["restoredRecords"], 1500);
    let got = consume_all(
        &plaintext_config(),
        &restored,
        1500,
        Duration::from_secs(60),
    );
    for p in 0..3 {
        let want = of_partition(&produced, p);
        let part: Vec<_> = got.iter().filter(|c| c.record.partition == p).collect();
        let records: Vec<TestRecord> = part.iter().map(|c| c.record.clone()).collect();
        assert_eq!(records, want, "partition {p}: records");
        let offsets: Vec<i64> = part.iter().map(|c| c.offset).collect();
        assert_eq!(offsets, (0..want.len() as i64).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn missing_wrong_and_bad_keys_are_refused_naming_the_field() {
    let dir = TempDir::new("enc-bad");
    let key = TestKey::new("enc-bad-right");
    let wrong = TestKey::new("enc-bad-wrong");
    let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let secrets = secrets_dir(&[
        (
            "kb-key",
            "encryption.key",
            format!("{}\n", key.b64).as_bytes(),
        ),
        ("kb-wrong", "encryption.key", wrong.b64.as_bytes()),
        ("kb-short", "encryption.key", short.as_bytes()),
        ("kb-text", "encryption.key", b"correct horse battery staple"),
        ("kb-raw", "encryption.key", &key.bytes),
    ]);
    let keys = [&key, &wrong];
    let topic = unique_name("enc-bad");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &marked_records(200, 1));
    let target = Target::Filesystem(dir.path().join("repo"));
    let name = unique_name("enc-bad");
    let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    m["spec"]["encryption"] = encryption("kb-key", Some("kid-1"));
    let backup_file = write_manifest(dir.path(), &m);
    let s = json_of(&run(
        kb(secrets.path())
            .args(["backup", "-o", "json", "-f"])
            .arg(&backup_file),
        &keys,
    ));
    let id = s["backupId"].as_str().expect("id").to_string();
    let restored = format!("{topic}-r");
    let restore = |enc: Option<serde_json::Value>, env: Option<&str>| {
        let mut r = restore_manifest_mapped(&unique_name("encr"), &id, &target, &topic, &restored);
        if let Some(e) = enc {
            r["spec"]["encryption"] = e;
        }
        let mut c = kb(secrets.path());
        if let Some(v) = env {
            c.env(KEY_ENV, v);
        }
        c.args(["restore", "-o", "json", "-f"])
            .arg(write_manifest(dir.path(), &r));
        run(&mut c, &keys)
    };

    // No key at all.
    let out = restore(None, None);
    assert_refused(
        &out,
        2,
        &[
            "spec.encryption:",
            &format!("backup {id} is encrypted"),
            "key id 'kid-1'",
            KEY_ENV,
        ],
    );
    // A Secret that is not there.
    let out = restore(Some(encryption("no-such-key", None)), None);
    assert_refused(
        &out,
        2,
        &[
            "spec.encryption.keySecret:",
            "'encryption.key'",
            "'no-such-key'",
            "not found",
        ],
    );
    // The wrong key, from the Secret and from the environment.
    let out = restore(Some(encryption("kb-wrong", None)), None);
    assert_refused(
        &out,
        2,
        &[
            "spec.encryption.keySecret (key 'encryption.key' of secret 'kb-wrong')",
            "is not the key with id 'kid-1'",
            &id,
        ],
    );
    let out = restore(Some(encryption("kb-key", None)), Some(&wrong.b64));
    assert_refused(&out, 2, &[KEY_ENV, "is not the key with id 'kid-1'"]);
    // Another key id than the backup's.
    let out = restore(Some(encryption("kb-key", Some("kid-2"))), None);
    assert_refused(
        &out,
        2,
        &["spec.encryption.keyId:", "'kid-2'", "key id 'kid-1'"],
    );

    // Deep verification: no key, the wrong key, then the right one from the environment, which
    // takes precedence over the Secret the manifest names (here a wrong one).
    let verify = |file: &Path, env: Option<&str>| {
        let mut c = kb(secrets.path());
        if let Some(v) = env {
            c.env(KEY_ENV, v);
        }
        c.args(["verify", &id, "--deep", "-o", "json", "-f"])
            .arg(file);
        run(&mut c, &keys)
    };
    let mut plain = m.clone();
    plain["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("encryption");
    let plain_file = write_manifest(dir.path(), &plain);
    assert_refused(
        &verify(&plain_file, None),
        2,
        &["spec.encryption:", "is encrypted", "key id 'kid-1'"],
    );
    let mut wrong_m = m.clone();
    wrong_m["spec"]["encryption"] = encryption("kb-wrong", None);
    let wrong_file = write_manifest(dir.path(), &wrong_m);
    assert_refused(
        &verify(&wrong_file, None),
        2,
        &[
            "spec.encryption.keySecret",
            "'kb-wrong'",
            "is not the key with id 'kid-1'",
        ],
    );
    let v = json_of(&verify(&wrong_file, Some(&key.b64)));
    assert_eq!(v["records"], 200, "{v}");
    let v = json_of(&verify(&plain_file, Some(&key.b64)));
    assert_eq!(v["records"], 200, "{v}");

    // The environment's key alone restores, even with spec.encryption naming a missing Secret;
    // the refused restores above wrote nothing (existingData: refuse would stop this one).
    let s = json_of(&restore(
        Some(encryption("no-such-key", None)),
        Some(&key.b64),
    ));
    assert_eq!(s["restoredRecords"], 200);

    // Bad keys are refused before anything runs, naming the field, never quoting the value.
    for (secret, reason) in [
        ("kb-short", "decodes to 16 bytes, not 32"),
        ("kb-text", "not base64 text"),
        ("kb-raw", "not base64 text"),
    ] {
        let mut b = m.clone();
        b["metadata"]["name"] = unique_name("enc-badkey").into();
        b["spec"]["encryption"] = encryption(secret, None);
        let out = run(
            kb(secrets.path())
                .args(["backup", "-f"])
                .arg(write_manifest(dir.path(), &b)),
            &keys,
        );
        assert_refused(
            &out,
            2,
            &[
                "spec.encryption.keySecret:",
                &format!("'{secret}'"),
                reason,
                "openssl rand -base64 32",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains(&short) && !err.contains("horse"), "{err}");
    }
    let out = run(
        kb(secrets.path())
            .env(KEY_ENV, &short)
            .args(["backup", "-f"])
            .arg(&backup_file),
        &keys,
    );
    assert_refused(&out, 2, &[&format!("{KEY_ENV}:"), "decodes to 16 bytes"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&short));
    let mut b = m.clone();
    b["spec"]["encryption"]["keyId"] = "bad key id".into();
    let out = run(
        kb(secrets.path())
            .args(["backup", "-f"])
            .arg(write_manifest(dir.path(), &b)),
        &keys,
    );
    assert_refused(&out, 2, &["spec.encryption.keyId", "'bad key id'"]);
}

#[tokio::test]
async fn incremental_backups_keep_one_key_per_name_on_s3() {
    let dir = TempDir::new("enc-inc");
    let key = TestKey::new("enc-inc-a");
    let other = TestKey::new("enc-inc-b");
    let secrets = secrets_dir(&[
        ("key-a", "encryption.key", key.b64.as_bytes()),
        ("key-b", "encryption.key", other.b64.as_bytes()),
    ]);
    let keys = [&key, &other];
    let topic = unique_name("enc-inc");
    create_topic(&plaintext_config(), &topic, 2, 1, &[]).await;
    let all = marked_records(500, 2);
    produce(&plaintext_config(), &topic, &all[..300]);
    let target = Target::S3 {
        prefix: unique_name("enc-inc"),
    };
    let name = unique_name("enc-inc");
    let manifest = |enc: Option<serde_json::Value>| {
        let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
        m["spec"]["compression"] = "lz4".into();
        if let Some(e) = enc {
            m["spec"]["encryption"] = e;
        }
        write_manifest(dir.path(), &m)
    };
    let backup = |file: PathBuf| {
        run(
            kb(secrets.path())
                .args(["backup", "-o", "json", "-f"])
                .arg(file),
            &keys,
        )
    };
    let first = json_of(&backup(manifest(Some(encryption("key-a", Some("k1"))))));
    assert_eq!(first["records"], 300);
    produce(&plaintext_config(), &topic, &all[300..]);

    // The next backup continues the first, referencing its segments: another key id, another key
    // under the same id, or no encryption are each refused, naming the field.
    assert_refused(
        &backup(manifest(Some(encryption("key-a", Some("k2"))))),
        2,
        &[
            "spec.encryption.keyId:",
            "'k2'",
            "key id 'k1'",
            "new metadata.name",
        ],
    );
    assert_refused(
        &backup(manifest(Some(encryption("key-b", Some("k1"))))),
        2,
        &[
            "spec.encryption.keySecret (key 'encryption.key' of secret 'key-b')",
            "is not the key with id 'k1'",
        ],
    );
    assert_refused(
        &backup(manifest(None)),
        2,
        &["spec.encryption:", "is encrypted (key id 'k1')"],
    );
    let second = json_of(&backup(manifest(Some(encryption("key-a", Some("k1"))))));
    assert_eq!(second["records"], 500);
    assert_eq!(second["newRecords"], 200);
    assert!(second["reusedSegments"].as_u64() >= Some(2), "{second}");
    let id = second["backupId"].as_str().expect("id").to_string();

    // Every stored segment, the earlier backup's included, is encrypted with the one key.
    let k = EncryptionKey::new("k1", &key.bytes);
    let (_, stored) = read_encrypted(&target, &name, &id, &k).await;
    for (p, records) in stored.iter().enumerate() {
        assert_same(
            records,
            &of_partition(&all, p as i32),
            &format!("partition {p}"),
        );
    }

    // The second backup restores from S3 on its own, exactly.
    let restored = format!("{topic}-r");
    let mut r = restore_manifest_mapped(&unique_name("encr"), &id, &target, &topic, &restored);
    r["spec"]["encryption"] = encryption("key-a", Some("k1"));
    let s = json_of(&run(
        kb(secrets.path())
            .args(["restore", "-o", "json", "-f"])
            .arg(write_manifest(dir.path(), &r)),
        &keys,
    ));
    assert_eq!(s["restoredRecords"], 500);
    let got = consume_all(&plaintext_config(), &restored, 500, Duration::from_secs(60));
    for p in 0..2 {
        let records: Vec<TestRecord> = got
            .iter()
            .filter(|c| c.record.partition == p)
            .map(|c| c.record.clone())
            .collect();
        assert_eq!(records, of_partition(&all, p), "partition {p}");
    }

    // An unencrypted name cannot switch encryption on either.
    let plain_name = unique_name("enc-inc-plain");
    let mut m = backup_manifest(&plain_name, &plaintext(), &[&topic], &target);
    let plain = json_of(&backup(write_manifest(dir.path(), &m)));
    m["spec"]["encryption"] = encryption("key-a", None);
    assert_refused(
        &backup(write_manifest(dir.path(), &m)),
        2,
        &["spec.encryption:", "is not encrypted", "new metadata.name"],
    );
    // A restore expecting encryption refuses a backup that is not encrypted.
    let plain_id = plain["backupId"].as_str().expect("id");
    let mut r = restore_manifest_mapped(
        &unique_name("encr"),
        plain_id,
        &target,
        &topic,
        &format!("{topic}-p"),
    );
    r["spec"]["encryption"] = encryption("key-a", None);
    let out = run(
        kb(secrets.path())
            .args(["restore", "-f"])
            .arg(write_manifest(dir.path(), &r)),
        &keys,
    );
    assert_refused(
        &out,
        2,
        &[
            "spec.encryption:",
            &format!("backup {plain_id} is not encrypted"),
        ],
    );
}

#[tokio::test]
async fn a_block_altered_with_its_crc_and_digest_fixed_is_caught_by_authentication() {
    let dir = TempDir::new("enc-tamper");
    let key = TestKey::new("enc-tamper");
    let secrets = secrets_dir(&[("kb-key", "encryption.key", key.b64.as_bytes())]);
    let topic = unique_name("enc-tamper");
    create_topic(&plaintext_config(), &topic, 1, 1, &[]).await;
    produce(&plaintext_config(), &topic, &marked_records(3000, 1));
    let repo_dir = dir.path().join("repo");
    let target = Target::Filesystem(repo_dir.clone());
    let name = unique_name("enc-tamper");
    let mut m = backup_manifest(&name, &plaintext(), &[&topic], &target);
    m["spec"]["encryption"] = encryption("kb-key", None);
    let backup_file = write_manifest(dir.path(), &m);
    let s = json_of(&run(
        kb(secrets.path())
            .args(["backup", "-o", "json", "-f"])
            .arg(&backup_file),
        &[&key],
    ));
    let id = s["backupId"].as_str().expect("id").to_string();

    // Someone with write access to the store changes a ciphertext byte of the last block, then
    // makes the block CRC, the segment's size and its SHA-256 in the manifest agree again.
    let manifest_path = repo_dir.join(format!("{name}/manifests/{id}.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("manifest")).expect("json");
    let seg = &mut manifest["topics"][0]["partitions"][0]["segments"][0];
    let seg_rel = seg["path"].as_str().expect("path").to_string();
    let seg_path = repo_dir.join(&seg_rel);
    let mut bytes = std::fs::read(&seg_path).expect("segment");
    let trailer = decode_trailer(&bytes[bytes.len() - TRAILER_LEN..]).expect("trailer");
    let index = decode_index(
        &bytes[trailer.index_position as usize..bytes.len() - TRAILER_LEN],
        &trailer,
    )
    .expect("index");
    let (n, last) = (index.len() - 1, *index.last().expect("a block"));
    let (pos, len) = (last.position as usize, last.length as usize);
    bytes[pos + BLOCK_HEADER_LEN + 40] ^= 0x20;
    bytes[pos + 20..pos + 24].copy_from_slice(&[0; 4]);
    let crc = crc32c(&bytes[pos..pos + len]);
    bytes[pos + 20..pos + 24].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg_path, &bytes).expect("write segment");
    seg["sha256"] = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into();
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).expect("json"),
    )
    .expect("write manifest");

    let expected =
        format!("block {n} at byte {pos}: AES-256-GCM authentication failed with key id 'kb-key'");
    // Verification of presence and digest passes; deep verification does not.
    let v = json_of(&run(
        kb(secrets.path())
            .args(["verify", &id, "-o", "json", "-f"])
            .arg(&backup_file),
        &[&key],
    ));
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    let out = run(
        kb(secrets.path())
            .args(["verify", &id, "--deep", "-o", "json", "-f"])
            .arg(&backup_file),
        &[&key],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let problem = v["problems"][0].to_string();
    assert!(
        problem.contains(&seg_rel) && problem.contains(&expected),
        "{problem}"
    );

    // A restore stops at that block, naming the object and the block, before producing it.
    let mut r = restore_manifest_mapped(
        &unique_name("encr"),
        &id,
        &target,
        &topic,
        &format!("{topic}-r"),
    );
    r["spec"]["encryption"] = encryption("kb-key", None);
    let out = run(
        kb(secrets.path())
            .args(["restore", "-f"])
            .arg(write_manifest(dir.path(), &r)),
        &[&key],
    );
    assert_refused(&out, 1, &[&seg_rel, &expected]);
}

/// CRC-32C (Castagnoli), bitwise: what format.md §2.2 specifies for a block.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
