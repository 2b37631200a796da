//! The preface that opens every server RPC connection, before any frame:
//! [`MAGIC`] and the protocol version, two bytes big-endian. The connecting
//! side sends its preface first; the accepting side reads it and answers
//! with its own. Both then compare: a peer that speaks another version is
//! refused (the accepting side closes the connection after answering, so
//! the connecting side learns the version it should have spoken), and each
//! side reports an error that names both versions. Once the versions agree,
//! both sides prove they belong to the cluster ([`super::proof`]).
//!
//! A trellis from before protocol versions sends a frame at once: its
//! length prefix is not [`MAGIC`], so it is refused as no preface at all.
//! Sent to such a server, our preface reads as a length prefix beyond
//! [`super::frame::MAX_FRAME`]: it closes the connection at once, which the
//! connecting side reports as a peer that closed before its preface.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::proof::{self, ClusterKey, ProofError};

/// The bytes every preface starts with. Read as a frame's length prefix they
/// are far beyond the frame limit, so a server that predates the preface
/// refuses it at once instead of waiting for 1.4 GB.
pub const MAGIC: [u8; 4] = *b"TRLS";

/// The version of the frames that follow the preface: what the request and
/// response families are and how they encode. Bump it with any change a
/// peer of the previous version would misread. 2: follow answers carry each
/// entry's time, outcomes carry transactions' results, and a client behind
/// its server's history is offered the encoded state and fetches it in
/// chunks (`SnapshotChunk`) instead of receiving it in one answer.
/// 3: the cluster membership proof follows the preface.
pub const PROTOCOL_VERSION: u16 = 3;

/// Bytes in a preface.
pub const PREFACE_LEN: usize = MAGIC.len() + 2;

/// Why a connection was refused before its first frame.
#[derive(Debug, thiserror::Error)]
pub enum PrefaceError {
    /// The peer speaks another protocol version.
    #[error("server RPC protocol mismatch: this agent speaks {ours}, the peer speaks {theirs}")]
    Mismatch {
        /// Our version.
        ours: u16,
        /// The peer's.
        theirs: u16,
    },
    /// The peer's first bytes are not a preface: not trellis server RPC, or
    /// a trellis from before protocol versions.
    #[error(
        "the peer sent no server RPC preface (not trellis server RPC, or a trellis from before protocol versions)"
    )]
    Missing,
    /// The peer closed the connection before its preface was complete; a
    /// trellis from before protocol versions does that on ours.
    #[error(
        "the peer closed the connection before its server RPC preface (a trellis from before protocol versions does)"
    )]
    Closed,
    /// The versions agree, but the cluster membership proof failed.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The peer sent no preface in time.
    #[error("no server RPC preface from the peer within {0:?}")]
    Timeout(Duration),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The preface of a side that speaks `version`.
pub fn encode(version: u16) -> [u8; PREFACE_LEN] {
    let mut out = [0u8; PREFACE_LEN];
    out[..MAGIC.len()].copy_from_slice(&MAGIC);
    out[MAGIC.len()..].copy_from_slice(&version.to_be_bytes());
    out
}

/// The protocol version a preface announces.
pub fn parse(bytes: &[u8; PREFACE_LEN]) -> Result<u16, PrefaceError> {
    let (magic, version) = bytes.split_at(MAGIC.len());
    if magic != MAGIC {
        return Err(PrefaceError::Missing);
    }
    Ok(u16::from_be_bytes([version[0], version[1]]))
}

/// Reads the peer's preface and returns its version.
async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<u16, PrefaceError> {
    let mut bytes = [0u8; PREFACE_LEN];
    match r.read_exact(&mut bytes).await {
        Ok(_) => parse(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(PrefaceError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// The connecting side: sends our preface, then reads the peer's; then the
/// membership proof under `key` (see [`super::proof`]).
pub async fn offer<S>(
    stream: &mut S,
    ours: u16,
    key: Option<&ClusterKey>,
) -> Result<(), PrefaceError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&encode(ours)).await?;
    stream.flush().await?;
    let theirs = read(stream).await?;
    if theirs != ours {
        return Err(PrefaceError::Mismatch { ours, theirs });
    }
    Ok(proof::offer(stream, key).await?)
}

/// The accepting side: reads the peer's preface, answers with ours (on a
/// mismatch too, so the peer can name our version), and refuses a peer of
/// another version. A peer without a preface gets no answer. Then the
/// membership proof under `key` (see [`super::proof`]).
pub async fn accept<S>(
    stream: &mut S,
    ours: u16,
    key: Option<&ClusterKey>,
) -> Result<(), PrefaceError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let theirs = read(stream).await?;
    stream.write_all(&encode(ours)).await?;
    stream.flush().await?;
    if theirs != ours {
        return Err(PrefaceError::Mismatch { ours, theirs });
    }
    Ok(proof::accept(stream, key).await?)
}

/// Rate limit for refusal warnings. A refused peer comes back at every
/// reconnect (Raft's every heartbeat), so one warning per period says it
/// and the rest go to debug.
#[derive(Debug)]
pub(super) struct Refusals {
    /// When the last warning went out.
    last_warning: Mutex<Option<Instant>>,
}

/// How often a refusal is logged as a warning.
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Refusals {
    pub(super) fn new() -> Self {
        Self {
            last_warning: Mutex::new(None),
        }
    }

    /// Whether the next refusal should be a warning (and then records it).
    pub(super) fn warn_now(&self) -> bool {
        let mut last = self.last_warning.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preface_is_the_magic_and_the_version() {
        assert_eq!(encode(0x0102), *b"TRLS\x01\x02");
        assert_eq!(parse(&encode(7)).unwrap(), 7);
        assert!(matches!(parse(b"TRLX\0\x01"), Err(PrefaceError::Missing)));
        // A length prefix as a pre-versioning peer sends it is no preface.
        assert!(matches!(parse(b"\0\0\0\x03ab"), Err(PrefaceError::Missing)));
    }

    #[test]
    fn the_magic_is_an_oversized_frame_to_an_old_server() {
        assert!(u32::from_be_bytes(MAGIC) as usize > super::super::frame::MAX_FRAME);
    }

    #[tokio::test]
    async fn same_versions_connect() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let (offered, accepted) = tokio::join!(offer(&mut a, 3, None), accept(&mut b, 3, None));
        offered.expect("connecting side");
        accepted.expect("accepting side");
    }

    #[tokio::test]
    async fn another_version_is_refused_on_both_sides_naming_both() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let (offered, accepted) = tokio::join!(offer(&mut a, 2, None), accept(&mut b, 1, None));
        let offered = offered.expect_err("the connecting side refuses");
        let accepted = accepted.expect_err("the accepting side refuses");
        assert_eq!(
            offered.to_string(),
            "server RPC protocol mismatch: this agent speaks 2, the peer speaks 1"
        );
        assert_eq!(
            accepted.to_string(),
            "server RPC protocol mismatch: this agent speaks 1, the peer speaks 2"
        );
    }

    #[tokio::test]
    async fn a_peer_that_closes_before_its_preface_is_reported() {
        let (mut a, b) = tokio::io::duplex(64);
        drop(b);
        assert!(matches!(
            offer(&mut a, 1, None).await,
            Err(PrefaceError::Io(_) | PrefaceError::Closed)
        ));
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(b"TRL").await.unwrap();
        drop(a);
        assert!(matches!(
            accept(&mut b, 1, None).await,
            Err(PrefaceError::Closed)
        ));
    }

    #[test]
    fn refusals_warn_once_per_period() {
        let r = Refusals::new();
        assert!(r.warn_now());
        assert!(!r.warn_now());
    }
}
