//! The change stream's fan-out on a server: every client agent polls for
//! what was applied after its index, and after a write a thousand of them
//! ask for the same entries at once. Encoding those entries for each is
//! the same work a thousand times (and for a large batch, megabytes each
//! time), so the server encodes each range of entries once, keeps the
//! bytes for the followers that ask next ([`FollowCache`]); the server's
//! connection splices them into each answer's frame between the envelope's
//! head and the server's status, which stay per answer
//! (`server::follow_frame`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::catalog::Index;

/// Ranges of entries kept encoded: followers at a few different indexes
/// (one that was slow, one that just connected) share the cache with the
/// many that are current, without evicting their range.
const RANGES: usize = 8;

/// Ranges kept encoded: (after, last index, the bytes), newest last.
type Ranges = VecDeque<(Index, Index, Arc<[u8]>)>;

/// The encodings of the ranges of entries answered most recently.
#[derive(Debug, Default)]
pub struct FollowCache {
    /// The ranges answered most recently.
    recent: Mutex<Ranges>,
}

impl FollowCache {
    /// The bytes of the entries that follow `after` up to `last`, made by
    /// `encode` only when the range is not cached. A server's applied entry
    /// at an index never changes, and the range a poll gets is a function
    /// of where it starts and where it ends, so (after, last) names the
    /// bytes.
    pub fn encoded<E>(
        &self,
        after: Index,
        last: Index,
        encode: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Arc<[u8]>, E> {
        if let Some(bytes) = self.cached(after, last) {
            return Ok(bytes);
        }
        let bytes: Arc<[u8]> = encode()?.into();
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

    /// The bytes of the range, if it is cached.
    pub fn cached(&self, after: Index, last: Index) -> Option<Arc<[u8]>> {
        let recent = self.recent();
        recent
            .iter()
            .rev()
            .find(|&&(a, l, _)| (a, l) == (after, last))
            .map(|(_, _, bytes)| bytes.clone())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Ranges> {
        // The deque is valid after any panic: a push or pop is whole.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_encoded_once_and_told_apart_from_others() {
        let cache = FollowCache::default();
        let encodings = std::cell::Cell::new(0);
        let encode = |bytes: &[u8]| {
            encodings.set(encodings.get() + 1);
            Ok::<_, ()>(bytes.to_vec())
        };
        let one = cache.encoded(4, 5, || encode(b"a")).unwrap();
        let again = cache.encoded(4, 5, || encode(b"x")).unwrap();
        assert!(Arc::ptr_eq(&one, &again));
        // Longer, or from elsewhere: other bytes.
        let longer = cache.encoded(4, 6, || encode(b"ab")).unwrap();
        let later = cache.encoded(5, 6, || encode(b"b")).unwrap();
        assert_eq!(
            (&*one, &*longer, &*later),
            (&b"a"[..], &b"ab"[..], &b"b"[..])
        );
        assert_eq!(encodings.get(), 3);
        // A failed encoding is not kept.
        assert!(cache.encoded(7, 8, || Err(())).is_err());
        assert_eq!(&*cache.encoded(7, 8, || encode(b"c")).unwrap(), b"c");
        // Old ranges make way for new ones.
        for after in 10..10 + RANGES as u64 {
            cache.encoded(after, after + 1, || encode(b"d")).unwrap();
        }
        cache.encoded(4, 5, || encode(b"a")).unwrap();
        assert_eq!(encodings.get(), 4 + RANGES + 1);
    }
}
