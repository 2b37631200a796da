//! TLS with real processes: `trellis tls` writes a CA and certificates
//! that openssl accepts; a dev agent serves HTTPS on `ports.https` with
//! `verify_incoming`, the CLI (flags and Consul's variables) and curl reach
//! it with a client certificate and are refused without one; SIGHUP swaps
//! in a newly issued certificate without a restart, and a bad file at
//! reload keeps the old one; a key that is not its certificate's stops the
//! agent at start, naming the key and the file.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use trellis_testkit::{Agent, Listening, next_loopback, wait_until};

use crate::harness::{temp_dir, trellis};

/// How long a reload may take to show.
const RELOAD: Duration = Duration::from_secs(10);

/// `trellis <args>` run in `dir`, with none of Consul's variables from the
/// environment unless `env` sets them.
fn run_in(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = trellis().command();
    cmd.current_dir(dir).args(args);
    for var in [
        "TRELLIS_HTTP_ADDR",
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_SSL",
        "CONSUL_HTTP_SSL_VERIFY",
        "CONSUL_CACERT",
        "CONSUL_CAPATH",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run trellis")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a tool is installed (`tool args` runs and succeeds).
fn installed(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A CA, two server certificates (index 0 and 1) that also name `ip`, a
/// client's and a CLI's, made by the real binary in `dir`.
fn make_certs(dir: &Path, ip: IpAddr) {
    let ip = format!("-additional-ipaddress={ip}");
    ok(run_in(dir, &["tls", "ca", "create"], &[]));
    ok(run_in(dir, &["tls", "cert", "create", "-server", &ip], &[]));
    ok(run_in(dir, &["tls", "cert", "create", "-server", &ip], &[]));
    ok(run_in(dir, &["tls", "cert", "create", "-client"], &[]));
    ok(run_in(dir, &["tls", "cert", "create", "-cli"], &[]));
}

#[test]
fn tls_commands_write_consuls_files_which_openssl_verifies() {
    let dir = temp_dir();
    let d = dir.path();
    make_certs(d, next_loopback());
    let again = run_in(d, &["tls", "ca", "create"], &[]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("consul-agent-ca.pem already exists."),
        "{}",
        text(&again)
    );
    let mut names: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "consul-agent-ca-key.pem",
            "consul-agent-ca.pem",
            "dc1-cli-consul-0-key.pem",
            "dc1-cli-consul-0.pem",
            "dc1-client-consul-0-key.pem",
            "dc1-client-consul-0.pem",
            "dc1-server-consul-0-key.pem",
            "dc1-server-consul-0.pem",
            "dc1-server-consul-1-key.pem",
            "dc1-server-consul-1.pem",
        ]
    );
    // openssl is the independent check when there is one; the unit tests
    // read the same files back with x509-parser either way.
    if !installed("openssl", &["version"]) {
        eprintln!("openssl is not installed: its checks are skipped");
        return;
    }
    let verify = Command::new("openssl")
        .current_dir(d)
        .args([
            "verify",
            "-CAfile",
            "consul-agent-ca.pem",
            "dc1-server-consul-0.pem",
            "dc1-client-consul-0.pem",
            "dc1-cli-consul-0.pem",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{said}");
    assert_eq!(said.matches(": OK").count(), 3, "{said}");
    let server = Command::new("openssl")
        .current_dir(d)
        .args(["x509", "-noout", "-text", "-in", "dc1-server-consul-0.pem"])
        .output()
        .unwrap();
    let server = String::from_utf8_lossy(&server.stdout);
    assert!(
        server.contains("DNS:server.dc1.consul, DNS:localhost, IP Address:127.0.0.1"),
        "{server}"
    );
    assert!(
        server.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{server}"
    );
    // A server certificate is also a client certificate, as Consul's.
    for purpose in ["sslserver", "sslclient"] {
        let v = Command::new("openssl")
            .current_dir(d)
            .args([
                "verify",
                "-purpose",
                purpose,
                "-CAfile",
                "consul-agent-ca.pem",
            ])
            .arg("dc1-server-consul-0.pem")
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "{purpose}: {}",
            String::from_utf8_lossy(&v.stdout)
        );
    }
}

/// A dev agent on `ip` serving HTTPS from `dir`'s `dc1-server-consul-0`
/// with `verify_incoming`, its config written to `dir/agent.json`.
fn https_agent(dir: &Path, ip: IpAddr) -> Agent {
    let p = |f: &str| dir.join(f).display().to_string();
    let config = serde_json::json!({
        "tls": {
            "defaults": {
                "ca_file": p("consul-agent-ca.pem"),
                "cert_file": p("dc1-server-consul-0.pem"),
                "key_file": p("dc1-server-consul-0-key.pem"),
                "verify_incoming": true,
                "verify_outgoing": true
            },
            "internal_rpc": { "verify_server_hostname": true }
        }
    });
    let file = dir.join("agent.json");
    std::fs::write(&file, config.to_string()).unwrap();
    trellis()
        .dev()
        .node("tls1")
        .ip(ip)
        .config_file(&file)
        .arg("--https-port", "0")
        .start()
}

fn https_addr(agent: &Agent) -> SocketAddr {
    agent
        .addrs()
        .https
        .expect("the agent reports an https address")
}

/// The flags that reach `agent` over HTTPS, presenting `who`'s certificate
/// (`None`: none).
fn https_flags(dir: &Path, agent: &Agent, who: Option<&str>) -> Vec<String> {
    let mut flags = vec![
        "-http-addr".to_string(),
        format!("https://{}", https_addr(agent)),
        "-ca-file".to_string(),
        dir.join("consul-agent-ca.pem").display().to_string(),
    ];
    if let Some(who) = who {
        flags.push(format!(
            "-client-cert={}",
            dir.join(format!("{who}.pem")).display()
        ));
        flags.push(format!(
            "-client-key={}",
            dir.join(format!("{who}-key.pem")).display()
        ));
    }
    flags
}

fn args<'a>(head: &[&'a str], flags: &'a [String], tail: &[&'a str]) -> Vec<&'a str> {
    head.iter()
        .copied()
        .chain(flags.iter().map(String::as_str))
        .chain(tail.iter().copied())
        .collect()
}

#[test]
fn https_with_verify_incoming_serves_the_cli_and_curl_and_refuses_a_client_without_a_certificate() {
    let dir = temp_dir();
    let d = dir.path();
    let ip = next_loopback();
    make_certs(d, ip);
    let agent = https_agent(d, ip);
    let node = agent.name().to_string();

    // `members` over HTTPS with the flags, Consul's one-dash spelling,
    // while 32 connections sit silent in their handshakes: those run
    // beside the accept loop, so they hold up no one else.
    let silent: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(https_addr(&agent)).expect("connect"))
        .collect();
    let flags = https_flags(d, &agent, Some("dc1-cli-consul-0"));
    let members = ok(run_in(d, &args(&["members"], &flags, &[]), &[]));
    // Answered while every silent handshake was still pending: had the
    // command waited behind them, the server would have timed them out and
    // closed them first.
    for mut conn in silent {
        conn.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        let pending = matches!(
            std::io::Read::read(&mut conn, &mut byte),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        );
        assert!(
            pending,
            "a silent handshake was closed before members answered"
        );
    }
    assert!(members.contains("alive"), "{members}");
    assert!(members.contains("server"), "{members}");

    // `kv put` / `kv get` with Consul's variables alone: an address without
    // a scheme turned HTTPS by CONSUL_HTTP_SSL.
    let env = [
        ("CONSUL_HTTP_ADDR", https_addr(&agent).to_string()),
        ("CONSUL_HTTP_SSL", "true".to_string()),
        (
            "CONSUL_CACERT",
            d.join("consul-agent-ca.pem").display().to_string(),
        ),
        (
            "CONSUL_CLIENT_CERT",
            d.join("dc1-client-consul-0.pem").display().to_string(),
        ),
        (
            "CONSUL_CLIENT_KEY",
            d.join("dc1-client-consul-0-key.pem").display().to_string(),
        ),
    ];
    let put = ok(run_in(d, &["kv", "put", "app/db", "primary"], &env));
    assert!(put.contains("Success! Data written to: app/db"), "{put}");
    assert_eq!(
        ok(run_in(d, &["kv", "get", "app/db"], &env)).trim(),
        "primary"
    );

    // With -tls-server-name that name is checked instead of the address:
    // one the certificate carries passes, one it lacks fails although the
    // address is in the certificate.
    let named = [
        "-http-addr".to_string(),
        format!("https://{}", https_addr(&agent)),
        "-tls-server-name".to_string(),
        "server.dc1.consul".to_string(),
    ];
    let named_out = run_in(d, &args(&["members"], &named, &[]), &env[2..]);
    assert!(named_out.status.success(), "{}", text(&named_out));
    let wrong = [
        named[0].clone(),
        named[1].clone(),
        named[2].clone(),
        "server.dc2.consul".into(),
    ];
    let wrong_out = run_in(d, &args(&["members"], &wrong, &[]), &env[2..]);
    assert_eq!(wrong_out.status.code(), Some(1), "{}", text(&wrong_out));

    // Without a client certificate the handshake is refused.
    let bare = https_flags(d, &agent, None);
    let refused = run_in(d, &args(&["members"], &bare, &[]), &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("CertificateRequired"),
        "{}",
        text(&refused)
    );
    // Nor does a CA the agent's certificate is not signed by get through.
    let other = temp_dir();
    ok(run_in(other.path(), &["tls", "ca", "create"], &[]));
    let mut stranger = https_flags(d, &agent, Some("dc1-cli-consul-0"));
    stranger[3] = other
        .path()
        .join("consul-agent-ca.pem")
        .display()
        .to_string();
    let untrusted = run_in(d, &args(&["members"], &stranger, &[]), &[]);
    assert_eq!(untrusted.status.code(), Some(1), "{}", text(&untrusted));
    // Unless told to check nothing, as Consul's CONSUL_HTTP_SSL_VERIFY.
    let unchecked = [("CONSUL_HTTP_SSL_VERIFY", "false".to_string())];
    ok(run_in(d, &args(&["members"], &stranger, &[]), &unchecked));

    // Plain HTTP keeps serving beside HTTPS.
    let plain = run_in(
        d,
        &["kv", "get", "app/db"],
        &[("CONSUL_HTTP_ADDR", agent.addrs().http.to_string())],
    );
    assert_eq!(ok(plain).trim(), "primary");

    if !installed("curl", &["--version"]) {
        eprintln!("curl is not installed: its checks are skipped");
        return;
    }
    let url = format!("https://{}/v1/catalog/node/{node}", https_addr(&agent));
    let curl = |cert: bool| {
        let mut c = Command::new("curl");
        c.current_dir(d).args([
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--cacert",
            "consul-agent-ca.pem",
        ]);
        if cert {
            c.args([
                "--cert",
                "dc1-cli-consul-0.pem",
                "--key",
                "dc1-cli-consul-0-key.pem",
            ]);
        }
        c.arg(&url).output().unwrap()
    };
    let with = curl(true);
    assert!(with.status.success(), "{}", text(&with));
    assert!(String::from_utf8_lossy(&with.stdout).contains(&node));
    let without = curl(false);
    assert!(!without.status.success(), "{}", text(&without));
}

/// The serial of the certificate the agent serves at `addr`, read by a
/// rustls handshake presenting the client certificate.
fn served_serial(dir: &Path, addr: SocketAddr) -> Result<String, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("consul-agent-ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_file_iter(dir.join("dc1-cli-consul-0.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("dc1-cli-consul-0-key.pem")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("server.dc1.consul").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    let der = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no peer certificate")?;
    serial_of(der)
}

fn serial_of(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    Ok(cert.raw_serial_as_string())
}

fn file_serial(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).unwrap();
    serial_of(&pem.contents).unwrap()
}

fn sighup(agent: &Agent) {
    let pid = i32::try_from(agent.pid()).unwrap();
    // SAFETY: kill(2) with a live child's pid and a valid signal number.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP {pid}");
}

#[test]
fn sighup_serves_a_newly_issued_certificate_without_a_restart_and_keeps_it_on_a_bad_file() {
    let dir = temp_dir();
    let d = dir.path();
    let ip = next_loopback();
    make_certs(d, ip);
    let agent = https_agent(d, ip);
    let addr = https_addr(&agent);
    let (first, second) = (
        file_serial(&d.join("dc1-server-consul-0.pem")),
        file_serial(&d.join("dc1-server-consul-1.pem")),
    );
    assert_ne!(first, second);
    assert_eq!(served_serial(d, addr).unwrap(), first);

    // Issue the new certificate where the configuration points, then HUP.
    let swap = |from: &str, to: &str| {
        let tmp: PathBuf = d.join(format!("{to}.new"));
        std::fs::copy(d.join(from), &tmp).unwrap();
        std::fs::rename(&tmp, d.join(to)).unwrap();
    };
    swap("dc1-server-consul-1.pem", "dc1-server-consul-0.pem");
    swap("dc1-server-consul-1-key.pem", "dc1-server-consul-0-key.pem");
    let pid = agent.pid();
    sighup(&agent);
    wait_until("the new certificate served", RELOAD, || {
        let s = served_serial(d, addr)?;
        if s == second {
            Ok(())
        } else {
            Err(format!("serving {s}"))
        }
    });
    assert_eq!(agent.pid(), pid);
    assert_eq!(Listening::count_in(&agent.log()), 1, "no restart");
    assert!(
        agent
            .log()
            .contains("SIGHUP: reloaded TLS certificates and keys")
    );

    // A key file that went bad: the reload fails, naming it, and the
    // certificate in force stays.
    std::fs::write(d.join("dc1-server-consul-0-key.pem"), "garbage\n").unwrap();
    sighup(&agent);
    let bad = d.join("dc1-server-consul-0-key.pem").display().to_string();
    let line = wait_until("the failed reload logged", RELOAD, || {
        agent
            .log()
            .lines()
            .find(|l| l.contains("TLS reload failed"))
            .map(str::to_string)
            .ok_or_else(|| "not yet".to_string())
    });
    assert!(line.contains("tls.https.key_file"), "{line}");
    assert!(line.contains(&bad), "{line}");
    assert_eq!(served_serial(d, addr).unwrap(), second);
    agent.check_running().unwrap();
}

#[test]
fn an_agent_whose_key_is_not_its_certificates_does_not_start_and_says_which() {
    let dir = temp_dir();
    let d = dir.path();
    make_certs(d, next_loopback());
    let p = |f: &str| d.join(f).display().to_string();
    let config = serde_json::json!({
        "tls": { "https": {
            "cert_file": p("dc1-server-consul-0.pem"),
            "key_file": p("dc1-client-consul-0-key.pem")
        } },
        "ports": { "https": 0 }
    });
    let file = d.join("agent.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["agent", "--dev", "--dns-port", "0", "--http-port", "0"])
        .args([
            "--serf-lan-port",
            "0",
            "--server-port",
            "0",
            "--config-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "Error: tls.https.key_file ({}): {}: this key does not match the certificate in {}",
            file.display(),
            p("dc1-client-consul-0-key.pem"),
            p("dc1-server-consul-0.pem")
        )),
        "{stderr}"
    );
}
