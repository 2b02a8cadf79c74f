//! A kafka-backup repository in a storage location (docs/format.md §1): manifests, checkpoints and
//! segments, read and written through bounded retries and the storage circuit breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::TryStreamExt;
use kafka_backup_api::storage::StorageSpec;
use kafka_backup_format::{
    Checkpoint, Manifest, backup_name_of, checkpoint_path, checkpoints_prefix, manifest_path,
    manifests_prefix, parse_segment_path, segments_prefix,
};
use object_store::path::Path;
use object_store::{
    MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    WriteMultipart,
};

use crate::error::{Error, Result};
use crate::limits::{Backoff, CircuitBreaker};
use crate::secrets::SecretStore;
use crate::storage::{self, Storage, StorageOptions};

/// Errors worth retrying: the store may come back. Missing objects, conflicts, bad requests and
/// permission errors will not change by retrying, nor will a local file system that is full,
/// read-only or not writable by this process, nor a TLS certificate the client rejects (someone
/// has to act first).
pub fn retryable(e: &object_store::Error) -> bool {
    if any_cause(e, |c| local_write_refused(c) || certificate_rejected(c)) {
        return false;
    }
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::NotSupported { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::InvalidPath { .. }
            | object_store::Error::UnknownConfigurationKey { .. }
    )
}

/// Whether `e` or any error under it satisfies `test`. An io::Error's `source()` skips the error
/// it wraps (often another io::Error, wrapping a TLS error): those are looked at too.
fn any_cause(
    e: &object_store::Error,
    test: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let mut inner = Some(c);
        while let Some(i) = inner {
            if test(i) {
                return true;
            }
            inner = i
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|w| w as &(dyn std::error::Error + 'static));
        }
        cause = c.source();
    }
    false
}

/// A local file system error that retrying cannot fix: no space left, a quota or file size
/// limit, a read-only file system, or permission denied.
fn local_write_refused(c: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    c.downcast_ref::<std::io::Error>().is_some_and(|io| {
        matches!(
            io.kind(),
            ErrorKind::StorageFull
                | ErrorKind::QuotaExceeded
                | ErrorKind::FileTooLarge
                | ErrorKind::ReadOnlyFilesystem
                | ErrorKind::PermissionDenied
        )
    })
}

/// A TLS certificate the client rejected (an unknown issuer, a name that does not match, an
/// expired certificate): the same certificate comes back on every attempt.
fn certificate_rejected(c: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        c.downcast_ref::<rustls::Error>(),
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
    )
}

/// The repository at a storage location.
#[derive(Clone, Debug)]
pub struct Repository {
    storage: Storage,
    breaker: Arc<CircuitBreaker>,
    backoff: Backoff,
    /// Bytes of object data read so far (`get`, `get_range`), shared by clones.
    bytes_read: Arc<AtomicU64>,
}

impl Repository {
    /// The repository in `storage`; calls go through `breaker`, retried per `backoff`.
    pub fn new(storage: Storage, breaker: Arc<CircuitBreaker>, backoff: Backoff) -> Self {
        Repository {
            storage,
            breaker,
            backoff,
            bytes_read: Arc::default(),
        }
    }

    /// The repository at the location `spec` (named `field` in errors) describes, with its
    /// credentials from `secrets`; nothing is contacted yet. Calls go through a storage circuit
    /// breaker of its own, retried per `backoff`.
    pub fn open(
        field: &str,
        spec: &StorageSpec,
        secrets: &SecretStore,
        options: &StorageOptions,
        backoff: Backoff,
    ) -> Result<Self> {
        let storage = storage::open(field, spec, secrets, options)?;
        Ok(Repository::new(
            storage,
            Arc::new(CircuitBreaker::new("storage", None)),
            backoff,
        ))
    }

    /// As [`Repository::open`] for kinds whose `spec.storage` may be left out for the default
    /// storage (the operator's, or the CLI's `--default-storage`); `why` says what the storage
    /// is needed for when neither is given.
    pub fn open_or_default(
        storage: Option<&StorageSpec>,
        default: Option<&StorageSpec>,
        why: &str,
        secrets: &SecretStore,
        options: &StorageOptions,
    ) -> Result<Self> {
        let Some((spec, field)) = kafka_backup_api::storage::own_or_default(storage, default)
        else {
            return Err(Error::InvalidSpec {
                field: "spec.storage".into(),
                message: format!(
                    "is needed {why}; set it, or give a default storage (--default-storage)"
                ),
            });
        };
        Repository::open(field, spec, secrets, options, Backoff::default())
    }

    /// Bytes of object data this repository (and its clones) read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    fn count_read(&self, bytes: Bytes) -> Bytes {
        self.bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        bytes
    }

    /// The underlying store, rooted at the repository.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        self.storage.store()
    }

    /// Where the repository is, for messages.
    pub fn description(&self) -> &str {
        self.storage.description()
    }

    /// The storage circuit breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// The retry policy of single calls.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    fn storage_error(&self, operation: &str, path: &str, source: object_store::Error) -> Error {
        Error::Storage {
            operation: operation.to_string(),
            location: format!("{}/{path}", self.description()),
            source,
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &str) -> Result<Bytes> {
        let p = Path::from(path);
        let store = self.store().clone();
        self.breaker
            .call("get", &self.backoff, retryable, || {
                let store = store.clone();
                let p = p.clone();
                async move { store.get(&p).await?.bytes().await }
            })
            .await
            .map(|b| self.count_read(b))
            .map_err(|e| self.storage_error("read", path, e))
    }

    /// Reads `range` of an object.
    pub async fn get_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Bytes> {
        let p = Path::from(path);
        let store = self.store().clone();
        self.breaker
            .call("get_range", &self.backoff, retryable, || {
                let store = store.clone();
                let p = p.clone();
                let range = range.clone();
                async move { store.get_range(&p, range).await }
            })
            .await
            .map(|b| self.count_read(b))
            .map_err(|e| self.storage_error("read", path, e))
    }

    /// Size and modification time of an object.
    pub async fn head(&self, path: &str) -> Result<ObjectMeta> {
        let p = Path::from(path);
        let store = self.store().clone();
        self.breaker
            .call("head", &self.backoff, retryable, || {
                let store = store.clone();
                let p = p.clone();
                async move { store.head(&p).await }
            })
            .await
            .map_err(|e| self.storage_error("stat", path, e))
    }

    /// Writes a whole object; `create_only` refuses to replace an existing one.
    pub async fn put(&self, path: &str, body: Bytes, create_only: bool) -> Result<()> {
        let p = Path::from(path);
        let store = self.store().clone();
        let mode = if create_only {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let result = self
            .breaker
            .call("put", &self.backoff, retryable, || {
                let store = store.clone();
                let p = p.clone();
                let payload = PutPayload::from_bytes(body.clone());
                let opts = PutOptions {
                    mode: mode.clone(),
                    ..Default::default()
                };
                async move { store.put_opts(&p, payload, opts).await.map(|_| ()) }
            })
            .await;
        match result {
            Ok(()) => Ok(()),
            // An earlier attempt of this call may have been stored although its answer was lost
            // (the store went away mid-request); objects written create-only have unique paths,
            // so identical content there is that attempt, and the write is done.
            Err(e @ object_store::Error::AlreadyExists { .. }) if create_only => {
                let same = match store.get(&p).await {
                    Ok(found) => found.bytes().await.is_ok_and(|b| b == body),
                    Err(_) => false,
                };
                if same {
                    tracing::debug!(
                        path,
                        "create-only write found already stored by an earlier attempt"
                    );
                    Ok(())
                } else {
                    Err(self.storage_error("write", path, e))
                }
            }
            Err(e) => Err(self.storage_error("write", path, e)),
        }
    }

    /// Deletes an object; one that is already gone counts as deleted (S3 says so, Azure does not).
    pub async fn delete(&self, path: &str) -> Result<()> {
        let p = Path::from(path);
        let store = self.store().clone();
        let r = self
            .breaker
            .call("delete", &self.backoff, retryable, || {
                let store = store.clone();
                let p = p.clone();
                async move { store.delete(&p).await }
            })
            .await;
        match r {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.storage_error("delete", path, e)),
        }
    }

    /// Every object under `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let p = Path::from(prefix.trim_end_matches('/'));
        let store = self.store().clone();
        self.breaker
            .call("list", &self.backoff, retryable, || {
                let store = store.clone();
                let p = p.clone();
                async move { store.list(Some(&p)).try_collect::<Vec<_>>().await }
            })
            .await
            .map_err(|e| self.storage_error("list", prefix, e))
    }

    /// The backup names (top-level directories) in the repository.
    pub async fn backup_names(&self) -> Result<Vec<String>> {
        let store = self.store().clone();
        let listing = self
            .breaker
            .call("list", &self.backoff, retryable, || {
                let store = store.clone();
                async move { store.list_with_delimiter(None).await }
            })
            .await
            .map_err(|e| self.storage_error("list", "", e))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Ids of the complete backups of `name`, oldest first (ids sort by start time).
    pub async fn backup_ids(&self, name: &str) -> Result<Vec<String>> {
        self.json_names(&manifests_prefix(name)).await
    }

    /// The names, without `.json`, of the JSON documents directly under `prefix`, sorted (backup
    /// ids sort by start time, so oldest first).
    pub async fn json_names(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .list(prefix)
            .await?
            .into_iter()
            .filter_map(|m| {
                m.location
                    .filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Ids of the runs of `name` that have a checkpoint and no manifest yet, oldest first.
    pub async fn checkpoint_ids(&self, name: &str) -> Result<Vec<String>> {
        self.json_names(&checkpoints_prefix(name)).await
    }

    /// The manifest of backup `id` of `name`.
    pub async fn manifest(&self, name: &str, id: &str) -> Result<Manifest> {
        let path = manifest_path(name, id);
        let bytes = self.get(&path).await?;
        Manifest::from_json(&bytes).map_err(|source| Error::Format {
            object: format!("{}/{path}", self.description()),
            source,
        })
    }

    /// Finds the manifest of `backup_id`: first under the name the id starts with, then anywhere.
    pub async fn find_manifest(&self, backup_id: &str) -> Result<Manifest> {
        let repo = self;
        if let Some(name) = backup_name_of(backup_id)
            && repo.backup_ids(name).await?.iter().any(|i| i == backup_id)
        {
            return repo.manifest(name, backup_id).await;
        }
        let mut all = Vec::new();
        for name in repo.backup_names().await? {
            let ids = repo.backup_ids(&name).await?;
            if ids.iter().any(|i| i == backup_id) {
                return repo.manifest(&name, backup_id).await;
            }
            all.extend(ids);
        }
        Err(Error::BackupNotFound {
            backup_id: backup_id.to_string(),
            location: repo.description().to_string(),
            nearest: crate::nearest(backup_id, &all, 5),
        })
    }

    /// Commits a manifest. Refuses to replace an existing one: manifests are immutable.
    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<()> {
        let path = manifest_path(&manifest.backup_name, &manifest.backup_id);
        self.put(&path, Bytes::from(manifest.to_json()), true).await
    }

    /// The checkpoint of run `id` of `name`.
    pub async fn checkpoint(&self, name: &str, id: &str) -> Result<Checkpoint> {
        let path = checkpoint_path(name, id);
        let bytes = self.get(&path).await?;
        Checkpoint::from_json(&bytes).map_err(|source| Error::Format {
            object: format!("{}/{path}", self.description()),
            source,
        })
    }

    /// Writes (replaces) a checkpoint.
    pub async fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let path = checkpoint_path(&checkpoint.backup_name, &checkpoint.backup_id);
        self.put(&path, Bytes::from(checkpoint.to_json()), false)
            .await
    }

    /// Removes the checkpoint of a run whose manifest is committed.
    pub async fn delete_checkpoint(&self, name: &str, id: &str) -> Result<()> {
        self.delete(&checkpoint_path(name, id)).await
    }

    /// Every segment object of `name`, with its metadata.
    pub async fn segments(&self, name: &str) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .list(&segments_prefix(name))
            .await?
            .into_iter()
            .filter(|m| parse_segment_path(m.location.as_ref()).is_some())
            .collect())
    }

    /// Starts writing the object at `path`. Small objects are sent with one request; once more
    /// than `single_put_limit` bytes were written, the rest streams as a multipart upload so memory
    /// stays bounded whatever the object's size.
    pub fn upload(&self, path: String, single_put_limit: usize) -> Upload {
        Upload {
            repo: self.clone(),
            path,
            buffer: Vec::new(),
            start: 0,
            multipart: None,
            single_put_limit: single_put_limit.max(1),
        }
    }
}

/// Parts of a multipart upload in flight at once. The next part fills only while fewer are.
const PARTS_IN_FLIGHT: usize = 2;

/// Where a part's bytes start in memory: at a multiple of this, as direct I/O asks, so a
/// directory store writes the part to disk from there (other stores take any address).
const PART_ALIGN: usize = 4096;

/// An object being written; see [`Repository::upload`]. Nothing is visible at `path` until
/// [`Upload::finish`] returns: a single put or a completed multipart upload is atomic.
///
/// Each part is gathered in a buffer of its own, starting at an aligned address, and handed to
/// the store whole, without copying it again.
pub struct Upload {
    repo: Repository,
    path: String,
    /// The object's bytes not yet handed on (at most `single_put_limit`), from `start` on.
    buffer: Vec<u8>,
    /// Bytes of `buffer` before the object's, which put them at an aligned address.
    start: usize,
    multipart: Option<WriteMultipart>,
    single_put_limit: usize,
}

impl Upload {
    /// Where the object is written, relative to the repository.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Appends bytes.
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            if self.buffer.len() - self.start == self.single_put_limit {
                // More than one request's worth: the full buffer goes as a part.
                self.send_part().await?;
            }
            // The buffer fills only while a part may be sent, so a slow store holds the
            // writer back rather than a full buffer besides the parts in flight.
            if let Some(mp) = self.multipart.as_mut() {
                mp.wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.repo.storage_error("upload", &self.path, e))?;
            }
            let n = bytes
                .len()
                .min(self.start + self.single_put_limit - self.buffer.len());
            self.buffer.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    /// Hands the buffer on as the next part, starting the multipart upload first if needed,
    /// and takes a new one.
    async fn send_part(&mut self) -> Result<()> {
        let mp = match self.multipart {
            Some(ref mut mp) => mp,
            None => {
                let p = Path::from(self.path.as_str());
                let upload: Box<dyn MultipartUpload> = self
                    .repo
                    .store()
                    .put_multipart(&p)
                    .await
                    .map_err(|e| self.repo.storage_error("start upload", &self.path, e))?;
                // The chunk size is the buffer's, so each buffer put is exactly one part.
                self.multipart.insert(WriteMultipart::new_with_chunk_size(
                    upload,
                    self.single_put_limit,
                ))
            }
        };
        mp.wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| self.repo.storage_error("upload", &self.path, e))?;
        // The next part's buffer, allocated once at its size. (The first grows with what is
        // written, from the start of its allocation: most objects are smaller than a part.)
        let mut next: Vec<u8> = Vec::with_capacity(self.single_put_limit + PART_ALIGN);
        let start = next.as_ptr().align_offset(PART_ALIGN);
        next.resize(start, 0);
        let full = std::mem::replace(&mut self.buffer, next);
        let from = std::mem::replace(&mut self.start, start);
        mp.put(Bytes::from(full).slice(from..));
        Ok(())
    }

    /// Completes the object.
    pub async fn finish(self) -> Result<()> {
        let rest = Bytes::from(self.buffer).slice(self.start..);
        match self.multipart {
            Some(mut mp) => {
                // The last part, shorter than the others.
                if !rest.is_empty() {
                    mp.put(rest);
                }
                mp.finish()
                    .await
                    .map(|_| ())
                    .map_err(|e| self.repo.storage_error("complete upload", &self.path, e))
            }
            None => self.repo.put(&self.path, rest, true).await,
        }
    }

    /// Gives up: a started multipart upload is aborted so it leaves nothing behind.
    pub async fn abort(self) {
        if let Some(mp) = self.multipart
            && let Err(e) = mp.abort().await
        {
            tracing::warn!(path = %self.path, error = %e, "aborting upload failed");
        }
    }
}
