//! What the schema cannot catch, checked before a Job is created: the Secrets and keys the spec
//! names, the schedule, the point in time, the backup or snapshot to use, and that the cluster
//! answers. Each failure is one sentence naming the field.
//!
//! The engine's own checks are reused: the Secrets the spec names are fetched through the API and
//! written (mode 0600) into a private directory under the operator's work dir in the layout of a
//! mounted Secret, used for the checks, and removed right after.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kafka_backup_api::kafka::KafkaClusterSpec;
use kafka_backup_api::storage::{StorageSpec, StorageType};
use kafka_backup_engine::limits::Backoff;
use kafka_backup_engine::repo::Repository;
use kafka_backup_engine::secrets::SecretStore;
use kafka_backup_engine::storage::StorageOptions;
use kube::Api;
use serde_json::Value;

use crate::job::secret_refs;

/// How long the operator waits for a cluster to answer before calling the spec invalid.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Secrets of one resource, materialized for the engine's checks; removed on drop.
pub struct Materialized {
    dir: PathBuf,
    store: SecretStore,
}

impl Materialized {
    pub fn store(&self) -> &SecretStore {
        &self.store
    }
}

impl Drop for Materialized {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fetches every Secret `spec` names into a private directory. A missing Secret is an error
/// naming the spec field, the Secret and the namespace.
pub async fn materialize(
    client: &kube::Client,
    namespace: &str,
    spec: &Value,
    work_dir: &Path,
) -> Result<Materialized, String> {
    let unique = format!("{}-{}", std::process::id(), uuid_like());
    let dir = work_dir.join(format!("secrets-{unique}"));
    let mat = Materialized {
        store: SecretStore::new(&dir),
        dir: dir.clone(),
    };
    std::fs::create_dir_all(&dir)
        .and_then(|_| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| {
            format!(
                "the operator cannot use its work directory {}: {e}",
                work_dir.display()
            )
        })?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut done: Vec<String> = Vec::new();
    for r in secret_refs(spec) {
        if done.contains(&r.name) {
            continue;
        }
        let secret = api
            .get_opt(&r.name)
            .await
            .map_err(|e| format!("{}: cannot read Secret '{}': {e}", r.field, r.name))?
            .ok_or_else(|| {
                format!(
                    "{}: Secret '{}' not found in namespace '{namespace}'",
                    r.field, r.name
                )
            })?;
        let sdir = dir.join(&r.name);
        std::fs::create_dir_all(&sdir).map_err(|e| format!("work directory: {e}"))?;
        for (key, value) in secret.data.unwrap_or_default() {
            if key.contains('/') || key.starts_with('.') {
                continue;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(sdir.join(&key))
                .map_err(|e| format!("work directory: {e}"))?;
            std::io::Write::write_all(&mut f, &value.0)
                .map_err(|e| format!("work directory: {e}"))?;
        }
        done.push(r.name);
    }
    Ok(mat)
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", N.fetch_add(1, Ordering::Relaxed))
}

/// The cluster answers with the spec's settings and credentials.
pub async fn probe_cluster(
    field: &str,
    spec: &KafkaClusterSpec,
    secrets: &SecretStore,
) -> Result<(), String> {
    let config = kafka_backup_engine::kafka::client_config(field, spec, secrets)
        .map_err(|e| e.to_string())?;
    let field = field.to_string();
    tokio::task::spawn_blocking(move || {
        kafka_backup_engine::kafka::probe(&config, PROBE_TIMEOUT)
            .map(|_| ())
            .map_err(|e| format!("{field}.bootstrapServers: {e}"))
    })
    .await
    .map_err(|e| format!("{e}"))?
}

/// The storage the spec describes, opened with its credentials (nothing contacted yet).
/// `None` for `storageType: pvc`: the claim is mounted into the Job's pod only; the claim's
/// existence is checked instead.
pub async fn storage_repo(
    client: &kube::Client,
    namespace: &str,
    field: &str,
    spec: &StorageSpec,
    secrets: &SecretStore,
) -> Result<Option<Repository>, String> {
    if spec.storage_type == StorageType::Pvc {
        if let Some(pvc) = &spec.pvc {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
            match api.get_opt(&pvc.claim_name).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(format!(
                        "{field}.pvc.claimName: PersistentVolumeClaim '{}' not found in namespace '{namespace}'",
                        pvc.claim_name
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "{field}.pvc.claimName: cannot read PersistentVolumeClaim '{}': {e}",
                        pvc.claim_name
                    ));
                }
            }
        }
        // The volume is mounted into the Job's pod only; the worker checks the rest.
        Ok(None)
    } else {
        Repository::open(
            field,
            spec,
            secrets,
            &StorageOptions::default(),
            Backoff::default(),
        )
        .map(Some)
        .map_err(|e| e.to_string())
    }
}
