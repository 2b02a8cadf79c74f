//! An LZ4 frame compressor that keeps its liblz4 context from block to block.
//!
//! `lz4::Encoder` creates a context per frame, and its first call allocates a zeroed 192 KiB
//! buffer for linked 64 KiB blocks (the `LZ4F_*` functions linked into this binary are the copy of
//! liblz4 bundled with librdkafka, which `calloc`s it). One encoder per segment block made that
//! allocation, and the page faults of zeroing it, once per block. Here one context lives as long
//! as the writer, and each block becomes one frame of independent LZ4 blocks as large as the block
//! needs (up to 4 MiB), compressed straight from the caller's slice into the caller's vector: with
//! automatic flushing and independent blocks liblz4 needs no buffer of its own.
//!
//! The frames are ordinary LZ4 frames (content size set, no checksums: the segment block's CRC-32C
//! covers them); every reader of the earlier linked frames reads these.
#![allow(unsafe_code)]

use std::ffi::CStr;

use lz4::liblz4::{
    BlockChecksum, BlockMode, BlockSize, ContentChecksum, FrameType, LZ4F_VERSION,
    LZ4F_compressBegin, LZ4F_compressBound, LZ4F_compressEnd, LZ4F_compressUpdate,
    LZ4F_createCompressionContext, LZ4F_freeCompressionContext, LZ4F_getErrorName, LZ4F_isError,
    LZ4FCompressionContext, LZ4FErrorCode, LZ4FFrameInfo, LZ4FPreferences,
};

/// The largest frame header liblz4 writes (LZ4F_HEADER_SIZE_MAX).
const HEADER_MAX: usize = 19;

/// Owns its context (lz4-sys marks the handle `Send`: liblz4 keeps no thread-local state), so a
/// writer moves between threads with it.
pub(crate) struct Lz4Frames {
    ctx: LZ4FCompressionContext,
    level: u32,
}

impl Lz4Frames {
    pub(crate) fn new(level: u32) -> Result<Self, String> {
        let mut ctx = LZ4FCompressionContext(std::ptr::null_mut());
        // SAFETY: liblz4 fills `ctx` with a context it allocated, or returns an error code.
        check(unsafe { LZ4F_createCompressionContext(&mut ctx, LZ4F_VERSION) })?;
        Ok(Lz4Frames { ctx, level })
    }

    /// Appends one frame holding `raw` to `out`, after the bytes `out` already holds.
    pub(crate) fn compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let block_size_id = match raw.len() {
            n if n <= 64 << 10 => BlockSize::Max64KB,
            n if n <= 256 << 10 => BlockSize::Max256KB,
            n if n <= 1 << 20 => BlockSize::Max1MB,
            _ => BlockSize::Max4MB,
        };
        let prefs = LZ4FPreferences {
            frame_info: LZ4FFrameInfo {
                block_size_id,
                block_mode: BlockMode::Independent,
                content_checksum_flag: ContentChecksum::NoChecksum,
                frame_type: FrameType::Frame,
                content_size: raw.len() as u64,
                dict_id: 0,
                block_checksum_flag: BlockChecksum::NoBlockChecksum,
            },
            compression_level: self.level,
            auto_flush: 1,
            favor_dec_speed: 0,
            reserved: [0; 3],
        };
        // SAFETY: a pure function of its arguments.
        let bound = check(unsafe { LZ4F_compressBound(raw.len(), &prefs) })?;
        let start = out.len();
        out.reserve(HEADER_MAX + bound);
        let cap = out.capacity();
        let base = out.as_mut_ptr();
        let mut at = start;
        // SAFETY: every call writes at most `cap - at` bytes at `base + at`, inside the vector's
        // allocation (reserved above); liblz4 reads `raw` only during the call. The length is set
        // to what liblz4 reports as written, so no uninitialised byte becomes visible, and on an
        // error it stays at `start`.
        unsafe {
            at += check(LZ4F_compressBegin(self.ctx, base.add(at), cap - at, &prefs))?;
            at += check(LZ4F_compressUpdate(
                self.ctx,
                base.add(at),
                cap - at,
                raw.as_ptr(),
                raw.len(),
                std::ptr::null(),
            ))?;
            at += check(LZ4F_compressEnd(
                self.ctx,
                base.add(at),
                cap - at,
                std::ptr::null(),
            ))?;
            out.set_len(at);
        }
        Ok(())
    }
}

impl Drop for Lz4Frames {
    fn drop(&mut self) {
        // SAFETY: the context came from LZ4F_createCompressionContext and is freed once.
        unsafe {
            LZ4F_freeCompressionContext(self.ctx);
        }
    }
}

fn check(code: LZ4FErrorCode) -> Result<usize, String> {
    // SAFETY: liblz4 returns a static NUL-terminated string for any error code.
    unsafe {
        if LZ4F_isError(code) != 0 {
            return Err(CStr::from_ptr(LZ4F_getErrorName(code))
                .to_string_lossy()
                .into_owned());
        }
    }
    Ok(code)
}
