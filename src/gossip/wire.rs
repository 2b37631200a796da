//! The plaintext framing of a gossip datagram (before sealing, after
//! opening): one kind byte, then the body.
//!
//! Nearly every datagram carries a foca packet. The other kind is ours: a
//! suspicion notice, sent by a member that has just suspected another one
//! straight to the suspect, so that a live member learns of the suspicion
//! (and refutes it) within one round trip instead of waiting for the rumour
//! to reach it by random gossip. See `profile.rs` for why the suspicion
//! window is too short to wait for the rumour.
//!
//! The last two kinds measure the network for coordinates (foca has no
//! hook on its own probe's ack): a coordinate ping carries the sender's
//! coordinate, its pong the responder's, and the sender times the round
//! trip. An agent that predates them drops them as an unknown kind and
//! counts them undecodable; nothing else changes, so the kinds need no
//! new protocol number.

use serde::{Deserialize, Serialize};

use super::identity::MemberId;
use crate::coordinate::Coordinate;

/// The kind byte of a foca packet, protocol 2.
const KIND_FOCA: u8 = 2;
/// The kind byte of a suspicion notice, protocol 2.
const KIND_NOTICE: u8 = 3;
/// The kind byte of a coordinate ping.
const KIND_COORDINATE_PING: u8 = 4;
/// The kind byte of a coordinate pong.
const KIND_COORDINATE_PONG: u8 = 5;
/// The kind bytes of protocol 1 (a foca packet, a notice): identities
/// without node IDs.
const KINDS_PROTOCOL_1: [u8; 2] = [0, 1];
/// The gossip protocol this build speaks.
pub const PROTOCOL: u8 = 2;

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

/// A coordinate ping or pong: which exchange it belongs to and the
/// sender's coordinate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinateProbe {
    /// Chosen by the pinger and echoed in the pong, so a late or stray pong
    /// is never timed against another ping.
    pub seq: u64,
    /// The coordinate of whoever sent this datagram.
    pub coordinate: Coordinate,
}

/// One decoded datagram.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// Bytes for `Foca::handle_data`.
    Foca(&'a [u8]),
    /// See [`SuspicionNotice`]; boxed, as it is rare and large.
    Notice(Box<SuspicionNotice>),
    /// Answer with a pong; the sender's coordinate is worth keeping.
    CoordinatePing(CoordinateProbe),
    /// The answer to our ping `seq`: time it.
    CoordinatePong(CoordinateProbe),
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
    /// A datagram of gossip protocol 1, from an agent older than node IDs
    /// in the gossip identity.
    #[error(
        "gossip protocol 1 (frame kind {0}) from an agent that predates node IDs in gossip; \
         this agent speaks protocol {PROTOCOL}: upgrade every agent of the pool"
    )]
    OldProtocol(u8),
    /// A notice that does not decode, or has bytes after it.
    #[error("malformed suspicion notice")]
    Notice,
    /// A coordinate ping or pong that does not decode, or has bytes after
    /// it.
    #[error("malformed coordinate probe")]
    Coordinate,
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

/// Replaces `out` with the framing of a coordinate ping (`pong` false) or
/// pong.
pub fn encode_coordinate(probe: &CoordinateProbe, pong: bool, out: &mut Vec<u8>) {
    out.clear();
    out.push(if pong {
        KIND_COORDINATE_PONG
    } else {
        KIND_COORDINATE_PING
    });
    // As for notices: u64 and f64s never fail to serialize; an empty frame
    // is not sent.
    if let Ok(body) = postcard::to_stdvec(probe) {
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
            KIND_COORDINATE_PING | KIND_COORDINATE_PONG => {
                match postcard::take_from_bytes::<CoordinateProbe>(body) {
                    Ok((probe, [])) if kind == KIND_COORDINATE_PING => {
                        Ok(Self::CoordinatePing(probe))
                    }
                    Ok((probe, [])) => Ok(Self::CoordinatePong(probe)),
                    _ => Err(WireError::Coordinate),
                }
            }
            old if KINDS_PROTOCOL_1.contains(&old) => Err(WireError::OldProtocol(old)),
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
                uuid::Uuid::from_u128(u128::from(port)),
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
    fn protocol_1_datagrams_are_refused_by_name_not_misread() {
        // What a protocol-1 agent sent: its foca packets and notices.
        for kind in KINDS_PROTOCOL_1 {
            let err = Frame::decode(&[kind, 1, 2, 3]).unwrap_err();
            assert_eq!(err, WireError::OldProtocol(kind));
            assert!(err.to_string().contains("upgrade every agent"), "{err}");
        }
        // And ours never start with a protocol-1 kind.
        let mut out = Vec::new();
        encode_foca(b"x", &mut out);
        assert!(!KINDS_PROTOCOL_1.contains(&out[0]));
        encode_notice(&notice(), &mut out);
        assert!(!KINDS_PROTOCOL_1.contains(&out[0]));
    }

    fn probe() -> CoordinateProbe {
        let mut coordinate = Coordinate::new(&crate::coordinate::Config::default());
        coordinate.vec[3] = 0.25;
        coordinate.height = 0.001;
        CoordinateProbe {
            seq: 77,
            coordinate,
        }
    }

    #[test]
    fn coordinate_pings_and_pongs_round_trip_as_their_own_kinds() {
        let mut out = Vec::new();
        encode_coordinate(&probe(), false, &mut out);
        assert_eq!(Frame::decode(&out), Ok(Frame::CoordinatePing(probe())));
        assert!(!KINDS_PROTOCOL_1.contains(&out[0]));
        encode_coordinate(&probe(), true, &mut out);
        assert_eq!(Frame::decode(&out), Ok(Frame::CoordinatePong(probe())));
        // A ping fits a datagram many times over.
        assert!(out.len() < 100, "{}", out.len());
    }

    #[test]
    fn truncated_or_padded_coordinate_probes_are_refused() {
        let mut out = Vec::new();
        encode_coordinate(&probe(), false, &mut out);
        for cut in 1..out.len() {
            assert_eq!(Frame::decode(&out[..cut]), Err(WireError::Coordinate));
        }
        out.push(0);
        assert_eq!(Frame::decode(&out), Err(WireError::Coordinate));
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        assert_eq!(Frame::decode(&[]), Err(WireError::Empty));
        assert_eq!(Frame::decode(&[7, 1]), Err(WireError::Kind(7)));
        // What an agent before coordinates makes of ours is this same
        // error: an unknown kind, dropped.
        assert_eq!(Frame::decode(&[6]), Err(WireError::Kind(6)));
        let mut out = Vec::new();
        encode_notice(&notice(), &mut out);
        for cut in 1..out.len() {
            assert_eq!(Frame::decode(&out[..cut]), Err(WireError::Notice));
        }
        out.push(0);
        assert_eq!(Frame::decode(&out), Err(WireError::Notice));
    }
}
