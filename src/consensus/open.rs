//! Starting a server's Raft member: opening storage, restoring the last
//! snapshot and log into the replica, starting openraft and the proposer,
//! bootstrapping a lone server, and waiting for a first leader.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::metrics::WaitError;
use openraft::{Config, SnapshotPolicy};
use tokio_util::sync::CancellationToken;

use super::contact::Contact;
use super::early::Early;
use super::log_store::LogStore;
use super::log_upgrade;
use super::network::Network;
use super::proposer::Proposer;
use super::recovery;
use super::snapshot_due::SnapshotDue;
use super::state_machine::{self, StateMachine};
use super::{Consensus, ConsensusConfig, Storage, Tuning, cluster};
use crate::catalog::Replica;
#[cfg(test)]
use crate::config::RaftSettings;
use crate::rpc::Pool;
use crate::rpc::catchup::SnapshotCache;
use crate::rpc::types::{Raft, RaftId, RaftMember};
use crate::store::{self, OnDisk, Op, Space, StoreError, Writer, keys};

/// Why this server's Raft member did not start, or found no leader.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or read, or its id not stored.
    #[error("raft: {0}")]
    Storage(#[from] StoreError),
    /// The blocking task that opens the database failed.
    #[error("raft: opening storage: {0}")]
    Open(String),
    /// openraft refused its configuration.
    #[error("raft: raft config: {0}")]
    Config(String),
    /// openraft failed to start or to bootstrap the one-server cluster.
    #[error("raft: {0}")]
    Raft(String),
    /// No leader was elected in the time allowed.
    #[error("No cluster leader")]
    NoLeader,
    /// Raft is shutting down.
    #[error("raft: raft is shutting down")]
    ShuttingDown,
    /// A `peers.json` recovery file could not be applied.
    #[error("raft: recovery: {0}")]
    Recovery(String),
}

impl Consensus {
    /// A one-server, in-memory cluster that already has its leader: what
    /// tests across the crate write through.
    #[cfg(test)]
    pub(crate) async fn single_in_memory(node_name: &str, replica: Arc<Replica>) -> Arc<Self> {
        let consensus = Self::start(
            ConsensusConfig {
                node_name: node_name.into(),
                datacenter: "dc1".into(),
                rpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8300)),
                storage: Storage::Memory,
                raft: RaftSettings {
                    server: true,
                    bootstrap_expect: 1,
                    ..RaftSettings::default()
                },
                retry_join: Vec::new(),
                credentials: Default::default(),
            },
            replica,
        )
        .await
        .expect("in-memory consensus starts");
        consensus
            .wait_for_leader(Duration::from_secs(10))
            .await
            .expect("a one-server cluster elects itself");
        consensus
    }

    /// [`Self::start_tuned`] with the default tuning: what the agent runs.
    pub async fn start(
        cfg: ConsensusConfig,
        replica: Arc<Replica>,
    ) -> Result<Arc<Self>, StartError> {
        Self::start_tuned(cfg, Tuning::default(), replica).await
    }

    /// Opens storage, restores the last snapshot and log into `replica`, and
    /// starts Raft with `tuning`: bootstrapping a single-node cluster at once
    /// when `raft.bootstrap_expect == 1` and storage is empty, and otherwise
    /// looking for the other servers in the background (see `cluster`).
    pub async fn start_tuned(
        cfg: ConsensusConfig,
        tuning: Tuning,
        replica: Arc<Replica>,
    ) -> Result<Arc<Self>, StartError> {
        let dir = match &cfg.storage {
            Storage::Memory => None,
            Storage::Dir(dir) => Some(dir.clone()),
        };
        let space = Arc::new(Space::new(dir.clone()));
        let on_disk = dir.as_ref().map(|d| OnDisk {
            file: d.join(store::FILE_NAME),
            space: space.clone(),
        });
        // Opening and reading block on the disk; do it off the runtime.
        let snapshot_dir = dir.clone();
        let (db, contents) = tokio::task::spawn_blocking(move || {
            let db = store::open(dir.as_deref())?;
            store::format::upgrade(
                &db,
                dir.as_deref(),
                log_upgrade::upgrade_entry,
                state_machine::upgrade_snapshot,
            )?;
            let contents = store::load(&db)?.with_snapshot_file(dir.as_deref())?;
            Ok::<_, StoreError>((db, contents))
        })
        .await
        .map_err(|e| StartError::Open(e.to_string()))??;
        let writer = Writer::spawn(db, tuning.writer_queue, on_disk)?;

        let raft_id = match contents.meta::<RaftId>(keys::RAFT_ID)? {
            Some(id) => id,
            None => {
                let id = rand::random::<RaftId>();
                writer
                    .write(Op::Put(keys::RAFT_ID, store::encode(&id)?))
                    .await?;
                id
            }
        };
        // Nothing answers from the view before Raft is up: build it once
        // after the snapshot is restored and the log replayed, not entry by
        // entry. Restoring the snapshot and decoding the log are
        // independent and each takes a while at scale: on two threads.
        let started = Instant::now();
        replica.hold_view();
        let due = SnapshotDue::new(cfg.raft.snapshot_threshold);
        let contents = Arc::new(contents);
        let restore = {
            let (contents, replica, writer, due) = (
                contents.clone(),
                replica.clone(),
                writer.clone(),
                due.clone(),
            );
            tokio::task::spawn_blocking(move || {
                StateMachine::open(&contents, replica, writer, snapshot_dir, due)
            })
        };
        let log_store = {
            let (contents, writer) = (contents.clone(), writer.clone());
            let keep = tuning.log_in_memory;
            tokio::task::spawn_blocking(move || LogStore::open(&contents, writer, keep))
                .await
                .map_err(|e| StartError::Open(e.to_string()))??
        };
        if let Storage::Dir(dir) = &cfg.storage {
            recovery::apply(dir, &log_store)
                .await
                .map_err(|e| StartError::Recovery(e.to_string()))?;
        }

        let config = Config {
            cluster_name: "trellis".into(),
            heartbeat_interval: millis(tuning.heartbeat),
            election_timeout_min: millis(tuning.election_timeout.0),
            election_timeout_max: millis(tuning.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.raft.snapshot_threshold),
            max_in_snapshot_log_to_keep: cfg.raft.trailing_logs,
            // Bounded frames: entries are batches of up to `max_batch`
            // commands, so a handful per message keeps far below the frame
            // limit; snapshots travel in 1 MiB chunks.
            max_payload_entries: 16,
            snapshot_max_chunk_size: 1 << 20,
            // Per chunk; the last one also installs the snapshot, which
            // rebuilds the catalog and takes longer than a network hop.
            install_snapshot_timeout: 5000,
            ..Config::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let pool = Arc::new(Pool::new(
            tuning.election_timeout.0,
            cfg.credentials.clone(),
        ));
        let contact = Arc::new(Contact::new());
        let network = Network {
            pool: pool.clone(),
            contact: contact.clone(),
            retry: tuning.heartbeat,
        };
        let state_machine = restore
            .await
            .map_err(|e| StartError::Open(e.to_string()))??;
        drop(contents);

        let raft = Raft::new(
            raft_id,
            Arc::new(config),
            network,
            log_store.clone(),
            state_machine,
        )
        .await;
        // Raft's start replayed the committed log (or failed): either way
        // the view must answer for the state as it is.
        let restored = started.elapsed();
        if let Some(took) = replica.release_view() {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            tracing::info!(
                restore_ms = ms(restored),
                view_ms = ms(took),
                last_index = replica.read().last_index(),
                "start-up: restored the catalog and built its DNS view"
            );
        }
        let raft = raft.map_err(|e| StartError::Raft(e.to_string()))?;
        let early = Early::new(raft_id, pool.clone(), raft.metrics());
        log_store.send_early(early.clone());

        let me = RaftMember::new(cfg.node_name.clone(), cfg.rpc_addr);
        if cfg.raft.bootstrap_expect == 1 {
            let members = BTreeMap::from([(raft_id, me.clone())]);
            match raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(node_id = raft_id, node = %cfg.node_name, "bootstrapped a one-server cluster")
                }
                // Restarting on storage that already holds a cluster.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => {
                    let _ = raft.shutdown().await;
                    writer.stop().await;
                    return Err(StartError::Raft(e.to_string()));
                }
            }
        }
        let metrics = raft.metrics();
        let stop = CancellationToken::new();
        let snapshots = due.watch(raft.clone(), stop.clone());
        let proposer = Proposer::spawn(
            raft.clone(),
            space,
            tuning.write_queue,
            tuning.max_batch,
            tuning.request_timeout,
        );
        let consensus = Arc::new(Self {
            raft,
            proposer,
            raft_id,
            me,
            datacenter: cfg.datacenter.clone(),
            metrics,
            pool,
            contact,
            replica,
            snapshot_cache: SnapshotCache::new(),
            cluster: cluster::Cluster::new(cfg.raft.bootstrap_expect, cfg.retry_join.clone()),
            writer,
            tuning,
            stop: stop.clone(),
            tasks: Mutex::new(vec![snapshots]),
            wan: std::sync::OnceLock::new(),
            #[cfg(test)]
            early,
        });
        let task = tokio::spawn(cluster::discover(
            Arc::downgrade(&consensus),
            consensus.stop.clone(),
        ));
        consensus
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok(consensus)
    }

    /// Waits until a leader is known.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<(), StartError> {
        match self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is known")
            .await
        {
            Ok(_) => Ok(()),
            Err(WaitError::Timeout(..)) => Err(StartError::NoLeader),
            Err(WaitError::ShuttingDown) => Err(StartError::ShuttingDown),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
