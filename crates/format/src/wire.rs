//! Low-level encoding: LEB128 varints, zig-zag, and a bounds-checked reader over a byte slice.
//!
//! The reader returns errors instead of panicking on any input, and never allocates more than the
//! bytes it was given, which is what keeps every decoder in the crate safe on corrupt data.

use crate::FormatError;

/// Longest LEB128 encoding of a `u64`.
pub(crate) const MAX_VARINT_LEN: usize = 10;

/// Encoded length of `v` as a uvarint.
#[inline]
pub(crate) fn uvarint_len(v: u64) -> usize {
    // One byte per started group of 7 significant bits, at least one.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Zig-zag: small magnitudes of either sign become small unsigned numbers.
#[inline]
pub(crate) fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

#[inline]
pub(crate) fn svarint_len(n: i64) -> usize {
    uvarint_len(zigzag(n))
}

#[inline]
pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
pub(crate) fn put_svarint(buf: &mut Vec<u8>, n: i64) {
    put_uvarint(buf, zigzag(n));
}

/// Reads little-endian fixed-size integers from the start of `bytes`; callers check the length.
pub(crate) fn le_u16(bytes: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    b.copy_from_slice(&bytes[at..at + 2]);
    u16::from_le_bytes(b)
}

pub(crate) fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

pub(crate) fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

pub(crate) fn le_i64(bytes: &[u8], at: usize) -> i64 {
    le_u64(bytes, at) as i64
}

/// A cursor over untrusted bytes. Every read checks the remaining length first.
pub(crate) struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        ByteReader { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(FormatError::corrupt(format!(
                "{what}: the record bytes end at byte {}",
                self.pos
            ))),
        }
    }

    pub(crate) fn uvarint(&mut self, what: &str) -> Result<u64, FormatError> {
        let mut v: u64 = 0;
        for i in 0..MAX_VARINT_LEN {
            let Some(&b) = self.buf.get(self.pos + i) else {
                return Err(FormatError::corrupt(format!(
                    "{what}: varint runs past the end of the record bytes"
                )));
            };
            // The tenth byte may only carry the 64th bit.
            if i == MAX_VARINT_LEN - 1 && b > 1 {
                return Err(FormatError::corrupt(format!(
                    "{what}: varint overflows 64 bits"
                )));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.pos += i + 1;
                return Ok(v);
            }
        }
        Err(FormatError::corrupt(format!(
            "{what}: varint longer than {MAX_VARINT_LEN} bytes"
        )))
    }

    pub(crate) fn svarint(&mut self, what: &str) -> Result<i64, FormatError> {
        self.uvarint(what).map(unzigzag)
    }

    /// Takes `len` bytes, or fails without reading if fewer remain.
    pub(crate) fn bytes(&mut self, len: u64, what: &str) -> Result<&'a [u8], FormatError> {
        let remaining = self.remaining();
        match usize::try_from(len) {
            Ok(n) if n <= remaining => {
                let out = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => Err(FormatError::corrupt(format!(
                "{what}: length {len} runs past the end of the record bytes ({remaining} left)"
            ))),
        }
    }

    /// A length-prefixed byte string whose length is an svarint, -1 meaning null.
    pub(crate) fn nullable_bytes(&mut self, what: &str) -> Result<Option<&'a [u8]>, FormatError> {
        let len = self.svarint(what)?;
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(FormatError::corrupt(format!(
                "{what}: invalid length {n} (only -1, for null, may be negative)"
            ))),
            n => self.bytes(n as u64, what).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_round_trip_edges() {
        let values = [
            0u64,
            1,
            127,
            128,
            255,
            16383,
            16384,
            u32::MAX as u64,
            (1 << 56) - 1,
            1 << 56,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX,
        ];
        for v in values {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, v);
            assert_eq!(buf.len(), uvarint_len(v), "len of {v}");
            let mut r = ByteReader::new(&buf);
            assert_eq!(r.uvarint("v").unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn svarint_round_trip_edges() {
        for n in [
            0i64,
            -1,
            1,
            -64,
            63,
            64,
            -65,
            i32::MIN as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut buf = Vec::new();
            put_svarint(&mut buf, n);
            assert_eq!(buf.len(), svarint_len(n));
            assert_eq!(ByteReader::new(&buf).svarint("n").unwrap(), n);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(i64::MIN), u64::MAX);
    }

    #[test]
    fn uvarint_rejects_overflow_and_overlong() {
        // Eleven continuation bytes.
        let buf = [0xffu8; 11];
        assert!(ByteReader::new(&buf).uvarint("v").is_err());
        // Ten bytes whose last carries more than the 64th bit.
        let mut buf = [0xffu8; 10];
        buf[9] = 0x02;
        assert!(ByteReader::new(&buf).uvarint("v").is_err());
        // Truncated.
        assert!(ByteReader::new(&[0x80]).uvarint("v").is_err());
        assert!(ByteReader::new(&[]).uvarint("v").is_err());
    }

    #[test]
    fn nullable_bytes_rules() {
        let mut r = ByteReader::new(&[1]); // zig-zag 1 = -1
        assert_eq!(r.nullable_bytes("k").unwrap(), None);
        let mut r = ByteReader::new(&[3]); // -2
        assert!(r.nullable_bytes("k").is_err());
        let mut r = ByteReader::new(&[4, b'a']); // 2 bytes, only one there
        assert!(r.nullable_bytes("k").is_err());
        let mut r = ByteReader::new(&[0]);
        assert_eq!(r.nullable_bytes("k").unwrap(), Some(&[][..]));
        // Huge length does not allocate or panic.
        let mut buf = Vec::new();
        put_svarint(&mut buf, i64::MAX);
        assert!(ByteReader::new(&buf).nullable_bytes("k").is_err());
    }
}
