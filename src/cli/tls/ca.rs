//! `trellis tls ca create`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

#[derive(Debug, Args)]
pub(crate) struct CaCreate {
    /// Days the CA is valid for.
    #[arg(long, value_name = "N", default_value_t = 1825)]
    days: u32,
    /// The cluster's domain; it names the files (<domain>-agent-ca.pem).
    #[arg(long, value_name = "DOMAIN", default_value = "consul")]
    domain: String,
}

impl CaCreate {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        self.create_in(Path::new("."))
    }

    /// Writes the CA's two files into `dir`.
    pub(super) fn create_in(&self, dir: &Path) -> anyhow::Result<()> {
        let cert_file = PathBuf::from(format!("{}-agent-ca.pem", self.domain));
        let key_file = PathBuf::from(format!("{}-agent-ca-key.pem", self.domain));
        // Checked before anything is written, so neither file is left alone.
        for f in [&cert_file, &key_file] {
            if dir.join(f).exists() {
                anyhow::bail!("{} already exists.", f.display());
            }
        }
        let (cert, key) = generate(self.days)?;
        super::write_new(dir, &cert_file, &cert, false)?;
        super::write_new(dir, &key_file, &key, true)
    }
}

/// A self-signed CA certificate and its key, both PEM.
pub(super) fn generate(days: u32) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    let serial = super::serial();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Trellis Agent CA {}", u128_of(&serial)),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "trellis");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(serial);
    (params.not_before, params.not_after) = super::validity(days);
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The serial as a number, for the CA's name (Consul names its CA by its
/// serial too, so two CAs are told apart at a glance).
fn u128_of(serial: &rcgen::SerialNumber) -> u128 {
    serial
        .as_ref()
        .iter()
        .fold(0u128, |n, b| (n << 8) | u128::from(*b))
}
