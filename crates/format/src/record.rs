//! Records and their encoding inside a block (format.md §2.2).

use crate::FormatError;
use crate::wire::{ByteReader, put_svarint, put_uvarint, svarint_len, uvarint_len};

/// What a record's timestamp means, as Kafka reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when it appended the record (topic `message.timestamp.type=LogAppendTime`).
    LogAppendTime,
    /// The broker gave no timestamp type (old message format); the timestamp is then usually -1.
    NotAvailable,
}

impl TimestampType {
    /// The byte stored in a record.
    pub fn to_byte(self) -> u8 {
        match self {
            TimestampType::CreateTime => 0,
            TimestampType::LogAppendTime => 1,
            TimestampType::NotAvailable => 2,
        }
    }

    /// Parses the stored byte; `None` for values the format does not define.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(TimestampType::CreateTime),
            1 => Some(TimestampType::LogAppendTime),
            2 => Some(TimestampType::NotAvailable),
            _ => None,
        }
    }
}

/// A Kafka record header. Names need not be unique and may be empty; values may be null.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The header name (Kafka requires UTF-8).
    pub key: String,
    /// The value; `None` is a null value, distinct from an empty one.
    pub value: Option<Vec<u8>>,
}

/// A decoded record, owning its bytes: what a restore produces.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    /// The record's offset in its partition.
    pub offset: i64,
    /// Milliseconds since the Unix epoch, -1 when the broker gave none.
    pub timestamp: i64,
    /// What `timestamp` means.
    pub timestamp_type: TimestampType,
    /// The key; `None` is a null key, distinct from an empty one.
    pub key: Option<Vec<u8>>,
    /// The value; `None` is a null value (a tombstone), distinct from an empty one.
    pub value: Option<Vec<u8>>,
    /// Headers in their original order.
    pub headers: Vec<Header>,
}

impl Record {
    /// Borrows the record for [`crate::SegmentWriter::push`], e.g. to re-encode decoded records.
    pub fn as_record_ref(&self) -> RecordRef<'_> {
        RecordRef {
            offset: self.offset,
            timestamp: self.timestamp,
            timestamp_type: self.timestamp_type,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers: &self.headers,
        }
    }
}

/// The headers of a record to encode, read by index.
///
/// A trait rather than a slice so the engine can encode straight from a consumed Kafka message:
/// it wraps rdkafka's `BorrowedHeaders` (which has `count()` and `get(i)`) in a newtype that
/// implements this, with no per-message allocation and no copy of header bytes. Slices of tuples,
/// arrays, `Vec<Header>` and [`NoHeaders`] implement it for other callers and tests.
pub trait RecordHeaders {
    /// How many headers there are.
    fn count(&self) -> usize;
    /// The header at `index` (always `< count()`): its name and value, `None` for a null value.
    fn get(&self, index: usize) -> (&str, Option<&[u8]>);
}

/// A record without headers, the common case.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHeaders;

/// [`NoHeaders`] as a ready-made reference for [`RecordRef::headers`].
pub const NO_HEADERS: &NoHeaders = &NoHeaders;

impl RecordHeaders for NoHeaders {
    fn count(&self) -> usize {
        0
    }
    fn get(&self, _index: usize) -> (&str, Option<&[u8]>) {
        ("", None)
    }
}

impl RecordHeaders for Vec<Header> {
    fn count(&self) -> usize {
        self.len()
    }
    fn get(&self, index: usize) -> (&str, Option<&[u8]>) {
        let h = &self[index];
        (&h.key, h.value.as_deref())
    }
}

impl<'h> RecordHeaders for &'h [(&'h str, Option<&'h [u8]>)] {
    fn count(&self) -> usize {
        self.len()
    }
    fn get(&self, index: usize) -> (&str, Option<&[u8]>) {
        self[index]
    }
}

impl<'h> RecordHeaders for Vec<(&'h str, Option<&'h [u8]>)> {
    fn count(&self) -> usize {
        self.len()
    }
    fn get(&self, index: usize) -> (&str, Option<&[u8]>) {
        self[index]
    }
}

impl<'h, const N: usize> RecordHeaders for [(&'h str, Option<&'h [u8]>); N] {
    fn count(&self) -> usize {
        N
    }
    fn get(&self, index: usize) -> (&str, Option<&[u8]>) {
        self[index]
    }
}

/// A record to encode, borrowing its bytes so the engine can encode straight from a Kafka message
/// into the block buffer without an intermediate copy.
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    /// The record's offset in its partition; must be greater than the previous record's.
    pub offset: i64,
    /// Milliseconds since the Unix epoch, -1 when the broker gave none.
    pub timestamp: i64,
    /// What `timestamp` means.
    pub timestamp_type: TimestampType,
    /// The key; `None` is a null key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// The headers, in order ([`NO_HEADERS`] for none).
    pub headers: &'a dyn RecordHeaders,
}

impl std::fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordRef")
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("timestamp_type", &self.timestamp_type)
            .field("key_len", &self.key.map(<[u8]>::len))
            .field("value_len", &self.value.map(<[u8]>::len))
            .field("headers", &self.headers.count())
            .finish()
    }
}

/// Encoded size of a nullable byte string: svarint length (-1 for null) then the bytes.
fn nullable_len(b: Option<&[u8]>) -> u64 {
    match b {
        None => svarint_len(-1) as u64,
        Some(b) => svarint_len(b.len() as i64) as u64 + b.len() as u64,
    }
}

/// Encoded size of everything in a record after its offset delta, which depends on the block the
/// record lands in and is added by the caller.
pub(crate) fn encoded_body_len(rec: &RecordRef<'_>) -> u64 {
    let headers = rec.headers;
    let count = headers.count();
    let mut len = svarint_len(rec.timestamp) as u64
        + 1
        + nullable_len(rec.key)
        + nullable_len(rec.value)
        + uvarint_len(count as u64) as u64;
    for i in 0..count {
        let (name, value) = headers.get(i);
        len += uvarint_len(name.len() as u64) as u64 + name.len() as u64 + nullable_len(value);
    }
    len
}

fn put_nullable(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_svarint(buf, -1),
        Some(b) => {
            put_svarint(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

/// Appends the record to `buf` with the given offset delta.
pub(crate) fn encode_record(buf: &mut Vec<u8>, rec: &RecordRef<'_>, offset_delta: u64) {
    put_uvarint(buf, offset_delta);
    put_svarint(buf, rec.timestamp);
    buf.push(rec.timestamp_type.to_byte());
    put_nullable(buf, rec.key);
    put_nullable(buf, rec.value);
    let count = rec.headers.count();
    put_uvarint(buf, count as u64);
    for i in 0..count {
        let (name, value) = rec.headers.get(i);
        put_uvarint(buf, name.len() as u64);
        buf.extend_from_slice(name.as_bytes());
        put_nullable(buf, value);
    }
}

/// The fewest bytes a record can take: offset delta, timestamp, type, key length, value length and
/// header count, one byte each. Bounds how many records a block's bytes can hold.
pub(crate) const MIN_RECORD_LEN: usize = 6;

/// The fewest bytes a header can take: name length and value length.
const MIN_HEADER_LEN: usize = 2;

/// Parses exactly `count` records from `raw`, the decompressed records of a block starting at
/// `base_offset`, checking offsets strictly increase and that nothing follows the last record.
pub(crate) fn decode_records(
    raw: &[u8],
    base_offset: i64,
    count: u32,
) -> Result<Vec<Record>, FormatError> {
    // Capacity from the bytes actually there, not the (untrusted) count.
    let mut records = Vec::with_capacity((count as usize).min(raw.len() / MIN_RECORD_LEN));
    let mut r = ByteReader::new(raw);
    let mut prev_delta: Option<u64> = None;
    for index in 0..count {
        let start = r.position();
        let rec = decode_one(&mut r, base_offset, prev_delta).map_err(|e| FormatError::Record {
            index: u64::from(index),
            position: start as u64,
            error: Box::new(e),
        })?;
        prev_delta = Some((rec.offset - base_offset) as u64);
        records.push(rec);
    }
    if r.remaining() != 0 {
        return Err(FormatError::corrupt(format!(
            "{} bytes follow the last of the {count} records the block header announces",
            r.remaining()
        )));
    }
    Ok(records)
}

fn decode_one(
    r: &mut ByteReader<'_>,
    base_offset: i64,
    prev_delta: Option<u64>,
) -> Result<Record, FormatError> {
    let delta = r.uvarint("offset delta")?;
    match prev_delta {
        None if delta != 0 => {
            return Err(FormatError::corrupt(format!(
                "offset delta of the first record is {delta}, must be 0"
            )));
        }
        Some(prev) if delta <= prev => {
            return Err(FormatError::corrupt(format!(
                "offset delta {delta} does not increase (previous record's is {prev})"
            )));
        }
        _ => {}
    }
    let offset = i64::try_from(delta)
        .ok()
        .and_then(|d| base_offset.checked_add(d))
        .ok_or_else(|| {
            FormatError::corrupt(format!(
                "offset delta {delta} from base offset {base_offset} overflows"
            ))
        })?;
    let timestamp = r.svarint("timestamp")?;
    let tt = r.u8("timestamp type")?;
    let timestamp_type = TimestampType::from_byte(tt).ok_or_else(|| {
        FormatError::corrupt(format!(
            "timestamp type {tt} is not one of 0, 1, 2 (create, log append, not available)"
        ))
    })?;
    let key = r.nullable_bytes("key")?.map(<[u8]>::to_vec);
    let value = r.nullable_bytes("value")?.map(<[u8]>::to_vec);
    let header_count = r.uvarint("header count")?;
    let mut headers = Vec::with_capacity(
        (header_count.min(usize::MAX as u64) as usize).min(r.remaining() / MIN_HEADER_LEN),
    );
    for i in 0..header_count {
        if r.remaining() < MIN_HEADER_LEN {
            return Err(FormatError::corrupt(format!(
                "header {i} of {header_count}: the record bytes end"
            )));
        }
        let name_len = r.uvarint("header name length")?;
        let name = r.bytes(name_len, "header name")?;
        let key = std::str::from_utf8(name)
            .map_err(|e| FormatError::corrupt(format!("header {i} name is not UTF-8: {e}")))?
            .to_owned();
        let value = r.nullable_bytes("header value")?.map(<[u8]>::to_vec);
        headers.push(Header { key, value });
    }
    Ok(Record {
        offset,
        timestamp,
        timestamp_type,
        key,
        value,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(rec: &RecordRef<'_>, delta: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_record(&mut buf, rec, delta);
        buf
    }

    #[test]
    fn body_len_matches_encoding() {
        let hs: [(&str, Option<&[u8]>); 3] =
            [("a", None), ("", Some(b"")), ("long", Some(&[7; 300]))];
        let rec = RecordRef {
            offset: 5,
            timestamp: -1,
            timestamp_type: TimestampType::NotAvailable,
            key: None,
            value: Some(&[1; 200]),
            headers: &hs,
        };
        for delta in [0u64, 1, 200, u64::MAX >> 1] {
            let buf = encode(&rec, delta);
            assert_eq!(
                buf.len() as u64,
                encoded_body_len(&rec) + crate::wire::uvarint_len(delta) as u64
            );
        }
    }

    #[test]
    fn minimal_record_is_six_bytes() {
        let rec = RecordRef {
            offset: 0,
            timestamp: 0,
            timestamp_type: TimestampType::CreateTime,
            key: None,
            value: None,
            headers: NO_HEADERS,
        };
        assert_eq!(encode(&rec, 0).len(), MIN_RECORD_LEN);
    }

    #[test]
    fn trailing_bytes_and_bad_fields_are_errors() {
        let rec = RecordRef {
            offset: 0,
            timestamp: 0,
            timestamp_type: TimestampType::CreateTime,
            key: Some(b"k"),
            value: None,
            headers: NO_HEADERS,
        };
        let mut buf = encode(&rec, 0);
        assert_eq!(decode_records(&buf, 10, 1).unwrap()[0].offset, 10);
        buf.push(0);
        assert!(decode_records(&buf, 10, 1).is_err());
        let buf = encode(&rec, 1);
        let err = decode_records(&buf, 10, 1).unwrap_err().to_string();
        assert!(err.contains("must be 0"), "{err}");
        let mut buf = encode(&rec, 0);
        buf[2] = 3; // timestamp type
        let err = decode_records(&buf, 10, 1).unwrap_err().to_string();
        assert!(err.contains("timestamp type 3"), "{err}");
        // Base offset near the top: the delta overflows.
        let mut two = encode(&rec, 0);
        two.extend(encode(&rec, 5));
        assert!(decode_records(&two, i64::MAX - 2, 2).is_err());
        // Non-increasing deltas.
        let mut two = encode(&rec, 0);
        two.extend(encode(&rec, 0));
        assert!(decode_records(&two, 0, 2).is_err());
    }

    #[test]
    fn header_name_must_be_utf8() {
        let rec = RecordRef {
            offset: 0,
            timestamp: 0,
            timestamp_type: TimestampType::CreateTime,
            key: None,
            value: None,
            headers: &[("ab", None)],
        };
        let mut buf = encode(&rec, 0);
        let pos = buf.iter().position(|&b| b == b'a').unwrap();
        buf[pos] = 0xff;
        let err = decode_records(&buf, 0, 1).unwrap_err().to_string();
        assert!(err.contains("UTF-8"), "{err}");
    }
}
