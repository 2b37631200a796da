//! Gossip encryption: the `--encrypt` key and the sealing of every packet.
//!
//! A key is 32 random bytes written in standard base64 (`trellis keygen`
//! prints one). Each packet is sealed with AES-256-GCM under a fresh random
//! 96-bit nonce:
//!
//! ```text
//! version (1 byte) | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//!
//! The version byte is authenticated as associated data, so a later format
//! can be told apart and a flipped version byte fails like any other
//! tampering. Random nonces are safe for far more packets than a gossip pool
//! sends under one key: the chance of any nonce repeating after `n` packets
//! is about n² / 2⁹⁷, under one in a million after 10¹¹ packets.
//!
//! Opening never panics: a short packet, an unknown version, a wrong key and
//! tampered bytes are all an [`OpenError`], which the driver counts and drops.

use aes_gcm::aead::{AeadCore, AeadInPlace, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The only packet format so far.
const VERSION: u8 = 1;
/// Bytes of the random nonce.
const NONCE_LEN: usize = 12;
/// Bytes of the authentication tag.
const TAG_LEN: usize = 16;
/// Bytes a sealed packet carries beyond its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Bytes in a key.
pub const KEY_LEN: usize = 32;

/// A gossip encryption key. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// Why a key given on the command line or in the config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not standard base64.
    #[error("encryption key is not valid base64 ({0}); make one with `trellis keygen`")]
    Base64(#[from] base64::DecodeError),
    /// The text decodes to the wrong number of bytes.
    #[error(
        "encryption key decodes to {0} bytes, AES-256 needs exactly {KEY_LEN}; make one with `trellis keygen`"
    )]
    Length(usize),
}

impl Key {
    /// Parses a base64 key, ignoring surrounding whitespace (keys are often
    /// pasted from files with a trailing newline).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD.decode(text.trim())?;
        let array: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(Self(array))
    }

    /// A key from its bytes, as the configuration decoded and checked them.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The key in the form [`Key::from_base64`] reads.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        let key = Aes256Gcm::generate_key(&mut OsRng);
        Self(key.into())
    }
}

impl std::str::FromStr for Key {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

/// A fresh key, base64-encoded: what `trellis keygen` prints.
pub fn keygen() -> String {
    Key::generate().to_base64()
}

/// Why a received packet could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than the version, nonce and tag alone.
    #[error("packet too short to be sealed")]
    Truncated,
    /// A version byte this build does not know.
    #[error("unknown packet version {0}")]
    Version(u8),
    /// Wrong key, or bytes changed on the way.
    #[error("packet failed authentication (wrong key or tampered)")]
    Authentication,
}

/// Seals and opens packets under one key.
#[derive(Clone)]
pub struct Cipher {
    /// The expanded AES key schedule, made once.
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(<redacted>)")
    }
}

impl Cipher {
    /// A cipher for `key`.
    pub fn new(key: &Key) -> Self {
        Self {
            aead: Aes256Gcm::new(&key.0.into()),
        }
    }

    /// Replaces `out` with the sealed form of `plaintext`.
    pub fn seal(&self, plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        out.clear();
        out.reserve(plaintext.len() + OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .aead
            .encrypt_in_place_detached(&nonce, &[VERSION], &mut out[start..]);
        match tag {
            Ok(tag) => out.extend_from_slice(&tag),
            // AES-GCM refuses only plaintexts over 64 GiB; a datagram is
            // never one. Should it ever happen, send nothing readable rather
            // than plaintext.
            Err(_) => out.clear(),
        }
    }

    /// Opens a sealed packet into `out`, returning the plaintext.
    pub fn open<'a>(&self, packet: &[u8], out: &'a mut Vec<u8>) -> Result<&'a [u8], OpenError> {
        if packet.len() < OVERHEAD {
            return Err(OpenError::Truncated);
        }
        let (head, rest) = packet.split_at(1 + NONCE_LEN);
        if head[0] != VERSION {
            return Err(OpenError::Version(head[0]));
        }
        let nonce = Nonce::from_slice(&head[1..]);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        out.clear();
        out.extend_from_slice(ciphertext);
        self.aead
            .decrypt_in_place_detached(nonce, &[VERSION], out, Tag::from_slice(tag))
            .map_err(|_| OpenError::Authentication)?;
        Ok(out.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> Cipher {
        Cipher::new(&Key::generate())
    }

    #[test]
    fn keygen_output_parses_back() {
        let text = keygen();
        assert_eq!(text.len(), 44);
        let key = Key::from_base64(&text).unwrap();
        assert_eq!(key.to_base64(), text);
        assert!(Key::from_base64(&format!("  {text}\n")).is_ok());
    }

    #[test]
    fn bad_keys_say_what_is_wrong() {
        let err = Key::from_base64("not base64 at all!").unwrap_err();
        assert!(matches!(err, KeyError::Base64(_)));
        assert!(err.to_string().contains("not valid base64"));

        let short = STANDARD.encode([7u8; 16]);
        let err = Key::from_base64(&short).unwrap_err();
        assert_eq!(err, KeyError::Length(16));
        assert!(err.to_string().contains("16 bytes"));
        assert!(err.to_string().contains("32"));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = Key([0xab; KEY_LEN]);
        assert!(!format!("{key:?}").contains("ab"));
        assert!(!format!("{:?}", Cipher::new(&key)).contains("171"));
    }

    #[test]
    fn round_trip() {
        let c = cipher();
        let mut sealed = Vec::new();
        let mut opened = Vec::new();
        for len in [0, 1, 100, 1400] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            c.seal(&plain, &mut sealed);
            assert_eq!(sealed.len(), plain.len() + OVERHEAD);
            assert_eq!(c.open(&sealed, &mut opened).unwrap(), plain.as_slice());
        }
    }

    #[test]
    fn same_plaintext_seals_differently() {
        let c = cipher();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        c.seal(b"ping", &mut a);
        c.seal(b"ping", &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_key_fails_authentication() {
        let mut sealed = Vec::new();
        cipher().seal(b"hello", &mut sealed);
        assert_eq!(
            cipher().open(&sealed, &mut Vec::new()),
            Err(OpenError::Authentication)
        );
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let c = cipher();
        let mut sealed = Vec::new();
        c.seal(b"a gossip packet", &mut sealed);
        let mut out = Vec::new();
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[byte] ^= 1 << bit;
                assert!(c.open(&bad, &mut out).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn truncations_are_refused() {
        let c = cipher();
        let mut sealed = Vec::new();
        c.seal(b"a gossip packet", &mut sealed);
        let mut out = Vec::new();
        for cut in 0..sealed.len() {
            let err = c.open(&sealed[..cut], &mut out).unwrap_err();
            if cut < OVERHEAD {
                assert_eq!(err, OpenError::Truncated);
            } else {
                assert_eq!(err, OpenError::Authentication);
            }
        }
    }

    #[test]
    fn unknown_version_is_refused() {
        let c = cipher();
        let mut sealed = Vec::new();
        c.seal(b"x", &mut sealed);
        sealed[0] = 9;
        assert_eq!(c.open(&sealed, &mut Vec::new()), Err(OpenError::Version(9)));
    }
}
