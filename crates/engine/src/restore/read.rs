//! Reading a backup's records from storage for a restore: only the segments and, within them,
//! only the blocks a time window needs, a bounded byte range at a time. Also counts records
//! without restoring them, for a dry run.

use kafka_backup_format::{
    EncryptionKey, IndexEntry, PartitionEntry, Record, SegmentEntry, TRAILER_LEN, TimeWindow,
    blocks_for, decode_block_with, decode_index, decode_trailer,
};

use crate::error::{Error, Result};
use crate::repo::Repository;

/// Largest byte range fetched at once when reading blocks: bounds memory per partition.
const READ_CHUNK: u64 = 8 << 20;

/// Records of `p` within `window`, exactly: whole segments from the manifest, whole blocks from
/// the index, and blocks that straddle the bound read and counted.
pub(super) async fn count_records(
    repo: &Repository,
    key: Option<&EncryptionKey>,
    p: &PartitionEntry,
    window: TimeWindow,
) -> Result<u64> {
    let mut n = 0u64;
    for seg in &p.segments {
        if window.misses(seg.min_timestamp, seg.max_timestamp) {
            continue;
        }
        if window.covers(seg.min_timestamp, seg.max_timestamp) {
            n += seg.records;
            continue;
        }
        // Blocks wholly within the window count from the index; only blocks that straddle one
        // of its ends are read.
        let index = segment_index(repo, seg).await?;
        n += index
            .iter()
            .filter(|e| window.covers(e.min_timestamp, e.max_timestamp))
            .map(|e| u64::from(e.record_count))
            .sum::<u64>();
        let straddling: Vec<&IndexEntry> = index
            .iter()
            .filter(|e| {
                !window.covers(e.min_timestamp, e.max_timestamp)
                    && !window.misses(e.min_timestamp, e.max_timestamp)
            })
            .collect();
        read_blocks(repo, key, seg, &index, &straddling, window, |records| {
            n += records.len() as u64;
            Ok(())
        })
        .await?;
    }
    Ok(n)
}

/// The block index of `seg`: its trailer, then the index the trailer points to.
async fn segment_index(repo: &Repository, seg: &SegmentEntry) -> Result<Vec<IndexEntry>> {
    let corrupt = |source| Error::Format {
        object: format!("{}/{}", repo.description(), seg.path),
        source,
    };
    let tail = repo
        .get_range(
            &seg.path,
            seg.size.saturating_sub(TRAILER_LEN as u64)..seg.size,
        )
        .await?;
    let trailer = decode_trailer(&tail).map_err(corrupt)?;
    let index_range = trailer.index_range(seg.size).map_err(corrupt)?;
    let index_bytes = repo.get_range(&seg.path, index_range).await?;
    decode_index(&index_bytes, &trailer).map_err(corrupt)
}

/// Calls `f` with the records of each block of `seg` that may hold records in `window` (every
/// block when it is open), filtered to the window, in order. Reads only those blocks' byte
/// ranges, at most [`READ_CHUNK`] at a time. Blocks of an encrypted backup are decrypted with
/// `key`.
pub(super) async fn for_each_block<F>(
    repo: &Repository,
    key: Option<&EncryptionKey>,
    seg: &SegmentEntry,
    window: TimeWindow,
    f: F,
) -> Result<()>
where
    F: FnMut(Vec<Record>) -> Result<()>,
{
    if window.misses(seg.min_timestamp, seg.max_timestamp) {
        return Ok(());
    }
    let index = segment_index(repo, seg).await?;
    let selected: Vec<&IndexEntry> = blocks_for(&index, i64::MIN, window);
    read_blocks(repo, key, seg, &index, &selected, window, f).await
}

/// Calls `f` with the records of each of the `selected` blocks of `seg` (in index order),
/// filtered to `window`, reading consecutive blocks together, at most [`READ_CHUNK`] at a time.
async fn read_blocks<F>(
    repo: &Repository,
    key: Option<&EncryptionKey>,
    seg: &SegmentEntry,
    index: &[IndexEntry],
    selected: &[&IndexEntry],
    window: TimeWindow,
    mut f: F,
) -> Result<()>
where
    F: FnMut(Vec<Record>) -> Result<()>,
{
    let corrupt = |source| Error::Format {
        object: format!("{}/{}", repo.description(), seg.path),
        source,
    };
    // Group consecutive blocks into reads of at most READ_CHUNK bytes.
    let mut i = 0;
    while i < selected.len() {
        let start = selected[i].position;
        let mut end = selected[i].position + selected[i].length as u64;
        let mut j = i + 1;
        while j < selected.len()
            && selected[j].position == end
            && end + selected[j].length as u64 - start <= READ_CHUNK
        {
            end += selected[j].length as u64;
            j += 1;
        }
        let bytes = repo.get_range(&seg.path, start..end).await?;
        for e in &selected[i..j] {
            let from = (e.position - start) as usize;
            let to = from + e.length as usize;
            // Errors name the block: its number in the segment and where it starts.
            let in_block = |error| kafka_backup_format::FormatError::Block {
                index: index.partition_point(|x| x.position < e.position) as u64,
                position: e.position,
                error: Box::new(error),
            };
            let block = decode_block_with(&bytes[from..to], key)
                .and_then(|b| b.check_against(e).map(|()| b))
                .map_err(|error| corrupt(in_block(error)))?;
            let records: Vec<Record> = if window.is_all() {
                block.records
            } else {
                block
                    .records
                    .into_iter()
                    .filter(|r| window.contains(r.timestamp))
                    .collect()
            };
            if !records.is_empty() {
                f(records)?;
            }
        }
        i = j;
    }
    Ok(())
}

/// Records of `p` within the bound whose source offset is below `before`: how many restored
/// records precede a consumer that committed `before`.
pub(super) async fn count_before(
    repo: &Repository,
    key: Option<&EncryptionKey>,
    p: &PartitionEntry,
    window: TimeWindow,
    before: i64,
) -> Result<u64> {
    let mut n = 0u64;
    for seg in &p.segments {
        if seg.first_offset >= before {
            break;
        }
        if seg.last_offset < before && window.covers(seg.min_timestamp, seg.max_timestamp) {
            n += seg.records;
            continue;
        }
        for_each_block(repo, key, seg, window, |records| {
            n += records.iter().filter(|r| r.offset < before).count() as u64;
            Ok(())
        })
        .await?;
    }
    Ok(n)
}
