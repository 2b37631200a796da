//! A per-thread memo of encoded responses, so a repeated question costs a
//! hash lookup and a copy instead of a parse, a lookup and an encode.
//!
//! What the [`Responder`](super::Responder) answers for a request is a pure
//! function of the request's bytes and the view, up to three things: the
//! message ID, the letter case of the question name (clients may randomize it
//! and expect it echoed), and the order of shuffled records. So the key is the
//! request without its ID and with the question name lowercased; a hit is
//! copied out with the request's ID and question name written over it; and a
//! question with several answers keeps several responder outputs, each a
//! shuffle of its own, one picked at random per query. Entries belong to one
//! view and, with ACLs on, one set of resolved tokens (an ACL write can
//! change what the default token may read without touching the view): the
//! first query that sees a newer view or newer tokens empties the memo.
//!
//! The memo is owned by one UDP worker thread: no locks, nothing shared.

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::Tokens;
use crate::catalog::view::View;

/// How many shuffled encodings a question with several answers keeps.
pub(super) const SHUFFLES: usize = 8;

/// Largest request the memo keys on; larger ones are rare and answered afresh.
const MAX_KEY: usize = 512;

/// Most entries kept before the memo is emptied, bounding its memory.
const MAX_ENTRIES: usize = 16_384;

/// The shuffled encodings of one question's response; never empty.
type Shuffles = Box<[Box<[u8]>]>;

/// Encoded responses by normalized request, for one view.
pub(super) struct AnswerCache {
    /// The view the entries were computed from (its address; the `Arc` keeps
    /// it alive so the address is not reused while we compare against it).
    view: Option<Arc<View>>,
    /// The resolved tokens the entries were computed under (`None` with
    /// ACLs off), held for the same reason as `view`.
    tokens: Option<Arc<Tokens>>,
    /// Shuffled encodings by normalized request.
    entries: HashMap<Box<[u8]>, Shuffles>,
    /// xorshift state for picking a shuffle.
    rng: u64,
    /// Scratch space for building keys without allocating.
    key: Vec<u8>,
}

impl AnswerCache {
    /// An empty memo; `seed` varies the shuffle choice between threads.
    pub(super) fn new(seed: u64) -> Self {
        Self {
            view: None,
            tokens: None,
            entries: HashMap::new(),
            rng: seed | 1,
            key: Vec::with_capacity(MAX_KEY),
        }
    }

    /// Writes the memoized response to `request` into `out` and returns true,
    /// or returns false when there is none for this view and these tokens.
    pub(super) fn lookup(
        &mut self,
        view: &Arc<View>,
        tokens: Option<&Arc<Tokens>>,
        request: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        self.use_view(view, tokens);
        let Some(qname_end) = self.make_key(request) else {
            return false;
        };
        let Some(shuffles) = self.entries.get(self.key.as_slice()) else {
            return false;
        };
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        // The slice is never empty: `insert` only stores non-empty ones.
        let chosen = &shuffles[(self.rng % shuffles.len() as u64) as usize];
        out.clear();
        out.extend_from_slice(chosen);
        out[..2].copy_from_slice(&request[..2]);
        out[12..qname_end].copy_from_slice(&request[12..qname_end]);
        true
    }

    /// Remembers the encoded `responses` (one or more shuffles) to `request`.
    /// Responses that do not echo the request's question at the start, as a
    /// patchable copy, are not remembered.
    pub(super) fn insert(
        &mut self,
        view: &Arc<View>,
        tokens: Option<&Arc<Tokens>>,
        request: &[u8],
        responses: Vec<Vec<u8>>,
    ) {
        self.use_view(view, tokens);
        let Some(qname_end) = self.make_key(request) else {
            return;
        };
        let echoes = |r: &Vec<u8>| {
            r.len() >= qname_end
                && r[4..6] == [0, 1]
                && r[12..qname_end].eq_ignore_ascii_case(&request[12..qname_end])
        };
        if responses.is_empty() || !responses.iter().all(echoes) {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        let shuffles = responses.into_iter().map(Vec::into_boxed_slice).collect();
        self.entries.insert(self.key.as_slice().into(), shuffles);
    }

    /// Empties the memo when `view` or `tokens` is not the one its entries
    /// came from.
    fn use_view(&mut self, view: &Arc<View>, tokens: Option<&Arc<Tokens>>) {
        let same_view = self.view.as_ref().is_some_and(|v| Arc::ptr_eq(v, view));
        let same_tokens = match (&self.tokens, tokens) {
            (None, None) => true,
            (Some(held), Some(now)) => Arc::ptr_eq(held, now),
            _ => false,
        };
        if !same_view || !same_tokens {
            self.entries.clear();
            self.view = Some(view.clone());
            self.tokens = tokens.cloned();
        }
    }

    /// Builds the key of `request` in `self.key`: the header without its ID,
    /// then the rest with the question name lowercased. Returns where the
    /// question name ends, or `None` for requests the memo does not handle
    /// (too short or long, not exactly one question, a compressed or
    /// malformed question name).
    fn make_key(&mut self, request: &[u8]) -> Option<usize> {
        if request.len() < 12 || request.len() > MAX_KEY || request[4..6] != [0, 1] {
            return None;
        }
        let qname_end = question_name_end(request)?;
        self.key.clear();
        self.key.extend_from_slice(&request[2..12]);
        self.key
            .extend(request[12..qname_end].iter().map(u8::to_ascii_lowercase));
        self.key.extend_from_slice(&request[qname_end..]);
        Some(qname_end)
    }
}

/// Where the uncompressed question name that starts at offset 12 ends, or
/// `None` when it is compressed, overlong or runs past the message.
fn question_name_end(request: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = usize::from(*request.get(i)?);
        if len == 0 {
            return (i + 1 - 12 <= 255).then_some(i + 1);
        }
        if len > 63 {
            return None;
        }
        i += 1 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` with ID `id`, one question, type A, no EDNS.
    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    /// A response that echoes `request`'s question, with a marker after it.
    fn response(request: &[u8], marker: u8) -> Vec<u8> {
        let mut r = request.to_vec();
        r[2] |= 0x80;
        r.push(marker);
        r
    }

    #[test]
    fn a_hit_carries_the_new_id_and_the_question_case_of_the_request() {
        let view = Arc::new(View::default());
        let mut cache = AnswerCache::new(1);
        let first = query(1, "web.service.consul");
        cache.insert(&view, None, &first, vec![response(&first, 7)]);

        let second = query(0xabcd, "WeB.Service.CONSUL");
        let mut out = Vec::new();
        assert!(cache.lookup(&view, None, &second, &mut out));
        assert_eq!(&out[..2], &[0xab, 0xcd]);
        assert_eq!(&out[12..second.len()], &second[12..]);
        assert_eq!(out.last(), Some(&7));
    }

    #[test]
    fn a_new_view_empties_the_memo() {
        let mut cache = AnswerCache::new(1);
        let q = query(1, "web.service.consul");
        cache.insert(&Arc::new(View::default()), None, &q, vec![response(&q, 1)]);
        let mut out = Vec::new();
        assert!(!cache.lookup(&Arc::new(View::default()), None, &q, &mut out));
    }

    #[test]
    fn newly_resolved_tokens_empty_the_memo() {
        let view = Arc::new(View::default());
        let tokens = || {
            let ctx = crate::catalog::AclContext {
                default: crate::acl::DefaultPolicy::Deny,
                datacenter: "dc1".into(),
            };
            Arc::new(Tokens::build(&crate::catalog::State::new(), &ctx, None))
        };
        let (before, after) = (tokens(), tokens());
        let mut cache = AnswerCache::new(1);
        let q = query(1, "web.service.consul");
        cache.insert(&view, Some(&before), &q, vec![response(&q, 1)]);
        let mut out = Vec::new();
        assert!(cache.lookup(&view, Some(&before), &q, &mut out));
        // The same view, tokens resolved again after an ACL write: computed
        // under other permissions, the answer is not served.
        assert!(!cache.lookup(&view, Some(&after), &q, &mut out));
        cache.insert(&view, Some(&after), &q, vec![response(&q, 2)]);
        // Nor is one computed under tokens served with ACLs off.
        assert!(!cache.lookup(&view, None, &q, &mut out));
    }

    #[test]
    fn other_questions_and_flags_miss() {
        let view = Arc::new(View::default());
        let mut cache = AnswerCache::new(1);
        let q = query(1, "web.service.consul");
        cache.insert(&view, None, &q, vec![response(&q, 1)]);
        let mut out = Vec::new();
        assert!(!cache.lookup(&view, None, &query(1, "db.service.consul"), &mut out));
        let mut no_rd = q.clone();
        no_rd[2] = 0;
        assert!(!cache.lookup(&view, None, &no_rd, &mut out));
    }

    #[test]
    fn every_shuffle_is_served() {
        let view = Arc::new(View::default());
        let mut cache = AnswerCache::new(42);
        let q = query(1, "web.service.consul");
        let shuffles = (0..SHUFFLES as u8).map(|m| response(&q, m)).collect();
        cache.insert(&view, None, &q, shuffles);
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for _ in 0..1000 {
            assert!(cache.lookup(&view, None, &q, &mut out));
            seen.insert(*out.last().unwrap_or(&255));
        }
        assert_eq!(seen.len(), SHUFFLES);
    }

    #[test]
    fn responses_that_do_not_echo_the_question_are_not_kept() {
        let view = Arc::new(View::default());
        let mut cache = AnswerCache::new(1);
        let q = query(1, "web.service.consul");
        // A FORMERR-style response without a question.
        let mut bare = q[..12].to_vec();
        bare[5] = 0;
        cache.insert(&view, None, &q, vec![bare]);
        let mut out = Vec::new();
        assert!(!cache.lookup(&view, None, &q, &mut out));
    }

    #[test]
    fn malformed_question_names_are_not_keyed() {
        let mut cache = AnswerCache::new(1);
        let mut q = query(1, "web.service.consul");
        q[12] = 0xc0; // a compression pointer where a label belongs
        assert_eq!(cache.make_key(&q), None);
        assert_eq!(cache.make_key(&q[..14]), None);
        assert_eq!(cache.make_key(&[0u8; 5]), None);
    }
}
