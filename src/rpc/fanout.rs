//! The change stream's fan-out on a server: every client agent polls for
//! what was applied after its index, and after a write a thousand of them
//! ask for the same entries at once. Encoding those entries for each is
//! the same work a thousand times (and for a large batch, megabytes each
//! time), so the server encodes each range of entries once, keeps the
//! bytes for the followers that ask next ([`FollowCache`]), and splices
//! them into each answer's frame between the envelope's head and the
//! server's status, which stay per answer ([`follow_frame`]).
//!
//! The frame is byte for byte what encoding the whole [`Envelope`] gives
//! (postcard writes a struct's fields one after the other, with nothing
//! around them), so the client's side and the protocol version do not
//! change; a test holds the two encodings equal.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::client::{CatchUp, ClientResponse, FollowAnswer, ServerStatus};
use super::frame::{self, FrameError, MAX_FRAME};
use super::message::{Envelope, Response};
use crate::catalog::{Applied, Index};

/// Ranges of entries kept encoded: followers at a few different indexes
/// (one that was slow, one that just connected) share the cache with the
/// many that are current, without evicting their range.
const RANGES: usize = 8;

/// A follow answer whose entries are encoded already: what the handler
/// hands the connection's writer instead of a [`Response`].
#[derive(Debug, Clone)]
pub struct SharedFollow {
    /// `CatchUp::Entries(…)`, encoded, shared by every answer of its range.
    pub catch_up: Arc<[u8]>,
    /// The server's view, per answer.
    pub status: ServerStatus,
}

/// The encodings of the ranges of entries answered most recently.
#[derive(Debug, Default)]
pub struct FollowCache {
    /// (after, last index, `CatchUp::Entries` encoded), newest last.
    recent: Mutex<VecDeque<(Index, Index, Arc<[u8]>)>>,
}

impl FollowCache {
    /// `CatchUp::Entries(entries)` encoded, for a follower after `after`;
    /// `redact` makes the entries fit for a client (run only when the
    /// range is not cached). A server's applied entry at an index never
    /// changes, and the range a poll gets is a function of where it
    /// starts and where it ends, so (after, last index) names the bytes.
    pub fn encoded(
        &self,
        after: Index,
        entries: Vec<Applied>,
        redact: impl FnOnce(Vec<Applied>) -> Vec<Applied>,
    ) -> Result<Arc<[u8]>, postcard::Error> {
        let last = entries.last().map_or(after, |e| e.index);
        if let Some(bytes) = self.find(after, last) {
            return Ok(bytes);
        }
        let bytes: Arc<[u8]> = postcard::to_allocvec(&CatchUp::Entries(redact(entries)))?.into();
        let mut recent = self.recent();
        // Another poll of the range may have encoded it meanwhile; either
        // copy is right, keep one.
        if !recent.iter().any(|&(a, l, _)| (a, l) == (after, last)) {
            if recent.len() == RANGES {
                recent.pop_front();
            }
            recent.push_back((after, last, bytes.clone()));
        }
        Ok(bytes)
    }

    fn find(&self, after: Index, last: Index) -> Option<Arc<[u8]>> {
        let recent = self.recent();
        recent
            .iter()
            .rev()
            .find(|&&(a, l, _)| (a, l) == (after, last))
            .map(|(_, _, bytes)| bytes.clone())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, VecDeque<(Index, Index, Arc<[u8]>)>> {
        // The deque is valid after any panic: a push or pop is whole.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The frame of the answer to call `id` carrying `answer`: what
/// [`frame::encode`] gives for `Envelope { id, Response::Client(
/// ClientResponse::Follow(FollowAnswer { catch_up, status })) }`, with the
/// shared bytes copied in rather than encoded again.
pub fn follow_frame(id: u64, answer: &SharedFollow) -> Result<Vec<u8>, FrameError> {
    // The envelope with an empty catch-up gives the head (id and the
    // variants' tags) and the status' bytes; the empty catch-up between
    // them is replaced by the shared one.
    let empty = postcard::to_allocvec(&CatchUp::Entries(Vec::new()))?;
    let status = postcard::to_allocvec(&answer.status)?;
    let whole = frame::encode(&Envelope {
        id,
        body: Response::Client(ClientResponse::Follow(FollowAnswer {
            catch_up: CatchUp::Entries(Vec::new()),
            status: answer.status.clone(),
        })),
    })?;
    let head_len = whole.len() - empty.len() - status.len();
    debug_assert_eq!(whole[head_len..], [&empty[..], &status[..]].concat());
    let len = head_len - 4 + answer.catch_up.len() + status.len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut out = Vec::with_capacity(4 + len);
    // `len <= MAX_FRAME` fits in a u32.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&whole[4..head_len]);
    out.extend_from_slice(&answer.catch_up);
    out.extend_from_slice(&status);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Command, KvOp, KvVerb};

    fn entry(index: Index, key: &str) -> Applied {
        let mut op = KvOp::new(KvVerb::Set, key);
        op.value = vec![7; 40];
        Applied {
            index,
            time: 1_700_000_000_000 + index,
            commands: vec![Command::Kv(op)].into(),
        }
    }

    #[test]
    fn a_shared_frame_is_the_frame_of_the_whole_answer() {
        let status = ServerStatus {
            leader: Some("127.0.0.1:8300".parse().unwrap()),
            leader_live: true,
            last_contact_ms: 300,
            peers: vec!["127.0.0.1:8300".parse().unwrap()],
        };
        for entries in [vec![], vec![entry(5, "a")], vec![entry(5, "a"), entry(6, "b")]] {
            let cache = FollowCache::default();
            let catch_up = cache.encoded(4, entries.clone(), |e| e).unwrap();
            let shared = SharedFollow {
                catch_up,
                status: status.clone(),
            };
            for id in [0, 1, 300, u64::MAX] {
                let whole = frame::encode(&Envelope {
                    id,
                    body: Response::Client(ClientResponse::Follow(FollowAnswer {
                        catch_up: CatchUp::Entries(entries.clone()),
                        status: status.clone(),
                    })),
                })
                .unwrap();
                assert_eq!(follow_frame(id, &shared).unwrap(), whole);
            }
        }
    }

    #[test]
    fn a_range_is_encoded_once_and_told_apart_from_others() {
        let cache = FollowCache::default();
        let redactions = std::cell::Cell::new(0);
        let count = |e| {
            redactions.set(redactions.get() + 1);
            e
        };
        let one = cache.encoded(4, vec![entry(5, "a")], count).unwrap();
        let again = cache.encoded(4, vec![entry(5, "a")], count).unwrap();
        assert!(Arc::ptr_eq(&one, &again));
        // Longer, or from elsewhere: other bytes.
        let longer = cache
            .encoded(4, vec![entry(5, "a"), entry(6, "b")], count)
            .unwrap();
        let later = cache.encoded(5, vec![entry(6, "b")], count).unwrap();
        assert_ne!(one, longer);
        assert_ne!(longer, later);
        assert_eq!(redactions.get(), 3);
        // Old ranges make way for new ones.
        for after in 10..10 + RANGES as u64 {
            cache
                .encoded(after, vec![entry(after + 1, "c")], count)
                .unwrap();
        }
        cache.encoded(4, vec![entry(5, "a")], count).unwrap();
        assert_eq!(redactions.get(), 3 + RANGES + 1);
    }
}
