//! The directory backend of a repository.
//!
//! object_store's `LocalFileSystem` does all of it except writing large objects, and what this
//! backend writes does not stay in the page cache. A backup writes each segment once and does not
//! read it back, yet written files stay cached: on a broker's host their pages push out the ones
//! Kafka serves consumers from, the whole object is still to be written back when its final fsync
//! comes, and taking fresh pages for every segment costs the kernel more than copying the bytes
//! (on a virtual machine whose free memory went back to the host, about 2 s of system CPU per GiB
//! written).
//!
//! [`DirUpload`] writes a multipart object to a staging file next to it, as `LocalFileSystem`
//! does (`<name>#<n>`, which listings skip), with direct I/O (`O_DIRECT`) where the file system
//! takes it: the bytes go straight to the disk, never through the page cache, so the kernel
//! neither copies them nor takes pages for them. Direct writes must start and end on
//! [`DIRECT_ALIGN`] boundaries, from memory aligned the same way. A part that sits at such an
//! address (the repository's parts do) is written from where it is; other bytes are copied
//! through a small aligned buffer. The bytes of a part past its last boundary wait for the next
//! part, and completion writes the object's last ones padded to a boundary, then cuts the file
//! to its length. Where direct I/O is refused (a file system without it, or other
//! alignment rules), the upload goes on through the cache: it starts writing each part back to
//! disk as soon as it is written, and once a part is on disk, drops its pages: an upload keeps at
//! most [`CACHED_PARTS`] parts there. Either way completion fsyncs the file, renames it into place
//! and fsyncs the directory, so a completed object survives a crash, as with `LocalFileSystem`
//! and fsync on. An object put whole is dropped from the cache once `LocalFileSystem` has fsynced
//! it. Reads drop what they read too: a restore or a verify reads each segment once
//! ([`read_once`]).
//! Direct I/O, the write-back and the dropping only change how bytes reach the disk and what stays
//! cached: where the system lacks them (outside Linux) objects are written the same way, cached.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

/// Parts of an upload that may sit in the page cache when it is written through the cache: the
/// newest are still being written back while the next one is written.
pub(crate) const CACHED_PARTS: usize = 2;

/// Direct writes start and end at multiples of this many bytes, from memory aligned to it: what
/// Linux file systems ask of direct I/O on disks with blocks of up to 4 KiB.
const DIRECT_ALIGN: usize = 4096;

/// The aligned buffer a direct write copies a part through, a piece at a time; one per open
/// upload.
const BOUNCE_BYTES: usize = 256 << 10;

/// A repository directory: `LocalFileSystem` (with fsync), with [`DirUpload`] for large objects.
#[derive(Debug)]
pub(crate) struct DirStore {
    inner: LocalFileSystem,
    /// Large objects are written with direct I/O where the file system takes it.
    direct: bool,
}

impl DirStore {
    pub(crate) fn new(inner: LocalFileSystem) -> Self {
        DirStore {
            inner,
            direct: true,
        }
    }

    /// Writes every object through the page cache, as where direct I/O is refused.
    #[cfg(test)]
    fn through_the_cache(mut self) -> Self {
        self.direct = false;
        self
    }
}

impl fmt::Display for DirStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
impl ObjectStore for DirStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let put = self.inner.put_opts(location, payload, opts).await?;
        // Written and fsynced whole: its pages need not stay cached either.
        if let Ok(path) = self.inner.path_to_filesystem(location) {
            blocking(move || {
                if let Ok(file) = File::open(&path) {
                    cache::drop_all(&file);
                }
                Ok(())
            })
            .await?;
        }
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        if !opts.attributes.is_empty() {
            // `LocalFileSystem` refuses attributes; so does this store.
            return self.inner.put_multipart_opts(location, opts).await;
        }
        let dest = self.inner.path_to_filesystem(location)?;
        let direct = self.direct;
        let upload = blocking(move || DirUpload::create(dest, direct)).await?;
        Ok(Box::new(upload))
    }

    // Every read comes through here: `get_range` and `get` call it, and `get_ranges` is left to
    // the trait's default, which calls `get_range`, so each drops what it read.
    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let mut result = self.inner.get_opts(location, options).await?;
        if head {
            return Ok(result);
        }
        let empty = GetResultPayload::Stream(futures::stream::empty().boxed());
        result.payload = match std::mem::replace(&mut result.payload, empty) {
            GetResultPayload::File(file, path) => {
                let size = result.meta.size;
                GetResultPayload::Stream(read_once(file, path, result.range.clone(), size))
            }
            other => other,
        };
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// A failed file system call, with the path it was about.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
struct DirError {
    action: &'static str,
    path: PathBuf,
    source: io::Error,
}

fn error(action: &'static str, path: &FsPath, source: io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(DirError {
            action,
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A read of at most this many bytes is one chunk (one buffer, no copy when collected); a larger
/// one streams in [`STREAM_CHUNK`] chunks.
const ONE_CHUNK: u64 = 8 << 20;
/// The chunk of a streamed read: what a reader such as `verify` holds of an object at a time.
const STREAM_CHUNK: u64 = 1 << 20;

/// Reads `range` of `file` as a stream of chunks, dropping each chunk's pages from the cache once
/// read: a restore or a verify reads each object once, and what it read would otherwise stay
/// cached, pushing out pages that are read again (on a broker's host, Kafka's).
fn read_once(
    file: File,
    path: PathBuf,
    range: Range<u64>,
    size: u64,
) -> BoxStream<'static, Result<Bytes>> {
    let chunk = if range.end - range.start <= ONE_CHUNK {
        ONE_CHUNK
    } else {
        STREAM_CHUNK
    };
    let state = Arc::new((file, path));
    futures::stream::try_unfold(range.start, move |pos| {
        let state = state.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            let n = (end - pos).min(chunk);
            blocking(move || {
                let (file, path) = &*state;
                let mut buf = vec![0u8; n as usize];
                file.read_exact_at(&mut buf, pos)
                    .map_err(|e| error("read", path, e))?;
                cache::drop_read(file, pos..pos + n, size);
                Ok(Some((Bytes::from(buf), pos + n)))
            })
            .await
        }
    })
    .boxed()
}

/// Runs file system calls off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => Err(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            }),
        },
    }
}

/// An object being written to its staging file.
#[derive(Debug)]
struct DirUpload {
    staged: Arc<Staged>,
    /// The object's length so far.
    next: u64,
    /// The object's bytes after its last multiple of [`DIRECT_ALIGN`]: written with the next part,
    /// or at completion.
    tail: Vec<u8>,
    /// Completed or aborted: no staging file to remove when dropped. A completion that failed
    /// (an fsync, the rename) leaves it to the drop.
    ended: bool,
}

#[derive(Debug)]
struct Staged {
    /// The staging file, `<dest>#<n>`.
    path: PathBuf,
    dest: PathBuf,
    /// `None` once completed or aborted.
    open: Mutex<Option<Open>>,
}

#[derive(Debug)]
struct Open {
    file: File,
    /// Written with direct I/O; cleared for good when the file system refuses a direct write.
    direct: bool,
    /// What direct writes copy through (allocated by the first); aligned by [`aligned`].
    bounce: Vec<u8>,
    /// Parts written through the cache whose write-back has started, oldest first.
    cached: VecDeque<Range<u64>>,
}

impl DirUpload {
    /// Creates the staging file of `dest` (and the directories above it, durably), for direct
    /// I/O where the file system takes it and `direct` asks for it.
    fn create(dest: PathBuf, direct: bool) -> Result<Self> {
        let mut n = 1u64;
        let mut made_parents = false;
        loop {
            let mut path = dest.clone().into_os_string();
            path.push(format!("#{n}"));
            let path = PathBuf::from(path);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    let direct = direct && cache::set_direct(&file, true);
                    return Ok(DirUpload {
                        staged: Arc::new(Staged {
                            path,
                            dest,
                            open: Mutex::new(Some(Open {
                                file,
                                direct,
                                bounce: Vec::new(),
                                cached: VecDeque::new(),
                            })),
                        }),
                        next: 0,
                        tail: Vec::new(),
                        ended: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound && !made_parents => {
                    create_parents(&dest)?;
                    made_parents = true;
                }
                Err(e) => return Err(error("create", &path, e)),
            }
        }
    }
}

impl Open {
    /// Writes `pieces`, one after another, at `at`: directly if it can, else through the cache.
    /// With `pad`, direct I/O writes zeros after them up to the next [`DIRECT_ALIGN`] boundary
    /// (the caller cuts the file to its length); without, they must end on one.
    fn write(&mut self, path: &FsPath, at: u64, pieces: &[&[u8]], pad: bool) -> Result<()> {
        if self.direct {
            match self.write_direct(at, pieces, pad) {
                Ok(()) => return Ok(()),
                // Alignment this file system does not take (or no direct I/O at all): the
                // pieces, and the rest of the object, go through the cache instead.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    tracing::debug!(path = %path.display(), error = %e,
                        "direct write refused; writing through the page cache");
                    cache::set_direct(&self.file, false);
                    self.direct = false;
                }
                Err(e) => return Err(error("write", path, e)),
            }
        }
        let mut end = at;
        for piece in pieces {
            self.file
                .write_all_at(piece, end)
                .map_err(|e| error("write", path, e))?;
            end += piece.len() as u64;
        }
        cache::start_writeback(&self.file, at..end);
        self.cached.push_back(at..end);
        while self.cached.len() > CACHED_PARTS {
            if let Some(r) = self.cached.pop_front() {
                cache::drop_written(&self.file, r);
            }
        }
        Ok(())
    }

    /// Writes `pieces` from where they are when they sit at aligned addresses (a part in a
    /// buffer of its own, from the allocator's large sizes), else copies them through the aligned
    /// buffer and writes it out each time it fills.
    fn write_direct(&mut self, mut at: u64, pieces: &[&[u8]], pad: bool) -> io::Result<()> {
        let mut filled = 0;
        for piece in pieces {
            let mut piece = *piece;
            while !piece.is_empty() {
                // `at` is on a boundary whenever nothing waits in the buffer.
                let whole = piece.len() - piece.len() % DIRECT_ALIGN;
                if filled == 0 && whole > 0 && piece.as_ptr().align_offset(DIRECT_ALIGN) == 0 {
                    self.file.write_all_at(&piece[..whole], at)?;
                    at += whole as u64;
                    piece = &piece[whole..];
                    continue;
                }
                if self.bounce.is_empty() {
                    self.bounce = vec![0; BOUNCE_BYTES + DIRECT_ALIGN];
                }
                let buf = aligned(&mut self.bounce);
                let n = piece.len().min(buf.len() - filled);
                buf[filled..filled + n].copy_from_slice(&piece[..n]);
                filled += n;
                piece = &piece[n..];
                if filled == buf.len() {
                    self.file.write_all_at(buf, at)?;
                    at += filled as u64;
                    filled = 0;
                }
            }
        }
        if filled == 0 {
            return Ok(());
        }
        let buf = aligned(&mut self.bounce);
        if pad {
            let end = filled.next_multiple_of(DIRECT_ALIGN);
            buf[filled..end].fill(0);
            filled = end;
        }
        debug_assert_eq!(
            filled % DIRECT_ALIGN,
            0,
            "a direct write ends on a boundary"
        );
        self.file.write_all_at(&buf[..filled], at)
    }
}

/// The [`BOUNCE_BYTES`] of `buf` (which has [`DIRECT_ALIGN`] more) that start at an address
/// aligned for direct I/O.
fn aligned(buf: &mut [u8]) -> &mut [u8] {
    let skip = buf.as_ptr().align_offset(DIRECT_ALIGN);
    &mut buf[skip..skip + BOUNCE_BYTES]
}

/// The bytes of `payload` in `range`.
fn copy_range(payload: &PutPayload, range: Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(range.len());
    let mut pos = 0;
    for chunk in payload.iter() {
        let (start, end) = (pos, pos + chunk.len());
        pos = end;
        let (from, to) = (range.start.max(start), range.end.min(end));
        if from < to {
            out.extend_from_slice(&chunk[from - start..to - start]);
        }
    }
    out
}

impl Staged {
    fn open(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `head`, then the first `take` bytes of `data`, at `at`.
    fn write(&self, at: u64, head: &[u8], data: &PutPayload, take: usize) -> Result<()> {
        let mut open = self.open();
        let Some(open) = open.as_mut() else {
            return Err(error(
                "write",
                &self.path,
                io::Error::other("the upload was completed or aborted"),
            ));
        };
        let mut pieces = Vec::with_capacity(data.as_ref().len() + 1);
        pieces.push(head);
        let mut left = take;
        for chunk in data.iter() {
            let n = chunk.len().min(left);
            pieces.push(&chunk[..n]);
            left -= n;
        }
        open.write(&self.path, at, &pieces, false)
    }

    /// Writes `tail`, the object's last bytes, so that it ends at `len`; makes the file durable
    /// and renames it into place.
    fn complete(&self, len: u64, tail: &[u8]) -> Result<()> {
        let Some(mut open) = self.open().take() else {
            return Err(error(
                "complete",
                &self.path,
                io::Error::other("the upload was completed or aborted"),
            ));
        };
        if !tail.is_empty() {
            open.write(&self.path, len - tail.len() as u64, &[tail], true)?;
        }
        let file = open.file;
        // A padded direct write ran past the end.
        file.set_len(len)
            .map_err(|e| error("truncate", &self.path, e))?;
        file.sync_all().map_err(|e| error("fsync", &self.path, e))?;
        // Every page is on disk now: none needs to stay cached.
        cache::drop_all(&file);
        drop(file);
        std::fs::rename(&self.path, &self.dest).map_err(|e| error("rename", &self.path, e))?;
        fsync_parent(&self.dest)
    }

    fn abort(&self) -> Result<()> {
        drop(self.open().take());
        std::fs::remove_file(&self.path).map_err(|e| error("remove", &self.path, e))
    }
}

#[async_trait]
impl MultipartUpload for DirUpload {
    // Parts come in order (`&mut self`), so each knows where it starts and what the one before
    // left past its last boundary. Every part's write starts and ends on a boundary: it writes
    // that tail, then its own bytes up to its last boundary, and leaves the rest to the next.
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let len = data.content_length();
        let at = self.next - self.tail.len() as u64;
        self.next += len as u64;
        let keep = (self.tail.len() + len) % DIRECT_ALIGN;
        if self.tail.len() + len == keep {
            for chunk in data.iter() {
                self.tail.extend_from_slice(chunk);
            }
            return futures::future::ready(Ok(())).boxed();
        }
        // `keep` < `len`: the bytes written reach past the old tail, which is shorter than one
        // boundary's distance.
        let head = std::mem::replace(&mut self.tail, copy_range(&data, len - keep..len));
        let staged = Arc::clone(&self.staged);
        blocking(move || staged.write(at, &head, &data, len - keep)).boxed()
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let staged = Arc::clone(&self.staged);
        let (len, tail) = (self.next, std::mem::take(&mut self.tail));
        blocking(move || staged.complete(len, &tail)).await?;
        self.ended = true;
        Ok(PutResult {
            e_tag: None,
            version: None,
            extensions: Default::default(),
        })
    }

    async fn abort(&mut self) -> Result<()> {
        let staged = Arc::clone(&self.staged);
        blocking(move || staged.abort()).await?;
        self.ended = true;
        Ok(())
    }
}

impl Drop for DirUpload {
    fn drop(&mut self) {
        if !self.ended {
            // Abandoned: the staging file goes (it would be invisible, but takes space).
            let path = self.staged.path.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || std::fs::remove_file(path))),
                Err(_) => drop(std::fs::remove_file(path)),
            }
        }
    }
}

/// Creates the directories above `dest` and fsyncs each one whose entries changed, from the new
/// deepest up to the ancestor that existed, so the object's path survives a crash.
fn create_parents(dest: &FsPath) -> Result<()> {
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    let mut existing = parent;
    while !existing.exists() {
        match existing.parent() {
            Some(p) => existing = p,
            None => break,
        }
    }
    std::fs::create_dir_all(parent).map_err(|e| error("create directory", parent, e))?;
    let mut dir = parent;
    loop {
        fsync_dir(dir)?;
        if dir == existing {
            return Ok(());
        }
        match dir.parent() {
            Some(p) => dir = p,
            None => return Ok(()),
        }
    }
}

fn fsync_parent(path: &FsPath) -> Result<()> {
    match path.parent() {
        Some(dir) => fsync_dir(dir),
        None => Ok(()),
    }
}

fn fsync_dir(dir: &FsPath) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| error("fsync directory", dir, e))
}

/// Page cache hints. Failures are ignored: they change what stays cached, not what is written,
/// and a write-back error they would see is reported again by the fsync that completes the file.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod cache {
    use std::fs::File;
    use std::ops::Range;
    use std::os::fd::AsRawFd;

    fn off(n: u64) -> libc::off64_t {
        libc::off64_t::try_from(n).unwrap_or(libc::off64_t::MAX)
    }

    /// Starts writing `range` back to disk without waiting for it.
    pub(super) fn start_writeback(file: &File, range: Range<u64>) {
        // SAFETY: the descriptor is open for as long as `file` is borrowed; the call only reads
        // its integer arguments.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                off(range.start),
                off(range.end - range.start),
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }

    /// Waits until `range` is on disk and drops its pages from the cache.
    pub(super) fn drop_written(file: &File, range: Range<u64>) {
        let (start, len) = (off(range.start), off(range.end - range.start));
        // SAFETY: as above.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                start,
                len,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
            libc::posix_fadvise(file.as_raw_fd(), start, len, libc::POSIX_FADV_DONTNEED);
        }
    }

    /// Drops the pages of `range`, just read from a file of `size` bytes, from the cache.
    ///
    /// The page cache may hold a file in folios of up to 2 MiB, and the kernel drops only
    /// folios wholly inside the range. So the range starts at the 2 MiB boundary at or before
    /// it (a reader going forward has read that part already, and dropping the rest of a folio
    /// it was done with costs nothing), and a range that reaches the end of the file runs to
    /// the end of its last folio.
    pub(super) fn drop_read(file: &File, range: Range<u64>, size: u64) {
        let start = range.start & !(FOLIO_ALIGN - 1);
        // Length 0 is "to the end of the file".
        let len = if range.end >= size {
            0
        } else {
            range.end - start
        };
        // SAFETY: as above.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                off(start),
                off(len),
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }

    /// The largest folio the page cache is expected to use (a huge page on x86-64 and arm64
    /// with 4 KiB pages).
    const FOLIO_ALIGN: u64 = 2 << 20;

    /// Drops the pages of a file already synced whole.
    pub(super) fn drop_all(file: &File) {
        // SAFETY: as above; offset 0 and length 0 are the whole file.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }

    /// Turns direct I/O (`O_DIRECT`) on or off for `file`; whether it is now on. A file system
    /// without direct I/O refuses to turn it on.
    pub(super) fn set_direct(file: &File, on: bool) -> bool {
        let fd = file.as_raw_fd();
        // SAFETY: as above; F_GETFL and F_SETFL read and set the descriptor's status flags only.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                return false;
            }
            let flags = if on {
                flags | libc::O_DIRECT
            } else {
                flags & !libc::O_DIRECT
            };
            libc::fcntl(fd, libc::F_SETFL, flags) == 0 && on
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod cache {
    use std::fs::File;
    use std::ops::Range;

    pub(super) fn start_writeback(_file: &File, _range: Range<u64>) {}

    pub(super) fn drop_written(_file: &File, _range: Range<u64>) {}

    pub(super) fn drop_read(_file: &File, _range: Range<u64>, _size: u64) {}

    pub(super) fn drop_all(_file: &File) {}

    pub(super) fn set_direct(_file: &File, _on: bool) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path as FsPath, PathBuf};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use futures::TryStreamExt;
    use object_store::local::LocalFileSystem;
    use object_store::path::Path;
    use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};

    use super::{CACHED_PARTS, DIRECT_ALIGN, DirStore};

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!(
                "kb-dirstore-{tag}-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&dir).expect("test directory");
            Dir(dir)
        }

        fn store(&self) -> DirStore {
            DirStore::new(
                LocalFileSystem::new_with_prefix(&self.0)
                    .expect("store")
                    .with_fsync(true),
            )
        }

        /// Every file below the directory, relative to it, sorted.
        fn files(&self) -> Vec<String> {
            fn walk(dir: &FsPath, root: &FsPath, out: &mut Vec<String>) {
                for e in std::fs::read_dir(dir).expect("read dir").flatten() {
                    if e.path().is_dir() {
                        walk(&e.path(), root, out);
                    } else {
                        let rel = e.path().strip_prefix(root).expect("below").to_owned();
                        out.push(rel.to_string_lossy().into_owned());
                    }
                }
            }
            let mut out = Vec::new();
            walk(&self.0, &self.0, &mut out);
            out.sort();
            out
        }
    }

    impl Dir {
        /// Waits (10 s at most) until no file is left below the directory.
        async fn until_empty(&self, what: &str) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self.files().is_empty() {
                assert!(Instant::now() < deadline, "{what}: {:?}", self.files());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `n` bytes that differ from part to part.
    fn part(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    async fn listed(store: &DirStore) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = store
            .list(None)
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .expect("list");
        out.sort();
        out
    }

    #[tokio::test]
    async fn objects_are_exact_invisible_until_complete_and_leave_the_page_cache() {
        let dir = Dir::new("mp");
        let store = dir.store();
        let location = Path::from("name/segments/t/0/00000000000000000000.seg");
        const PART: usize = 1 << 20;
        let parts: Vec<Vec<u8>> = (0..6).map(|i| part(PART, i)).collect();

        let mut upload = store.put_multipart(&location).await.expect("start");
        // Parts may finish in any order: the last two are awaited in reverse.
        for p in &parts[..4] {
            upload
                .put_part(PutPayload::from(p.clone()))
                .await
                .expect("part");
        }
        let fifth = upload.put_part(PutPayload::from(parts[4].clone()));
        let sixth = upload.put_part(PutPayload::from(parts[5].clone()));
        sixth.await.expect("sixth part");
        fifth.await.expect("fifth part");

        // Before completion the object does not exist; only its staging file does.
        assert_eq!(listed(&store).await, vec![]);
        assert_eq!(
            dir.files(),
            vec!["name/segments/t/0/00000000000000000000.seg#1".to_string()]
        );
        let staging = dir.0.join("name/segments/t/0/00000000000000000000.seg#1");
        let caches = page_cache_in_use(&dir.0);
        if caches {
            let cached = resident_bytes(&staging);
            assert!(
                cached <= (CACHED_PARTS * PART) as u64,
                "{cached} bytes of the staging file cached; at most {CACHED_PARTS} parts may be"
            );
        }

        upload.complete().await.expect("complete");
        let whole: Vec<u8> = parts.concat();
        assert_eq!(
            listed(&store).await,
            vec![(location.to_string(), whole.len() as u64)]
        );
        assert_eq!(
            dir.files(),
            vec!["name/segments/t/0/00000000000000000000.seg".to_string()]
        );
        let file = dir.0.join("name/segments/t/0/00000000000000000000.seg");
        if caches {
            assert_eq!(resident_bytes(&file), 0, "a completed object is not cached");
        }
        let got = store.get(&location).await.expect("get").bytes().await;
        assert!(
            got.expect("bytes") == whole,
            "the object reads back exactly"
        );

        // An object put whole is not left cached either.
        let small = Path::from("name/manifests/m.json");
        store
            .put(&small, PutPayload::from(part(300_000, 3)))
            .await
            .expect("put");
        if caches {
            let file = dir.0.join("name/manifests/m.json");
            assert_eq!(
                resident_bytes(&file),
                0,
                "an object put whole is not cached"
            );
        }

        // A second upload to the same name replaces the object.
        let mut again = store.put_multipart(&location).await.expect("start");
        again
            .put_part(PutPayload::from(part(100, 9)))
            .await
            .expect("part");
        again.complete().await.expect("complete");
        let got = store.get(&location).await.expect("get").bytes().await;
        assert_eq!(got.expect("bytes").as_ref(), part(100, 9).as_slice());
        assert_eq!(
            listed(&store).await,
            vec![
                ("name/manifests/m.json".to_string(), 300_000),
                (location.to_string(), 100)
            ]
        );
    }

    /// Part sizes around the boundaries direct writes keep to: parts shorter than one, empty,
    /// carrying bytes over to the next, larger than the aligned buffer, and parts 2, 5, 7 and 9
    /// starting on one (the offsets before them are multiples of 4096).
    const UNEVEN: [usize; 11] = [
        1,
        4095,
        3 * 4096 + 100,
        0,
        4096 - 100,
        8191,
        1,
        (1 << 20) + 3,
        3 * 4096 - 3,
        (5 << 20) + 17,
        17,
    ];

    /// `data` as a payload whose bytes start at an aligned address, as a part in a buffer of
    /// its own does.
    fn aligned_payload(data: &[u8]) -> PutPayload {
        let mut v = vec![0u8; data.len() + DIRECT_ALIGN];
        let skip = v.as_ptr().align_offset(DIRECT_ALIGN);
        v[skip..skip + data.len()].copy_from_slice(data);
        PutPayload::from(Bytes::from(v).slice(skip..skip + data.len()))
    }

    /// Whether the file system at `dir` takes direct I/O.
    fn takes_direct_io(dir: &FsPath) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        let probe = dir.join("direct-probe");
        let ok = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
            .is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    }

    /// How a test hands a part over: anywhere in memory, at an aligned address (written from
    /// where it is), or in two pieces, the first at an aligned address.
    #[derive(Clone, Copy, Debug)]
    enum Given {
        Anywhere,
        Aligned,
        Pieces,
    }

    fn payload(given: Given, p: &[u8]) -> PutPayload {
        match given {
            Given::Anywhere => PutPayload::from(p.to_vec()),
            Given::Aligned => aligned_payload(p),
            Given::Pieces => {
                let (a, b) = p.split_at(p.len() / 2);
                let a = aligned_payload(a).into_iter();
                a.chain([Bytes::copy_from_slice(b)]).collect()
            }
        }
    }

    #[tokio::test]
    async fn uneven_parts_are_exact_written_directly_or_through_the_cache() {
        for direct in [true, false] {
            let dir = Dir::new(if direct { "direct" } else { "cached" });
            let store = if direct {
                dir.store()
            } else {
                dir.store().through_the_cache()
            };
            let expect_direct = direct && takes_direct_io(&dir.0);
            let caches = page_cache_in_use(&dir.0);
            let mut made = 0;
            for given in [Given::Anywhere, Given::Aligned, Given::Pieces] {
                // Objects made of the first k sizes, so they end on every kind of tail.
                for k in 1..=UNEVEN.len() {
                    let name = format!("t/{given:?}-{k}.seg");
                    let location = Path::from(name.as_str());
                    let parts: Vec<Vec<u8>> = UNEVEN[..k]
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| part(n, i as u8 * 7 + k as u8))
                        .collect();
                    let mut upload = store.put_multipart(&location).await.expect("start");
                    // Pairs of parts in flight at once, the second awaited first.
                    for pair in parts.chunks(2) {
                        let first = upload.put_part(payload(given, &pair[0]));
                        if let Some(second) = pair.get(1) {
                            let second = upload.put_part(payload(given, second));
                            second.await.expect("second part");
                        }
                        first.await.expect("first part");
                    }
                    let staging = dir.0.join(format!("{name}#1"));
                    if expect_direct && caches {
                        assert_eq!(
                            resident_bytes(&staging),
                            0,
                            "{name}: written directly, nothing is cached"
                        );
                    }
                    upload.complete().await.expect("complete");
                    made += 1;
                    let whole = parts.concat();
                    let file = dir.0.join(&name);
                    assert_eq!(
                        std::fs::metadata(&file).expect("metadata").len(),
                        whole.len() as u64,
                        "{name}: the file ends where the object does (direct: {direct})"
                    );
                    let got = store.get(&location).await.expect("get").bytes().await;
                    assert!(
                        got.expect("bytes") == whole,
                        "{name}: the object reads back exactly (direct: {direct})"
                    );
                    if caches {
                        assert_eq!(resident_bytes(&file), 0, "{name}: not left cached");
                    }
                }
            }
            let objects = listed(&store).await;
            assert_eq!(objects.len(), made, "{objects:?}");
            assert!(
                dir.files().iter().all(|f| !f.contains('#')),
                "no staging file is left: {:?}",
                dir.files()
            );
        }
    }

    /// An upload to `name` with one part written.
    async fn one_part_written(store: &DirStore, name: &str, seed: u8) -> Box<dyn MultipartUpload> {
        let mut upload = store.put_multipart(&Path::from(name)).await.expect("start");
        upload
            .put_part(PutPayload::from(part(4096, seed)))
            .await
            .expect("part");
        upload
    }

    #[tokio::test]
    async fn aborted_and_abandoned_uploads_leave_nothing() {
        let dir = Dir::new("abort");
        let store = dir.store();
        let mut upload = one_part_written(&store, "a/x.seg", 1).await;
        upload.abort().await.expect("abort");
        assert_eq!(dir.files(), Vec::<String>::new());
        assert!(
            upload.complete().await.is_err(),
            "an aborted upload cannot complete"
        );

        let upload = one_part_written(&store, "a/y.seg", 2).await;
        drop(upload);
        dir.until_empty("the staging file of a dropped upload stays")
            .await;
        assert_eq!(listed(&store).await, vec![]);

        // A completion that fails (here the rename: a directory holds the name) leaves its
        // staging file to the drop.
        let mut upload = one_part_written(&store, "a/z.seg", 3).await;
        std::fs::create_dir_all(dir.0.join("a/z.seg/taken")).expect("directory");
        assert!(
            upload.complete().await.is_err(),
            "renaming onto a directory"
        );
        drop(upload);
        std::fs::remove_dir_all(dir.0.join("a/z.seg")).expect("remove directory");
        dir.until_empty("the staging file of a failed completion stays")
            .await;
    }

    #[tokio::test]
    async fn reads_are_exact_and_leave_the_page_cache() {
        let dir = Dir::new("read");
        let store = dir.store();
        let location = Path::from("name/segments/t/0/00000000000000000000.seg");
        // Larger than one chunk, so a whole read streams in chunks.
        let data: Vec<u8> = (0..10).flat_map(|i| part(1 << 20, i)).collect();
        std::fs::create_dir_all(dir.0.join("name/segments/t/0")).expect("dirs");
        let file = dir.0.join(location.as_ref());
        // Written and synced, but left in the cache, as a file some other writer made.
        std::fs::write(&file, &data).expect("write");
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .expect("sync");
        let caches = page_cache_in_use(&dir.0);
        assert!(
            !caches || resident_bytes(&file) > 0,
            "written through the cache"
        );

        // Ranged reads, as a restore makes them.
        let head = store.get_range(&location, 0..4096).await.expect("range");
        assert_eq!(&head[..], &data[..4096]);
        let mid = store
            .get_range(&location, 3_000_000..9_000_000)
            .await
            .expect("range");
        assert_eq!(&mid[..], &data[3_000_000..9_000_000]);
        let several = store
            .get_ranges(&location, &[10..20, 5_000_000..5_000_100])
            .await
            .expect("ranges");
        assert_eq!(&several[0][..], &data[10..20]);
        assert_eq!(&several[1][..], &data[5_000_000..5_000_100]);
        // A whole read, streamed, as verify makes it.
        let got = store.get(&location).await.expect("get");
        assert_eq!(got.meta.size, data.len() as u64);
        let chunks: Vec<Bytes> = got.into_stream().try_collect().await.expect("stream");
        assert!(chunks.len() > 1, "streamed in chunks");
        assert_eq!(chunks.concat(), data);
        if caches {
            assert_eq!(resident_bytes(&file), 0, "read pages are dropped");
        }

        // A head request still answers from the metadata.
        let meta = store.head(&location).await.expect("head");
        assert_eq!(meta.size, data.len() as u64);
    }

    #[tokio::test]
    async fn a_path_that_cannot_be_created_is_an_error_naming_it() {
        let dir = Dir::new("err");
        std::fs::write(dir.0.join("plain"), b"a file, not a directory").expect("file");
        let store = dir.store();
        let e = store
            .put_multipart(&Path::from("plain/x.seg"))
            .await
            .expect_err("a directory below a file cannot be made");
        let message = e.to_string();
        assert!(
            message.contains(&dir.0.join("plain").display().to_string()),
            "{message}"
        );
        let io = std::error::Error::source(&e)
            .and_then(|s| s.source())
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("the cause is an io::Error, so retries can judge it");
        assert!(
            matches!(
                io.kind(),
                std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists
            ),
            "{io:?}"
        );
    }

    /// Whether the file system at `dir` keeps file pages in a cache it can drop (not tmpfs,
    /// whose pages are the files themselves).
    #[allow(unsafe_code)]
    fn page_cache_in_use(dir: &FsPath) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
        // SAFETY: `c` is a NUL-terminated path and `st` a zeroed statfs the call fills.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
        assert_eq!(rc, 0, "statfs {}", dir.display());
        let tmpfs = st.f_type == libc::TMPFS_MAGIC;
        if tmpfs {
            eprintln!("{} is on tmpfs: page cache not checked", dir.display());
        }
        !tmpfs
    }

    /// Bytes of `path` in the page cache.
    #[allow(unsafe_code)]
    fn resident_bytes(path: &FsPath) -> u64 {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).expect("open");
        let len = file.metadata().expect("metadata").len() as usize;
        if len == 0 {
            return 0;
        }
        // SAFETY: sysconf only reads its argument.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let mut pages = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of the open file, unmapped before returning; mincore
        // writes one byte per page of it into `pages`, which has that many. Mapping does not
        // read the file, so the pages reported are those cached before.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED, "mmap {}", path.display());
            let rc = libc::mincore(addr, len, pages.as_mut_ptr());
            libc::munmap(addr, len);
            assert_eq!(rc, 0, "mincore {}", path.display());
        }
        pages.iter().filter(|&&b| b & 1 == 1).count() as u64 * page as u64
    }
}
