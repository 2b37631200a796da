//! foca's wire codec, made compact: most packets name their sender and
//! receiver by (address, generation) instead of the full identity.
//!
//! Every foca packet starts with a header holding two identities, and at
//! steady state nearly every packet is a ping or an ack that is nothing but
//! the header. With names, datacenter and RPC address an identity is 30 to
//! 60 bytes; the pair (address, generation) that determines it is about 14.
//!
//! * The receiver is always written short. The receiver knows its own
//!   identity; any other pair decodes to a stand-in that foca treats as
//!   "not addressed to me" (or, for a join announcement, matches by address
//!   alone, which is all foca asks).
//! * The sender is written short only to a peer that has addressed a packet
//!   to our current identity: it could only do that by having decoded our
//!   full identity, which this codec then remembers (see below). Anyone
//!   else gets the full identity, so a member that just restarted, or never
//!   heard of us, can always decode us.
//! * Every identity decoded in full (a sender, or a member in an update) is
//!   remembered under its pair, so later short senders resolve. A short
//!   sender we cannot resolve is a decode error: the packet is dropped and
//!   counted like any other undecodable one.
//!
//! Both tables are bounded; a member that falls out of them is simply sent
//! or read in full again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member, Message};
use serde::{Deserialize, Serialize};

use super::identity::MemberId;

/// How many identities (and how many peers that know us) are remembered.
const TABLE_LIMIT: usize = 4096;

/// The header field is a full identity.
const FULL: u8 = 0;
/// The header field is an (address, generation) pair.
const SHORT: u8 = 1;

/// What determines an identity: one process on one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct ShortId {
    addr: SocketAddr,
    generation: u64,
}

impl ShortId {
    fn of(id: &MemberId) -> Self {
        Self {
            addr: id.addr(),
            generation: id.generation(),
        }
    }
}

/// Why a packet could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// postcard refused the bytes (or the value).
    #[error(transparent)]
    Postcard(#[from] postcard::Error),
    /// A short sender this member has no full identity for.
    #[error("packet from {0} names its sender by a generation never seen in full")]
    UnknownSender(SocketAddr),
    /// A field tag this build does not know.
    #[error("unknown identity tag {0}")]
    Tag(u8),
    /// The packet buffer is full.
    #[error("packet buffer full")]
    BufferFull,
}

/// The compact codec; one per foca instance.
#[derive(Debug)]
pub struct CompactCodec {
    /// Our current identity, as last seen as a sender (foca changes it on
    /// rejoin, and every packet it sends carries it).
    me: MemberId,
    /// Identities decoded in full, with the tick they were last used.
    known: HashMap<ShortId, (MemberId, u64)>,
    /// Peers that addressed a packet to our current identity.
    knows_me: HashSet<ShortId>,
    /// A counter for least-recently-used eviction.
    tick: u64,
    /// Reused encoding buffer.
    scratch: Vec<u8>,
}

impl CompactCodec {
    /// A codec for a member whose identity is `me`.
    pub fn new(me: MemberId) -> Self {
        Self {
            me,
            known: HashMap::new(),
            knows_me: HashSet::new(),
            tick: 0,
            scratch: Vec::new(),
        }
    }

    fn remember(&mut self, id: &MemberId) {
        self.tick += 1;
        let key = ShortId::of(id);
        if let Some(entry) = self.known.get_mut(&key) {
            entry.1 = self.tick;
            return;
        }
        if self.known.len() >= TABLE_LIMIT {
            let oldest = self
                .known
                .iter()
                .min_by_key(|(_, (_, tick))| *tick)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.known.remove(&oldest);
            }
        }
        self.known.insert(key, (id.clone(), self.tick));
    }

    fn resolve(&mut self, short: ShortId) -> Option<MemberId> {
        if short == ShortId::of(&self.me) {
            return Some(self.me.clone());
        }
        self.tick += 1;
        let entry = self.known.get_mut(&short)?;
        entry.1 = self.tick;
        Some(entry.0.clone())
    }

    fn put(&mut self, mut buf: impl BufMut) -> Result<(), CodecError> {
        if buf.remaining_mut() < self.scratch.len() {
            return Err(CodecError::BufferFull);
        }
        buf.put_slice(&self.scratch);
        Ok(())
    }
}

/// Decodes one postcard value from the front of `bytes`.
fn take<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<(T, &'a [u8]), CodecError> {
    Ok(postcard::take_from_bytes(bytes)?)
}

impl Codec<MemberId> for CompactCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<MemberId>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        if header.src != self.me {
            // We rejoined under a new identity: nobody knows it yet.
            self.me = header.src.clone();
            self.knows_me.clear();
        }
        self.scratch.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = (|| {
            if self.knows_me.contains(&ShortId::of(&header.dst)) {
                scratch.push(SHORT);
                scratch = postcard::to_extend(&ShortId::of(&header.src), scratch)?;
            } else {
                scratch.push(FULL);
                scratch = postcard::to_extend(&header.src, scratch)?;
            }
            scratch = postcard::to_extend(&header.src_incarnation, scratch)?;
            scratch = postcard::to_extend(&ShortId::of(&header.dst), scratch)?;
            scratch = postcard::to_extend(&header.message, scratch)?;
            Ok::<_, CodecError>(scratch)
        })();
        self.scratch = result?;
        self.put(buf)
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<MemberId>, CodecError> {
        // foca hands the whole packet in one contiguous chunk.
        let bytes = buf.chunk();
        let total = bytes.len();
        let (tag, rest): (u8, _) = take(bytes)?;
        let (src, rest) = match tag {
            FULL => {
                let (src, rest): (MemberId, _) = take(rest)?;
                self.remember(&src);
                (src, rest)
            }
            SHORT => {
                let (short, rest): (ShortId, _) = take(rest)?;
                let src = self
                    .resolve(short)
                    .ok_or(CodecError::UnknownSender(short.addr))?;
                (src, rest)
            }
            other => return Err(CodecError::Tag(other)),
        };
        let (src_incarnation, rest) = take(rest)?;
        let (dst, rest): (ShortId, _) = take(rest)?;
        let (message, rest): (Message<MemberId>, _) = take(rest)?;
        let consumed = total - rest.len();
        let dst = if dst == ShortId::of(&self.me) {
            if self.knows_me.len() >= TABLE_LIMIT {
                self.knows_me.clear();
            }
            self.knows_me.insert(ShortId::of(&src));
            self.me.clone()
        } else {
            stand_in(dst)
        };
        buf.advance(consumed);
        Ok(Header {
            src,
            src_incarnation,
            dst,
            message,
        })
    }

    fn encode_member(
        &mut self,
        member: &Member<MemberId>,
        buf: impl BufMut,
    ) -> Result<(), CodecError> {
        self.scratch.clear();
        let scratch = std::mem::take(&mut self.scratch);
        self.scratch = postcard::to_extend(member, scratch)?;
        self.put(buf)
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<MemberId>, CodecError> {
        let bytes = buf.chunk();
        let total = bytes.len();
        let (member, rest): (Member<MemberId>, _) = take(bytes)?;
        let consumed = total - rest.len();
        buf.advance(consumed);
        self.remember(member.id());
        Ok(member)
    }
}

/// The identity a short receiver other than us decodes to: it matches no
/// live identity, and matches our address for foca's join check.
fn stand_in(short: ShortId) -> MemberId {
    MemberId::placeholder(short.addr).with_generation_of(short.generation)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::identity::Role;
    use foca::State;

    fn id(last: u8, name: &str) -> MemberId {
        MemberId::new(
            SocketAddr::from(([127, 0, 1, last], 8301)),
            name,
            uuid::Uuid::from_u128(u128::from(last)),
            Role::Server,
            "dc1",
            Some(SocketAddr::from(([127, 0, 1, last], 8300))),
        )
        .unwrap()
    }

    fn header(src: &MemberId, dst: &MemberId) -> Header<MemberId> {
        Header {
            src: src.clone(),
            src_incarnation: 3,
            dst: dst.clone(),
            message: Message::Ping(7),
        }
    }

    fn encode(codec: &mut CompactCodec, h: &Header<MemberId>) -> Vec<u8> {
        let mut out = Vec::new();
        codec.encode_header(h, &mut out).unwrap();
        out
    }

    #[test]
    fn headers_shrink_once_the_peer_has_addressed_us() {
        let (a, b) = (id(1, "alpha"), id(2, "bravo"));
        let (mut ca, mut cb) = (CompactCodec::new(a.clone()), CompactCodec::new(b.clone()));
        // a learned b's identity from an update, as foca members do.
        ca.remember(&b);

        // a → b: b has never addressed a, so a sends its full identity.
        let first = encode(&mut ca, &header(&a, &b));
        assert_eq!(first[0], FULL);
        assert_eq!(cb.decode_header(&first[..]).unwrap(), header(&a, &b));

        // b → a: a addressed b, so a has b in full: b goes short.
        let reply = encode(&mut cb, &header(&b, &a));
        assert_eq!(reply[0], SHORT);
        assert_eq!(ca.decode_header(&reply[..]).unwrap(), header(&b, &a));

        // And now a does too.
        let second = encode(&mut ca, &header(&a, &b));
        assert_eq!(second[0], SHORT);
        assert!(
            second.len() < first.len(),
            "{} vs {}",
            second.len(),
            first.len()
        );
        assert_eq!(cb.decode_header(&second[..]).unwrap(), header(&a, &b));
    }

    #[test]
    fn an_unresolvable_short_sender_is_an_error() {
        let (a, b) = (id(1, "alpha"), id(2, "bravo"));
        let mut ca = CompactCodec::new(a.clone());
        ca.knows_me.insert(ShortId::of(&b));
        let short = encode(&mut ca, &header(&a, &b));
        // A fresh b (say, restarted with the same generation in a test)
        // never saw a in full.
        let mut fresh = CompactCodec::new(b);
        assert!(matches!(
            fresh.decode_header(&short[..]),
            Err(CodecError::UnknownSender(_))
        ));
    }

    #[test]
    fn a_receiver_other_than_us_decodes_to_a_stand_in() {
        let (a, b) = (id(1, "alpha"), id(2, "bravo"));
        let old_b = b.clone();
        let new_b = old_b.clone().with_generation_of(old_b.generation() + 1);
        let mut ca = CompactCodec::new(a.clone());
        let mut cb = CompactCodec::new(new_b.clone());
        let packet = encode(&mut ca, &header(&a, &old_b));
        let decoded = cb.decode_header(&packet[..]).unwrap();
        assert_ne!(decoded.dst, new_b);
        assert_eq!(decoded.dst.addr(), new_b.addr());
        // And b did not learn that a knows it.
        assert!(cb.knows_me.is_empty());
        let _ = b;
    }

    #[test]
    fn a_new_identity_is_sent_in_full_again() {
        let (a, b) = (id(1, "alpha"), id(2, "bravo"));
        let mut ca = CompactCodec::new(a.clone());
        ca.knows_me.insert(ShortId::of(&b));
        let renewed = a.clone().with_generation_of(a.generation() + 1);
        let packet = encode(&mut ca, &header(&renewed, &b));
        assert_eq!(packet[0], FULL);
    }

    #[test]
    fn members_round_trip_and_are_remembered() {
        let (a, c) = (id(1, "alpha"), id(3, "charlie"));
        let mut ca = CompactCodec::new(a);
        let member = Member::new(c.clone(), 4, State::Suspect);
        let mut out = Vec::new();
        ca.encode_member(&member, &mut out).unwrap();
        let mut cb = CompactCodec::new(id(2, "bravo"));
        assert_eq!(cb.decode_member(&out[..]).unwrap(), member);
        assert_eq!(cb.resolve(ShortId::of(&c)), Some(c));
    }

    #[test]
    fn a_full_buffer_is_an_error_and_writes_nothing() {
        let (a, b) = (id(1, "alpha"), id(2, "bravo"));
        let mut ca = CompactCodec::new(a.clone());
        let mut small = [0u8; 8];
        let mut slice = &mut small[..];
        assert!(matches!(
            ca.encode_header(&header(&a, &b), &mut slice),
            Err(CodecError::BufferFull)
        ));
        assert_eq!(slice.len(), 8);
    }

    #[test]
    fn garbage_never_panics() {
        let (a, b) = (id(1, "alpha"), id(2, "bravo"));
        let mut ca = CompactCodec::new(a.clone());
        let packet = encode(&mut ca, &header(&a, &b));
        let mut cb = CompactCodec::new(b);
        for cut in 0..packet.len() {
            assert!(cb.decode_header(&packet[..cut]).is_err());
        }
        for pos in 0..packet.len() {
            for value in [0, 1, 2, 0x7f, 0x80, 0xff] {
                let mut junk = packet.clone();
                junk[pos] = value;
                let _ = cb.decode_header(&junk[..]);
                let _ = cb.decode_member(&junk[..]);
            }
        }
    }

    #[test]
    fn tables_stay_bounded() {
        let mut c = CompactCodec::new(id(1, "alpha"));
        for i in 0..(TABLE_LIMIT as u64 + 50) {
            let other = id(2, "x").with_generation_of(i + 10);
            c.remember(&other);
        }
        assert!(c.known.len() <= TABLE_LIMIT);
    }
}
