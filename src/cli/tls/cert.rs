//! `trellis tls cert create -server|-client|-cli`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args};
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["server", "client", "cli"])))]
pub(crate) struct CertCreate {
    /// A server certificate: names server.<dc>.<domain>, for server and
    /// client authentication. It grants authority to act as a server.
    #[arg(long)]
    server: bool,
    /// A client agent's certificate: names client.<dc>.<domain>.
    #[arg(long)]
    client: bool,
    /// A certificate for the CLI and other API clients: names
    /// cli.<dc>.<domain>.
    #[arg(long)]
    cli: bool,
    /// The datacenter the certificate is for.
    #[arg(long, value_name = "DC", default_value = "dc1")]
    dc: String,
    /// The cluster's domain.
    #[arg(long, value_name = "DOMAIN", default_value = "consul")]
    domain: String,
    /// With -server: also name <node>.server.<dc>.<domain>.
    #[arg(long, value_name = "NODE")]
    node: Option<String>,
    /// Another DNS name for the certificate (repeatable); localhost is
    /// always included.
    #[arg(long = "additional-dnsname", value_name = "NAME")]
    dns_names: Vec<String>,
    /// Another IP address for the certificate (repeatable); 127.0.0.1 is
    /// always included for servers and clients.
    #[arg(long = "additional-ipaddress", value_name = "IP")]
    ip_addresses: Vec<String>,
    /// The CA certificate [default: <domain>-agent-ca.pem].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The CA's key [default: <domain>-agent-ca-key.pem].
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Days the certificate is valid for.
    #[arg(long, value_name = "N", default_value_t = 365)]
    days: u32,
}

/// Which kind of certificate, and so its names and usages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Server,
    Client,
    Cli,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::Cli => "cli",
        }
    }
}

impl CertCreate {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        self.create_in(Path::new("."))
    }

    /// Writes the certificate and its key into `dir`, reading the CA's
    /// files relative to it.
    pub(super) fn create_in(&self, dir: &Path) -> anyhow::Result<()> {
        let kind = match (self.server, self.client, self.cli) {
            (true, false, false) => Kind::Server,
            (false, true, false) => Kind::Client,
            (false, false, true) => Kind::Cli,
            // clap's group admits exactly one.
            _ => bail!("Please provide either -server, -client, or -cli"),
        };
        if self.node.is_some() && kind != Kind::Server {
            bail!("-node requires -server");
        }
        let ca_file = self
            .ca
            .clone()
            .unwrap_or_else(|| format!("{}-agent-ca.pem", self.domain).into());
        let key_file = self
            .key
            .clone()
            .unwrap_or_else(|| format!("{}-agent-ca-key.pem", self.domain).into());
        let prefix = format!("{}-{}-{}", self.dc, kind.label(), self.domain);
        let (cert_out, key_out) = free_names(dir, &prefix)?;
        let ca_pem = std::fs::read_to_string(dir.join(&ca_file))
            .with_context(|| format!("Error reading CA {}", ca_file.display()))?;
        let ca_key = std::fs::read_to_string(dir.join(&key_file))
            .with_context(|| format!("Error reading CA key {}", key_file.display()))?;
        if kind == Kind::Server {
            println_out(
                "==> WARNING: Server Certificates grants authority to become a\n    \
                 server and access all state in the cluster. Do not distribute\n    \
                 them to hosts that are not server nodes. Store them as securely\n    \
                 as CA keys.",
            )?;
        }
        println_out(&format!(
            "==> Using {} and {}",
            ca_file.display(),
            key_file.display()
        ))?;
        let (cert, key) = self.generate(kind, &ca_pem, &ca_key)?;
        super::write_new(dir, &cert_out, &cert, false)?;
        super::write_new(dir, &key_out, &key, true)
    }

    /// The certificate and its new key, PEM, signed by the CA.
    fn generate(&self, kind: Kind, ca_pem: &str, ca_key: &str) -> anyhow::Result<(String, String)> {
        let name = format!("{}.{}.{}", kind.label(), self.dc, self.domain);
        let mut dns = Vec::new();
        if let Some(node) = &self.node {
            dns.push(format!("{node}.{name}"));
        }
        dns.push(name.clone());
        dns.push("localhost".to_string());
        dns.extend(
            self.dns_names
                .iter()
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty()),
        );
        let mut ips: Vec<IpAddr> = Vec::new();
        if kind != Kind::Cli {
            ips.push(IpAddr::from([127, 0, 0, 1]));
        }
        for ip in &self.ip_addresses {
            let ip = ip.trim();
            if !ip.is_empty() {
                ips.push(
                    ip.parse()
                        .with_context(|| format!("-additional-ipaddress {ip:?} is not an IP"))?,
                );
            }
        }
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = dns
            .into_iter()
            .map(|d| {
                d.clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .with_context(|| format!("{d:?} is not a DNS name"))
            })
            .chain(ips.into_iter().map(|ip| Ok(SanType::IpAddress(ip))))
            .collect::<anyhow::Result<_>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        // Servers and client agents both accept and open connections, so
        // theirs serve both ends, as Consul's; a CLI certificate, like
        // Consul's, carries no extended usage.
        params.extended_key_usages = match kind {
            Kind::Server | Kind::Client => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Kind::Cli => Vec::new(),
        };
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(super::serial());
        (params.not_before, params.not_after) = super::validity(self.days);
        let signer = KeyPair::from_pem(ca_key).context("the CA key is not a PEM private key")?;
        let issuer = Issuer::from_ca_cert_pem(ca_pem, signer)
            .context("the CA file is not a PEM certificate")?;
        let key = KeyPair::generate().context("generating the key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing the certificate")?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The first `<prefix>-<n>.pem` whose certificate and key files both do
/// not exist yet, as Consul numbers them.
fn free_names(dir: &Path, prefix: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    for n in 0..=10_000 {
        let cert = PathBuf::from(format!("{prefix}-{n}.pem"));
        let key = PathBuf::from(format!("{prefix}-{n}-key.pem"));
        if !dir.join(&cert).exists() && !dir.join(&key).exists() {
            return Ok((cert, key));
        }
    }
    bail!("Could not find a filename that doesn't already exist")
}

fn println_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout(), "{text}")?;
    Ok(())
}
