//! The plaintext framing of a gossip datagram (before sealing, after
//! opening): one kind byte, then the body.
//!
//! Nearly every datagram carries a foca packet. The other kind is ours: a
//! suspicion notice, sent by a member that has just suspected another one
//! straight to the suspect, so that a live member learns of the suspicion
//! (and refutes it) within one round trip instead of waiting for the rumour
//! to reach it by random gossip. See `profile.rs` for why the suspicion
//! window is too short to wait for the rumour.

use serde::{Deserialize, Serialize};

use super::identity::MemberId;

/// The kind byte of a foca packet.
const KIND_FOCA: u8 = 0;
/// The kind byte of a suspicion notice.
const KIND_NOTICE: u8 = 1;

/// A notice that `from` suspects `suspect` at `incarnation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspicionNotice {
    /// The member under suspicion (the receiver, if it is current).
    pub suspect: MemberId,
    /// The incarnation the suspicion is about: refuting needs a larger one.
    pub incarnation: u16,
    /// Who suspects: the refutation is announced to it directly.
    pub from: MemberId,
}

/// One decoded datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Bytes for `Foca::handle_data`.
    Foca(&'a [u8]),
    /// See [`SuspicionNotice`]; boxed, as it is rare and large.
    Notice(Box<SuspicionNotice>),
}

/// Why a datagram's plaintext was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Nothing at all.
    #[error("empty datagram")]
    Empty,
    /// A kind byte this build does not know.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// A notice that does not decode, or has bytes after it.
    #[error("malformed suspicion notice")]
    Notice,
}

/// Replaces `out` with the framing of a foca packet.
pub fn encode_foca(packet: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(KIND_FOCA);
    out.extend_from_slice(packet);
}

/// Replaces `out` with the framing of a notice.
pub fn encode_notice(notice: &SuspicionNotice, out: &mut Vec<u8>) {
    out.clear();
    out.push(KIND_NOTICE);
    // Serializing into a Vec fails only on a custom serializer error, which
    // MemberId and u16 never raise; an empty frame would be dropped by the
    // receiver as undecodable rather than misread.
    if let Ok(body) = postcard::to_stdvec(notice) {
        out.extend_from_slice(&body);
    } else {
        out.clear();
    }
}

impl<'a> Frame<'a> {
    /// Decodes a plaintext datagram; never panics.
    pub fn decode(plaintext: &'a [u8]) -> Result<Self, WireError> {
        let (&kind, body) = plaintext.split_first().ok_or(WireError::Empty)?;
        match kind {
            KIND_FOCA => Ok(Self::Foca(body)),
            KIND_NOTICE => match postcard::take_from_bytes::<SuspicionNotice>(body) {
                Ok((notice, [])) => Ok(Self::Notice(Box::new(notice))),
                _ => Err(WireError::Notice),
            },
            other => Err(WireError::Kind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::identity::Role;

    fn notice() -> SuspicionNotice {
        let id = |port, name: &str| {
            MemberId::new(
                std::net::SocketAddr::from(([127, 0, 1, 1], port)),
                name,
                Role::Client,
                "dc1",
                None,
            )
            .unwrap()
        };
        SuspicionNotice {
            suspect: id(1, "a"),
            incarnation: 3,
            from: id(2, "b"),
        }
    }

    #[test]
    fn foca_frames_round_trip() {
        let mut out = Vec::new();
        encode_foca(b"\x01\x02", &mut out);
        assert_eq!(Frame::decode(&out), Ok(Frame::Foca(b"\x01\x02")));
    }

    #[test]
    fn notices_round_trip() {
        let notice = notice();
        let mut out = Vec::new();
        encode_notice(&notice, &mut out);
        assert_eq!(Frame::decode(&out), Ok(Frame::Notice(Box::new(notice))));
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        assert_eq!(Frame::decode(&[]), Err(WireError::Empty));
        assert_eq!(Frame::decode(&[7, 1]), Err(WireError::Kind(7)));
        let mut out = Vec::new();
        encode_notice(&notice(), &mut out);
        for cut in 1..out.len() {
            assert_eq!(Frame::decode(&out[..cut]), Err(WireError::Notice));
        }
        out.push(0);
        assert_eq!(Frame::decode(&out), Err(WireError::Notice));
    }
}
