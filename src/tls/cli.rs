//! The client side for the CLI and other HTTPS callers: the CA to trust,
//! the name to expect and the certificate to present, from Consul's flags
//! and variables (`-ca-file`/`CONSUL_CACERT`, `-ca-path`/`CONSUL_CAPATH`,
//! `-client-cert`/`CONSUL_CLIENT_CERT`, `-client-key`/`CONSUL_CLIENT_KEY`,
//! `-tls-server-name`/`CONSUL_TLS_SERVER_NAME`, and
//! `CONSUL_HTTP_SSL_VERIFY=false` to check nothing).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;

use super::files::{pair, read_certs, read_key};
use super::verify::{Expected, ServerVerifier};

/// What the caller's flags name; every part optional.
#[derive(Debug, Clone, Default)]
pub(crate) struct CliTls {
    /// CA certificates (PEM) to trust instead of the system's.
    pub(crate) ca_file: Option<PathBuf>,
    /// A directory of them.
    pub(crate) ca_path: Option<PathBuf>,
    /// A certificate to present (PEM).
    pub(crate) client_cert: Option<PathBuf>,
    /// Its key.
    pub(crate) client_key: Option<PathBuf>,
    /// The name the server's certificate must carry instead of the URL's
    /// host.
    pub(crate) server_name: Option<String>,
    /// Accept any certificate (`CONSUL_HTTP_SSL_VERIFY=false`).
    pub(crate) skip_verify: bool,
}

impl CliTls {
    /// Whether any of it differs from a plain HTTPS client's defaults.
    pub(crate) fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.ca_path.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.server_name.is_some()
            || self.skip_verify
    }
}

fn flag_error(flag: &str, file: &Path, message: impl std::fmt::Display) -> String {
    format!("{flag} {}: {message}", file.display())
}

/// The client configuration `opts` asks for; an error names the flag and
/// the file.
pub(crate) fn cli_client_config(opts: &CliTls) -> Result<ClientConfig, String> {
    let provider = super::provider();
    let mut roots = RootCertStore::empty();
    let mut own_ca = false;
    let mut ca_files = Vec::new();
    if let Some(f) = &opts.ca_file {
        ca_files.push(("-ca-file", f.clone()));
    }
    if let Some(dir) = &opts.ca_path {
        let mut found = std::fs::read_dir(dir)
            .and_then(|it| {
                it.map(|e| e.map(|e| e.path()))
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .map_err(|e| flag_error("-ca-path", dir, e))?;
        found.retain(|p| p.is_file());
        found.sort();
        ca_files.extend(found.into_iter().map(|p| ("-ca-path", p)));
    }
    for (flag, file) in ca_files {
        for cert in read_certs(&file).map_err(|m| flag_error(flag, &file, m))? {
            roots
                .add(cert)
                .map_err(|e| flag_error(flag, &file, format!("not a usable CA: {e}")))?;
            own_ca = true;
        }
    }
    if !own_ca {
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    }
    let expected = match &opts.server_name {
        _ if opts.skip_verify => Expected::Unchecked,
        Some(name) => Expected::Fixed(
            ServerName::try_from(name.clone())
                .map_err(|e| format!("-tls-server-name {name:?}: {e}"))?,
        ),
        None => Expected::Dialled,
    };
    let verifier = Arc::new(ServerVerifier::new(
        Arc::new(roots),
        expected,
        provider.clone(),
    ));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    Ok(match (&opts.client_cert, &opts.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert).map_err(|m| flag_error("-client-cert", cert, m))?;
            let der = read_key(key).map_err(|m| flag_error("-client-key", key, m))?;
            let identity =
                pair(chain, der, cert, &provider).map_err(|m| flag_error("-client-key", key, m))?;
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                Arc::new(identity),
            )))
        }
        (Some(_), None) => return Err("-client-cert needs -client-key".into()),
        (None, Some(_)) => return Err("-client-key needs -client-cert".into()),
        (None, None) => builder.with_no_client_auth(),
    })
}
