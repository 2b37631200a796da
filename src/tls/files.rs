//! Reading PEM files: certificates, a private key, CA roots. Every error
//! names the setting, the configuration file that set it and the PEM file,
//! so the operator fixes the right line.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;
use crate::config::TlsProtocol;

/// One protocol's settings and what to call them in errors.
pub(super) struct Stanza<'a> {
    /// `tls.https` or `tls.internal_rpc`.
    pub(super) name: &'static str,
    /// The resolved settings.
    pub(super) settings: &'a TlsProtocol,
    /// The configuration file that set `tls`.
    pub(super) source: &'a str,
}

impl Stanza<'_> {
    fn error(&self, field: &str, file: &Path, message: impl Into<String>) -> TlsError {
        TlsError::File {
            key: format!("{}.{field}", self.name),
            source_name: self.source.to_string(),
            file: file.to_path_buf(),
            message: message.into(),
        }
    }

    /// The certificate and key this side presents, checked to belong
    /// together; `None` when the stanza names none.
    pub(super) fn identity(
        &self,
        provider: &CryptoProvider,
    ) -> Result<Option<Arc<CertifiedKey>>, TlsError> {
        let (Some(cert_file), Some(key_file)) =
            (&self.settings.cert_file, &self.settings.key_file)
        else {
            return Ok(None);
        };
        let chain = self.certs("cert_file", cert_file)?;
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| self.error("key_file", key_file, pem_message(e, "PRIVATE KEY")))?;
        let pair = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => self.error(
                "key_file",
                key_file,
                format!("this key does not match the certificate in {}", cert_file.display()),
            ),
            other => self.error(
                "key_file",
                key_file,
                format!("cannot be used with {}: {other}", cert_file.display()),
            ),
        })?;
        Ok(Some(Arc::new(pair)))
    }

    /// The CA certificates of `ca_file` and every file in `ca_path`; `None`
    /// when neither is set.
    pub(super) fn roots(&self) -> Result<Option<Arc<RootCertStore>>, TlsError> {
        let mut files = Vec::new();
        if let Some(f) = &self.settings.ca_file {
            files.push(("ca_file", f.clone()));
        }
        if let Some(dir) = &self.settings.ca_path {
            let read = |e: std::io::Error| self.error("ca_path", dir, e.to_string());
            let mut found = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(read)? {
                let path = entry.map_err(read)?.path();
                if path.is_file() {
                    found.push(path);
                }
            }
            found.sort();
            files.extend(found.into_iter().map(|p| ("ca_path", p)));
        }
        if files.is_empty() {
            return Ok(None);
        }
        let mut roots = RootCertStore::empty();
        for (field, file) in files {
            for cert in self.certs(field, &file)? {
                roots
                    .add(cert)
                    .map_err(|e| self.error(field, &file, format!("not a usable CA: {e}")))?;
            }
        }
        Ok(Some(Arc::new(roots)))
    }

    /// Every certificate in one PEM file; at least one.
    fn certs(&self, field: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_file_iter(file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.error(field, file, pem_message(e, "CERTIFICATE")))?;
        if certs.is_empty() {
            return Err(self.error(field, file, "holds no PEM CERTIFICATE block"));
        }
        Ok(certs)
    }
}

/// A PEM error as the operator reads it.
fn pem_message(e: rustls_pki_types::pem::Error, what: &str) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("cannot read it: {io}"),
        Error::NoItemsFound => format!("holds no PEM {what} block"),
        other => format!("is not valid PEM: {other}"),
    }
}
