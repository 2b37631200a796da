//! TLS for the HTTPS API and server RPC: the PEM files of `tls { defaults /
//! internal_rpc / https }` turned into rustls configurations, held so that
//! SIGHUP swaps in new certificates and keys without a restart.
//!
//! The API, for the HTTPS listener (`http/listen.rs`) and server RPC:
//!
//! - [`Tls::load`] reads every file the settings name and builds the
//!   configurations; an error names the setting, the configuration file and
//!   the PEM file (missing file, bad PEM, a key that is not the
//!   certificate's). The agent refuses to start on one.
//! - [`Tls::https_server`]: the HTTPS listener's `ServerConfig`, requiring a
//!   client certificate signed by the CA when `tls.https.verify_incoming`.
//! - [`Tls::rpc_server`]: the `ServerConfig` for accepting server RPC, or
//!   `None` when `tls.internal_rpc` has no certificate (plain RPC). With
//!   `verify_incoming` a peer without a certificate signed by the CA fails
//!   the handshake.
//! - [`Tls::rpc_client`]: the `ClientConfig` for dialling servers, or `None`
//!   unless `verify_outgoing`: the server's certificate must chain to the
//!   CA and, with `verify_server_hostname`, name [`Tls::server_name`]
//!   (`server.<dc>.<domain>`) whatever address was dialled; our own
//!   certificate is presented when there is one. Pass
//!   [`Tls::server_name`] to `TlsConnector::connect`.
//! - [`Tls::peer_role`]: whether the peer of an accepted connection showed
//!   a server's certificate ([`PeerRole::Server`]) or a client's, so server
//!   RPC can refuse a client certificate acting as a server.
//! - [`Tls::reload`] rebuilds all of them from the files and swaps them in
//!   at once, or keeps the old ones and says why; [`Tls::reload_on_sighup`]
//!   does it on each SIGHUP and logs the outcome.
//!
//! Each getter returns the configuration current at the call: a connection
//! takes one when it starts and keeps it, so a reload never breaks a
//! connection in flight. The crypto is ring's, the provider reqwest's TLS
//! already uses, named explicitly so no process-wide default is needed.

mod cli;
mod files;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, ServerName};

pub(crate) use self::cli::{CliTls, cli_client_config};
use self::verify::{Expected, ServerVerifier};
pub use self::verify::{PeerRole, peer_role};
use crate::config::{TlsProtocol, TlsSettings};
use files::Stanza;

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file named by a setting is missing, unreadable, not PEM, or does
    /// not fit (a key that is not the certificate's).
    #[error("{key} ({source_name}): {}: {message}", file.display())]
    File {
        /// The setting, e.g. `tls.https.cert_file`.
        key: String,
        /// The configuration file that set `tls`.
        source_name: String,
        /// The PEM file or directory.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the combination (no usable protocol version, a CA
    /// set it cannot verify with).
    #[error("{key} ({source_name}): {message}")]
    Config {
        /// The stanza, e.g. `tls.internal_rpc`.
        key: &'static str,
        /// The configuration file that set `tls`.
        source_name: String,
        /// rustls's reason.
        message: String,
    },
}

/// The configurations built from one reading of the files.
#[derive(Debug)]
struct Material {
    https_server: Option<Arc<ServerConfig>>,
    rpc_server: Option<Arc<ServerConfig>>,
    rpc_client: Option<Arc<ClientConfig>>,
    /// Dialling servers of other datacenters, which name
    /// `server.<their dc>.<domain>`: built on first use from the same
    /// files, by datacenter, and dropped with the rest on a reload.
    remote_clients: std::sync::Mutex<std::collections::HashMap<String, Arc<ClientConfig>>>,
}

/// The agent's TLS: its settings and the configurations last loaded from
/// them. Shared (`Arc`) by the HTTPS listener, server RPC and the SIGHUP
/// task.
#[derive(Debug)]
pub struct Tls {
    /// Which files to read, and the checks asked for.
    settings: TlsSettings,
    /// `server.<dc>.<domain>`: what a server's certificate names.
    server_name: ServerName<'static>,
    /// The DNS domain, without its trailing dot, for the server names of
    /// other datacenters.
    domain: String,
    /// The configurations now in force; a reload swaps them all at once.
    current: ArcSwap<Material>,
}

/// ring, explicitly: rustls's process-wide default would be ambiguous if
/// another dependency ever enabled a second provider.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Reads the files `settings` names and builds the configurations;
    /// `datacenter` and `domain` (with or without its trailing dot) make
    /// the server name `server.<dc>.<domain>`.
    pub fn load(settings: TlsSettings, datacenter: &str, domain: &str) -> Result<Self, TlsError> {
        let name = format!("server.{datacenter}.{}", domain.trim_end_matches('.'));
        let server_name = ServerName::try_from(name).map_err(|e| TlsError::Config {
            key: "tls.internal_rpc",
            source_name: settings.source.clone(),
            message: format!("server.<datacenter>.<domain> is not a DNS name: {e}"),
        })?;
        let material = build(&settings, &server_name)?;
        Ok(Self {
            settings,
            server_name,
            domain: domain.trim_end_matches('.').to_owned(),
            current: ArcSwap::from_pointee(material),
        })
    }

    /// Reads the files again and puts the new configurations in force; on
    /// an error the old ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let material = build(&self.settings, &self.server_name)?;
        self.current.store(Arc::new(material));
        Ok(())
    }

    /// Whether any protocol has TLS configured (a reload has something to
    /// read).
    pub fn configured(&self) -> bool {
        let m = self.current.load();
        m.https_server.is_some() || m.rpc_server.is_some() || m.rpc_client.is_some()
    }

    /// The HTTPS listener's configuration; `None` when `tls.https` has no
    /// certificate.
    pub fn https_server(&self) -> Option<Arc<ServerConfig>> {
        self.current.load().https_server.clone()
    }

    /// Server RPC's accepting side; `None`: plain RPC.
    pub fn rpc_server(&self) -> Option<Arc<ServerConfig>> {
        self.current.load().rpc_server.clone()
    }

    /// Server RPC's dialling side; `None` unless `verify_outgoing`.
    pub fn rpc_client(&self) -> Option<Arc<ClientConfig>> {
        self.current.load().rpc_client.clone()
    }

    /// Whether server RPC requires a certificate signed by the CA from its
    /// peers (`tls.internal_rpc.verify_incoming`), and so refuses plain RPC.
    pub fn rpc_verify_incoming(&self) -> bool {
        self.settings.internal_rpc.verify_incoming
    }

    /// `server.<dc>.<domain>`.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// Server RPC's dialling side for a server of datacenter `dc` (maybe
    /// another one), and the name to dial it by, `server.<dc>.<domain>`;
    /// `None` unless `verify_outgoing`. With `verify_server_hostname` the
    /// certificate must name that datacenter's servers, as Consul checks
    /// a remote server's certificate.
    pub fn rpc_client_for(&self, dc: &str) -> Option<(Arc<ClientConfig>, ServerName<'static>)> {
        let material = self.current.load();
        let own = material.rpc_client.clone()?;
        let name = ServerName::try_from(format!("server.{dc}.{}", self.domain)).ok()?;
        if name == self.server_name || !self.settings.internal_rpc.verify_server_hostname {
            return Some((own, name));
        }
        let mut remote = material
            .remote_clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(config) = remote.get(dc) {
            return Some((config.clone(), name));
        }
        let rpc = Stanza {
            name: "tls.internal_rpc",
            settings: &self.settings.internal_rpc,
            source: &self.settings.source,
        };
        match client_config(&rpc, &name, &provider()) {
            Ok(Some(config)) => {
                remote.insert(dc.to_owned(), config.clone());
                Some((config, name))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(dc, "TLS for dialling another datacenter's servers: {e}");
                None
            }
        }
    }

    /// Whether `chain` (`ServerConnection::peer_certificates`) is a
    /// server's.
    pub fn peer_role(&self, chain: Option<&[CertificateDer<'_>]>) -> PeerRole {
        peer_role(chain, &self.server_name)
    }

    /// Reloads on every SIGHUP until `shutdown`, logging each outcome; a
    /// failed reload keeps the material in force. `hup` is registered by
    /// the caller before the agent says it listens, so no early SIGHUP
    /// falls to the default action (which ends the process).
    pub async fn reload_on_sighup(
        self: Arc<Self>,
        mut hup: tokio::signal::unix::Signal,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            if !self.configured() {
                tracing::info!("SIGHUP: no TLS configured, nothing to reload");
                continue;
            }
            match self.reload() {
                Ok(()) => tracing::info!("SIGHUP: reloaded TLS certificates and keys"),
                Err(e) => {
                    tracing::error!("SIGHUP: TLS reload failed, keeping the old material: {e}")
                }
            }
        }
    }
}

/// Every configuration the settings ask for, from the files as they are now.
fn build(settings: &TlsSettings, server_name: &ServerName<'static>) -> Result<Material, TlsError> {
    let provider = provider();
    let https = Stanza {
        name: "tls.https",
        settings: &settings.https,
        source: &settings.source,
    };
    let rpc = Stanza {
        name: "tls.internal_rpc",
        settings: &settings.internal_rpc,
        source: &settings.source,
    };
    let mut https_server = server_config(&https, &provider)?;
    if let Some(config) = &mut https_server {
        // axum serves HTTP/1.1 only.
        Arc::make_mut(config).alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(Material {
        https_server,
        rpc_server: server_config(&rpc, &provider)?,
        rpc_client: client_config(&rpc, server_name, &provider)?,
        remote_clients: std::sync::Mutex::default(),
    })
}

fn config_error(stanza: &Stanza<'_>, e: impl std::fmt::Display) -> TlsError {
    TlsError::Config {
        key: stanza.name,
        source_name: stanza.source.to_string(),
        message: e.to_string(),
    }
}

/// The accepting side: our certificate, and the CA's check of the peer's
/// when `verify_incoming`; `None` without a certificate.
fn server_config(
    stanza: &Stanza<'_>,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let Some(identity) = stanza.identity(provider)? else {
        return Ok(None);
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(stanza, e))?;
    let builder = match (stanza.settings.verify_incoming, stanza.roots()?) {
        (true, Some(roots)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| config_error(stanza, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        // The resolver refuses verify_incoming without a CA; without
        // verify_incoming no certificate is asked for, as Consul.
        _ => builder.with_no_client_auth(),
    };
    let resolver = Arc::new(rustls::sign::SingleCertAndKey::from(identity));
    Ok(Some(Arc::new(builder.with_cert_resolver(resolver))))
}

/// The dialling side of server RPC: only with `verify_outgoing`.
fn client_config(
    stanza: &Stanza<'_>,
    server_name: &ServerName<'static>,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let p: &TlsProtocol = stanza.settings;
    if !p.verify_outgoing {
        return Ok(None);
    }
    let Some(roots) = stanza.roots()? else {
        return Ok(None);
    };
    let expected = if p.verify_server_hostname {
        Expected::Fixed(server_name.clone())
    } else {
        Expected::ChainOnly
    };
    let verifier = Arc::new(ServerVerifier::new(roots, expected, provider.clone()));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(stanza, e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match stanza.identity(provider)? {
        Some(identity) => builder
            .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity))),
        None => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}
