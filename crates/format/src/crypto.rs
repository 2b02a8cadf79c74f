//! Block encryption (format.md §2.5): AES-256-GCM over a block's compressed payload, with the
//! block header (crc field zeroed) as associated data, so neither the records nor the header's
//! claims about them (offset, counts, lengths, codec) can be changed without the key.
//!
//! Nonces are 96 bits from the operating system's random source, one per block. Random nonces
//! repeat with probability about `n² / 2⁹⁷` after `n` blocks; NIST SP 800-38D bounds a key to 2³²
//! random-nonce encryptions, which keeps that below 2⁻³² (about 4 PiB of 1 MiB blocks per key).
//! This is the only place the crate reaches outside its inputs.

use std::borrow::Cow;
use std::fmt;

use aes_gcm::aead::{AeadInOut, Generate, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use sha2::{Digest, Sha256};

use crate::{EncryptionInfo, FormatError};

/// Length of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// Length of the nonce in front of an encrypted payload.
pub const NONCE_LEN: usize = 12;
/// Length of the authentication tag at the end of an encrypted payload.
pub const TAG_LEN: usize = 16;
/// Bytes encryption adds to a payload: nonce and tag.
pub const ENCRYPTION_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// The algorithm named in a manifest's `encryption.algorithm`: the only one of format version 1.
pub const ENCRYPTION_ALGORITHM: &str = "AES-256-GCM";

/// Domain separation of the key check value (format.md §4).
const KEY_CHECK_CONTEXT: &[u8] = b"kafka-backup key check v1\0";

/// An AES-256-GCM key and the id the manifest records for it. Neither `Debug` nor any error shows
/// the key: only its id.
#[derive(Clone)]
pub struct EncryptionKey {
    key_id: String,
    key_check: String,
    cipher: Aes256Gcm,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl EncryptionKey {
    /// The key `key`, recorded in manifests as `key_id`.
    pub fn new(key_id: impl Into<String>, key: &[u8; KEY_LEN]) -> Self {
        EncryptionKey {
            key_id: key_id.into(),
            key_check: key_check(key),
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key)),
        }
    }

    /// Like [`new`](Self::new) from a slice, which must be exactly [`KEY_LEN`] bytes.
    pub fn from_slice(key_id: impl Into<String>, key: &[u8]) -> Result<Self, FormatError> {
        let key: &[u8; KEY_LEN] = key
            .try_into()
            .map_err(|_| FormatError::InvalidKey { len: key.len() })?;
        Ok(Self::new(key_id, key))
    }

    /// The id the manifest records.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key check value: 32 hex characters derived one-way from the key (format.md §4), so a
    /// reader can tell a wrong key from damaged data without trying to decrypt.
    pub fn key_check(&self) -> &str {
        &self.key_check
    }

    /// What a manifest records about this key.
    pub fn info(&self) -> EncryptionInfo {
        EncryptionInfo {
            algorithm: ENCRYPTION_ALGORITHM.to_owned(),
            key_id: self.key_id.clone(),
            key_check: Some(self.key_check.clone()),
        }
    }

    /// Encrypts `buf[start + NONCE_LEN..]` in place, writes a fresh nonce into
    /// `buf[start..start + NONCE_LEN]` and appends the tag: `buf[start..]` becomes the stored
    /// payload `nonce || ciphertext || tag`.
    pub(crate) fn seal(
        &self,
        associated_data: &[u8],
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), FormatError> {
        let nonce = Nonce::<aes_gcm::aead::consts::U12>::try_generate().map_err(|e| {
            FormatError::Encrypt {
                message: format!("no random nonce from the operating system: {e}"),
            }
        })?;
        buf[start..start + NONCE_LEN].copy_from_slice(&nonce);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &nonce,
                associated_data,
                (&mut buf[start + NONCE_LEN..]).into(),
            )
            .map_err(|_| FormatError::Encrypt {
                message: "the payload is too long for AES-256-GCM".to_owned(),
            })?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Authenticates and decrypts a stored payload `nonce || ciphertext || tag`.
    pub(crate) fn open(
        &self,
        associated_data: &[u8],
        payload: &[u8],
    ) -> Result<Vec<u8>, FormatError> {
        if payload.len() < ENCRYPTION_OVERHEAD {
            return Err(FormatError::corrupt(format!(
                "encrypted block: stored_len {} is shorter than its nonce and tag ({ENCRYPTION_OVERHEAD} bytes)",
                payload.len()
            )));
        }
        let (nonce, rest) = payload.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = Nonce::<aes_gcm::aead::consts::U12>::try_from(nonce)
            .map_err(|_| FormatError::corrupt("encrypted block: bad nonce length"))?;
        let tag = Tag::try_from(tag).map_err(|_| FormatError::corrupt("bad tag length"))?;
        let mut plain = ciphertext.to_vec();
        self.cipher
            .decrypt_inout_detached(&nonce, associated_data, plain.as_mut_slice().into(), &tag)
            .map_err(|_| FormatError::Decrypt {
                key_id: self.key_id.clone(),
            })?;
        Ok(plain)
    }
}

/// The key check value of `key` (see [`EncryptionKey::key_check`]): the first 16 bytes of
/// SHA-256 over a fixed context string and the key, in hex. One-way: it tells keys apart and
/// reveals nothing a ciphertext does not.
pub fn key_check(key: &[u8; KEY_LEN]) -> String {
    let mut h = Sha256::new();
    h.update(KEY_CHECK_CONTEXT);
    h.update(key);
    hex::encode(&h.finalize()[..16])
}

/// Turns a block's stored payload into the compressed bytes: decrypts it when the block is
/// flagged encrypted. A reader given a key refuses unencrypted blocks, so data written without the
/// key cannot be passed off as part of an encrypted backup.
pub(crate) fn open_payload<'a>(
    header_aad: &[u8],
    encrypted: bool,
    payload: &'a [u8],
    key: Option<&EncryptionKey>,
) -> Result<Cow<'a, [u8]>, FormatError> {
    match (encrypted, key) {
        (true, Some(key)) => key.open(header_aad, payload).map(Cow::Owned),
        (true, None) => Err(FormatError::Encrypted),
        (false, Some(key)) => Err(FormatError::NotEncrypted {
            key_id: key.key_id.clone(),
        }),
        (false, None) => Ok(Cow::Borrowed(payload)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_and_every_change_is_refused() {
        let key = EncryptionKey::new("k1", &[7; KEY_LEN]);
        let aad = [1u8; 32];
        let mut buf = vec![9u8; 5 + NONCE_LEN];
        buf.extend_from_slice(b"some plaintext");
        key.seal(&aad, &mut buf, 5).expect("seal");
        let payload = &buf[5..];
        assert_eq!(payload.len(), 14 + ENCRYPTION_OVERHEAD);
        assert!(!payload.windows(9).any(|w| w == b"plaintext"));
        assert_eq!(key.open(&aad, payload).expect("open"), b"some plaintext");
        for i in 0..payload.len() {
            let mut p = payload.to_vec();
            p[i] ^= 1;
            let err = key.open(&aad, &p).expect_err("altered payload");
            assert!(matches!(err, FormatError::Decrypt { .. }), "{err}");
        }
        let err = key.open(&[2u8; 32], payload).expect_err("other header");
        assert!(err.to_string().contains("key id 'k1'"), "{err}");
        let other = EncryptionKey::new("k1", &[8; KEY_LEN]);
        assert!(other.open(&aad, payload).is_err());
        assert!(key.open(&aad, &payload[..ENCRYPTION_OVERHEAD - 1]).is_err());
    }

    #[test]
    fn nonces_differ_and_debug_hides_the_key() {
        let key = EncryptionKey::new("k", &[0x5a; KEY_LEN]);
        let mut nonces = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut buf = vec![0u8; NONCE_LEN + 1];
            key.seal(&[], &mut buf, 0).expect("seal");
            assert!(nonces.insert(buf[..NONCE_LEN].to_vec()), "nonce repeated");
        }
        let shown = format!("{key:?}");
        assert!(
            shown.contains("<redacted>") && shown.contains("\"k\""),
            "{shown}"
        );
        assert!(!shown.contains("5a") && !shown.contains("90"), "{shown}");
    }

    #[test]
    fn key_check_tells_keys_apart_and_is_not_the_key() {
        let a = key_check(&[1; KEY_LEN]);
        assert_eq!(a.len(), 32);
        assert_eq!(a, key_check(&[1; KEY_LEN]));
        assert_ne!(a, key_check(&[2; KEY_LEN]));
        assert!(!a.contains("0101010101"), "{a}");
        let err = EncryptionKey::from_slice("k", &[0; 16]).expect_err("short key");
        assert_eq!(err.to_string(), "an AES-256 key is 32 bytes, not 16");
    }
}
