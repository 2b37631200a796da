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
        let (Some(cert_file), Some(key_file)) = (&self.settings.cert_file, &self.settings.key_file)
        else {
            return Ok(None);
        };
        let chain = self.certs("cert_file", cert_file)?;
        let key = read_key(key_file).map_err(|m| self.error("key_file", key_file, m))?;
        let pair = pair(chain, key, cert_file, provider)
            .map_err(|m| self.error("key_file", key_file, m))?;
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
        read_certs(file).map_err(|m| self.error(field, file, m))
    }
}

/// Every certificate in one PEM file; at least one. The error says what is
/// wrong with the file, for the caller to say which setting named it.
pub(crate) fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_message(e, "CERTIFICATE"))?;
    if certs.is_empty() {
        return Err("holds no PEM CERTIFICATE block".into());
    }
    Ok(certs)
}

/// The private key in one PEM file.
pub(crate) fn read_key(file: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| pem_message(e, "PRIVATE KEY"))
}

/// A certificate chain and its key, refused when the key is not the
/// certificate's (`cert_file` names the certificate in the message).
pub(crate) fn pair(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "this key does not match the certificate in {}",
            cert_file.display()
        ),
        other => format!("cannot be used with {}: {other}", cert_file.display()),
    })
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
