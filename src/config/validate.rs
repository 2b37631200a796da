//! Value parsers shared by the resolver: each turns the text a file or flag
//! gave into a typed value, or into a [`ConfigError::Invalid`] that names
//! the key and where the value came from.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::ConfigError;
use super::settings::{ENCRYPT_KEY_LEN, EncryptKey};
use crate::definition::parse_duration;

/// Parses `IP` or `IP:port` (IPv6 as `[::1]:53`), with `default_port`.
pub fn parse_socket(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    Err(format!("{s:?} is not an IP address or IP:port"))
}

/// An optional duration setting: `default` when unset.
pub(super) fn duration(
    key: &'static str,
    source_name: impl FnOnce() -> String,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|message| ConfigError::Invalid {
            key,
            source_name: source_name(),
            message,
        }),
    }
}

/// An optional IP address setting: `default` when unset.
pub(super) fn ip(
    key: &'static str,
    source_name: &str,
    v: Option<&str>,
    default: IpAddr,
) -> Result<IpAddr, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| ConfigError::Invalid {
            key,
            source_name: source_name.to_string(),
            message: format!("{s:?} is not an IP address"),
        }),
    }
}

/// A DNS label: what a node name, datacenter or domain part must be to be
/// answerable in DNS.
pub(super) fn label(key: &'static str, source_name: &str, v: &str) -> Result<(), ConfigError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key,
            source_name: source_name.to_string(),
            message: format!(
                "{v:?} is not a valid DNS label (letters, digits, '-', '_'; at most 63)"
            ),
        })
    }
}

/// A gossip key: standard base64 of exactly 32 bytes, surrounding
/// whitespace ignored (keys are often pasted from files with a trailing
/// newline). The messages are the ones gossip gives for a bad key.
pub(super) fn encrypt_key(text: &str) -> Result<EncryptKey, String> {
    let bytes = STANDARD.decode(text.trim()).map_err(|e| {
        format!("encryption key is not valid base64 ({e}); make one with `trellis keygen`")
    })?;
    let array: [u8; ENCRYPT_KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "encryption key decodes to {} bytes, AES-256 needs exactly {}; make one with \
             `trellis keygen`",
            bytes.len(),
            ENCRYPT_KEY_LEN
        )
    })?;
    Ok(EncryptKey(array))
}
