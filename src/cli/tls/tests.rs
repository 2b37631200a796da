//! The files `trellis tls` writes, read back: names, SANs, usages, the
//! CA's signature, refusals to overwrite; and that the agent's TLS loader
//! takes them, refuses a key that is not the certificate's, and tells a
//! server's certificate from a client's.

use std::path::{Path, PathBuf};

use clap::Parser;
use rustls_pki_types::ServerName;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;

use crate::cli::{Cli, Verb};
use crate::config::{TlsProtocol, TlsSettings};
use crate::tls::{PeerRole, Tls};

/// Runs `trellis tls <args>` (Consul's one-dash spelling) in `dir`.
fn tls(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let argv = ["trellis", "tls"]
        .iter()
        .chain(args)
        .map(Into::into)
        .collect();
    let cli = Cli::parse_from(super::super::goflags::normalize(
        argv,
        &<Cli as clap::CommandFactory>::command(),
    ));
    match cli.command {
        Verb::Tls(super::TlsCmd::Ca(super::CaCmd::Create(c))) => c.create_in(dir),
        Verb::Tls(super::TlsCmd::Cert(super::CertCmd::Create(c))) => c.create_in(dir),
        other => panic!("not a tls command: {other:?}"),
    }
}

/// The DNS and IP SANs of a PEM certificate, its extended key usages
/// (server, client) and whether it is a CA.
struct Read {
    dns: Vec<String>,
    ips: Vec<String>,
    eku: Option<(bool, bool)>,
    ca: bool,
    subject: String,
    issuer: String,
    der: Vec<u8>,
}

fn read(path: &Path) -> Read {
    let text = std::fs::read(path).unwrap();
    let (_, pem) = parse_x509_pem(&text).unwrap();
    let cert = pem.parse_x509().unwrap();
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    ips.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string())
                }
                _ => {}
            }
        }
    }
    let eku = cert
        .extended_key_usage()
        .unwrap()
        .map(|e| (e.value.server_auth, e.value.client_auth));
    Read {
        dns,
        ips,
        eku,
        ca: cert.is_ca(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        der: pem.contents.clone(),
    }
}

/// Checks `cert`'s signature with the CA's key.
fn signed_by(cert: &Path, ca: &Path) -> bool {
    let (ca_text, cert_text) = (std::fs::read(ca).unwrap(), std::fs::read(cert).unwrap());
    let (_, ca_pem) = parse_x509_pem(&ca_text).unwrap();
    let (_, pem) = parse_x509_pem(&cert_text).unwrap();
    let ca_cert = ca_pem.parse_x509().unwrap();
    let leaf = pem.parse_x509().unwrap();
    leaf.verify_signature(Some(ca_cert.public_key())).is_ok()
}

#[test]
fn the_ca_and_certificates_carry_consuls_names_and_usages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tls(d, &["ca", "create"]).unwrap();
    tls(
        d,
        &[
            "cert",
            "create",
            "-server",
            "-node",
            "s1",
            "-additional-dnsname",
            "consul.example",
            "-additional-ipaddress=10.1.2.3",
        ],
    )
    .unwrap();
    tls(d, &["cert", "create", "-client"]).unwrap();
    tls(d, &["cert", "create", "-cli", "-dc", "dc2"]).unwrap();
    tls(d, &["cert", "create", "-server", "-dc", "dc2"]).unwrap();

    let ca = read(&d.join("consul-agent-ca.pem"));
    assert!(ca.ca);
    assert_eq!(ca.subject, ca.issuer);

    let server = read(&d.join("dc1-server-consul-0.pem"));
    assert!(!server.ca);
    assert_eq!(
        server.dns,
        [
            "s1.server.dc1.consul",
            "server.dc1.consul",
            "localhost",
            "consul.example"
        ]
    );
    assert_eq!(server.ips, ["127.0.0.1", "10.1.2.3"]);
    assert_eq!(server.eku, Some((true, true)));
    assert_eq!(server.subject, "CN=server.dc1.consul");
    assert_eq!(server.issuer, ca.subject);
    assert!(signed_by(
        &d.join("dc1-server-consul-0.pem"),
        &d.join("consul-agent-ca.pem")
    ));

    let client = read(&d.join("dc1-client-consul-0.pem"));
    assert_eq!(client.dns, ["client.dc1.consul", "localhost"]);
    assert_eq!(client.ips, ["127.0.0.1"]);
    assert_eq!(client.eku, Some((true, true)));
    assert!(signed_by(
        &d.join("dc1-client-consul-0.pem"),
        &d.join("consul-agent-ca.pem")
    ));

    let cli = read(&d.join("dc2-cli-consul-0.pem"));
    assert_eq!(cli.dns, ["cli.dc2.consul", "localhost"]);
    assert!(cli.ips.is_empty());
    assert_eq!(cli.eku, None);

    // Only a server's certificate names server.<dc>.<domain>.
    let name = ServerName::try_from("server.dc1.consul").unwrap();
    let role = |r: &Read| {
        let der = rustls_pki_types::CertificateDer::from(r.der.clone());
        crate::tls::peer_role(Some(&[der]), &name)
    };
    assert_eq!(role(&server), PeerRole::Server);
    assert_eq!(role(&client), PeerRole::Client);
    assert_eq!(role(&cli), PeerRole::Client);
    // Another datacenter's server may send its clients' requests, and no
    // more; a client certificate of that datacenter is still a client's.
    let remote = read(&d.join("dc2-server-consul-0.pem"));
    assert_eq!(role(&remote), PeerRole::RemoteServer);
    let other_domain = ServerName::try_from("server.dc1.example").unwrap();
    let der = rustls_pki_types::CertificateDer::from(remote.der.clone());
    assert_eq!(
        crate::tls::peer_role(Some(&[der]), &other_domain),
        PeerRole::Client,
        "a server of another domain is no server of ours"
    );
    assert_eq!(crate::tls::peer_role(None, &name), PeerRole::Client);
}

#[test]
fn nothing_is_overwritten_and_certificates_take_the_next_index() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tls(d, &["ca", "create"]).unwrap();
    let ca_before = std::fs::read(d.join("consul-agent-ca.pem")).unwrap();
    let err = tls(d, &["ca", "create"]).unwrap_err().to_string();
    assert_eq!(err, "consul-agent-ca.pem already exists.");
    assert_eq!(
        std::fs::read(d.join("consul-agent-ca.pem")).unwrap(),
        ca_before
    );

    tls(d, &["cert", "create", "-server"]).unwrap();
    tls(d, &["cert", "create", "-server"]).unwrap();
    // A stray key alone also takes its index.
    std::fs::write(d.join("dc1-server-consul-2-key.pem"), "x").unwrap();
    tls(d, &["cert", "create", "-server"]).unwrap();
    for n in [0, 1, 3] {
        assert!(d.join(format!("dc1-server-consul-{n}.pem")).exists(), "{n}");
        assert!(
            d.join(format!("dc1-server-consul-{n}-key.pem")).exists(),
            "{n}"
        );
    }
    assert_ne!(
        read(&d.join("dc1-server-consul-0.pem")).der,
        read(&d.join("dc1-server-consul-1.pem")).der
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.join("dc1-server-consul-0-key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o077, 0, "a key is its owner's only");

    let err = tls(d, &["cert", "create", "-client", "-ca", "missing.pem"]).unwrap_err();
    assert!(
        format!("{err:#}").contains("Error reading CA missing.pem"),
        "{err:#}"
    );
    assert!(!d.join("dc1-client-consul-0.pem").exists());
}

/// HTTPS settings naming `cert` and `key` in `dir`, checked against the CA.
fn https(dir: &Path, cert: &str, key: &str) -> TlsSettings {
    TlsSettings {
        https: TlsProtocol {
            ca_file: Some(dir.join("consul-agent-ca.pem")),
            cert_file: Some(dir.join(cert)),
            key_file: Some(dir.join(key)),
            verify_incoming: true,
            ..TlsProtocol::default()
        },
        source: "agent.json".into(),
        ..TlsSettings::default()
    }
}

fn load_error(settings: TlsSettings) -> String {
    Tls::load(settings, "dc1", "consul.")
        .expect_err("refused")
        .to_string()
}

#[test]
fn the_agent_loads_them_and_names_the_key_and_file_of_what_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tls(d, &["ca", "create"]).unwrap();
    tls(d, &["cert", "create", "-server"]).unwrap();
    tls(d, &["cert", "create", "-client"]).unwrap();
    let good = Tls::load(
        https(d, "dc1-server-consul-0.pem", "dc1-server-consul-0-key.pem"),
        "dc1",
        "consul.",
    )
    .unwrap();
    assert!(good.https_server().is_some());
    assert!(
        good.rpc_server().is_none(),
        "internal_rpc has no certificate"
    );
    assert_eq!(good.server_name().to_str(), "server.dc1.consul");
    // A directory of CAs (`ca_path`) serves as well as one file.
    std::fs::create_dir(d.join("cas")).unwrap();
    std::fs::copy(d.join("consul-agent-ca.pem"), d.join("cas/ca.pem")).unwrap();
    let mut by_dir = https(d, "dc1-server-consul-0.pem", "dc1-server-consul-0-key.pem");
    (by_dir.https.ca_file, by_dir.https.ca_path) = (None, Some(d.join("cas")));
    assert!(Tls::load(by_dir, "dc1", "consul").is_ok());

    let path = |f: &str| -> PathBuf { d.join(f) };
    let e = load_error(https(
        d,
        "dc1-server-consul-0.pem",
        "dc1-client-consul-0-key.pem",
    ));
    assert_eq!(
        e,
        format!(
            "tls.https.key_file (agent.json): {}: this key does not match the certificate in {}",
            path("dc1-client-consul-0-key.pem").display(),
            path("dc1-server-consul-0.pem").display()
        )
    );
    let e = load_error(https(d, "nope.pem", "dc1-server-consul-0-key.pem"));
    assert!(
        e.starts_with(&format!(
            "tls.https.cert_file (agent.json): {}: cannot read it: ",
            path("nope.pem").display()
        )),
        "{e}"
    );
    std::fs::write(d.join("junk.pem"), "not a certificate\n").unwrap();
    let e = load_error(https(d, "junk.pem", "dc1-server-consul-0-key.pem"));
    assert_eq!(
        e,
        format!(
            "tls.https.cert_file (agent.json): {}: holds no PEM CERTIFICATE block",
            path("junk.pem").display()
        )
    );
    let mut bad_ca = https(d, "dc1-server-consul-0.pem", "dc1-server-consul-0-key.pem");
    bad_ca.https.ca_file = Some(d.join("dc1-server-consul-0-key.pem"));
    let e = load_error(bad_ca);
    assert!(e.starts_with("tls.https.ca_file (agent.json): "), "{e}");
}

/// Server RPC settings: the CA, `who`'s certificate, and the checks.
fn rpc(dir: &Path, who: Option<&str>, verify_server_hostname: bool) -> Tls {
    let settings = TlsSettings {
        internal_rpc: TlsProtocol {
            ca_file: Some(dir.join("consul-agent-ca.pem")),
            cert_file: who.map(|w| dir.join(format!("{w}.pem"))),
            key_file: who.map(|w| dir.join(format!("{w}-key.pem"))),
            verify_incoming: true,
            verify_outgoing: true,
            verify_server_hostname,
            ca_path: None,
        },
        source: "agent.json".into(),
        ..TlsSettings::default()
    };
    Tls::load(settings, "dc1", "consul").unwrap()
}

/// One handshake over an in-memory pipe between `server`'s accepting side
/// and `client`'s dialling side: the role the server sees, or why either
/// side failed.
async fn handshake(server: &Tls, client: &Tls) -> Result<PeerRole, String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server.rpc_server().unwrap());
    let connector = tokio_rustls::TlsConnector::from(client.rpc_client().unwrap());
    let name = client.server_name().clone();
    let (accepted, dialled) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
    // The side that refused says why; the other only hears an alert.
    dialled.map_err(|e| format!("client: {e}"))?;
    let accepted = accepted.map_err(|e| format!("server: {e}"))?;
    Ok(server.peer_role(accepted.get_ref().1.peer_certificates()))
}

#[tokio::test]
async fn server_rpc_configs_verify_both_ends_and_tell_a_server_from_a_client() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tls(d, &["ca", "create"]).unwrap();
    tls(d, &["cert", "create", "-server"]).unwrap();
    tls(d, &["cert", "create", "-client"]).unwrap();
    let server = rpc(d, Some("dc1-server-consul-0"), true);
    let client_agent = rpc(d, Some("dc1-client-consul-0"), true);

    // A server dialling a server: accepted, and seen as a server.
    assert_eq!(handshake(&server, &server).await, Ok(PeerRole::Server));
    // A client agent: accepted, but only as a client.
    assert_eq!(
        handshake(&server, &client_agent).await,
        Ok(PeerRole::Client)
    );
    // No certificate at all: refused by verify_incoming.
    let anonymous = rpc(d, None, true);
    let e = handshake(&server, &anonymous).await.unwrap_err();
    assert!(e.contains("server:"), "{e}");
    // A client's certificate acting as a server fails
    // verify_server_hostname on the dialling side, but passes a dialler
    // that checks the chain only.
    let e = handshake(&client_agent, &server).await.unwrap_err();
    assert!(
        e.contains("client:") && e.contains("server.dc1.consul"),
        "{e}"
    );
    let chain_only = rpc(d, Some("dc1-server-consul-0"), false);
    assert_eq!(
        handshake(&client_agent, &chain_only).await,
        Ok(PeerRole::Server)
    );
    // Another CA's server certificate is refused even with the right name.
    let other = tempfile::tempdir().unwrap();
    tls(other.path(), &["ca", "create"]).unwrap();
    tls(other.path(), &["cert", "create", "-server"]).unwrap();
    let stranger = rpc(other.path(), Some("dc1-server-consul-0"), true);
    assert!(handshake(&stranger, &server).await.is_err());
    assert!(handshake(&server, &stranger).await.is_err());
}
