//! `tls { defaults / internal_rpc / https }` and `ports.https` resolved:
//! each protocol's keys over the defaults', then the combinations that
//! cannot work refused naming the key and the file (the files themselves
//! are read by `crate::tls` when the agent starts).

use super::file::TlsProtocolFile;
use super::resolve::Resolver;
use super::settings::{TlsProtocol, TlsSettings};
use super::{ConfigError, defaults};

/// A stanza of `tls`.
#[derive(Debug, Clone, Copy)]
enum Stanza {
    Defaults,
    InternalRpc,
    Https,
}

/// The dotted key of `field` in `stanza`, as a `'static` string for
/// [`ConfigError::Invalid`].
macro_rules! key {
    ($stanza:expr, $field:literal) => {
        match $stanza {
            Stanza::Defaults => concat!("tls.defaults.", $field),
            Stanza::InternalRpc => concat!("tls.internal_rpc.", $field),
            Stanza::Https => concat!("tls.https.", $field),
        }
    };
}

impl Resolver<'_> {
    /// `ports.https` (or `--https-port`): `None` when -1, the default.
    pub(super) fn https_port(&self) -> Result<Option<u16>, ConfigError> {
        let (flags, f) = (self.flags, &self.layers.file);
        let from_file = f.ports.as_ref().and_then(|p| p.https);
        let port = flags
            .https_port
            .or(from_file)
            .unwrap_or(defaults::HTTPS_PORT);
        match port {
            -1 => Ok(None),
            p => u16::try_from(p)
                .map(Some)
                .map_err(|_| ConfigError::Invalid {
                    key: "ports.https",
                    source_name: self.src("ports", "--https-port", flags.https_port.is_some()),
                    message: format!("{p} is neither -1 (no HTTPS) nor a port number"),
                }),
        }
    }

    /// Both protocols' TLS settings; `https_on` says whether `ports.https`
    /// asks for an HTTPS listener, which then needs a certificate.
    pub(super) fn tls(&self, https_on: bool) -> Result<TlsSettings, ConfigError> {
        let file = self.layers.file.tls.clone().unwrap_or_default();
        let source = self.src("tls", "", false);
        let defaults = file.defaults.unwrap_or_default();
        let internal_rpc = file.internal_rpc.unwrap_or_default();
        let https = file.https.unwrap_or_default();
        for (stanza, part) in [(Stanza::Defaults, &defaults), (Stanza::Https, &https)] {
            if part.verify_server_hostname.is_some() {
                return Err(invalid(
                    key!(stanza, "verify_server_hostname"),
                    &source,
                    "verify_server_hostname is only valid in the tls.internal_rpc stanza",
                ));
            }
        }
        let internal_rpc = check(
            Stanza::InternalRpc,
            merged(&defaults, &internal_rpc),
            &source,
        )?;
        let https = check(Stanza::Https, merged(&defaults, &https), &source)?;
        if https_on && !https.has_cert() {
            return Err(ConfigError::Invalid {
                key: "ports.https",
                source_name: self.src("ports", "--https-port", self.flags.https_port.is_some()),
                message: "HTTPS needs a certificate: set cert_file and key_file in \
                          tls.https or tls.defaults"
                    .into(),
            });
        }
        Ok(TlsSettings {
            internal_rpc,
            https,
            source,
        })
    }
}

/// `over`'s keys where set, else `defaults`'.
fn merged(defaults: &TlsProtocolFile, over: &TlsProtocolFile) -> TlsProtocolFile {
    TlsProtocolFile {
        ca_file: over.ca_file.clone().or_else(|| defaults.ca_file.clone()),
        ca_path: over.ca_path.clone().or_else(|| defaults.ca_path.clone()),
        cert_file: over
            .cert_file
            .clone()
            .or_else(|| defaults.cert_file.clone()),
        key_file: over.key_file.clone().or_else(|| defaults.key_file.clone()),
        verify_incoming: over.verify_incoming.or(defaults.verify_incoming),
        verify_outgoing: over.verify_outgoing.or(defaults.verify_outgoing),
        verify_server_hostname: over.verify_server_hostname,
    }
}

/// One protocol's settings, refused when they cannot work: half a
/// certificate, or verification without a CA or without a certificate of
/// our own to present.
fn check(stanza: Stanza, f: TlsProtocolFile, source: &str) -> Result<TlsProtocol, ConfigError> {
    let verify_server_hostname = f.verify_server_hostname.unwrap_or(false);
    let p = TlsProtocol {
        ca_file: f.ca_file,
        ca_path: f.ca_path,
        cert_file: f.cert_file,
        key_file: f.key_file,
        verify_incoming: f.verify_incoming.unwrap_or(false),
        // Checking the name is checking the certificate, as Consul.
        verify_outgoing: f.verify_outgoing.unwrap_or(false) || verify_server_hostname,
        verify_server_hostname,
    };
    if p.cert_file.is_some() && p.key_file.is_none() {
        return Err(invalid(
            key!(stanza, "key_file"),
            source,
            "cert_file is set but key_file is not",
        ));
    }
    if p.key_file.is_some() && p.cert_file.is_none() {
        return Err(invalid(
            key!(stanza, "cert_file"),
            source,
            "key_file is set but cert_file is not",
        ));
    }
    if p.verify_incoming && !p.has_ca() {
        return Err(invalid(
            key!(stanza, "verify_incoming"),
            source,
            "verify_incoming needs ca_file or ca_path to check peers against",
        ));
    }
    if p.verify_incoming && !p.has_cert() {
        return Err(invalid(
            key!(stanza, "verify_incoming"),
            source,
            "verify_incoming needs cert_file and key_file to present",
        ));
    }
    if p.verify_outgoing && !p.has_ca() {
        let key = if f.verify_outgoing.unwrap_or(false) {
            key!(stanza, "verify_outgoing")
        } else {
            key!(stanza, "verify_server_hostname")
        };
        return Err(invalid(
            key,
            source,
            "verifying servers needs ca_file or ca_path to check them against",
        ));
    }
    Ok(p)
}

fn invalid(key: &'static str, source: &str, message: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        source_name: source.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::{AgentFlags, Config};

    /// Loads a client agent with one JSON file holding `json`; the error
    /// has the file's path replaced by `FILE`.
    fn load(json: &str, https_port: Option<i32>) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls.json");
        std::fs::write(&path, json).unwrap();
        let flags = AgentFlags {
            data_dir: Some("/var/lib/trellis".into()),
            config_file: vec![path.clone()],
            https_port,
            ..AgentFlags::default()
        };
        Config::load(&flags).map_err(|e| e.to_string().replace(&path.display().to_string(), "FILE"))
    }

    #[test]
    fn each_protocol_takes_its_own_keys_over_the_defaults() {
        let c = load(
            r#"{"tls": {
                "defaults": {"ca_file": "/ca.pem", "cert_file": "/d.pem", "key_file": "/d-key.pem",
                             "verify_incoming": true},
                "internal_rpc": {"verify_server_hostname": true},
                "https": {"cert_file": "/h.pem", "key_file": "/h-key.pem", "verify_incoming": false}
            }, "ports": {"https": 8501}}"#,
            None,
        )
        .unwrap();
        let (rpc, https) = (&c.tls.internal_rpc, &c.tls.https);
        assert_eq!(rpc.cert_file, Some(PathBuf::from("/d.pem")));
        assert!(rpc.verify_incoming);
        assert!(rpc.verify_server_hostname);
        assert!(
            rpc.verify_outgoing,
            "checking the name checks the certificate"
        );
        assert_eq!(https.cert_file, Some(PathBuf::from("/h.pem")));
        assert_eq!(https.ca_file, Some(PathBuf::from("/ca.pem")));
        assert!(!https.verify_incoming);
        assert!(!https.verify_server_hostname);
        assert_eq!(c.network.ports.https, Some(8501));
        assert!(c.tls.source.ends_with("tls.json"));
    }

    #[test]
    fn https_is_off_by_default_and_minus_one_turns_it_off() {
        assert_eq!(load("{}", None).unwrap().network.ports.https, None);
        let off = r#"{"ports": {"https": 8501}}"#;
        assert_eq!(load(off, Some(-1)).unwrap().network.ports.https, None);
    }

    #[test]
    fn combinations_that_cannot_work_are_refused_naming_the_key_and_file() {
        let cases = [
            (
                r#"{"tls": {"defaults": {"verify_server_hostname": true}}}"#,
                None,
                "tls.defaults.verify_server_hostname (FILE): verify_server_hostname is only \
                 valid in the tls.internal_rpc stanza",
            ),
            (
                r#"{"tls": {"https": {"cert_file": "/c.pem"}}}"#,
                None,
                "tls.https.key_file (FILE): cert_file is set but key_file is not",
            ),
            (
                r#"{"tls": {"defaults": {"cert_file": "/c.pem", "key_file": "/k.pem",
                    "verify_incoming": true}}}"#,
                None,
                "tls.internal_rpc.verify_incoming (FILE): verify_incoming needs ca_file or \
                 ca_path to check peers against",
            ),
            (
                r#"{"tls": {"internal_rpc": {"verify_server_hostname": true}}}"#,
                None,
                "tls.internal_rpc.verify_server_hostname (FILE): verifying servers needs \
                 ca_file or ca_path to check them against",
            ),
            (
                r#"{"ports": {"https": 8501}}"#,
                None,
                "ports.https (FILE): HTTPS needs a certificate: set cert_file and key_file in \
                 tls.https or tls.defaults",
            ),
            (
                "{}",
                Some(70000),
                "ports.https (--https-port): 70000 is neither -1 (no HTTPS) nor a port number",
            ),
        ];
        for (json, flag, want) in cases {
            assert_eq!(load(json, flag).unwrap_err(), want, "{json}");
        }
    }
}
