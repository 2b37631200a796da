//! The cluster membership proof that follows the preface: with gossip
//! encryption on, both ends of a server RPC connection show that they hold
//! the cluster's key before either sends a frame, so a process that is not
//! part of the cluster cannot register services, read the catalog's change
//! stream or add and remove Raft voters (issue 13's first attack).
//!
//! After the versions agree, each side sends one flag byte (whether it holds
//! a key) and a fresh 32-byte nonce, the connecting side first. Where both
//! hold one, the accepting side sends an HMAC-SHA256 over both nonces under
//! the "accept" label and the connecting side answers with one under the
//! "offer" label; each checks the other's in constant time. A side with a key
//! refuses a side without one, and the other way round, each with an error
//! that says which end lacks the key. Fresh nonces on both sides make every
//! proof single-use, and the labels keep a proof of one direction from being
//! replayed as the other.
//!
//! The key is not the gossip key itself but one derived from it (an HMAC of
//! a fixed label), so the AES-GCM key of the gossip pool is never also an
//! HMAC key.
//!
//! This authenticates the peer at connect time only: the frames that follow
//! are neither encrypted nor authenticated, so an attacker on the path (not
//! merely on the network) needs TLS to be kept out.

use std::sync::Arc;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes in a nonce and in a proof (an HMAC-SHA256 tag).
const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;

/// What derives the proof key from the gossip key.
const DERIVE_LABEL: &[u8] = b"trellis server RPC membership proof, version 1";
/// What each side's proof covers besides the nonces, so that neither can be
/// replayed as the other's.
const OFFER_LABEL: &[u8] = b"offer";
const ACCEPT_LABEL: &[u8] = b"accept";

/// Why the membership proof failed.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// This agent holds the cluster's gossip key and the peer does not.
    #[error(
        "the peer proved no cluster membership: it has no gossip key (encrypt), and this agent requires one"
    )]
    Unproven,
    /// The peer holds a gossip key and this agent does not.
    #[error("the peer requires the cluster's gossip key (encrypt), which this agent does not have")]
    Unkeyed,
    /// The peer's proof does not check out under our key.
    #[error("the peer failed the cluster membership proof: it holds another gossip key")]
    WrongKey,
    /// The peer's opening is not one (a flag that is neither yes nor no).
    #[error("the peer's cluster membership proof is malformed")]
    Malformed,
    /// The peer hung up during the proof.
    #[error("the peer closed the connection during the cluster membership proof")]
    Closed,
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The key both ends of a server RPC connection prove they hold: derived
/// from the gossip pool's key (`encrypt`).
#[derive(Clone)]
pub struct ClusterKey(Arc<hmac::Key>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

impl ClusterKey {
    /// The proof key of the pool whose gossip key is `gossip_key`.
    pub fn derive(gossip_key: &[u8]) -> Self {
        let outer = hmac::Key::new(hmac::HMAC_SHA256, gossip_key);
        let derived = hmac::sign(&outer, DERIVE_LABEL);
        Self(Arc::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            derived.as_ref(),
        )))
    }

    fn sign(&self, label: &[u8], offer: &[u8; NONCE_LEN], accept: &[u8; NONCE_LEN]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(label);
        ctx.update(offer);
        ctx.update(accept);
        ctx.sign()
    }

    fn verify(
        &self,
        label: &[u8],
        offer: &[u8; NONCE_LEN],
        accept: &[u8; NONCE_LEN],
        proof: &[u8],
    ) -> Result<(), ProofError> {
        let mut msg = Vec::with_capacity(label.len() + 2 * NONCE_LEN);
        msg.extend_from_slice(label);
        msg.extend_from_slice(offer);
        msg.extend_from_slice(accept);
        hmac::verify(&self.0, &msg, proof).map_err(|_| ProofError::WrongKey)
    }
}

/// One side's opening: whether it holds a key, and its nonce.
struct Hello {
    keyed: bool,
    nonce: [u8; NONCE_LEN],
}

impl Hello {
    fn ours(key: Option<&ClusterKey>) -> Result<Self, ProofError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| std::io::Error::other("the system's random source failed"))?;
        Ok(Self {
            keyed: key.is_some(),
            nonce,
        })
    }

    fn encode(&self) -> [u8; 1 + NONCE_LEN] {
        let mut out = [0u8; 1 + NONCE_LEN];
        out[0] = u8::from(self.keyed);
        out[1..].copy_from_slice(&self.nonce);
        out
    }

    async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Self, ProofError> {
        let mut bytes = [0u8; 1 + NONCE_LEN];
        read_exact(r, &mut bytes).await?;
        let keyed = match bytes[0] {
            0 => false,
            1 => true,
            _ => return Err(ProofError::Malformed),
        };
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[1..]);
        Ok(Self { keyed, nonce })
    }
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), ProofError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ProofError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// Refuses a peer whose key-holding differs from ours: from this side's
/// point of view, which end lacks the key.
fn matched(ours: bool, theirs: bool) -> Result<(), ProofError> {
    match (ours, theirs) {
        (true, false) => Err(ProofError::Unproven),
        (false, true) => Err(ProofError::Unkeyed),
        _ => Ok(()),
    }
}

/// The connecting side's half, right after the versions agreed.
pub(super) async fn offer<S>(stream: &mut S, key: Option<&ClusterKey>) -> Result<(), ProofError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ours = Hello::ours(key)?;
    stream.write_all(&ours.encode()).await?;
    stream.flush().await?;
    let theirs = Hello::read(stream).await?;
    matched(ours.keyed, theirs.keyed)?;
    let Some(key) = key else {
        return Ok(());
    };
    let mut proof = [0u8; PROOF_LEN];
    read_exact(stream, &mut proof).await?;
    key.verify(ACCEPT_LABEL, &ours.nonce, &theirs.nonce, &proof)?;
    let mine = key.sign(OFFER_LABEL, &ours.nonce, &theirs.nonce);
    stream.write_all(mine.as_ref()).await?;
    stream.flush().await?;
    Ok(())
}

/// The accepting side's half, right after the versions agreed. It answers
/// with its own opening even when it then refuses, so that the connecting
/// side can say which end lacks the key.
pub(super) async fn accept<S>(stream: &mut S, key: Option<&ClusterKey>) -> Result<(), ProofError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let theirs = Hello::read(stream).await?;
    let ours = Hello::ours(key)?;
    stream.write_all(&ours.encode()).await?;
    let Some(key) = key.filter(|_| theirs.keyed) else {
        stream.flush().await?;
        return matched(ours.keyed, theirs.keyed);
    };
    let mine = key.sign(ACCEPT_LABEL, &theirs.nonce, &ours.nonce);
    stream.write_all(mine.as_ref()).await?;
    stream.flush().await?;
    let mut proof = [0u8; PROOF_LEN];
    read_exact(stream, &mut proof).await?;
    key.verify(OFFER_LABEL, &theirs.nonce, &ours.nonce, &proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn handshake(
        offering: Option<&ClusterKey>,
        accepting: Option<&ClusterKey>,
    ) -> (Result<(), ProofError>, Result<(), ProofError>) {
        let (mut a, mut b) = tokio::io::duplex(256);
        // A side that refuses hangs up: each drops its end when done.
        tokio::join!(async move { offer(&mut a, offering).await }, async move {
            accept(&mut b, accepting).await
        },)
    }

    #[tokio::test]
    async fn the_same_key_on_both_sides_connects() {
        let key = ClusterKey::derive(&[7; 32]);
        let (o, a) = handshake(Some(&key), Some(&key)).await;
        o.expect("connecting side");
        a.expect("accepting side");
    }

    #[tokio::test]
    async fn no_key_on_either_side_connects() {
        let (o, a) = handshake(None, None).await;
        o.expect("connecting side");
        a.expect("accepting side");
    }

    #[tokio::test]
    async fn another_key_fails_the_proof_on_the_side_that_checks_first() {
        let (k1, k2) = (ClusterKey::derive(&[1; 32]), ClusterKey::derive(&[2; 32]));
        let (o, a) = handshake(Some(&k1), Some(&k2)).await;
        // The connecting side checks the server's proof first and hangs up.
        assert!(matches!(o, Err(ProofError::WrongKey)), "{o:?}");
        assert!(matches!(a, Err(ProofError::Closed)), "{a:?}");
    }

    #[tokio::test]
    async fn a_peer_without_the_key_is_refused_and_told_why() {
        let key = ClusterKey::derive(&[3; 32]);
        let (o, a) = handshake(None, Some(&key)).await;
        assert_eq!(
            o.unwrap_err().to_string(),
            "the peer requires the cluster's gossip key (encrypt), which this agent does not have"
        );
        assert_eq!(
            a.unwrap_err().to_string(),
            "the peer proved no cluster membership: it has no gossip key (encrypt), and this agent requires one"
        );
        let (o, a) = handshake(Some(&key), None).await;
        assert!(matches!(o, Err(ProofError::Unproven)), "{o:?}");
        assert!(matches!(a, Err(ProofError::Unkeyed)), "{a:?}");
    }

    #[tokio::test]
    async fn a_forged_or_replayed_proof_is_refused() {
        let key = ClusterKey::derive(&[4; 32]);
        // An attacker without the key says it has one and sends garbage.
        let (mut a, mut b) = tokio::io::duplex(256);
        let server = tokio::spawn(async move { accept(&mut b, Some(&key)).await });
        a.write_all(&[1; 1 + NONCE_LEN]).await.unwrap();
        let mut reply = [0u8; 1 + NONCE_LEN + PROOF_LEN];
        a.read_exact(&mut reply).await.unwrap();
        // Replaying the server's own proof as ours: the labels differ.
        a.write_all(&reply[1 + NONCE_LEN..]).await.unwrap();
        let refused = server.await.unwrap();
        assert!(matches!(refused, Err(ProofError::WrongKey)), "{refused:?}");
    }

    #[tokio::test]
    async fn a_flag_that_is_neither_yes_nor_no_is_no_proof() {
        let (mut a, mut b) = tokio::io::duplex(256);
        a.write_all(&[9; 1 + NONCE_LEN]).await.unwrap();
        assert!(matches!(
            accept(&mut b, None).await,
            Err(ProofError::Malformed)
        ));
    }

    #[test]
    fn the_derived_key_depends_on_the_gossip_key() {
        let n = [0u8; NONCE_LEN];
        let a = ClusterKey::derive(&[1; 32]).sign(OFFER_LABEL, &n, &n);
        let b = ClusterKey::derive(&[2; 32]).sign(OFFER_LABEL, &n, &n);
        assert_ne!(a.as_ref(), b.as_ref());
        assert_eq!(
            format!("{:?}", ClusterKey::derive(&[1; 32])),
            "ClusterKey(<redacted>)"
        );
    }
}
