//! The reference: one etcd member (Debian's etcd-server, 3.4) with its
//! data on disk, every setting at its default, driven through its JSON
//! gateway.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use trellis_testkit::net::free_tcp_port;
use trellis_testkit::{Log, Process};

use crate::procs::on_path;
use crate::store::{Api, Kind, Store};

/// Its address, clear of the tests' and the other benchmarks'.
const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 42);

/// The running member.
pub(crate) struct Etcd {
    data_dir: PathBuf,
    log: PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
    proc: Option<Process>,
    value_bytes: usize,
}

/// The version line of the installed etcd, or how to install it.
pub(crate) fn version() -> anyhow::Result<String> {
    if !on_path("etcd") {
        bail!(
            "etcd is not installed. On Debian or Ubuntu: `sudo apt-get install -y etcd-server` \
             (or run benches/cluster_vs_etcd/run.sh once, which installs it)"
        );
    }
    let out = Command::new("etcd")
        .arg("--version")
        .output()
        .context("running etcd --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or("etcd (unknown version)")
        .to_string())
}

impl Etcd {
    /// Starts the member with its data in `dir` (not waiting for it to
    /// serve: the first load request waits for that).
    pub(crate) fn start(dir: &Path, value_bytes: usize) -> anyhow::Result<Self> {
        let mut e = Self {
            data_dir: dir.join("etcd"),
            log: dir.join("etcd.log"),
            client: SocketAddr::from((IP, free_tcp_port(IP)?)),
            peer: SocketAddr::from((IP, free_tcp_port(IP)?)),
            proc: None,
            value_bytes,
        };
        e.spawn()?;
        Ok(e)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg("m1")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg(format!("--listen-client-urls=http://{}", self.client))
            .arg(format!("--advertise-client-urls=http://{}", self.client))
            .arg(format!("--listen-peer-urls=http://{}", self.peer))
            .arg(format!(
                "--initial-advertise-peer-urls=http://{}",
                self.peer
            ))
            .arg(format!("--initial-cluster=m1=http://{}", self.peer))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=trellis-bench-million");
        self.proc = Some(Process::spawn("etcd m1", &mut cmd, &Log::file(&self.log))?);
        Ok(())
    }
}

impl Store for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Process::pid)
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn api(&self) -> Api {
        Api {
            kind: Kind::Etcd,
            addr: self.client,
            value_bytes: self.value_bytes,
        }
    }

    /// The bbolt db file: etcd's whole state, which is what `etcdctl
    /// snapshot save` copies (its Raft `.snap` files only appear every
    /// 100,000 entries).
    fn snapshot_size(&self) -> anyhow::Result<(u64, String)> {
        let db = self.data_dir.join("member/snap/db");
        let size = std::fs::metadata(&db)
            .with_context(|| format!("reading {}", db.display()))?
            .len();
        Ok((size, "db file (what `etcdctl snapshot save` copies)".into()))
    }

    fn stop(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.terminate();
        }
    }

    async fn start_again(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
        self.spawn()
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.check_running(),
            None => bail!("etcd is not running"),
        }
    }

    fn log_tail(&self) -> String {
        Log::file(&self.log).tail(30)
    }
}
