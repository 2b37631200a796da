//! Storage faults, as an operator meets them: a `raft.redb` that is empty
//! or not trellis's is refused at start naming the file, and a full disk
//! refuses writes with a clear 500 while DNS and reads go on, until space
//! is freed and writes resume without a restart.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use serde_json::json;
use trellis_testkit::{Agent, wait_until_async};

use crate::harness::{single_server, temp_dir, trellis};
use crate::kv::{call, call_url};

/// What the refusal of a raft.redb tells the operator to do.
const MOVE_IT: &str = "move the file away";

fn raft_file(dir: &Path) -> PathBuf {
    dir.join("raft").join("raft.redb")
}

/// Starts a server on `dir` and expects it to exit at once with an error
/// naming `file`, saying `why` and what to `do`; returns the error text.
fn refused_at_start(dir: &Path, file: &Path, why: &str, what_to_do: &str) -> String {
    let err = trellis()
        .server()
        .node("s1")
        .bootstrap_expect(1)
        .data_dir(dir)
        .try_start()
        .err()
        .unwrap_or_else(|| panic!("a server started on a bad {}", file.display()))
        .to_string();
    for needle in [
        "exit status: 1".to_string(),
        file.display().to_string(),
        why.to_string(),
        what_to_do.to_string(),
    ] {
        assert!(err.contains(&needle), "no {needle:?} in:\n{err}");
    }
    err
}

#[tokio::test]
async fn an_empty_or_foreign_raft_database_is_refused_naming_the_file_and_left_alone() {
    let dir = temp_dir();
    {
        let agent = single_server(dir.path());
        put_kv(&agent, "kept", "1").await;
        agent.terminate();
    }
    let file = raft_file(dir.path());

    // What a disk that filled up or a bad copy leaves: zero bytes.
    let original = std::fs::read(&file).expect("read raft.redb");
    std::fs::write(&file, b"").expect("truncate");
    refused_at_start(dir.path(), &file, "is empty (0 bytes)", MOVE_IT);
    assert_eq!(std::fs::metadata(&file).expect("stat").len(), 0);

    // Another program's file.
    let foreign = b"SQLite format 3\0".repeat(512);
    std::fs::write(&file, &foreign).expect("write");
    refused_at_start(dir.path(), &file, "is not a redb database", MOVE_IT);
    assert!(
        std::fs::read(&file).expect("read") == foreign,
        "file changed"
    );

    // A redb database, but not trellis's.
    std::fs::remove_file(&file).expect("rm");
    {
        let db = redb::Database::create(&file).expect("create");
        let txn = db.begin_write().expect("txn");
        let table: redb::TableDefinition<'_, &str, u64> = redb::TableDefinition::new("accounts");
        txn.open_table(table)
            .expect("table")
            .insert("alice", 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let before = std::fs::read(&file).expect("read");
    refused_at_start(dir.path(), &file, "not a trellis one", MOVE_IT);
    assert!(
        std::fs::read(&file).expect("read") == before,
        "file changed"
    );

    // The real file back: the server starts with its data.
    std::fs::write(&file, &original).expect("restore");

    // An emptied node ID would make it another node: refused too.
    let node_id = dir.path().join("node-id");
    let id = std::fs::read(&node_id).expect("read node-id");
    std::fs::write(&node_id, b"").expect("truncate node-id");
    refused_at_start(dir.path(), &node_id, "is empty", "delete the file");
    assert_eq!(std::fs::metadata(&node_id).expect("stat").len(), 0);
    std::fs::write(&node_id, &id).expect("restore node-id");
    let agent = single_server(dir.path());
    let kept = wait_until_async("the kept key", Duration::from_secs(30), || {
        let agent = &agent;
        async move { get_kv(agent, "kept").await.ok_or("not yet".to_string()) }
    })
    .await;
    assert_eq!(kept, "1");
}

/// A tmpfs mounted on a directory, unmounted (lazily, so even under a
/// process still using it) on drop.
struct Tmpfs {
    /// Where it is mounted.
    path: PathBuf,
    /// The directory made for it, if it was not given one.
    _dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// On a fresh directory.
    fn mount(size: &str) -> Self {
        let dir = temp_dir();
        let mut t = Self::mount_at(dir.path(), size);
        t._dir = Some(dir);
        t
    }

    /// Over `path`, hiding what it held.
    fn mount_at(path: &Path, size: &str) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (as the partition tests' namespaces do): {status}"
        );
        Self {
            path: path.to_path_buf(),
            _dir: None,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Fills the filesystem holding `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![7u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn put_kv(agent: &Agent, key: &str, value: &str) {
    let r = call(agent, "PUT", &format!("/v1/kv/{key}"), value.as_bytes()).await;
    assert_eq!(r.status, 200, "PUT {key}: {}", r.text);
}

/// PUTs `value` at `key`: the status and body, or why no answer came.
async fn try_put_kv(agent: &Agent, key: &str, value: &str) -> Result<(u16, String), String> {
    let r = call_url(
        &agent.url(&format!("/v1/kv/{key}")),
        "PUT",
        value.as_bytes(),
    )
    .await?;
    Ok((r.status, r.text))
}

async fn get_kv(agent: &Agent, key: &str) -> Option<String> {
    let r = agent.get(&format!("/v1/kv/{key}?raw")).await.ok()?;
    (r.status == 200).then_some(r.text)
}

#[tokio::test]
async fn a_full_disk_refuses_writes_with_a_500_while_dns_and_reads_go_on_until_space_returns() {
    let disk = Tmpfs::mount("64m");
    let agent = single_server(disk.path());
    let data_dir = disk.path().display().to_string();
    wait_until_async("a first write", Duration::from_secs(30), || {
        let agent = &agent;
        async move {
            match try_put_kv(agent, "before", "1").await? {
                (200, _) => Ok(()),
                (status, text) => Err(format!("{status}: {text}")),
            }
        }
    })
    .await;
    let r = agent
        .put(
            "/v1/agent/service/register",
            &json!({"Name": "web", "Port": 80}),
        )
        .await
        .expect("register");
    assert_eq!(r.status, 200, "{}", r.text);
    let pid = agent.pid();

    let filler = fill(disk.path());

    // Writes: a clear 500 naming the data dir, KV and registrations alike.
    let (status, text) = try_put_kv(&agent, "during", "2")
        .await
        .expect("PUT on a full disk answers");
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("is full"), "{text}");
    assert!(text.contains("no space left on device"), "{text}");
    assert!(text.contains(&data_dir), "{text} does not name {data_dir}");
    let r = agent
        .put(
            "/v1/agent/service/register",
            &json!({"Name": "api", "Port": 81}),
        )
        .await
        .expect("register on a full disk answers");
    assert_eq!(r.status, 500, "{}", r.text);
    assert!(r.text.contains("no space left on device"), "{}", r.text);

    // Reads and DNS go on, from the same process.
    assert_eq!(get_kv(&agent, "before").await.as_deref(), Some("1"));
    assert_eq!(get_kv(&agent, "during").await, None);
    let answer = agent.query_udp("web.service.consul", RecordType::A);
    assert!(!answer.answers.is_empty(), "no DNS answer: {answer:?}");
    let r = agent.get("/v1/catalog/service/web").await.expect("catalog");
    assert_eq!(r.status, 200);
    agent
        .check_running()
        .expect("the agent stopped on a full disk");

    // Space returns: writes resume, without a restart.
    std::fs::remove_file(filler).expect("free the space");
    wait_until_async(
        "a write after space returned",
        Duration::from_secs(30),
        || {
            let agent = &agent;
            async move {
                match try_put_kv(agent, "after", "3").await? {
                    (200, _) => Ok(()),
                    (status, text) => Err(format!("{status}: {text}")),
                }
            }
        },
    )
    .await;
    assert_eq!(get_kv(&agent, "after").await.as_deref(), Some("3"));
    let r = agent
        .put(
            "/v1/agent/service/register",
            &json!({"Name": "api", "Port": 81}),
        )
        .await
        .expect("register");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(agent.pid(), pid, "the agent was restarted");
    agent.check_running().expect("running");
}

/// `cp -a from/. to/`.
fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to)
        .status()
        .expect("run cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

async fn get_stale(agent: &Agent, key: &str) -> Option<String> {
    let r = agent.get(&format!("/v1/kv/{key}?raw&stale")).await.ok()?;
    (r.status == 200).then_some(r.text)
}

#[tokio::test]
async fn a_follower_with_a_full_disk_keeps_answering_and_catches_up_once_space_returns() {
    let cluster = trellis().cluster().servers(3).start().await;
    let leader = cluster.leader().await;
    put_kv(leader, "a", "1").await;
    let follower = cluster.followers(leader)[0];

    // Move the follower's data dir onto a small disk of its own.
    follower.kill();
    let data = follower.data_dir().expect("a data dir");
    let saved = temp_dir();
    copy_dir(&data, saved.path());
    let disk = Tmpfs::mount_at(&data, "64m");
    copy_dir(saved.path(), disk.path());
    follower
        .restart_async()
        .await
        .expect("restart on the tmpfs");
    wait_until_async("the follower has a", Duration::from_secs(30), || async {
        get_stale(follower, "a").await.ok_or("not yet".to_string())
    })
    .await;
    let pid = follower.pid();

    let filler = fill(disk.path());
    // The other two still make a quorum: writes through the leader commit.
    wait_until_async(
        "a write with one follower's disk full",
        Duration::from_secs(30),
        || async {
            match try_put_kv(leader, "b", "2").await? {
                (200, _) => Ok(()),
                (status, text) => Err(format!("{status}: {text}")),
            }
        },
    )
    .await;
    // Values larger than any space redb has spare in its file make the
    // follower's disk run out for real; its commit is held, not failed.
    let big = "x".repeat(400 << 10);
    for i in 0..8 {
        put_kv(leader, &format!("big{i}"), &big).await;
    }
    wait_until_async(
        "the follower holding its writes",
        Duration::from_secs(30),
        || async {
            let log = follower.log();
            if log.contains("holding raft storage writes") {
                Ok(())
            } else {
                Err("no such line yet".to_string())
            }
        },
    )
    .await;
    // The full follower goes on answering reads and DNS.
    assert_eq!(get_stale(follower, "a").await.as_deref(), Some("1"));
    let answer = follower.query_udp("consul.service.consul", RecordType::A);
    assert!(!answer.answers.is_empty(), "no DNS answer: {answer:?}");
    follower
        .check_running()
        .expect("the follower stopped on a full disk");

    // Space returns: it catches up without a restart.
    std::fs::remove_file(filler).expect("free the space");
    let last = wait_until_async("the follower has big7", Duration::from_secs(30), || async {
        get_stale(follower, "big7")
            .await
            .ok_or("not yet".to_string())
    })
    .await;
    assert_eq!(last, big);
    assert_eq!(get_stale(follower, "b").await.as_deref(), Some("2"));
    assert!(
        follower.log().contains("writes resume"),
        "{}",
        follower.log()
    );
    assert_eq!(follower.pid(), pid, "the follower was restarted");
    cluster.assert_no_panics();
}
