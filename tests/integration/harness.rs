//! Runs the real `trellis` binary on loopback for tests.
//!
//! Each agent gets its own 127.0.0.x address and port 0 for every listener;
//! the bound addresses are read back from the agent's fixed-form
//! `listening dns=… http=… server=…` log line. Agents are killed on drop.
//! A command prefix (such as `ip netns exec NS`) runs an agent elsewhere.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

/// The next loopback host number; every agent in this test binary gets its own.
static NEXT_HOST: AtomicU8 = AtomicU8::new(2);

/// The addresses (A and AAAA) of an answer, sorted.
pub(crate) fn a_records(m: &Message) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::A(a) => Some(IpAddr::V4(a.0)),
            hickory_proto::rr::RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// A fresh loopback address, 127.0.0.2 and up.
pub(crate) fn next_loopback() -> IpAddr {
    let n = NEXT_HOST.fetch_add(1, Ordering::Relaxed);
    assert!(n < 250, "ran out of loopback addresses for test agents");
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// One running agent process.
pub(crate) struct TestAgent {
    child: Child,
    /// The loopback address the agent binds everything to.
    pub(crate) ip: IpAddr,
    /// Bound DNS address (UDP and TCP).
    pub(crate) dns: SocketAddr,
    /// Bound HTTP API address.
    pub(crate) http: SocketAddr,
    /// Bound server RPC address; `None` when the agent runs no server.
    pub(crate) server: Option<SocketAddr>,
    /// Everything the agent logged, for failure messages.
    log: Arc<Mutex<String>>,
    /// The arguments it was started with, for restarts.
    args: Vec<String>,
    /// Words run before the binary (e.g. `ip netns exec NS`), kept for restarts.
    prefix: Vec<String>,
}

impl TestAgent {
    /// `trellis agent --dev` on a fresh loopback address.
    pub(crate) fn dev() -> Self {
        Self::start(&["--dev"], next_loopback())
    }

    /// A durable single server with its state in `dir`.
    pub(crate) fn server(dir: &Path, ip: IpAddr) -> Self {
        let d = dir.display().to_string();
        Self::start(
            &[
                "--server",
                "--bootstrap-expect",
                "1",
                "--node",
                "s1",
                "--data-dir",
                &d,
            ],
            ip,
        )
    }

    /// Starts the binary with `args` plus loopback address and port-0 flags,
    /// and waits until it reports its listeners.
    pub(crate) fn start(args: &[&str], ip: IpAddr) -> Self {
        Self::start_in(&[], args, ip)
    }

    /// [`Self::start`] with the binary run through `prefix`, a command that
    /// execs its arguments in place (so signals reach the agent itself).
    pub(crate) fn start_in(prefix: &[String], args: &[&str], ip: IpAddr) -> Self {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let ip_s = ip.to_string();
        for (flag, v) in [
            ("--bind", ip_s.as_str()),
            ("--client", ip_s.as_str()),
            ("--dns-port", "0"),
            ("--http-port", "0"),
            ("--server-port", "0"),
            ("--serf-lan-port", "0"),
            ("--serf-wan-port", "0"),
        ] {
            if !all.iter().any(|a| a == flag) {
                all.push(flag.into());
                all.push(v.into());
            }
        }
        Self::spawn(prefix.to_vec(), all, ip)
    }

    fn spawn(prefix: Vec<String>, args: Vec<String>, ip: IpAddr) -> Self {
        // TRELLIS_TEST_BIN runs another build of the binary: in a target dir
        // shared by several worktrees, `target/debug/trellis` is whichever
        // was built last, while `deps/trellis-<hash>` is this worktree's.
        let bin = std::env::var("TRELLIS_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_trellis").to_string());
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        // TRELLIS_TEST_LOG raises the agents' log level when chasing a failure.
        let filter =
            std::env::var("TRELLIS_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into());
        let mut child = cmd
            .arg("agent")
            .args(&args)
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn trellis");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addrs) = parse_listening(&line) {
                    let _ = tx.send(addrs);
                }
                let mut l = log2.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        });
        let Ok((dns, http, server)) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let status = child.wait();
            // Give the reader a moment to drain what the child printed.
            std::thread::sleep(Duration::from_millis(50));
            panic!(
                "agent {args:?} did not report its listeners (exit: {status:?}); log:\n{}",
                log.lock().unwrap_or_else(|e| e.into_inner())
            );
        };
        Self {
            child,
            ip,
            dns,
            http,
            server,
            log,
            args,
            prefix,
        }
    }

    /// The agent's log so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGKILL and reap: the crash case.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit status.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, libc::SIGTERM);
        self.child.wait().expect("wait for agent")
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP: the process stays, silent, as if its machine hung.
    pub(crate) fn pause(&self) {
        signal(&self.child, libc::SIGSTOP);
    }

    /// SIGCONT after [`Self::pause`].
    pub(crate) fn resume(&self) {
        signal(&self.child, libc::SIGCONT);
    }

    /// Starts a new process with the same arguments (and so the same data dir)
    /// after this one was killed or terminated. Ports given as 0 are new.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let (prefix, args) = (self.prefix.clone(), self.args.clone());
        // Keep the old log: a failure after a restart is often explained by
        // what the previous incarnation did.
        let old = self.log();
        *self = Self::spawn(prefix, args, self.ip);
        let mut l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        *l = format!("{old}---- restarted ----\n{l}");
    }

    /// [`Self::restart`] with the value of `flag` replaced by `value` (added
    /// when absent): the same machine, reconfigured.
    pub(crate) fn restart_with(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(k) if k + 1 < self.args.len() => self.args[k + 1] = value.to_string(),
            _ => self.args.extend([flag.to_string(), value.to_string()]),
        }
        self.restart();
    }

    /// `http://<http addr><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Sends one DNS query over UDP and returns the parsed response.
    pub(crate) fn query_udp(&self, name: &str, rtype: RecordType) -> Message {
        let q = query_message(name, rtype, None);
        udp_exchange(self.dns, &q.to_vec().expect("encode query"))
    }

    /// Sends one DNS query over TCP and returns the parsed response.
    pub(crate) fn query_tcp(&self, name: &str, rtype: RecordType) -> Message {
        let q = query_message(name, rtype, None);
        tcp_exchange(self.dns, &q.to_vec().expect("encode query"))
    }

    /// Runs `dig` against the agent with extra arguments; returns stdout.
    pub(crate) fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .arg(format!("@{}", self.dns.ip()))
            .arg("-p")
            .arg(self.dns.port().to_string())
            .args(["+time=2", "+tries=1"])
            .args(args)
            .output()
            .expect("run dig (apt-get install dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid has no memory-safety concerns.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Parses `... listening dns=IP:PORT http=IP:PORT server=IP:PORT ...`; the
/// server address is optional.
fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr, Option<SocketAddr>)> {
    let rest = &line[line.find("listening dns=")?..];
    let field = |key: &str| -> Option<SocketAddr> {
        let start = rest.find(key)? + key.len();
        let v: String = rest[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
            .collect();
        v.parse().ok()
    };
    Some((field("dns=")?, field("http=")?, field("server=")))
}

/// A recursion-desired query with a random ID, optionally with EDNS.
pub(crate) fn query_message(name: &str, rtype: RecordType, edns_size: Option<u16>) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("query name"),
        rtype,
    ));
    if let Some(size) = edns_size {
        let mut e = hickory_proto::op::Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

fn rand_id() -> u16 {
    use std::time::SystemTime;
    (SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7)
        & 0xffff) as u16
}

/// One UDP exchange with a 5 s deadline.
pub(crate) fn udp_exchange(server: SocketAddr, bytes: &[u8]) -> Message {
    let sock = std::net::UdpSocket::bind((server.ip(), 0)).expect("bind udp");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    sock.send_to(bytes, server).expect("send");
    let mut buf = [0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).expect("dns answer over udp");
    Message::from_vec(&buf[..n]).expect("parse answer")
}

/// One TCP exchange (2-byte length prefix) with a 5 s deadline.
pub(crate) fn tcp_exchange(server: SocketAddr, bytes: &[u8]) -> Message {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect tcp");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    s.write_all(&framed).expect("write");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("read length");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).expect("read answer");
    Message::from_vec(&buf).expect("parse answer")
}

/// Polls `f` until it returns `Some` or `timeout` passes; panics with `what`.
pub(crate) async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A temporary directory that is removed on drop.
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The repository root, for `zones/` and example configs.
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
