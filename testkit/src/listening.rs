//! The agent's `listening dns=… http=… https=… server=… serf_lan=… serf_wan=…` log line, parsed
//! in this one place into the addresses it bound.
//!
//! The agent prints the line once every listener serves; with port 0 it is
//! the only way to learn the ports the kernel picked.

use std::net::SocketAddr;

/// What marks the line among the agent's logs.
pub const MARKER: &str = "listening dns=";

/// The addresses an agent reported in its `listening` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// DNS, UDP and TCP on one port.
    pub dns: SocketAddr,
    /// The HTTP API.
    pub http: SocketAddr,
    /// The HTTPS API; `None` unless `ports.https` is on (printed as `?`).
    pub https: Option<SocketAddr>,
    /// Server RPC; `None` on an agent that runs no server (printed as `?`).
    pub server: Option<SocketAddr>,
    /// LAN gossip (UDP); `None` when the agent runs no gossip.
    pub serf_lan: Option<SocketAddr>,
    /// WAN gossip (UDP); `None` on a client agent, a server with the WAN
    /// pool off, or a build before the WAN pool.
    pub serf_wan: Option<SocketAddr>,
}

impl Listening {
    /// Parses one log line; `None` unless it is a `listening` line with at
    /// least `dns=` and `http=` addresses. Colour sequences are ignored, in
    /// case the logger colours a file anyway.
    pub fn parse(line: &str) -> Option<Self> {
        let line = strip_ansi(line);
        let rest = &line[line.find(MARKER)?..];
        let rest = rest.strip_prefix("listening ")?;
        let field = |key: &str| -> Option<SocketAddr> {
            let v = rest
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))?;
            v.trim_end_matches(['"', ',', '}']).parse().ok()
        };
        Some(Self {
            dns: field("dns=")?,
            http: field("http=")?,
            https: field("https="),
            server: field("server="),
            serf_lan: field("serf_lan="),
            serf_wan: field("serf_wan="),
        })
    }

    /// The last `listening` line in `log`, parsed.
    pub fn last_in(log: &str) -> Option<Self> {
        log.lines().rev().find_map(Self::parse)
    }

    /// How many `listening` lines `log` holds: one per start of the agent
    /// whose log it is.
    pub fn count_in(log: &str) -> usize {
        log.lines().filter(|l| l.contains(MARKER)).count()
    }
}

/// `s` without terminal colour sequences (CSI: ESC [ params final-byte).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_line_gives_every_address() {
        let line = "2026-11-26T15:00:00Z  INFO trellis::agent: listening dns=127.0.0.2:40000 \
                    http=127.0.0.2:40001 https=127.0.0.2:40004 server=127.0.0.2:40002 \
                    serf_lan=127.0.0.2:40003 serf_wan=127.0.0.2:40005 node=n dc=dc1 ready_in_ms=12";
        let l = Listening::parse(line).expect("a well-formed line parses");
        assert_eq!(l.dns.to_string(), "127.0.0.2:40000");
        assert_eq!(l.http.to_string(), "127.0.0.2:40001");
        assert_eq!(l.https.map(|a| a.port()), Some(40004));
        assert_eq!(
            l.server.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.2:40002")
        );
        assert_eq!(
            l.serf_lan.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.2:40003")
        );
        assert_eq!(l.serf_wan.map(|a| a.port()), Some(40005));
    }

    #[test]
    fn a_client_line_has_no_server_address() {
        let line = "INFO listening dns=127.0.0.5:1 http=127.0.0.5:2 server=? serf_lan=127.0.0.5:3 \
                    node=c1 dc=dc1 ready_in_ms=3";
        let l = Listening::parse(line).expect("parses");
        assert_eq!(l.server, None);
        assert_eq!(l.https, None);
        assert!(l.serf_lan.is_some());
        assert_eq!(l.serf_wan, None, "no serf_wan field");
    }

    #[test]
    fn colours_and_json_quoting_are_ignored() {
        let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m listening \
                        dns=127.0.0.1:53 http=127.0.0.1:80 server=?";
        assert!(Listening::parse(coloured).is_some());
        let json = r#"{"fields":{"message":"listening dns=127.0.0.1:53 http=127.0.0.1:80 server=127.0.0.1:1"}}"#;
        let l = Listening::parse(json).expect("parses");
        assert_eq!(l.server.map(|a| a.port()), Some(1));
    }

    #[test]
    fn other_lines_are_not_listening_lines() {
        assert_eq!(Listening::parse("listening http=1.2.3.4:5"), None);
        assert_eq!(Listening::parse("starting agent"), None);
        let log = "a\nINFO listening dns=127.0.0.1:1 http=127.0.0.1:2\nb\n\
                   INFO listening dns=127.0.0.1:3 http=127.0.0.1:4\n";
        assert_eq!(Listening::count_in(log), 2);
        assert_eq!(Listening::last_in(log).map(|l| l.dns.port()), Some(3));
    }
}
