//! `verify`: proves a backup restorable without restoring it (docs/format.md §7). Every segment
//! the manifest lists must exist with its recorded size and SHA-256; deep verification also decodes
//! every block (CRCs, index, trailer) and checks record counts and offset continuity. Deep
//! verification of an encrypted backup needs its key, and authenticates every block with it.

use futures::StreamExt;
use kafka_backup_format::{EncryptionKey, Manifest, SegmentStreamReader};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::repo::Repository;

/// What verification found.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    pub backup_id: String,
    pub storage: String,
    pub deep: bool,
    /// The key id of an encrypted backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption_key_id: Option<String>,
    pub segments: u64,
    pub bytes: u64,
    /// Records decoded (deep only).
    pub records: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether the backup passed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong, naming the object.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

/// Verifies the backup `manifest` describes. Deep verification of an encrypted backup needs its
/// `key` ([`crate::encryption::key_for_reading`]); the other checks do not read it.
pub async fn verify(
    repo: &Repository,
    manifest: &Manifest,
    deep: bool,
    key: Option<&EncryptionKey>,
) -> Result<VerifyReport> {
    if let (true, Some(info), None) = (deep, &manifest.encryption, key) {
        return Err(Error::InvalidSpec {
            field: "spec.encryption".into(),
            message: format!(
                "backup {} is encrypted (key id '{}'); deep verification decrypts every block and needs that key",
                manifest.backup_id, info.key_id
            ),
        });
    }
    let mut report = VerifyReport {
        backup_id: manifest.backup_id.clone(),
        storage: repo.description().to_string(),
        deep,
        encryption_key_id: manifest.encryption.as_ref().map(|e| e.key_id.clone()),
        segments: 0,
        bytes: 0,
        records: 0,
        problems: Vec::new(),
    };
    let problem = |report: &mut VerifyReport, object: &str, problem: String| {
        report.problems.push(Problem {
            object: object.to_string(),
            problem,
        })
    };
    for t in &manifest.topics {
        for p in &t.partitions {
            let what = format!("{}/{}", t.name, p.partition);
            // Segments in order, not overlapping, within the partition's range, adding up.
            let mut previous_last: Option<i64> = None;
            for s in &p.segments {
                if s.first_offset > s.last_offset
                    || previous_last.is_some_and(|l| s.first_offset <= l)
                    || s.first_offset < p.start_offset
                    || s.last_offset >= p.end_offset
                {
                    problem(
                        &mut report,
                        &s.path,
                        format!(
                            "offsets {}..={} of {what} overlap another segment or leave the partition's range {}..{}",
                            s.first_offset, s.last_offset, p.start_offset, p.end_offset
                        ),
                    );
                }
                previous_last = Some(s.last_offset);
            }
            let sum: u64 = p.segments.iter().map(|s| s.records).sum();
            if sum != p.records {
                problem(
                    &mut report,
                    &what,
                    format!(
                        "the manifest says {} records but its segments hold {sum}",
                        p.records
                    ),
                );
            }
            for s in &p.segments {
                report.segments += 1;
                check_segment(repo, s, deep, key, &mut report).await?;
            }
        }
    }
    Ok(report)
}

async fn check_segment(
    repo: &Repository,
    s: &kafka_backup_format::SegmentEntry,
    deep: bool,
    key: Option<&EncryptionKey>,
    report: &mut VerifyReport,
) -> Result<()> {
    let found = check_object(repo, s, deep, key, report).await?;
    report
        .problems
        .extend(found.into_iter().map(|problem| Problem {
            object: s.path.clone(),
            problem,
        }));
    Ok(())
}

/// The problems of one segment object, as sentences.
async fn check_object(
    repo: &Repository,
    s: &kafka_backup_format::SegmentEntry,
    deep: bool,
    key: Option<&EncryptionKey>,
    report: &mut VerifyReport,
) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut add = |problem: String| found.push(problem);
    let meta = match repo.head(&s.path).await {
        Ok(m) => m,
        Err(crate::Error::Storage {
            source: object_store::Error::NotFound { .. },
            ..
        }) => {
            add("missing".into());
            return Ok(found);
        }
        Err(e) => return Err(e),
    };
    if meta.size != s.size {
        add(format!(
            "size is {} bytes, the manifest says {}",
            meta.size, s.size
        ));
        return Ok(found);
    }
    // Stream the object once: hash it, and when deep, decode it as it arrives.
    let result = repo
        .store()
        .get(&Path::from(s.path.as_str()))
        .await
        .map_err(|e| crate::Error::Storage {
            operation: "read".into(),
            location: format!("{}/{}", repo.description(), s.path),
            source: e,
        })?;
    let mut stream = result.into_stream();
    let mut hasher = Sha256::new();
    let mut reader = deep.then(|| SegmentStreamReader::with_key(key.cloned()));
    let mut decode_error: Option<String> = None;
    let mut records = 0u64;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| crate::Error::Storage {
            operation: "read".into(),
            location: format!("{}/{}", repo.description(), s.path),
            source: e,
        })?;
        bytes += chunk.len() as u64;
        hasher.update(&chunk);
        if decode_error.is_none()
            && let Some(r) = reader.as_mut()
        {
            let fed = r.feed(&chunk).and_then(|()| {
                while let Some(block) = r.next_block()? {
                    records += block.records.len() as u64;
                }
                Ok(())
            });
            if let Err(e) = fed {
                decode_error = Some(e.to_string());
            }
        }
    }
    report.bytes += bytes;
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if digest != s.sha256 {
        add(format!(
            "SHA-256 is {digest}, the manifest says {}",
            s.sha256
        ));
    }
    if let Some(r) = reader {
        match decode_error {
            Some(e) => add(format!("does not decode: {e}")),
            None => match r.finish() {
                Ok(summary) if s.matches(&summary) => report.records += records,
                Ok(summary) => add(format!(
                    "decodes to offsets {}..={} with {} records in {} blocks, the manifest says {}..={} with {} in {}",
                    summary.first_offset,
                    summary.last_offset,
                    summary.records,
                    summary.blocks,
                    s.first_offset,
                    s.last_offset,
                    s.records,
                    s.blocks
                )),
                Err(e) => add(format!("does not decode: {e}")),
            },
        }
    }
    Ok(found)
}
