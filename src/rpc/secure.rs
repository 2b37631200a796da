//! What a server RPC connection runs over, and what its peer may do: plain
//! TCP or TLS (`tls.internal_rpc`), chosen per connection, before the
//! preface.
//!
//! The dialling side speaks TLS when `verify_outgoing` is on (the server's
//! certificate must chain to the CA and, with `verify_server_hostname`,
//! name `server.<dc>.<domain>`). The accepting side looks at the first byte:
//! a TLS handshake record (22) is served with TLS when it has a
//! certificate; the plain preface is served only while `verify_incoming`
//! is off, as Consul serves both on one port until then. With
//! `verify_incoming` on, a peer must show a certificate signed by the CA,
//! and only a server's certificate may send Raft and cluster requests: a
//! client agent's may only make the client family's calls ([`Peer`]).
//!
//! [`Credentials`] bundles this with the cluster key of the membership
//! proof ([`super::proof`]) that follows the preface either way.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::proof::ClusterKey;
use crate::tls::{PeerRole, Tls};

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 22;

/// A connection's byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// What this agent proves and requires on server RPC: the cluster key of
/// the membership proof and the TLS material, each when configured.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// From the gossip key; see [`super::proof`].
    pub cluster_key: Option<ClusterKey>,
    /// `tls.internal_rpc`, reloaded on SIGHUP.
    pub tls: Option<Arc<Tls>>,
}

/// What an accepted connection's peer showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// No certificate was asked for (`verify_incoming` off): any request.
    Unverified,
    /// A certificate signed by the CA, of this role.
    Verified(PeerRole),
}

impl Peer {
    /// Whether this peer may send Raft and cluster requests: a server of
    /// this datacenter.
    pub fn may_act_as_server(self) -> bool {
        !matches!(
            self,
            Self::Verified(PeerRole::Client | PeerRole::RemoteServer)
        )
    }

    /// Whether this peer may send requests of the datacenter family: a
    /// server of any datacenter.
    pub fn may_act_as_remote_server(self) -> bool {
        !matches!(self, Self::Verified(PeerRole::Client))
    }
}

/// Why a connection was refused before its preface.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// Plain RPC to a server that requires TLS.
    #[error("plain server RPC refused: tls.internal_rpc.verify_incoming requires TLS")]
    PlainRefused,
    /// A TLS handshake to a server without a certificate for RPC.
    #[error("the peer offered TLS, but this server has no certificate for server RPC")]
    NoCertificate,
    /// The handshake failed: no certificate, another CA, a wrong name.
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Credentials {
    fn verify_incoming(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.rpc_verify_incoming())
    }

    /// The accepting side: TLS or plain by the peer's first byte.
    pub async fn accept(&self, tcp: TcpStream) -> Result<(Box<dyn Io>, Peer), SecureError> {
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        if n == 0 || first[0] != TLS_HANDSHAKE {
            if self.verify_incoming() {
                return Err(SecureError::PlainRefused);
            }
            return Ok((Box::new(tcp), Peer::Unverified));
        }
        let Some(tls) = &self.tls else {
            return Err(SecureError::NoCertificate);
        };
        let Some(config) = tls.rpc_server() else {
            return Err(SecureError::NoCertificate);
        };
        let stream = TlsAcceptor::from(config)
            .accept(tcp)
            .await
            .map_err(SecureError::Handshake)?;
        let peer = if self.verify_incoming() {
            Peer::Verified(tls.peer_role(stream.get_ref().1.peer_certificates()))
        } else {
            Peer::Unverified
        };
        Ok((Box::new(stream), peer))
    }

    /// The dialling side for a server of datacenter `dc` (another one's
    /// certificate names `server.<dc>.<domain>`): TLS when
    /// `verify_outgoing`, else plain.
    pub async fn connect_to(
        &self,
        tcp: TcpStream,
        dc: Option<&str>,
    ) -> Result<Box<dyn Io>, SecureError> {
        let Some(dc) = dc else {
            return self.connect(tcp).await;
        };
        let Some((config, name)) = self.tls.as_ref().and_then(|t| t.rpc_client_for(dc)) else {
            return Ok(Box::new(tcp));
        };
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(SecureError::Handshake)?;
        Ok(Box::new(stream))
    }

    /// The dialling side: TLS when `verify_outgoing`, else plain.
    pub async fn connect(&self, tcp: TcpStream) -> Result<Box<dyn Io>, SecureError> {
        let Some((tls, config)) = self
            .tls
            .as_ref()
            .and_then(|t| t.rpc_client().map(|c| (t, c)))
        else {
            return Ok(Box::new(tcp));
        };
        let stream = TlsConnector::from(config)
            .connect(tls.server_name().clone(), tcp)
            .await
            .map_err(SecureError::Handshake)?;
        Ok(Box::new(stream))
    }
}
