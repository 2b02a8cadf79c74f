//! Block compression: the configured [`Codec`] (with its level) on the writing side, the codec byte
//! of a block header ([`CodecId`]) on the reading side.

use std::borrow::Cow;
use std::io::Read;

use crate::FormatError;
use crate::lz4frame::Lz4Frames;

/// The compression a writer applies to blocks, with its level.
///
/// Levels matter to the writer only: a reader needs just the codec, stored per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Blocks are stored as they are.
    None,
    /// Zstandard, levels 1 (fastest) to 22 (smallest); 3 is a good default.
    Zstd {
        /// 1..=22.
        level: i32,
    },
    /// LZ4 frame format: levels 1-2 are LZ4's fast mode, 3-12 its high-compression mode.
    Lz4 {
        /// 1..=12.
        level: u32,
    },
}

impl Codec {
    /// Checks the level is in the codec's range, so a bad configuration fails before any backup
    /// starts rather than at the first block.
    pub fn validate(&self) -> Result<(), FormatError> {
        match *self {
            Codec::None => Ok(()),
            Codec::Zstd { level } if (1..=22).contains(&level) => Ok(()),
            Codec::Zstd { level } => Err(FormatError::InvalidLevel {
                codec: "zstd",
                level: i64::from(level),
                range: "1..=22",
            }),
            Codec::Lz4 { level } if (1..=12).contains(&level) => Ok(()),
            Codec::Lz4 { level } => Err(FormatError::InvalidLevel {
                codec: "lz4",
                level: i64::from(level),
                range: "1..=12",
            }),
        }
    }

    /// The codec byte its blocks carry.
    pub fn id(&self) -> CodecId {
        match self {
            Codec::None => CodecId::None,
            Codec::Zstd { .. } => CodecId::Zstd,
            Codec::Lz4 { .. } => CodecId::Lz4,
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Codec::None => f.write_str("none"),
            Codec::Zstd { level } => write!(f, "zstd level {level}"),
            Codec::Lz4 { level } => write!(f, "lz4 level {level}"),
        }
    }
}

/// The codec byte of a block header (format.md §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodecId {
    /// 0: the payload is the records.
    None,
    /// 1: a Zstandard frame.
    Zstd,
    /// 2: an LZ4 frame.
    Lz4,
}

impl CodecId {
    /// The stored byte.
    pub fn to_byte(self) -> u8 {
        match self {
            CodecId::None => 0,
            CodecId::Zstd => 1,
            CodecId::Lz4 => 2,
        }
    }

    /// Parses the stored byte; `None` for codecs this reader does not know.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(CodecId::None),
            1 => Some(CodecId::Zstd),
            2 => Some(CodecId::Lz4),
            _ => None,
        }
    }

    /// The name used in messages and in the manifest's `compression.codec`.
    pub fn name(self) -> &'static str {
        match self {
            CodecId::None => "none",
            CodecId::Zstd => "zstd",
            CodecId::Lz4 => "lz4",
        }
    }
}

/// The writer's compressor, keeping the zstd or LZ4 context between blocks to avoid re-allocating
/// it.
pub(crate) enum Compressor {
    None,
    Zstd(Box<zstd::bulk::Compressor<'static>>),
    Lz4(Lz4Frames),
}

impl Compressor {
    pub(crate) fn new(codec: Codec) -> Result<Self, FormatError> {
        codec.validate()?;
        Ok(match codec {
            Codec::None => Compressor::None,
            Codec::Zstd { level } => Compressor::Zstd(Box::new(
                zstd::bulk::Compressor::new(level).map_err(|e| FormatError::Compress {
                    codec: "zstd",
                    message: e.to_string(),
                })?,
            )),
            Codec::Lz4 { level } => {
                Compressor::Lz4(
                    Lz4Frames::new(level).map_err(|message| FormatError::Compress {
                        codec: "lz4",
                        message,
                    })?,
                )
            }
        })
    }

    /// Appends the compressed form of `raw` to `out` and returns the codec used, or `None` when
    /// there is no compression. `out` may already hold bytes (the block header's room).
    pub(crate) fn compress(
        &mut self,
        raw: &[u8],
        out: Vec<u8>,
    ) -> Result<(Option<CodecId>, Vec<u8>), FormatError> {
        match self {
            Compressor::None => Ok((None, out)),
            Compressor::Zstd(c) => {
                let start = out.len();
                let mut out = out;
                out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
                // A cursor past the existing bytes makes zstd write after them, into spare capacity.
                let mut cursor = std::io::Cursor::new(out);
                cursor.set_position(start as u64);
                c.compress_to_buffer(raw, &mut cursor)
                    .map_err(|e| FormatError::Compress {
                        codec: "zstd",
                        message: e.to_string(),
                    })?;
                Ok((Some(CodecId::Zstd), cursor.into_inner()))
            }
            Compressor::Lz4(frames) => {
                let mut out = out;
                frames
                    .compress(raw, &mut out)
                    .map_err(|message| FormatError::Compress {
                        codec: "lz4",
                        message,
                    })?;
                Ok((Some(CodecId::Lz4), out))
            }
        }
    }
}

/// Decompresses a block payload into exactly `raw_len` bytes. Allocation is bounded by `raw_len`
/// (itself bounded by the reader limit), whatever the payload claims.
pub(crate) fn decompress(
    codec: CodecId,
    payload: &[u8],
    raw_len: usize,
) -> Result<Cow<'_, [u8]>, FormatError> {
    let err = |message: String| FormatError::Decompress {
        codec: codec.name(),
        message,
    };
    let out = match codec {
        CodecId::None => {
            if payload.len() != raw_len {
                return Err(FormatError::corrupt(format!(
                    "uncompressed block: stored_len {} differs from raw_len {raw_len}",
                    payload.len()
                )));
            }
            return Ok(Cow::Borrowed(payload));
        }
        CodecId::Zstd => {
            // Our frames declare their size: refuse a mismatch before allocating anything.
            if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(payload)
                && size != raw_len as u64
            {
                return Err(err(format!(
                    "frame declares {size} bytes, block header says raw_len {raw_len}"
                )));
            }
            // One-shot decompression into a buffer of exactly raw_len: zstd fails rather than
            // write past it, and needs no window buffer of its own.
            let mut out = Vec::with_capacity(raw_len);
            let mut d = zstd::bulk::Decompressor::new().map_err(|e| err(e.to_string()))?;
            d.decompress_to_buffer(payload, &mut out)
                .map_err(|e| err(e.to_string()))?;
            out
        }
        CodecId::Lz4 => {
            let mut dec = lz4::Decoder::new(payload).map_err(|e| err(e.to_string()))?;
            let mut out = Vec::with_capacity(raw_len);
            // One byte more than expected is enough to detect too much output.
            (&mut dec)
                .take(raw_len as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| err(e.to_string()))?;
            if out.len() > raw_len {
                return Err(err(format!(
                    "decompresses to more than raw_len {raw_len} bytes"
                )));
            }
            let (rest, finished) = dec.finish();
            finished.map_err(|_| err("the LZ4 frame is incomplete".to_owned()))?;
            if !rest.is_empty() {
                return Err(err(format!("{} bytes follow the LZ4 frame", rest.len())));
            }
            out
        }
    };
    if out.len() != raw_len {
        return Err(err(format!(
            "decompressed to {} bytes, block header says raw_len {raw_len}",
            out.len()
        )));
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn validate_ranges() {
        assert!(Codec::None.validate().is_ok());
        for level in [1, 3, 22] {
            assert!(Codec::Zstd { level }.validate().is_ok());
        }
        for level in [0, -1, 23] {
            let msg = Codec::Zstd { level }.validate().unwrap_err().to_string();
            assert!(
                msg.contains(&level.to_string()) && msg.contains("1..=22"),
                "{msg}"
            );
        }
        for level in [1, 2, 3, 12] {
            assert!(Codec::Lz4 { level }.validate().is_ok());
        }
        for level in [0, 13] {
            let msg = Codec::Lz4 { level }.validate().unwrap_err().to_string();
            assert!(
                msg.contains(&level.to_string()) && msg.contains("1..=12"),
                "{msg}"
            );
        }
    }

    #[test]
    fn compress_round_trip_after_prefix() {
        let raw: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [
            Codec::Zstd { level: 3 },
            Codec::Lz4 { level: 1 },
            Codec::Lz4 { level: 9 },
        ] {
            let mut c = Compressor::new(codec).unwrap();
            let (id, out) = c.compress(&raw, vec![9u8; 32]).unwrap();
            assert_eq!(&out[..32], &[9u8; 32]);
            let id = id.unwrap();
            assert_eq!(id, codec.id());
            let back = decompress(id, &out[32..], raw.len()).unwrap();
            assert_eq!(&back[..], &raw[..]);
            // A wrong raw_len is an error either way, never a panic.
            assert!(decompress(id, &out[32..], raw.len() - 1).is_err());
            assert!(decompress(id, &out[32..], raw.len() + 1).is_err());
            // Truncated and extended payloads.
            assert!(decompress(id, &out[32..out.len() - 1], raw.len()).is_err());
            let mut longer = out[32..].to_vec();
            longer.push(0);
            assert!(decompress(id, &longer, raw.len()).is_err());
        }
    }

    #[test]
    fn lz4_frames_without_checksums_and_older_frames_with_them_decode() {
        let raw: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (_, ours) = Compressor::new(Codec::Lz4 { level: 1 })
            .unwrap()
            .compress(&raw, Vec::new())
            .unwrap();
        // Frame descriptor flags (after the 4-byte magic): bit 4 block checksum, bit 2 content
        // checksum; both off.
        assert_eq!(ours[4] & 0b0001_0100, 0, "flags {:#010b}", ours[4]);
        assert_eq!(
            decompress(CodecId::Lz4, &ours, raw.len()).unwrap(),
            &raw[..]
        );

        // A frame as earlier writers made it, with the content checksum.
        let mut enc = lz4::EncoderBuilder::new()
            .level(1)
            .content_size(raw.len() as u64)
            .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
            .checksum(lz4::liblz4::ContentChecksum::ChecksumEnabled)
            .build(Vec::new())
            .unwrap();
        enc.write_all(&raw).unwrap();
        let (older, res) = enc.finish();
        res.unwrap();
        assert_ne!(older[4] & 0b0000_0100, 0);
        assert_eq!(
            decompress(CodecId::Lz4, &older, raw.len()).unwrap(),
            &raw[..]
        );
        // Its checksum is still checked: a wrong one fails.
        let mut bad = older.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(decompress(CodecId::Lz4, &bad, raw.len()).is_err());
    }

    #[test]
    fn one_lz4_context_compresses_blocks_of_every_size() {
        // Sizes around each LZ4 block-size step and past the largest (4 MiB: several LZ4 blocks
        // in one frame), in an order that shrinks and grows, through one reused context.
        let sizes = [
            0,
            1,
            (64 << 10) + 1,
            16 << 10,
            1 << 20,
            (4 << 20) + 12_345,
            256 << 10,
            (1 << 20) + 1,
        ];
        for level in [1, 9] {
            let mut c = Compressor::new(Codec::Lz4 { level }).unwrap();
            for (i, &n) in sizes.iter().enumerate() {
                let raw: Vec<u8> = (0..n as u64)
                    .map(|j| ((j * 31 + i as u64) % 253) as u8 ^ (j >> 9) as u8)
                    .collect();
                let (id, out) = c.compress(&raw, vec![7u8; 5]).unwrap();
                assert_eq!(id, Some(CodecId::Lz4));
                assert_eq!(&out[..5], &[7u8; 5]);
                let frame = &out[5..];
                assert_eq!(&frame[..4], &[0x04, 0x22, 0x4d, 0x18], "LZ4 frame magic");
                // FLG: bit 5 independent blocks, bit 3 content size (liblz4 reads 0 as
                // "unknown" and leaves it out), no checksums.
                let size_flag = if n > 0 { 0b0000_1000 } else { 0 };
                assert_eq!(
                    frame[4] & 0b0011_1100,
                    0b0010_0000 | size_flag,
                    "flags {:#010b}",
                    frame[4]
                );
                let back = decompress(CodecId::Lz4, frame, n).unwrap();
                assert!(back[..] == raw[..], "level {level}, {n} bytes");
                if n > 0 {
                    assert!(decompress(CodecId::Lz4, frame, n - 1).is_err());
                }
            }
        }
    }

    #[test]
    fn lz4_levels_differ() {
        let raw: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 29) as u8)
            .collect();
        let size = |level| {
            let mut c = Compressor::new(Codec::Lz4 { level }).unwrap();
            c.compress(&raw, Vec::new()).unwrap().1.len()
        };
        assert!(
            size(12) < size(1),
            "lz4 level 12 should compress better than level 1"
        );
    }
}
