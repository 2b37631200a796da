//! The trellis under test: one durable server (`agent --server
//! --bootstrap-expect 1` with a data dir), fixed ports so that a restart
//! keeps its address.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use redb::{ReadableDatabase as _, ReadableTableMetadata as _};
use trellis_testkit::net::{free_tcp_port, free_udp_port};
use trellis_testkit::{Agent, Trellis as Bin};

use crate::store::{Api, Kind, Store};

/// The binary cargo built for this benchmark (release profile).
const TRELLIS: &str = env!("CARGO_BIN_EXE_trellis");
/// Its address, clear of the tests' and the other benchmarks'.
const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 3, 41);

/// The running server.
pub(crate) struct Trellis {
    agent: Agent,
    data_dir: PathBuf,
    http: SocketAddr,
    value_bytes: usize,
}

impl Trellis {
    /// Starts the server with its data in `dir` and waits for its
    /// `listening` line. `snapshot_threshold` is passed as
    /// `--raft-snapshot-threshold` when set.
    pub(crate) async fn start(
        dir: &Path,
        snapshot_threshold: Option<u64>,
        value_bytes: usize,
    ) -> anyhow::Result<Self> {
        let data_dir = dir.join("trellis");
        let http_port = free_tcp_port(IP)?;
        let mut spec = Bin::from_env_or("TRELLIS_BIN", TRELLIS)
            .server()
            .bootstrap_expect(1)
            .data_dir(&data_dir)
            .node("m1")
            .ip(IP.into())
            .http_port(http_port)
            .server_port(free_tcp_port(IP)?)
            .serf_lan_port(free_udp_port(IP)?)
            .log_file(dir.join("trellis.log"))
            .log_filter(None);
        if let Some(n) = snapshot_threshold {
            spec = spec.arg("--raft-snapshot-threshold", n.to_string());
        }
        let agent = spec.start_async().await?;
        let http = agent.addrs().http;
        if http.port() != http_port {
            bail!("trellis listens on {http}, not on port {http_port}");
        }
        Ok(Self {
            agent,
            data_dir,
            http,
            value_bytes,
        })
    }
}

impl Store for Trellis {
    fn name(&self) -> &'static str {
        "trellis"
    }

    fn pid(&self) -> u32 {
        self.agent.pid()
    }

    fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn api(&self) -> Api {
        Api {
            kind: Kind::Trellis,
            addr: self.http,
            value_bytes: self.value_bytes,
        }
    }

    /// The stored Raft snapshot (the snapshot file beside the Raft database,
    /// or before format 6 the `snapshot` value of the redb meta table: its
    /// metadata and the encoded state), read from the data dir
    /// of the stopped server, with how many log entries remain beside it.
    fn snapshot_size(&self) -> anyhow::Result<(u64, String)> {
        // The agent keeps its Raft database in `<data-dir>/raft/`
        // (`src/agent/settings.rs`).
        let path = self.data_dir.join("raft").join(trellis::store::FILE_NAME);
        let db = redb::ReadOnlyDatabase::open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let txn = db.begin_read()?;
        let meta = txn.open_table(trellis::store::META)?;
        let log = txn.open_table(trellis::store::LOG)?;
        let entries = log.len()?;
        // Data dirs of format 6 on keep it in its own file; older ones in
        // the meta table.
        let file = self
            .data_dir
            .join("raft")
            .join(trellis::store::snapshot_file::FILE_NAME);
        let size = match std::fs::metadata(&file) {
            Ok(m) => m.len(),
            Err(_) => meta
                .get(trellis::store::keys::SNAPSHOT)?
                .map_or(0, |v| v.value().len() as u64),
        };
        let what = if size == 0 {
            format!("no snapshot taken; {entries} log entries")
        } else {
            format!("stored Raft snapshot; {entries} log entries kept beside it")
        };
        Ok((size, what))
    }

    fn stop(&mut self) {
        self.agent.terminate();
    }

    async fn start_again(&mut self) -> anyhow::Result<()> {
        self.agent.restart_async().await
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        self.agent.check_running()
    }

    fn log_tail(&self) -> String {
        self.agent.log_handle().tail(30)
    }
}
