//! Response-rate limiting (RRL) of UDP answers per source prefix, as NSD's
//! and Knot's: a source spoofed by an attacker cannot be flooded with our
//! answers beyond `rrl_rate` per second, yet a real client there still
//! gets every `rrl_slip`-th answer as an empty truncated one and retries
//! over TCP, which cannot be spoofed.
//!
//! The table is fixed in size and shared by the UDP workers without a
//! lock: each slot is one `AtomicU64` holding a token bucket (a tag of the
//! prefix's hash, the time of the last refill, the tokens left), updated by
//! compare-and-swap. Prefixes whose hashes meet in a slot take it over from
//! each other with a full bucket; the hash is keyed at random per process,
//! so an attacker cannot aim at a victim's slot. Every request is counted,
//! before it is answered, so a limited query costs no lookup at all.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::config::RrlSettings;

/// Slots in the table (a power of two): 512 KiB, allocated only when RRL is on.
const SLOTS: usize = 1 << 16;

/// Bits of a slot: the tokens left (low), the refill time in milliseconds
/// (middle, wrapping every 74 hours), the prefix's tag (high).
const TOKEN_BITS: u32 = 24;
const TIME_BITS: u32 = 28;
const TAG_BITS: u32 = 64 - TOKEN_BITS - TIME_BITS;
const TOKEN_MASK: u64 = (1 << TOKEN_BITS) - 1;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the rate: answer it.
    Send,
    /// Over the rate: send nothing.
    Drop,
    /// Over the rate, but the `slip`-th: send an empty response with TC.
    Slip,
}

/// The bucket table and its settings.
pub(crate) struct RateLimiter {
    /// One token bucket per slot, packed as described at [`TOKEN_BITS`].
    slots: Box<[AtomicU64]>,
    /// Tokens a bucket gains per second, and holds at most.
    rate: u64,
    /// Every how many-th limited request slips through truncated; 0: none.
    slip: u64,
    /// The IPv4 and IPv6 source masks.
    v4_mask: u32,
    v6_mask: u128,
    /// Keys the prefix hash.
    seed: u64,
    /// Limited requests so far, for the slip count. One counter for the
    /// table, not one per bucket: every `slip`-th limited answer overall
    /// slips, so each limited prefix gets about one in `slip`.
    limited: AtomicU64,
    /// Time zero of the millisecond clock.
    start: Instant,
}

impl RateLimiter {
    /// The limiter `settings` ask for; `None` when the rate is 0 (off).
    pub(crate) fn new(settings: &RrlSettings) -> Option<Self> {
        if settings.rate == 0 {
            return None;
        }
        Some(Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            rate: u64::from(settings.rate).min(TOKEN_MASK),
            slip: u64::from(settings.slip),
            v4_mask: u32::MAX
                .checked_shl(32 - u32::from(settings.ipv4_prefix.min(32)))
                .unwrap_or(0),
            v6_mask: u128::MAX
                .checked_shl(128 - u32::from(settings.ipv6_prefix.min(128)))
                .unwrap_or(0),
            seed: RandomState::new().hash_one(0x5eed_u64),
            limited: AtomicU64::new(0),
            start: Instant::now(),
        })
    }

    /// Counts one request from `source` now and says what to do with it.
    pub(crate) fn check(&self, source: IpAddr) -> Verdict {
        // Saturates after 584 million years.
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.check_at(source, now)
    }

    /// [`Self::check`] at `now_ms` milliseconds on the limiter's clock.
    fn check_at(&self, source: IpAddr, now_ms: u64) -> Verdict {
        let hash = self.hash(source);
        let slot = &self.slots[(hash as usize) & (SLOTS - 1)];
        // Never 0, so an empty slot matches no prefix.
        let tag = (hash >> (64 - TAG_BITS)) | 1;
        let now = now_ms & TIME_MASK;
        let mut current = slot.load(Ordering::Relaxed);
        let pass = loop {
            let (stamp, tokens) = if current >> (TOKEN_BITS + TIME_BITS) == tag {
                self.refill(current, now)
            } else {
                // Empty, or another prefix's: ours now, full.
                (now, self.rate)
            };
            let pass = tokens > 0;
            let next = (tag << (TOKEN_BITS + TIME_BITS))
                | (stamp << TOKEN_BITS)
                | tokens.saturating_sub(1);
            // A limited prefix with nothing to refill leaves the slot as it is:
            // no write, so a flood does not bounce the cache line between cores.
            if next == current {
                break pass;
            }
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break pass,
                Err(actual) => current = actual,
            }
        };
        if pass {
            return Verdict::Send;
        }
        if self.slip == 0 {
            return Verdict::Drop;
        }
        let n = self.limited.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// The refill time and tokens of the bucket `slot` at `now`: `rate`
    /// tokens a second, at most `rate`. The time moves on only by the
    /// whole tokens it paid for, so a slow trickle of time is not lost.
    fn refill(&self, slot: u64, now: u64) -> (u64, u64) {
        let stamp = (slot >> TOKEN_BITS) & TIME_MASK;
        let tokens = slot & TOKEN_MASK;
        let elapsed = now.wrapping_sub(stamp) & TIME_MASK;
        let gained = elapsed * self.rate / 1000;
        if gained == 0 {
            (stamp, tokens)
        } else if tokens + gained >= self.rate {
            (now, self.rate)
        } else {
            let paid = gained * 1000 / self.rate;
            ((stamp + paid) & TIME_MASK, tokens + gained)
        }
    }

    /// The keyed hash of `source`'s prefix; IPv4 and IPv6 hash apart.
    fn hash(&self, source: IpAddr) -> u64 {
        match source.to_canonical() {
            IpAddr::V4(v4) => mix(self.seed ^ 4, u64::from(u32::from(v4) & self.v4_mask)),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & self.v6_mask;
                // Truncation intended: the two halves are mixed in turn.
                mix(mix(self.seed ^ 6, (bits >> 64) as u64), bits as u64)
            }
        }
    }
}

/// One round of splitmix64 over `state` and `value`.
fn mix(state: u64, value: u64) -> u64 {
    let mut z = (state ^ value).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Writes into `out` the slipped answer to the raw `request`: its header
/// and question, no records, TC set, so the client retries over TCP. Never
/// larger than the request. False when `request` is not a plain query with
/// one uncompressed question (then nothing is sent).
pub(crate) fn slip_response(request: &[u8], out: &mut Vec<u8>) -> bool {
    const HEADER: usize = 12;
    if request.len() < HEADER
        // A response, or an opcode other than QUERY.
        || request[2] & 0xf8 != 0
        || request[4..6] != [0, 1]
    {
        return false;
    }
    let mut at = HEADER;
    loop {
        let Some(&len) = request.get(at) else {
            return false;
        };
        at += 1;
        if len == 0 {
            break;
        }
        // Compression or an extended label type in a question: not a query we answer.
        if len & 0xc0 != 0 || at - HEADER > 255 {
            return false;
        }
        at += usize::from(len);
    }
    let end = at + 4;
    if end > request.len() {
        return false;
    }
    out.clear();
    out.extend_from_slice(&request[..end]);
    // QR and TC, the opcode (QUERY) and RD kept; AA off; only CD kept of
    // the fourth byte, so the RCODE is NOERROR.
    out[2] = 0x80 | 0x02 | (request[2] & 0x01);
    out[3] = request[3] & 0x10;
    // One question, no answer, authority or additional records.
    out[6..12].fill(0);
    true
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    use super::*;

    fn limiter(rate: u32, slip: u32) -> RateLimiter {
        RateLimiter::new(&RrlSettings {
            rate,
            slip,
            ..RrlSettings::default()
        })
        .expect("a rate above 0 is on")
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// The verdicts of `n` requests from `source` at `now_ms`.
    fn verdicts(l: &RateLimiter, source: IpAddr, now_ms: u64, n: usize) -> Vec<Verdict> {
        (0..n).map(|_| l.check_at(source, now_ms)).collect()
    }

    fn count(v: &[Verdict], which: Verdict) -> usize {
        v.iter().filter(|&&x| x == which).count()
    }

    #[test]
    fn off_at_rate_zero() {
        assert!(RateLimiter::new(&RrlSettings::default()).is_none());
    }

    #[test]
    fn a_burst_gets_the_rate_then_every_slip_th_truncated() {
        let l = limiter(10, 2);
        let v = verdicts(&l, v4(192, 0, 2, 1), 5_000, 30);
        assert!(v[..10].iter().all(|&x| x == Verdict::Send), "{v:?}");
        // Of the 20 limited: drop, slip, drop, slip...
        for (i, x) in v[10..].iter().enumerate() {
            let want = if i % 2 == 1 {
                Verdict::Slip
            } else {
                Verdict::Drop
            };
            assert_eq!(*x, want, "limited request {i}: {v:?}");
        }
    }

    #[test]
    fn slip_zero_drops_all_and_slip_one_truncates_all() {
        let v = verdicts(&limiter(5, 0), v4(192, 0, 2, 1), 0, 20);
        assert_eq!(
            (count(&v, Verdict::Send), count(&v, Verdict::Drop)),
            (5, 15)
        );
        let v = verdicts(&limiter(5, 1), v4(192, 0, 2, 1), 0, 20);
        assert_eq!(
            (count(&v, Verdict::Send), count(&v, Verdict::Slip)),
            (5, 15)
        );
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let l = limiter(100, 0);
        let src = v4(198, 51, 100, 7);
        assert_eq!(count(&verdicts(&l, src, 1_000, 150), Verdict::Send), 100);
        // 250 ms later: 25 tokens.
        assert_eq!(count(&verdicts(&l, src, 1_250, 100), Verdict::Send), 25);
        // Time in slices too short for a token is not lost: 10 × 5 ms is 5 tokens.
        let sent: usize = (1..=10)
            .map(|i| count(&verdicts(&l, src, 1_250 + 5 * i, 3), Verdict::Send))
            .sum();
        assert_eq!(sent, 5);
        // A long pause fills the bucket only to the rate.
        assert_eq!(count(&verdicts(&l, src, 60_000, 500), Verdict::Send), 100);
    }

    #[test]
    fn sources_share_their_prefix_bucket_and_no_other() {
        let l = limiter(10, 0);
        // Ten from one /24, spread over its addresses, exhaust it for all of it.
        for d in 0..10 {
            assert_eq!(l.check_at(v4(203, 0, 113, d * 20), 0), Verdict::Send);
        }
        assert_eq!(l.check_at(v4(203, 0, 113, 250), 0), Verdict::Drop);
        // The next /24 has its own bucket.
        assert_eq!(
            count(&verdicts(&l, v4(203, 0, 114, 1), 0, 10), Verdict::Send),
            10
        );
        // IPv6: one /56, two /64s in it, share; the next /56 does not.
        let a: IpAddr = "2001:db8:0:100::1".parse().unwrap();
        let b: IpAddr = "2001:db8:0:1ff::2".parse().unwrap();
        let c: IpAddr = "2001:db8:0:200::1".parse().unwrap();
        assert_eq!(count(&verdicts(&l, a, 0, 10), Verdict::Send), 10);
        assert_eq!(l.check_at(b, 0), Verdict::Drop);
        assert_eq!(count(&verdicts(&l, c, 0, 10), Verdict::Send), 10);
        // An IPv4-mapped IPv6 source is its IPv4 address.
        let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 9).to_ipv6_mapped());
        assert_eq!(l.hash(mapped), l.hash(v4(203, 0, 113, 9)));
        assert_ne!(
            l.hash(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            l.hash(v4(0, 0, 0, 1))
        );
    }

    #[test]
    fn a_prefix_of_32_limits_each_address_alone() {
        let l = RateLimiter::new(&RrlSettings {
            rate: 3,
            slip: 0,
            ipv4_prefix: 32,
            ipv6_prefix: 128,
        })
        .unwrap();
        assert_eq!(
            count(&verdicts(&l, v4(10, 0, 0, 1), 0, 5), Verdict::Send),
            3
        );
        assert_eq!(
            count(&verdicts(&l, v4(10, 0, 0, 2), 0, 5), Verdict::Send),
            3
        );
    }

    #[test]
    fn the_table_is_shared_by_threads_without_losing_counts() {
        let l = limiter(1000, 0);
        let src = v4(192, 0, 2, 9);
        let sent: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| count(&verdicts(&l, src, 7, 500), Verdict::Send)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(sent, 1000);
    }

    fn query_bytes(edns: bool) -> Vec<u8> {
        let mut m = Message::new(0xbeef, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.metadata.checking_disabled = true;
        m.add_query(Query::query(
            Name::from_ascii("web.service.consul.").unwrap(),
            RecordType::SRV,
        ));
        if edns {
            m.set_edns(Edns::new());
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn a_slipped_answer_is_the_question_with_tc_and_no_records() {
        for edns in [false, true] {
            let q = query_bytes(edns);
            let mut out = Vec::new();
            assert!(slip_response(&q, &mut out));
            assert!(out.len() <= q.len());
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(m.metadata.id, 0xbeef);
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert!(m.metadata.truncation);
            assert!(m.metadata.recursion_desired && m.metadata.checking_disabled);
            assert_eq!(m.queries[0].name.to_ascii(), "web.service.consul.");
            assert_eq!(m.queries[0].query_type, RecordType::SRV);
            assert!(m.answers.is_empty() && m.additionals.is_empty() && m.edns.is_none());
        }
    }

    #[test]
    fn no_slipped_answer_to_what_is_not_a_query() {
        let q = query_bytes(false);
        let mut out = Vec::new();
        let mut response = q.clone();
        response[2] |= 0x80;
        let mut notify = q.clone();
        notify[2] |= 4 << 3;
        let mut compressed = q.clone();
        compressed[12] = 0xc0;
        for bad in [&q[..11], &q[..q.len() - 1], &response, &notify, &compressed] {
            assert!(!slip_response(bad, &mut out), "{bad:?}");
        }
        // A name that never ends.
        let mut endless = q[..12].to_vec();
        endless.extend(std::iter::repeat_n([1u8, b'a'], 200).flatten());
        assert!(!slip_response(&endless, &mut out));
    }
}
