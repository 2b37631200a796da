//! Catching up a client agent that fell behind its server's history, the way
//! Raft's InstallSnapshot does: in chunks, never the whole state in one
//! frame (a state of large KV values or a million keys is bigger than
//! [`super::frame::MAX_FRAME`]).
//!
//! The server's side, [`SnapshotCache`]: the first client found behind the
//! history has the server encode its state once, as a snapshot body
//! (`store::snapshot`: the format version, then postcard), and the server
//! keeps that one encoding, keyed by its last index, for every client that
//! catches up after it. A newer one replaces it once the history has moved
//! past it (a client that installed it could not follow on from there), and
//! it is dropped when no client has fetched from it for [`KEEP`]. The
//! encoding holds every ACL token without its secret: client agents resolve
//! tokens by the secret's hash.
//!
//! The follow answer then only offers it ([`Offer`]: its index and size),
//! and the client's side, [`fetch`], asks for it a chunk at a time
//! (`ClientRequest::SnapshotChunk`, at most [`MAX_CHUNK`] bytes each),
//! refuses a state beyond [`MAX_STATE`], assembles it, and decodes it by
//! the version it carries. A chunk that comes from another encoding than
//! the one being fetched (the server made a newer one) starts the fetch over
//! on that one.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;

use crate::catalog::{Index, Replica, Secrets, StateSnapshot};
use crate::store::StoreError;
use crate::store::snapshot::{decode_catalog, encode_captured};

/// The most bytes one chunk carries, as Raft's snapshot chunks: small
/// beside the frame limit, and a client's other calls on the same
/// connection wait behind no more than this.
pub const MAX_CHUNK: u32 = 1 << 20;
/// The largest encoded state a client takes. Far beyond what a catalog
/// and Consul's KV limits (512 KiB values) reach in practice; a bound so a
/// confused server cannot make a client allocate without end.
pub const MAX_STATE: u64 = 4 << 30;
/// How long a server keeps an encoding no client fetches from.
pub const KEEP: Duration = Duration::from_secs(60);

/// What a follow answer offers a client behind the history: the server's
/// state, encoded, as of `index`, in `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The last index the encoded state applied.
    pub index: Index,
    /// Bytes in the encoding.
    pub size: u64,
}

/// A server's answer to a chunk request: a piece of the encoding it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The index of the encoding the server holds. When it is not the one
    /// asked for, the server made a newer one: `bytes` is empty and the
    /// client starts over on this one.
    pub index: Index,
    /// Bytes in that encoding.
    pub total: u64,
    /// The bytes from the offset asked for.
    pub bytes: ChunkBytes,
}

/// Bytes that encode as one run (postcard: a length, then the bytes), not
/// byte by byte as a `Vec<u8>` does through serde.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkBytes(pub Vec<u8>);

impl Serialize for ChunkBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChunkBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(ChunkBytesVisitor)
    }
}

struct ChunkBytesVisitor;

impl Visitor<'_> for ChunkBytesVisitor {
    type Value = ChunkBytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ChunkBytes, E> {
        Ok(ChunkBytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ChunkBytes, E> {
        Ok(ChunkBytes(v))
    }
}

/// Why a client could not catch up from a server's state.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// The state is beyond what a client takes; nothing was fetched.
    #[error(
        "the server's state is {size} bytes encoded, more than the {max} bytes a client agent takes"
    )]
    TooLarge {
        /// The encoding's size.
        size: u64,
        /// [`MAX_STATE`].
        max: u64,
    },
    /// The server could not encode its state; the client's is unchanged.
    #[error("the server could not encode its state: {0}")]
    Encode(String),
    /// A chunk request failed; the client's state is unchanged.
    #[error("fetching the server's state failed: {0}")]
    Call(String),
    /// The chunks do not add up to the encoding offered.
    #[error("the server's state arrived inconsistent: {0}")]
    Inconsistent(String),
    /// The assembled bytes are not a state this build reads.
    #[error("the server's state does not decode: {0}")]
    Decode(#[from] StoreError),
}

/// One encoding of a server's state.
#[derive(Debug)]
struct Encoded {
    /// The last index the state had applied.
    index: Index,
    /// The snapshot body.
    bytes: Vec<u8>,
    /// When a client last was offered it or fetched from it, for [`KEEP`].
    used: Mutex<Instant>,
}

impl Encoded {
    fn offer(&self) -> Offer {
        self.touch();
        Offer {
            index: self.index,
            size: self.bytes.len() as u64,
        }
    }

    fn touch(&self) {
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn idle_until(&self) -> Instant {
        *self.used.lock().unwrap_or_else(|e| e.into_inner()) + KEEP
    }
}

/// The one encoding of its state a server keeps for the client agents that
/// catch up from it (consensus holds one per server).
#[derive(Debug, Default)]
pub struct SnapshotCache {
    /// The encoding clients fetch from, if any. Shared with its expiry task.
    held: Arc<Mutex<Option<Arc<Encoded>>>>,
    /// Taken while encoding, so clients that fall behind together wait for
    /// one encoding instead of each making its own.
    making: tokio::sync::Mutex<()>,
}

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn held(&self) -> MutexGuard<'_, Option<Arc<Encoded>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether it holds an encoding: a client behind was offered the whole
    /// state within the last minutes.
    #[cfg(test)]
    pub(crate) fn holds(&self) -> bool {
        self.held().is_some()
    }

    /// The held encoding, if a client that installs it can follow `replica`
    /// on from its index.
    fn usable(&self, replica: &Replica) -> Option<Offer> {
        let held = self.held().clone()?;
        replica.in_history(held.index).then(|| held.offer())
    }

    /// What to offer a client behind `replica`'s history: the held encoding,
    /// or a new one of the state as it is now. The state is encoded off the
    /// async threads, once however many clients ask.
    pub async fn offer(&self, replica: &Arc<Replica>) -> Result<Offer, CatchUpError> {
        if let Some(offer) = self.usable(replica) {
            return Ok(offer);
        }
        let _making = self.making.lock().await;
        // Made by another client's call while this one waited?
        if let Some(offer) = self.usable(replica) {
            return Ok(offer);
        }
        // Marked under the write lock for a moment, then encoded a slice
        // at a time while writes go on (`catalog/capture.rs`).
        let captured = replica.capture().await;
        let from = replica.clone();
        let (index, bytes) = tokio::task::spawn_blocking(move || {
            // Client agents resolve tokens by their hash: they get none
            // of the secrets.
            encode_captured(&from, &captured, Secrets::Blank)
                .map(|bytes| (captured.last_index(), bytes))
        })
        .await
        .map_err(|e| CatchUpError::Encode(e.to_string()))?
        .map_err(|e| CatchUpError::Encode(e.to_string()))?;
        let encoded = Arc::new(Encoded {
            index,
            bytes,
            used: Mutex::new(Instant::now()),
        });
        tracing::info!(
            index,
            bytes = encoded.bytes.len(),
            "encoded the state for client agents catching up"
        );
        let offer = encoded.offer();
        tokio::spawn(expire(Arc::downgrade(&self.held), Arc::downgrade(&encoded)));
        // Replaces (and so drops, once no fetch holds it) an older one.
        *self.held() = Some(encoded);
        Ok(offer)
    }

    /// Up to `len` bytes (at most [`MAX_CHUNK`]) of the encoding at `index`
    /// from `offset`; only its index and size when the held encoding is
    /// another; `None` when none is held.
    pub fn chunk(&self, index: Index, offset: u64, len: u32) -> Option<Chunk> {
        let held = self.held().clone()?;
        let total = held.bytes.len() as u64;
        let bytes = if held.index == index {
            held.touch();
            let start = offset.min(total);
            let end = start.saturating_add(len.min(MAX_CHUNK).into()).min(total);
            // Both are at most the length of a slice in memory, so they fit
            // in a usize.
            held.bytes[start as usize..end as usize].to_vec()
        } else {
            Vec::new()
        };
        Some(Chunk {
            index: held.index,
            total,
            bytes: ChunkBytes(bytes),
        })
    }
}

/// Drops `encoded` from the cache once no client used it for [`KEEP`]. Ends
/// early when it was replaced and no fetch holds it any more.
async fn expire(held: Weak<Mutex<Option<Arc<Encoded>>>>, encoded: Weak<Encoded>) {
    loop {
        let Some(until) = encoded.upgrade().map(|e| e.idle_until()) else {
            return;
        };
        tokio::time::sleep_until(until).await;
        let Some(this) = encoded.upgrade() else {
            return;
        };
        if this.idle_until() > Instant::now() {
            continue;
        }
        if let Some(held) = held.upgrade() {
            let mut held = held.lock().unwrap_or_else(|e| e.into_inner());
            if held.as_ref().is_some_and(|h| Arc::ptr_eq(h, &this)) {
                tracing::debug!(index = this.index, "dropped the idle encoded state");
                *held = None;
            }
        }
        return;
    }
}

/// Where a client fetches chunks from: the server that made the offer.
pub trait ChunkSource {
    /// Asks for up to `len` bytes of the encoding at `index` from `offset`
    /// ([`SnapshotCache::chunk`] on the server); the error says why the
    /// call failed.
    fn chunk(
        &self,
        index: Index,
        offset: u64,
        len: u32,
    ) -> impl Future<Output = Result<Option<Chunk>, String>> + Send;
}

/// Fetches the state `offer` names from `source`, `len` bytes a chunk, and
/// decodes it. `None` when the server no longer holds an encoding: the
/// client asks for a new offer.
pub async fn fetch(
    source: &impl ChunkSource,
    offer: Offer,
    len: u32,
) -> Result<Option<StateSnapshot>, CatchUpError> {
    let mut want = offer;
    let mut buf = Vec::new();
    start(&mut buf, want.size)?;
    while (buf.len() as u64) < want.size {
        let chunk = source
            .chunk(want.index, buf.len() as u64, len)
            .await
            .map_err(CatchUpError::Call)?;
        let Some(chunk) = chunk else {
            return Ok(None);
        };
        if chunk.index != want.index {
            tracing::debug!(
                from = want.index,
                to = chunk.index,
                "the server encoded a newer state: fetching that one"
            );
            want = Offer {
                index: chunk.index,
                size: chunk.total,
            };
            start(&mut buf, want.size)?;
            continue;
        }
        let end = buf.len() as u64 + chunk.bytes.0.len() as u64;
        if chunk.total != want.size || chunk.bytes.0.is_empty() || end > want.size {
            return Err(CatchUpError::Inconsistent(format!(
                "{} bytes at offset {} of an encoding of {} bytes, while {} were offered",
                chunk.bytes.0.len(),
                buf.len(),
                chunk.total,
                want.size
            )));
        }
        buf.extend_from_slice(&chunk.bytes.0);
    }
    let state = tokio::task::spawn_blocking(move || decode_catalog(&buf))
        .await
        .map_err(|e| CatchUpError::Inconsistent(e.to_string()))??;
    if state.last_index() != want.index {
        return Err(CatchUpError::Inconsistent(format!(
            "the state offered at index {} holds index {}",
            want.index,
            state.last_index()
        )));
    }
    Ok(Some(state))
}

/// Empties `buf` for an encoding of `size` bytes, refusing one beyond
/// [`MAX_STATE`] before allocating for it.
fn start(buf: &mut Vec<u8>, size: u64) -> Result<(), CatchUpError> {
    let too_large = || CatchUpError::TooLarge {
        size,
        max: MAX_STATE,
    };
    if size > MAX_STATE {
        return Err(too_large());
    }
    buf.clear();
    buf.reserve_exact(usize::try_from(size).map_err(|_| too_large())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::catalog::{Command, KvOp, KvVerb, Since};

    /// Entries a test server's history holds: a few, so a client is soon
    /// behind it.
    const HISTORY: usize = 4;

    /// Writes `n` keys with `size`-byte values, one entry each, after the
    /// replica's index; returns the last index.
    fn write_keys(replica: &Replica, n: u64, size: usize) -> Index {
        let from = replica.applied_index() + 1;
        for i in 0..n {
            let mut op = KvOp::new(KvVerb::Set, format!("key/{}", from + i));
            op.value = vec![(from + i) as u8; size];
            replica.apply(from + i, &Command::Kv(op));
        }
        replica.applied_index()
    }

    /// A server in process: its replica, and its cache answering chunk
    /// requests as `rpc::client` does. After `advance_after` requests it
    /// applies more writes, past its history, and another client behind
    /// it asks for an offer, so the cache moves to a newer encoding.
    struct Server {
        replica: Arc<Replica>,
        cache: SnapshotCache,
        advance_after: Option<usize>,
        /// Chunk requests answered.
        calls: AtomicUsize,
        /// Of those, requests from offset 0: fetches started.
        starts: AtomicUsize,
    }

    impl Server {
        fn new(keys: u64, size: usize) -> Self {
            let replica = Arc::new(Replica::with_history(HISTORY));
            write_keys(&replica, keys, size);
            Self {
                replica,
                cache: SnapshotCache::new(),
                advance_after: None,
                calls: AtomicUsize::new(0),
                starts: AtomicUsize::new(0),
            }
        }
    }

    impl ChunkSource for Server {
        async fn chunk(
            &self,
            index: Index,
            offset: u64,
            len: u32,
        ) -> Result<Option<Chunk>, String> {
            let calls = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if offset == 0 {
                self.starts.fetch_add(1, Ordering::SeqCst);
            }
            if self.advance_after == Some(calls) {
                write_keys(&self.replica, 2 * HISTORY as u64, 10);
                self.cache
                    .offer(&self.replica)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(self.cache.chunk(index, offset, len))
        }
    }

    #[tokio::test]
    async fn a_state_of_many_chunks_arrives_whole_and_installs_equal() {
        let server = Server::new(20, 300);
        let offer = server.cache.offer(&server.replica).await.expect("offer");
        assert_eq!(offer.index, server.replica.applied_index());
        assert!(offer.size > 6 * 1000, "{offer:?}");

        let state = fetch(&server, offer, 1000)
            .await
            .expect("fetch")
            .expect("the encoding is held");
        let client = Replica::new();
        client.install(state);

        assert_eq!(*client.read(), *server.replica.read());
        assert_eq!(
            server.calls.load(Ordering::SeqCst) as u64,
            offer.size.div_ceil(1000)
        );
        assert_eq!(server.starts.load(Ordering::SeqCst), 1);
        // Installed, the client follows on by entries.
        write_keys(&server.replica, 1, 10);
        assert!(matches!(
            server.replica.since(client.applied_index(), 16, 4096),
            Since::Entries(e) if e.len() == 1
        ));
    }

    #[tokio::test]
    async fn clients_behind_together_share_one_encoding() {
        let server = Server::new(20, 300);
        let first = server.cache.offer(&server.replica).await.expect("offer");
        let held = server.cache.held().clone().expect("held");
        // Later writes, still within the history: the held encoding serves.
        write_keys(&server.replica, 2, 10);
        let second = server.cache.offer(&server.replica).await.expect("offer");
        assert_eq!(first, second);
        assert!(Arc::ptr_eq(
            &held,
            &server.cache.held().clone().expect("held")
        ));
        // Past the history, a client installing it could not follow on.
        write_keys(&server.replica, 2 * HISTORY as u64, 10);
        let third = server.cache.offer(&server.replica).await.expect("offer");
        assert_eq!(third.index, server.replica.applied_index());
    }

    #[tokio::test]
    async fn a_newer_encoding_mid_transfer_restarts_the_fetch_on_it() {
        let mut server = Server::new(20, 300);
        server.advance_after = Some(2);
        let offer = server.cache.offer(&server.replica).await.expect("offer");

        let state = fetch(&server, offer, 1000)
            .await
            .expect("fetch")
            .expect("the encoding is held");

        assert_eq!(server.starts.load(Ordering::SeqCst), 2, "started over once");
        assert!(state.last_index() > offer.index);
        let client = Replica::new();
        client.install(state);
        assert_eq!(*client.read(), *server.replica.read());
    }

    #[tokio::test]
    async fn a_state_beyond_the_limit_is_refused_before_any_chunk() {
        let server = Server::new(1, 10);
        let offer = Offer {
            index: 1,
            size: MAX_STATE + 1,
        };
        let err = fetch(&server, offer, MAX_CHUNK)
            .await
            .expect_err("a state beyond the limit is fetched");
        assert!(matches!(err, CatchUpError::TooLarge { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&(MAX_STATE + 1).to_string()), "{text}");
        assert!(text.contains(&MAX_STATE.to_string()), "{text}");
        assert_eq!(server.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn chunks_are_capped_and_another_index_gets_only_the_held_one() {
        let server = Server::new(40, 60 << 10);
        let offer = server.cache.offer(&server.replica).await.expect("offer");
        assert!(offer.size > u64::from(MAX_CHUNK));
        let chunk = server.cache.chunk(offer.index, 0, u32::MAX).expect("held");
        assert_eq!(chunk.bytes.0.len(), MAX_CHUNK as usize);
        let other = server.cache.chunk(offer.index - 1, 0, 10).expect("held");
        assert_eq!((other.index, other.total), (offer.index, offer.size));
        assert!(other.bytes.0.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_encoding_nobody_fetches_is_dropped_after_a_while() {
        let server = Server::new(5, 10);
        let offer = server.cache.offer(&server.replica).await.expect("offer");
        tokio::time::advance(KEEP / 2).await;
        // A fetch keeps it.
        assert!(server.cache.chunk(offer.index, 0, 10).is_some());
        tokio::time::advance(KEEP / 2 + Duration::from_secs(1)).await;
        assert!(server.cache.held().is_some());
        let deadline = Instant::now() + 2 * KEEP;
        while server.cache.held().is_some() {
            assert!(Instant::now() < deadline, "still held after {:?}", 2 * KEEP);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // A client then asks for a new offer.
        assert!(fetch(&server, offer, 10).await.expect("fetch").is_none());
    }
}
