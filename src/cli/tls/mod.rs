//! `trellis tls ca create` and `trellis tls cert create`: a private CA and
//! the certificates its agents, clients and CLI users present, written as
//! `consul tls` writes them (file names, SANs, key usages), so configs and
//! scripts made for Consul's files work with ours.
//!
//! Keys are ECDSA P-256, as Consul's. Files are written in the working
//! directory and never overwritten: the CA refuses to replace one, a
//! certificate takes the next free index (`dc1-server-consul-0.pem`,
//! `-1.pem`, …).

mod ca;
mod cert;

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::Subcommand;

/// `trellis tls …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TlsCmd {
    /// The certificate authority.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Certificates signed by the CA.
    #[command(subcommand)]
    Cert(CertCmd),
}

/// `trellis tls ca …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CaCmd {
    /// Create a new CA: <domain>-agent-ca.pem and <domain>-agent-ca-key.pem.
    Create(ca::CaCreate),
}

/// `trellis tls cert …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CertCmd {
    /// Create a server, client or CLI certificate and its key, signed by
    /// the CA.
    Create(cert::CertCreate),
}

impl TlsCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Ca(CaCmd::Create(c)) => c.run(),
            Self::Cert(CertCmd::Create(c)) => c.run(),
        }
    }
}

/// A fresh random serial number: 128 bits, the top one clear so it reads
/// as positive, as RFC 5280 asks.
fn serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    // A leading zero byte would make the DER encoding shorter than 16
    // bytes and the number no longer 128 bits; keep it non-zero.
    bytes[0] |= 0x01;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// The validity window: from a minute ago (a peer whose clock is a little
/// behind still accepts it) for `days`.
fn validity(days: u32) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::minutes(1),
        now + time::Duration::days(i64::from(days)),
    )
}

/// Writes `text` to a new file `name` in `dir`, refusing to replace one;
/// private keys are readable by their owner only.
fn write_new(dir: &Path, name: &Path, text: &str, private: bool) -> anyhow::Result<()> {
    let path = &dir.join(name);
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    if private {
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} already exists.", path.display())
        } else {
            anyhow::Error::new(e).context(format!("creating {}", path.display()))
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(std::io::stdout(), "==> Saved {}", name.display())?;
    Ok(())
}

#[cfg(test)]
mod tests;
