//! Storage locations from a [`StorageSpec`]: one `object_store` backend chosen at the edge, wrapped
//! so the rest of the engine sees paths relative to the repository root and a bounded retry policy.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kafka_backup_api::storage::{
    AzureCredentialsSecret, AzureSasTokenSecret, AzureServicePrincipalSecret, AzureStorage,
    GcsCredentialsSecret, GcsStorage, S3CredentialsSecret, S3Storage, StorageSpec, StorageType,
};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::dirstore::DirStore;
use crate::error::{Error, Result};
use crate::secrets::SecretStore;

/// Where `pvc` storage is found inside a Job pod: the operator mounts claim `<claimName>` at
/// `<root>/<claimName>`.
pub const DEFAULT_PVC_ROOT: &str = "/var/run/kafka-backup/pvc";

/// How storage is reached, beyond the spec.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// Directory under which PersistentVolumeClaims are mounted (see [`DEFAULT_PVC_ROOT`]).
    pub pvc_root: PathBuf,
    /// Retry policy of every request to a network store.
    pub retry: RetryPolicy,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            pvc_root: PathBuf::from(DEFAULT_PVC_ROOT),
            retry: RetryPolicy::default(),
        }
    }
}

/// Bounded retries with exponential backoff for requests to network stores: transient errors
/// (connection failures, 5xx, throttling) are retried up to `max_retries` times or until
/// `max_elapsed` has passed since the first attempt, then surface as errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub max_elapsed: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Time limit to establish a connection.
    pub connect_timeout: Duration,
    /// Time limit of one request, including its body.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            max_elapsed: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.initial_backoff,
                max_backoff: self.max_backoff,
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.max_elapsed,
        }
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
    }
}

/// An opened storage location. Paths given to [`Storage::store`] are relative to the repository
/// root (bucket plus prefix).
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl Storage {
    /// The store, rooted at the repository.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Where the repository is, for messages: `s3://bucket/prefix`, `file:///dir` ... (no secrets).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// A repository on the local file system (used directly by tests and tools).
    pub fn local(dir: &FsPath) -> Result<Storage> {
        open_directory("storage.filesystem.path", dir)
    }
}

/// Opens the location `spec` describes. `field` is the spec path of the storage block
/// (`storage`), used in errors. Credentials come from `secrets`. Nothing is contacted yet.
pub fn open(
    field: &str,
    spec: &StorageSpec,
    secrets: &SecretStore,
    options: &StorageOptions,
) -> Result<Storage> {
    let missing = |block: &str| Error::InvalidSpec {
        field: format!("{field}.{block}"),
        message: format!("is required when storageType is {block}"),
    };
    match spec.storage_type {
        StorageType::S3 => {
            let s3 = spec.s3.as_ref().ok_or_else(|| missing("s3"))?;
            open_s3(&format!("{field}.s3"), s3, secrets, options)
        }
        StorageType::Azure => {
            let azure = spec.azure.as_ref().ok_or_else(|| missing("azure"))?;
            open_azure(&format!("{field}.azure"), azure, secrets, options)
        }
        StorageType::Gcs => {
            let gcs = spec.gcs.as_ref().ok_or_else(|| missing("gcs"))?;
            open_gcs(&format!("{field}.gcs"), gcs, secrets, options)
        }
        StorageType::Pvc => {
            let pvc = spec.pvc.as_ref().ok_or_else(|| missing("pvc"))?;
            let sub = pvc.sub_path.as_deref().unwrap_or("");
            check_relative(&format!("{field}.pvc.subPath"), sub)?;
            check_name(&format!("{field}.pvc.claimName"), &pvc.claim_name)?;
            let dir = options.pvc_root.join(&pvc.claim_name).join(sub);
            open_directory(&format!("{field}.pvc"), &dir)
        }
        StorageType::Filesystem => {
            let fs = spec
                .filesystem
                .as_ref()
                .ok_or_else(|| missing("filesystem"))?;
            if fs.path.trim().is_empty() {
                return Err(Error::InvalidSpec {
                    field: format!("{field}.filesystem.path"),
                    message: "must name a directory".into(),
                });
            }
            open_directory(&format!("{field}.filesystem.path"), FsPath::new(&fs.path))
        }
    }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn check_relative(field: &str, path: &str) -> Result<()> {
    if path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(Error::InvalidSpec {
            field: field.to_string(),
            message: format!("'{path}' must be a relative path without '..'"),
        });
    }
    Ok(())
}

fn check_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::InvalidSpec {
            field: field.to_string(),
            message: format!("'{name}' is not a valid name"),
        });
    }
    Ok(())
}

fn with_prefix(store: Arc<dyn ObjectStore>, prefix: Option<&str>) -> Arc<dyn ObjectStore> {
    match prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(p) => Arc::new(PrefixStore::new(store, p)),
        None => store,
    }
}

fn describe(scheme: &str, container: &str, prefix: Option<&str>) -> String {
    match prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(p) => format!("{scheme}://{container}/{p}"),
        None => format!("{scheme}://{container}"),
    }
}

fn build_error(field: &str, e: object_store::Error) -> Error {
    Error::InvalidSpec {
        field: field.to_string(),
        message: e.to_string(),
    }
}

fn open_s3(
    field: &str,
    s3: &S3Storage,
    secrets: &SecretStore,
    options: &StorageOptions,
) -> Result<Storage> {
    // Without a credentials Secret, the standard AWS chain applies: AWS_* variables, web identity
    // (IRSA: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), container and instance credentials.
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_retry(options.retry.retry_config())
        .with_client_options(options.retry.client_options());
    if let Some(endpoint) = non_empty(&s3.endpoint) {
        b = b
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    b = b.with_unsigned_payload(unsigned_payload(field, non_empty(&s3.endpoint))?);
    if let Some(creds) = &s3.credentials_secret {
        let f = format!("{field}.credentialsSecret");
        let access = secrets.read_string(
            &format!("{f}.accessKeyKey"),
            &creds.name,
            creds
                .access_key_key
                .as_deref()
                .unwrap_or(S3CredentialsSecret::DEFAULT_ACCESS_KEY_KEY),
        )?;
        let secret = secrets.read_string(
            &format!("{f}.secretKeyKey"),
            &creds.name,
            creds
                .secret_key_key
                .as_deref()
                .unwrap_or(S3CredentialsSecret::DEFAULT_SECRET_KEY_KEY),
        )?;
        b = b
            .with_access_key_id(access.expose())
            .with_secret_access_key(secret.expose());
    }
    let store: Arc<dyn ObjectStore> = Arc::new(b.build().map_err(|e| build_error(field, e))?);
    Ok(Storage {
        store: with_prefix(store, s3.prefix.as_deref()),
        description: describe("s3", &s3.bucket, s3.prefix.as_deref()),
    })
}

/// Whether S3 request bodies go unsigned: `AWS_UNSIGNED_PAYLOAD` when it is set (its value is
/// checked here, so a bad one is named as such), else what [`signs_payload`] chooses.
fn unsigned_payload(field: &str, endpoint: Option<&str>) -> Result<bool> {
    let Some(v) = std::env::var_os("AWS_UNSIGNED_PAYLOAD") else {
        return Ok(!signs_payload(endpoint));
    };
    match v.to_str().map(str::to_ascii_lowercase).as_deref() {
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        _ => Err(Error::InvalidSpec {
            field: format!("{field} (environment variable AWS_UNSIGNED_PAYLOAD)"),
            message: format!(
                "{:?} is not a boolean: use true or false (1/0, yes/no and on/off also work)",
                v.to_string_lossy()
            ),
        }),
    }
}

/// Whether S3 requests to `endpoint` (`None`: AWS itself, over HTTPS) sign their bodies' SHA-256.
///
/// Over HTTPS, TLS already protects every body in transit, which is why the AWS SDKs send
/// `UNSIGNED-PAYLOAD` there by default: a signed body costs a SHA-256 of every byte on each side,
/// the client's to sign and the server's to check: a large share of a backup's CPU time.
/// Over plain HTTP the signature is all that protects a body from being changed on the way, so
/// it is kept. Either way the manifest records each object's SHA-256, which `verify` checks.
fn signs_payload(endpoint: Option<&str>) -> bool {
    endpoint.is_some_and(|e| e.starts_with("http://"))
}

fn open_azure(
    field: &str,
    az: &AzureStorage,
    secrets: &SecretStore,
    options: &StorageOptions,
) -> Result<Storage> {
    let methods: Vec<&str> = [
        (az.credentials_secret.is_some(), "credentialsSecret"),
        (az.sas_token_secret.is_some(), "sasTokenSecret"),
        (
            az.service_principal_secret.is_some(),
            "servicePrincipalSecret",
        ),
        (az.use_workload_identity, "useWorkloadIdentity"),
    ]
    .into_iter()
    .filter_map(|(set, name)| set.then_some(name))
    .collect();
    if methods.len() > 1 {
        return Err(Error::InvalidSpec {
            field: field.to_string(),
            message: format!(
                "choose one authentication method, not {}",
                methods.join(" and ")
            ),
        });
    }
    let mut b = MicrosoftAzureBuilder::new()
        .with_account(&az.account_name)
        .with_container_name(&az.container)
        .with_retry(options.retry.retry_config());
    let mut client_options = options.retry.client_options();
    if let Some(endpoint) = non_empty(&az.endpoint) {
        // A custom endpoint addresses the account: `https://<account>.blob.core.usgovcloudapi.net`,
        // or `http://host:port/<account>` for an emulator.
        b = b.with_endpoint(endpoint.trim_end_matches('/').to_string());
        client_options = client_options.with_allow_http(endpoint.starts_with("http://"));
    }
    b = b.with_client_options(client_options);
    if let Some(c) = &az.credentials_secret {
        let key = secrets.read_string(
            &format!("{field}.credentialsSecret.accountKeyKey"),
            &c.name,
            c.account_key_key
                .as_deref()
                .unwrap_or(AzureCredentialsSecret::DEFAULT_ACCOUNT_KEY_KEY),
        )?;
        b = b.with_access_key(key.expose());
    } else if let Some(s) = &az.sas_token_secret {
        let token = secrets.read_string(
            &format!("{field}.sasTokenSecret.sasTokenKey"),
            &s.name,
            s.sas_token_key
                .as_deref()
                .unwrap_or(AzureSasTokenSecret::DEFAULT_SAS_TOKEN_KEY),
        )?;
        b = b.with_config(
            object_store::azure::AzureConfigKey::SasKey,
            token.expose().trim_start_matches('?'),
        );
    } else if let Some(sp) = &az.service_principal_secret {
        let f = format!("{field}.servicePrincipalSecret");
        let read = |key_field: &str, key: &Option<String>, default: &str| {
            secrets.read_string(
                &format!("{f}.{key_field}"),
                &sp.name,
                key.as_deref().unwrap_or(default),
            )
        };
        let id = read(
            "clientIdKey",
            &sp.client_id_key,
            AzureServicePrincipalSecret::DEFAULT_CLIENT_ID_KEY,
        )?;
        let tenant = read(
            "tenantIdKey",
            &sp.tenant_id_key,
            AzureServicePrincipalSecret::DEFAULT_TENANT_ID_KEY,
        )?;
        let secret = read(
            "clientSecretKey",
            &sp.client_secret_key,
            AzureServicePrincipalSecret::DEFAULT_CLIENT_SECRET_KEY,
        )?;
        b = b
            .with_client_id(id.expose())
            .with_tenant_id(tenant.expose())
            .with_client_secret(secret.expose());
    } else if az.use_workload_identity {
        // AKS Workload Identity injects these into the pod.
        let var = |name: &str| {
            std::env::var(name).map_err(|_| Error::InvalidSpec {
                field: format!("{field}.useWorkloadIdentity"),
                message: format!(
                    "is true but {name} is not set in the environment; is the pod's service account \
                     federated with an Azure identity (label azure.workload.identity/use=true)?"
                ),
            })
        };
        b = b
            .with_client_id(var("AZURE_CLIENT_ID")?)
            .with_tenant_id(var("AZURE_TENANT_ID")?)
            .with_federated_token_file(var("AZURE_FEDERATED_TOKEN_FILE")?);
        if let Ok(host) = std::env::var("AZURE_AUTHORITY_HOST") {
            b = b.with_authority_host(host);
        }
    } else {
        return Err(Error::InvalidSpec {
            field: field.to_string(),
            message: "needs one of credentialsSecret, sasTokenSecret, servicePrincipalSecret or \
                      useWorkloadIdentity: true"
                .into(),
        });
    }
    let store: Arc<dyn ObjectStore> = Arc::new(b.build().map_err(|e| build_error(field, e))?);
    Ok(Storage {
        store: with_prefix(store, az.prefix.as_deref()),
        description: describe(
            "azure",
            &format!("{}/{}", az.account_name, az.container),
            az.prefix.as_deref(),
        ),
    })
}

fn open_gcs(
    field: &str,
    gcs: &GcsStorage,
    secrets: &SecretStore,
    options: &StorageOptions,
) -> Result<Storage> {
    let mut b = GoogleCloudStorageBuilder::new()
        .with_bucket_name(&gcs.bucket)
        .with_retry(options.retry.retry_config());
    let mut client_options = options.retry.client_options();
    match &gcs.credentials_secret {
        Some(c) => {
            let path = secrets.path(
                &format!("{field}.credentialsSecret.key"),
                &c.name,
                c.key
                    .as_deref()
                    .unwrap_or(GcsCredentialsSecret::DEFAULT_KEY),
            )?;
            // A key file may point the client at another endpoint (`gcs_base_url`), e.g. an
            // emulator over plain HTTP.
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
                && json
                    .get("gcs_base_url")
                    .and_then(|v| v.as_str())
                    .is_some_and(|u| u.starts_with("http://"))
            {
                client_options = client_options.with_allow_http(true);
            }
            b = b.with_service_account_path(path.to_string_lossy());
        }
        None => {
            // Application default credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity).
            if let Ok(p) = std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
                b = b.with_application_credentials(p);
            }
        }
    }
    b = b.with_client_options(client_options);
    let store: Arc<dyn ObjectStore> = Arc::new(b.build().map_err(|e| build_error(field, e))?);
    Ok(Storage {
        store: with_prefix(store, gcs.prefix.as_deref()),
        description: describe("gs", &gcs.bucket, gcs.prefix.as_deref()),
    })
}

fn open_directory(field: &str, dir: &FsPath) -> Result<Storage> {
    std::fs::create_dir_all(dir).map_err(|e| Error::InvalidSpec {
        field: field.to_string(),
        message: format!("cannot create directory {}: {e}", dir.display()),
    })?;
    let store = LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| build_error(field, e))?
        // Written objects and their directories are fsynced: "stored" means it survives a crash.
        .with_fsync(true);
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    Ok(Storage {
        store: Arc::new(DirStore::new(store)),
        description: format!("file://{}", abs.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::signs_payload;

    #[test]
    fn bodies_are_signed_over_plain_http_only() {
        assert!(signs_payload(Some("http://minio.storage:9000")));
        assert!(!signs_payload(Some("https://minio.storage:9000")));
        assert!(!signs_payload(Some("https://s3.eu-west-1.amazonaws.com")));
        assert!(!signs_payload(None));
    }
}
