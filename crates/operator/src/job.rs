//! The batch/v1 Job of one run: the same binary (`kafka-backup worker`), the resource as JSON in
//! an environment variable, each Secret the spec names mounted as a read-only volume, and
//! `storageType: pvc` claims mounted where the worker looks for them.
//!
//! Secret values never enter the Job: the spec only holds Secret names, and the volumes reference
//! the Secrets by name.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kafka_backup_api::common::{JobSettings, PodTemplate};
use kafka_backup_api::worker::{MANIFEST_ENV, PROGRESS_PATH_ENV, RESULT_FILE_ENV};
use serde_json::Value;

/// Where the Job's pod finds Secret `<name>`: `SECRETS_DIR/<name>/<key>`.
pub const SECRETS_DIR: &str = "/var/run/kafka-backup/secrets";
/// Where the Job's pod finds PersistentVolumeClaim `<claim>`: `PVC_DIR/<claim>`.
pub const PVC_DIR: &str = "/var/run/kafka-backup/pvc";
/// The container's termination message file.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// Label: the kind of the resource a Job runs.
pub const LABEL_KIND: &str = "kafka.oso.sh/kind";
/// Label: the name of the resource a Job runs.
pub const LABEL_NAME: &str = "kafka.oso.sh/name";
/// Label: which run of the resource (one-time, a schedule slot, a trigger value).
pub const LABEL_RUN: &str = "kafka.oso.sh/run";
/// Annotation on a Job: its outcome is in the resource's status.
pub const ANNOTATION_RECORDED: &str = "kafka.oso.sh/recorded";
/// Annotation on a Job: the schedule slot or trigger value it runs for.
pub const ANNOTATION_REASON: &str = "kafka.oso.sh/run-reason";
/// Annotation on a Job: the storage path of its progress document.
pub const ANNOTATION_PROGRESS: &str = "kafka.oso.sh/progress-path";

/// Default `ttlSecondsAfterFinished` when `spec.job` does not set one: finished Jobs go after a day.
pub const DEFAULT_TTL_SECONDS: i32 = 86_400;
/// Default `backoffLimit`: a failed pod is retried twice (runs resume where they stopped).
pub const DEFAULT_BACKOFF_LIMIT: i32 = 2;

/// A Secret the spec names, with the spec field that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// Spec path, e.g. `spec.kafkaCluster.saslSecret`.
    pub field: String,
    pub name: String,
}

/// Every Secret a spec names: each object under a key ending in `Secret` with a `name`
/// (tlsSecret, saslSecret, credentialsSecret, sasTokenSecret, servicePrincipalSecret, ...).
pub fn secret_refs(spec: &Value) -> Vec<SecretRef> {
    fn walk(v: &Value, path: &str, out: &mut Vec<SecretRef>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let p = format!("{path}.{k}");
                    if k.ends_with("Secret")
                        && let Some(name) = child.get("name").and_then(Value::as_str)
                    {
                        out.push(SecretRef {
                            field: p.clone(),
                            name: name.to_string(),
                        });
                    }
                    walk(child, &p, out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(spec, "spec", &mut out);
    out
}

/// The claim a `storageType: pvc` storage block names.
pub fn pvc_claims(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(storage) = spec.get("storage")
        && storage.get("storageType").and_then(Value::as_str) == Some("pvc")
        && let Some(claim) = storage
            .get("pvc")
            .and_then(|p| p.get("claimName"))
            .and_then(Value::as_str)
    {
        out.push(claim.to_string());
    }
    out
}

/// Everything a Job is built from.
pub struct JobInput<'a> {
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
    /// Kind and name of the resource, for labels.
    pub kind: &'a str,
    pub resource_name: &'a str,
    /// Which run (label value, at most 63 characters).
    pub run: String,
    /// Why the run happens (slot time, trigger value, `once`).
    pub reason: String,
    /// The resource as the worker reads it: apiVersion, kind, metadata (name, namespace), spec.
    pub manifest: Value,
    pub image: String,
    pub service_account: String,
    pub resources: Option<ResourceRequirements>,
    pub job: Option<JobSettings>,
    pub pod_template: Option<PodTemplate>,
    /// Storage path of the progress document, if the run writes one.
    pub progress_path: Option<String>,
    /// Further environment of the worker (`--worker-env`), after the operator's own variables.
    pub extra_env: Vec<(String, String)>,
}

/// Variables the operator sets on every worker; `--worker-env` may not set them.
pub const RESERVED_ENV: &[&str] = &[
    MANIFEST_ENV,
    RESULT_FILE_ENV,
    PROGRESS_PATH_ENV,
    "KAFKA_BACKUP_SECRETS_DIR",
    "KAFKA_BACKUP_PVC_ROOT",
    "KAFKA_BACKUP_LOG_FORMAT",
    "TMPDIR",
];

/// Parses one `--worker-env` value, `NAME=VALUE`: NAME as Kubernetes accepts it in a container's
/// env (letters, digits, `_`, `-`, `.`, not starting with a digit) and not one of
/// [`RESERVED_ENV`].
pub fn parse_worker_env(arg: &str) -> Result<(String, String), String> {
    let Some((name, value)) = arg.split_once('=') else {
        return Err(format!("'{arg}' is not NAME=VALUE"));
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(format!(
            "'{name}' is not a valid variable name (letters, digits, '_', '-', '.'; not starting with a digit)"
        ));
    }
    if RESERVED_ENV.contains(&name) {
        return Err(format!(
            "'{name}' is set by the operator for every worker; choose another name"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// The Job of one run.
pub fn build(input: JobInput<'_>) -> Job {
    let spec = input.manifest.get("spec").cloned().unwrap_or(Value::Null);
    let (volumes, mounts) = volumes(&spec);
    let env = worker_env(
        &input.manifest,
        input.progress_path.as_deref(),
        &input.extra_env,
    );
    let labels = job_labels(&input);
    let mut annotations = BTreeMap::from([(ANNOTATION_REASON.to_string(), input.reason.clone())]);
    if let Some(p) = &input.progress_path {
        annotations.insert(ANNOTATION_PROGRESS.to_string(), p.clone());
    }
    let tpl = input.pod_template.clone().unwrap_or_default();
    let mut pod_labels = tpl.labels.clone();
    // Ours win: the operator finds its pods by them.
    pod_labels.extend(labels.clone());
    let settings = input.job.clone().unwrap_or_default();
    let container = Container {
        env: Some(env),
        resources: input.resources.clone(),
        volume_mounts: Some(mounts),
        ..worker_container(&input.image)
    };
    Job {
        metadata: ObjectMeta {
            name: Some(input.name.clone()),
            namespace: Some(input.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![input.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(settings.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT)),
            active_deadline_seconds: settings.active_deadline_seconds,
            ttl_seconds_after_finished: Some(
                settings
                    .ttl_seconds_after_finished
                    .unwrap_or(DEFAULT_TTL_SECONDS),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!tpl.annotations.is_empty()).then(|| tpl.annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(&tpl, &input.service_account, container, volumes)),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// Kubernetes object names of the volumes: `secret-<n>` and `pvc-<n>`, and `tmp`.
fn volumes(spec: &Value) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut seen = Vec::new();
    for r in secret_refs(spec) {
        if seen.contains(&r.name) {
            continue;
        }
        seen.push(r.name.clone());
        let vol = format!("secret-{}", seen.len());
        volumes.push(Volume {
            name: vol.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(r.name.clone()),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: vol,
            mount_path: format!("{SECRETS_DIR}/{}", r.name),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    for (i, claim) in pvc_claims(spec).into_iter().enumerate() {
        let vol = format!("pvc-{}", i + 1);
        volumes.push(Volume {
            name: vol.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: vol,
            mount_path: format!("{PVC_DIR}/{claim}"),
            ..VolumeMount::default()
        });
    }
    // The root file system is read-only; the worker's scratch space is an emptyDir.
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    });
    mounts.push(VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    });
    (volumes, mounts)
}

/// The worker's environment: the resource, where results go, where Secrets and claims are, then
/// the `--worker-env` variables.
fn worker_env(
    manifest: &Value,
    progress_path: Option<&str>,
    extra: &[(String, String)],
) -> Vec<EnvVar> {
    let env_var = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    let mut env = vec![
        env_var(MANIFEST_ENV, manifest.to_string()),
        env_var(RESULT_FILE_ENV, TERMINATION_LOG.into()),
        env_var("KAFKA_BACKUP_SECRETS_DIR", SECRETS_DIR.into()),
        env_var("KAFKA_BACKUP_PVC_ROOT", PVC_DIR.into()),
        env_var("KAFKA_BACKUP_LOG_FORMAT", "json".into()),
        env_var("TMPDIR", "/tmp".into()),
    ];
    if let Some(p) = progress_path {
        env.push(env_var(PROGRESS_PATH_ENV, p.to_string()));
    }
    for (name, value) in extra {
        env.push(env_var(name, value.clone()));
    }
    env
}

/// The labels the operator finds its Jobs and pods by.
fn job_labels(input: &JobInput<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "kafka-backup-operator".to_string(),
        ),
        (
            "app.kubernetes.io/name".to_string(),
            "kafka-backup".to_string(),
        ),
        (LABEL_KIND.to_string(), input.kind.to_string()),
        (LABEL_NAME.to_string(), label_value(input.resource_name)),
        (LABEL_RUN.to_string(), label_value(&input.run)),
    ])
}

/// The pod: never restarted in place (the Job's backoff retries), no API token, not root.
fn pod_spec(
    tpl: &PodTemplate,
    service_account: &str,
    container: Container,
    volumes: Vec<Volume>,
) -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: Some(service_account.to_string()),
        automount_service_account_token: Some(false),
        node_selector: (!tpl.node_selector.is_empty()).then(|| tpl.node_selector.clone()),
        tolerations: (!tpl.tolerations.is_empty()).then(|| tpl.tolerations.clone()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

/// The worker container, without its environment, resources and mounts. Its termination
/// message is the run's result, or the log's tail when it ended without writing one.
fn worker_container(image: &str) -> Container {
    Container {
        name: "worker".into(),
        image: Some(image.to_string()),
        command: Some(vec!["kafka-backup".into()]),
        args: Some(vec!["worker".into()]),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// `s` as a label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending with an
/// alphanumeric character; longer values keep a hash of the whole.
pub fn label_value(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if clean.len() <= 63 && clean == s {
        return clean.to_string();
    }
    let hash = short_hash(s);
    let keep: String = clean.chars().take(63 - 9).collect();
    let keep = keep.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{keep}-{hash}")
}

/// A Job name `<resource>-<suffix>` of at most 63 characters (a Job's name becomes a label value
/// of its pods); a long resource name is cut and keeps a hash of itself.
pub fn job_name(resource: &str, suffix: &str) -> String {
    let full = format!("{resource}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    let hash = short_hash(resource);
    let room = 63 - suffix.len() - hash.len() - 2;
    let cut: String = resource.chars().take(room).collect();
    format!("{}-{hash}-{suffix}", cut.trim_end_matches('-'))
}

/// Eight hex digits of FNV-1a of `s`: stable across processes and versions.
pub fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(manifest: Value) -> JobInput<'static> {
        JobInput {
            name: "b-once".into(),
            namespace: "ns".into(),
            owner: OwnerReference {
                api_version: "kafka.oso.sh/v1alpha1".into(),
                kind: "KafkaBackup".into(),
                name: "b".into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            kind: "KafkaBackup",
            resource_name: "b",
            run: "once".into(),
            reason: "once".into(),
            manifest,
            image: "img".into(),
            service_account: "kafka-backup-worker".into(),
            resources: None,
            job: Some(JobSettings {
                backoff_limit: Some(1),
                active_deadline_seconds: Some(600),
                ttl_seconds_after_finished: Some(30),
            }),
            pod_template: Some(PodTemplate {
                labels: BTreeMap::from([("team".to_string(), "data".to_string())]),
                node_selector: BTreeMap::from([("disk".to_string(), "ssd".to_string())]),
                ..PodTemplate::default()
            }),
            progress_path: Some("b/progress/b-once.json".into()),
            extra_env: vec![("HTTPS_PROXY".into(), "http://proxy:3128".into())],
        }
    }

    #[test]
    fn secrets_are_volumes_and_never_env_values() {
        let manifest = json!({
            "apiVersion": "kafka.oso.sh/v1alpha1", "kind": "KafkaBackup",
            "metadata": {"name": "b", "namespace": "ns"},
            "spec": {
                "kafkaCluster": {"bootstrapServers": ["k:9092"],
                    "tlsSecret": {"name": "tls", "caKey": "ca.crt"},
                    "saslSecret": {"name": "sasl", "mechanism": "SCRAM-SHA-512"}},
                "topics": ["t"],
                "storage": {"storageType": "pvc", "pvc": {"claimName": "data"},
                    "s3": {"credentialsSecret": {"name": "tls"}}}
            }
        });
        let refs = secret_refs(&manifest["spec"]);
        assert_eq!(
            refs.iter().map(|r| r.field.as_str()).collect::<Vec<_>>(),
            vec![
                "spec.kafkaCluster.saslSecret",
                "spec.kafkaCluster.tlsSecret",
                "spec.storage.s3.credentialsSecret"
            ]
        );
        let job = build(input(manifest));
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(1));
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.ttl_seconds_after_finished, Some(30));
        let pod = spec.template.spec.expect("pod");
        let vols = pod.volumes.expect("volumes");
        let secret_names: Vec<_> = vols
            .iter()
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
            .collect();
        assert_eq!(secret_names, vec!["sasl", "tls"]);
        assert!(vols.iter().any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|p| p.claim_name == "data")
        }));
        let c = &pod.containers[0];
        let mounts: Vec<_> = c
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.contains(&"/var/run/kafka-backup/secrets/tls"));
        assert!(mounts.contains(&"/var/run/kafka-backup/pvc/data"));
        for e in c.env.as_ref().expect("env") {
            assert!(e.value_from.is_none(), "{}", e.name);
        }
        let env = c.env.as_ref().expect("env");
        let proxy = env
            .iter()
            .find(|e| e.name == "HTTPS_PROXY")
            .expect("extra env");
        assert_eq!(proxy.value.as_deref(), Some("http://proxy:3128"));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("kafka-backup-worker")
        );
        assert_eq!(
            pod.node_selector
                .expect("selector")
                .get("disk")
                .map(String::as_str),
            Some("ssd")
        );
        let labels = spec
            .template
            .metadata
            .expect("meta")
            .labels
            .expect("labels");
        assert_eq!(labels.get("team").map(String::as_str), Some("data"));
        assert_eq!(labels.get(LABEL_NAME).map(String::as_str), Some("b"));
    }

    #[test]
    fn worker_env_is_name_equals_value_and_not_the_operators_own() {
        assert_eq!(
            parse_worker_env("AWS_ENDPOINT_URL=http://s3:9000/a=b"),
            Ok(("AWS_ENDPOINT_URL".into(), "http://s3:9000/a=b".into()))
        );
        assert_eq!(
            parse_worker_env("EMPTY="),
            Ok(("EMPTY".into(), String::new()))
        );
        let e = parse_worker_env("NOVALUE").expect_err("no =");
        assert!(e.contains("'NOVALUE' is not NAME=VALUE"), "{e}");
        let e = parse_worker_env("1X=y").expect_err("digit");
        assert!(e.contains("'1X' is not a valid variable name"), "{e}");
        let e = parse_worker_env("KAFKA_BACKUP_MANIFEST=x").expect_err("reserved");
        assert!(e.contains("set by the operator"), "{e}");
    }

    #[test]
    fn names_fit_63_characters() {
        let long = "a".repeat(80);
        let n = job_name(&long, "s29000000");
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with("-s29000000"));
        assert_ne!(job_name(&long, "x"), job_name(&"a".repeat(81), "x"));
        assert_eq!(job_name("b", "once"), "b-once");
        let v = label_value(&"x".repeat(70));
        assert!(v.len() <= 63);
        assert_eq!(label_value("simple"), "simple");
        assert_ne!(label_value("a b"), "a b");
    }
}
