//! Checking a server's certificate the way Consul does: signed by our CA,
//! and naming what we expect, which for server RPC with
//! `verify_server_hostname` is `server.<dc>.<domain>` whatever address was
//! dialled; and telling a server's certificate (of this datacenter or of
//! another) from a client's.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Which name a server's certificate must carry.
#[derive(Debug, Clone)]
pub(crate) enum Expected {
    /// The name the connection was opened for (the URL's host).
    Dialled,
    /// This name, whatever was dialled (`-tls-server-name`, or
    /// `server.<dc>.<domain>` for server RPC).
    Fixed(ServerName<'static>),
    /// Any: only the chain is checked (server RPC with `verify_outgoing`
    /// but not `verify_server_hostname`, as Consul).
    ChainOnly,
    /// Nothing is checked but the handshake's own signatures: the CLI with
    /// `CONSUL_HTTP_SSL_VERIFY=false`, as Consul's, for a test setup.
    Unchecked,
}

/// A server-certificate check against our own roots.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    /// The CA certificates a server's must chain to.
    roots: Arc<RootCertStore>,
    /// The name it must carry.
    expected: Expected,
    /// For the signature algorithms.
    provider: Arc<CryptoProvider>,
}

impl ServerVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        expected: Expected,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            roots,
            expected,
            provider,
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        if matches!(self.expected, Expected::Unchecked) {
            return Ok(ServerCertVerified::assertion());
        }
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match &self.expected {
            Expected::Dialled => verify_server_name(&cert, server_name)?,
            Expected::Fixed(name) => verify_server_name(&cert, name)?,
            Expected::ChainOnly | Expected::Unchecked => {}
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a peer's certificate entitles it to on server RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// It names `server.<dc>.<domain>`: `trellis tls cert create -server`
    /// made it, and it may act as a server (Raft, membership).
    Server,
    /// A client's or CLI's certificate, or none: it may call the client
    /// family of RPC only.
    Client,
    /// It names `server.<other dc>.<domain>`: a server of another
    /// datacenter, which may send requests of the datacenter family (its
    /// clients' `?dc=` requests) but never Raft or membership calls here.
    RemoteServer,
}

/// The role a peer's certificate chain shows (the chain was already
/// verified by the handshake); `server_name` is `server.<dc>.<domain>`.
pub fn peer_role(chain: Option<&[CertificateDer<'_>]>, server_name: &ServerName<'_>) -> PeerRole {
    let Some(end_entity) = chain.and_then(|c| c.first()) else {
        return PeerRole::Client;
    };
    match ParsedCertificate::try_from(end_entity) {
        Ok(cert) if verify_server_name(&cert, server_name).is_ok() => PeerRole::Server,
        Ok(_) if names_a_server_of_some_datacenter(end_entity, server_name) => {
            PeerRole::RemoteServer
        }
        _ => PeerRole::Client,
    }
}

/// Whether the certificate names `server.<any dc>.<domain>` among its DNS
/// names, `<domain>` being the one of `server_name`
/// (`server.<our dc>.<domain>`): what `trellis tls cert create -server -dc
/// X` writes for the servers of datacenter X. rustls checks one expected
/// name at a time, so the names are read from the certificate itself.
fn names_a_server_of_some_datacenter(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
) -> bool {
    let ServerName::DnsName(ours) = server_name else {
        return false;
    };
    // `server.<dc>.<domain>`: the domain is what follows the datacenter.
    let Some(domain) = ours
        .as_ref()
        .strip_prefix("server.")
        .and_then(|rest| rest.split_once('.'))
        .map(|(_, domain)| domain.to_ascii_lowercase())
    else {
        return false;
    };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => {
            let dns = dns.to_ascii_lowercase();
            dns.strip_prefix("server.")
                .and_then(|rest| rest.split_once('.'))
                .is_some_and(|(dc, rest)| !dc.is_empty() && !dc.contains('*') && rest == domain)
        }
        _ => false,
    })
}
