//! Consensus end to end on one server: openraft's storage suite over our log
//! store and state machine, crash-restart durability, compaction, and group
//! commit.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::{LogInMemory, LogStore};
use super::snapshot_due::SnapshotDue;
use super::state_machine::StateMachine;
use super::types::{TypeConfig, typ::StorageError};
use super::*;
use crate::catalog::{Command, Outcome, Registration, Replica, ServiceRegistration};
use crate::rpc::{ReadError, WriteError};
use crate::store::{self, Contents, StoreError, Writer, keys};

/// Builds a fresh log store and state machine per suite case, in memory or in
/// a temporary directory (the guard keeps the directory alive).
struct Builder {
    on_disk: bool,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, Option<tempfile::TempDir>> for Builder {
    async fn build(
        &self,
    ) -> Result<(Option<tempfile::TempDir>, LogStore, StateMachine), StorageError> {
        let dir = self
            .on_disk
            .then(|| tempfile::tempdir().expect("create tempdir"));
        let (log_store, sm) = open_parts(dir.as_ref().map(|d| d.path()))
            .map_err(|e| openraft::StorageIOError::read(openraft::AnyError::new(&e)))?;
        Ok((dir, log_store, sm))
    }
}

fn open_parts(dir: Option<&Path>) -> Result<(LogStore, StateMachine), StoreError> {
    let db = store::open(dir)?;
    let contents: Contents = store::load(&db)?.with_snapshot_file(dir)?;
    let writer = Writer::spawn(db, 64, None)?;
    let log_store = LogStore::open(&contents, writer.clone(), LogInMemory::USUAL)?;
    let sm = StateMachine::open(
        &contents,
        Arc::new(Replica::new()),
        writer,
        dir.map(Path::to_owned),
        SnapshotDue::new(u64::MAX),
    )?;
    Ok((log_store, sm))
}

#[test]
fn openraft_storage_suite_in_memory() {
    Suite::test_all(Builder { on_disk: false }).expect("suite");
}

#[test]
fn openraft_storage_suite_on_disk() {
    Suite::test_all(Builder { on_disk: true }).expect("suite");
}

fn config(storage: Storage) -> ConsensusConfig {
    ConsensusConfig {
        node_name: "s1".into(),
        datacenter: "dc1".into(),
        rpc_addr: SocketAddr::from(([127, 0, 0, 1], 8300)),
        storage,
        raft: RaftSettings {
            server: true,
            bootstrap_expect: 1,
            ..RaftSettings::default()
        },
        retry_join: Vec::new(),
        credentials: Default::default(),
    }
}

async fn start(dir: &Path, tuning: Tuning, replica: Arc<Replica>) -> Arc<Consensus> {
    start_with(config(Storage::Dir(dir.into())), tuning, replica).await
}

async fn start_with(cfg: ConsensusConfig, tuning: Tuning, replica: Arc<Replica>) -> Arc<Consensus> {
    let consensus = Consensus::start_tuned(cfg, tuning, replica)
        .await
        .expect("start");
    consensus
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    consensus
}

/// Registers service instance `svc-{i}` on node `n1`.
pub(super) fn register(i: usize) -> Command {
    Command::register(Registration {
        node: "n1".into(),
        id: String::new(),
        address: "10.0.0.1".into(),
        datacenter: "dc1".into(),
        tagged_addresses: Default::default(),
        node_meta: Default::default(),
        skip_node_update: false,
        service: Some(ServiceRegistration {
            id: format!("svc-{i}"),
            service: "web".into(),
            tags: vec!["primary".into()],
            address: String::new(),
            tagged_addresses: Default::default(),
            meta: Default::default(),
            port: 8080,
            weights: None,
            enable_tag_override: false,
        }),
        checks: Vec::new(),
    })
}

async fn write_ok(consensus: &Consensus, i: usize) -> crate::catalog::Index {
    match consensus.write(register(i)).await {
        Ok(Outcome::Applied(index)) => index,
        other => panic!("write {i}: {other:?}"),
    }
}

pub(super) fn instances(replica: &Replica) -> usize {
    replica.read().node_services("n1").count()
}

/// Polls `cond` until it holds or `limit` passes.
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` on a runtime of its own, then drops the runtime: every task,
/// Raft's included, vanishes without shutting down, as in a crash.
fn run_then_crash<T>(f: impl Future<Output = T>) -> T {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let out = rt.block_on(f);
    drop(rt);
    out
}

#[test]
fn acknowledged_writes_survive_a_crash() {
    writes_survive_a_crash(Tuning::default());
}

/// The same with every durable entry behind the commit index left to the
/// database: apply, and the restart's replay, read them back from it.
#[test]
fn acknowledged_writes_survive_a_crash_read_back_from_the_database() {
    writes_survive_a_crash(Tuning {
        log_in_memory: LogInMemory::NOTHING,
        ..Tuning::default()
    });
}

fn writes_survive_a_crash(tuning: Tuning) {
    const N: usize = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let (stats, raft_id) = run_then_crash(async {
        let consensus = start(dir.path(), tuning.clone(), Arc::new(Replica::new())).await;
        assert!(consensus.is_leader());
        assert_eq!(
            consensus.leader(),
            Some(SocketAddr::from(([127, 0, 0, 1], 8300)))
        );
        assert_eq!(consensus.peers().len(), 1);
        for i in 0..N {
            write_ok(&consensus, i).await;
        }
        (consensus.storage_stats(), consensus.raft_id())
    });
    // The writer thread holds the database file until every handle is gone.
    wait_until(Duration::from_secs(10), "the writer to exit", || {
        stats.exited()
    });

    let replica = Arc::new(Replica::new());
    run_then_crash(async {
        let consensus = start(dir.path(), tuning, replica.clone()).await;
        assert_eq!(
            consensus.raft_id(),
            raft_id,
            "the Raft id is kept in storage"
        );
        write_ok(&consensus, N).await;
        assert_eq!(instances(&replica), N + 1);
        consensus.shutdown().await;
    });
}

#[test]
fn snapshots_compact_the_log_and_restore_on_restart() {
    const N: usize = 230;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = config(Storage::Dir(dir.path().into()));
    let cfg = ConsensusConfig {
        raft: RaftSettings {
            snapshot_threshold: 50,
            trailing_logs: 10,
            ..base.raft
        },
        ..base
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let consensus = start_with(cfg.clone(), Tuning::default(), Arc::new(Replica::new())).await;
        for i in 0..N {
            write_ok(&consensus, i).await;
        }
        let metrics = consensus
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= 150) && m.purged.is_some(),
                "snapshot and purge",
            )
            .await
            .expect("compaction");
        let purged = metrics.purged.expect("purged").index;
        let snapshot = metrics.snapshot.expect("snapshot").index;
        assert!(purged + cfg.raft.trailing_logs <= snapshot);
        consensus.shutdown().await;
    });

    // What is on disk: a snapshot and only the tail of the log.
    let db = store::open(Some(dir.path())).expect("reopen");
    let contents = store::load(&db).expect("load");
    drop(db);
    assert!(
        !contents.meta.contains_key(keys::SNAPSHOT),
        "not in the log's database"
    );
    let file = store::snapshot_file::read_file(dir.path()).expect("read");
    assert!(file.is_some(), "the snapshot has its own file");
    let first = contents.log.first().expect("tail").0;
    let last = contents.log.last().expect("tail").0;
    assert!(first > 150, "log was purged (first kept index {first})");
    assert_eq!(contents.log.len() as u64, last - first + 1, "no holes");

    let replica = Arc::new(Replica::new());
    rt.block_on(async {
        let consensus = start_with(cfg.clone(), Tuning::default(), replica.clone()).await;
        // Restored from the snapshot and the log's tail, the view (built
        // once at start) answers for all of it.
        let answers = |r: &Replica| r.view().service("web").map_or(0, |s| s.instances.len());
        assert_eq!(answers(&replica), N);
        write_ok(&consensus, N).await;
        assert_eq!(instances(&replica), N + 1);
        assert_eq!(answers(&replica), N + 1, "and follows writes after it");
        consensus.shutdown().await;
    });
}

#[test]
fn a_snapshot_is_due_by_commands_when_group_commit_packs_them_in_few_entries() {
    // 1,280 commands: past the threshold at any stagger (at most 2×).
    const TASKS: usize = 64;
    const PER_TASK: usize = 20;
    const THRESHOLD: u64 = 500;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = config(Storage::Dir(dir.path().into()));
    let cfg = ConsensusConfig {
        raft: RaftSettings {
            snapshot_threshold: THRESHOLD,
            ..base.raft
        },
        ..base
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let consensus =
            Arc::new(start_with(cfg, Tuning::default(), Arc::new(Replica::new())).await);
        let stats = consensus.storage_stats();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let consensus = consensus.clone();
            tasks.spawn(async move {
                for k in 0..PER_TASK {
                    write_ok(&consensus, t * PER_TASK + k).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("writer task");
        }
        // Counted in entries, as openraft counts, no snapshot is due yet.
        let entries = stats.entries();
        assert!(
            entries < THRESHOLD,
            "{entries} entries: group commit did not batch, the test shows nothing"
        );
        consensus
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.snapshot.is_some(), "a snapshot")
            .await
            .expect("a snapshot after 1,280 commands in {entries} entries");
        consensus.shutdown().await;
    });
}

#[test]
fn concurrent_writes_share_commits() {
    const TASKS: usize = 64;
    const PER_TASK: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let replica = Arc::new(Replica::new());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let consensus = Arc::new(start(dir.path(), Tuning::default(), replica.clone()).await);
        let stats = consensus.storage_stats();
        let (commits0, entries0) = (stats.commits(), stats.entries());
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..TASKS {
            let consensus = consensus.clone();
            tasks.spawn(async move {
                let mut indexes = Vec::with_capacity(PER_TASK);
                for k in 0..PER_TASK {
                    indexes.push(write_ok(&consensus, t * PER_TASK + k).await);
                }
                indexes
            });
        }
        let mut indexes = std::collections::BTreeSet::new();
        while let Some(done) = tasks.join_next().await {
            indexes.extend(done.expect("writer task"));
        }
        let commits = stats.commits() - commits0;
        let entries = stats.entries() - entries0;
        // Commands carried by one entry share its index, as in Consul.
        assert!(
            indexes.len() as u64 <= entries,
            "{} distinct indexes from {entries} entries",
            indexes.len()
        );
        let writes = (TASKS * PER_TASK) as u64;
        eprintln!(
            "group commit: {writes} writes in {entries} log entries and {commits} commits \
             ({:.1} writes/commit) in {:?}",
            writes as f64 / commits as f64,
            started.elapsed()
        );
        assert!(commits < writes, "{commits} commits for {writes} writes");
        assert!(entries < writes, "{entries} entries for {writes} writes");
        assert_eq!(instances(&replica), TASKS * PER_TASK);
        consensus.shutdown().await;
    });
}

#[test]
fn dev_mode_runs_in_memory() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let replica = Arc::new(Replica::new());
        let started = Instant::now();
        let consensus = Consensus::start(config(Storage::Memory), replica.clone())
            .await
            .expect("start");
        consensus
            .wait_for_leader(Duration::from_secs(10))
            .await
            .expect("leader");
        eprintln!("dev mode: leader {:?} after start", started.elapsed());
        write_ok(&consensus, 1).await;
        consensus.linearizable_read().await.expect("read");
        assert_eq!(instances(&replica), 1);
        consensus.shutdown().await;
        assert!(matches!(
            consensus.write(register(2)).await,
            Err(WriteError::Fatal(_))
        ));
    });
}

/// Single-client write latency; run with `--ignored --nocapture` and
/// `TRELLIS_BENCH_DIR` pointing at the filesystem to measure.
#[test]
#[ignore]
fn single_client_write_latency() {
    let base = std::env::var("TRELLIS_BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let consensus = start(dir.path(), Tuning::default(), Arc::new(Replica::new())).await;
        const N: usize = 300;
        let started = Instant::now();
        for i in 0..N {
            write_ok(&consensus, i).await;
        }
        let per = started.elapsed() / N as u32;
        eprintln!("single-client write latency in {:?}: {per:?}", dir.path());
        consensus.shutdown().await;
    });
}

#[test]
fn without_a_bootstrapped_cluster_writes_find_no_leader() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let base = config(Storage::Memory);
        let cfg = ConsensusConfig {
            raft: RaftSettings {
                bootstrap_expect: 3,
                ..base.raft
            },
            ..base
        };
        let consensus = Consensus::start(cfg, Arc::new(Replica::new()))
            .await
            .expect("start");
        assert!(matches!(
            consensus.wait_for_leader(Duration::from_millis(50)).await,
            Err(StartError::NoLeader)
        ));
        assert!(!consensus.is_leader());
        assert_eq!(consensus.leader(), None);
        assert!(consensus.peers().is_empty());
        assert!(matches!(
            consensus.write(register(1)).await,
            Err(WriteError::NoLeader)
        ));
        assert!(matches!(
            consensus.linearizable_read().await,
            Err(ReadError::NoLeader)
        ));
        consensus.shutdown().await;
    });
}

/// Expiry and reaping arrive over RPC only from a misbehaving peer: the
/// handlers refuse them, while the leader's own proposals go through.
#[test]
fn leader_only_commands_are_refused_from_peers() {
    use crate::rpc::client::ClientHandler;
    use crate::rpc::cluster::ClusterHandler;

    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let consensus = start(dir.path(), Tuning::default(), Arc::new(Replica::new())).await;
        let reap = Command::ReapTombstones {
            deleted_before: u64::MAX,
        };
        let expire = Command::Session(crate::catalog::SessionOp::Expire {
            ids: vec!["x".into()],
        });
        for cmd in [reap.clone(), expire] {
            let by_client = ClientHandler::write(&*consensus, cmd.clone()).await;
            assert!(
                matches!(by_client, Err(WriteError::Fatal(_))),
                "{by_client:?}"
            );
            let by_server = ClusterHandler::write_as_leader(&*consensus, cmd).await;
            assert!(
                matches!(by_server, Err(WriteError::Fatal(_))),
                "{by_server:?}"
            );
        }
        let own = consensus.write_as_leader(reap).await;
        assert!(matches!(own, Ok(Outcome::Applied(_))), "{own:?}");
        consensus.shutdown().await;
    });
}
