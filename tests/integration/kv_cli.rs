//! The `trellis kv` and `trellis lock` commands of the real binary against
//! a real dev agent: Consul's flags, output and messages for KV reads and
//! writes, export → import as Consul's JSON, and locks that hold: one
//! holder at a time, a hard-killed holder replaced only once its session is
//! invalidated, and a semaphore of two admitting two of three.

use std::cell::Cell;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use trellis_testkit::{Agent, wait_until_async};

use crate::harness::{temp_dir, trellis};
use crate::kv::{dev, get, raw, read, session};

/// Long enough for a lock's whole hand-over after a hard kill: the
/// session's TTL twice over (2 × 15 s), the lock-delay that follows
/// (15 s), the waiter's 5 s retry after a lock-delay refusal, and margin.
const HANDOVER: Duration = Duration::from_secs(90);

/// How long a command that needs no lock hand-over may take.
const QUICK: Duration = Duration::from_secs(30);

/// `trellis <args>` aimed at `agent`, killed if the test drops it.
fn command(agent: &Agent, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::from(trellis().command());
    cmd.args(args)
        .env("TRELLIS_HTTP_ADDR", agent.addrs().http.to_string())
        .env_remove("CONSUL_HTTP_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `trellis <args>` to its end, feeding it `stdin`.
async fn run_with(agent: &Agent, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = command(agent, args);
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("start trellis");
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(bytes).await.expect("write stdin");
    }
    tokio::time::timeout(QUICK, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("trellis {args:?} did not finish"))
        .expect("trellis output")
}

async fn run(agent: &Agent, args: &[&str]) -> Output {
    run_with(agent, args, None).await
}

/// Asserts success and returns stdout.
fn ok(out: &Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "trellis {args:?}: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn ok_run(agent: &Agent, args: &[&str]) -> String {
    ok(&run(agent, args).await, args)
}

/// Asserts exit status 1 with `message` alone on stderr and nothing on
/// stdout, as Consul fails.
async fn fails(agent: &Agent, args: &[&str], message: &str) {
    let out = run(agent, args).await;
    assert_eq!(out.status.code(), Some(1), "trellis {args:?}: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{message}\n"));
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[tokio::test]
async fn kv_commands_read_write_and_delete_with_consuls_flags_and_words() {
    let agent = dev().await;
    assert_eq!(
        ok_run(&agent, &["kv", "put", "app/a", "1"]).await,
        "Success! Data written to: app/a\n"
    );
    ok_run(&agent, &["kv", "put", "-flags=42", "app/b", "two words"]).await;
    let piped = run_with(&agent, &["kv", "put", "app/c", "-"], Some(b"from stdin")).await;
    ok(&piped, &["kv", "put", "app/c", "-"]);
    // Consul's double-dash spelling works too, and a value may start with `-`.
    ok_run(&agent, &["kv", "put", "--flags", "0", "app/d", "-5"]).await;

    assert_eq!(ok_run(&agent, &["kv", "get", "app/a"]).await, "1\n");
    // Consul's own variable finds the agent when trellis's is unset.
    let mut consul_style = command(&agent, &["kv", "get", "app/a"]);
    consul_style
        .env_remove("TRELLIS_HTTP_ADDR")
        .env("CONSUL_HTTP_ADDR", format!("http://{}", agent.addrs().http));
    let out = consul_style.output().await.expect("trellis kv get");
    assert_eq!(ok(&out, &["kv", "get"]), "1\n");
    assert_eq!(ok_run(&agent, &["kv", "get", "/app/d"]).await, "-5\n");
    assert_eq!(
        ok_run(&agent, &["kv", "get", "-recurse", "app"]).await,
        "app/a:1\napp/b:two words\napp/c:from stdin\napp/d:-5\n"
    );
    assert_eq!(ok_run(&agent, &["kv", "get", "-keys"]).await, "app/\n");
    assert_eq!(
        ok_run(&agent, &["kv", "get", "-keys", "app/"]).await,
        "app/a\napp/b\napp/c\napp/d\n"
    );
    let b = read(&agent, "app/b").await;
    let detailed = ok_run(&agent, &["kv", "get", "-detailed", "app/b"]).await;
    assert_eq!(
        detailed,
        format!(
            "CreateIndex      {c}\nFlags            42\nKey              app/b\n\
             LockIndex        0\nModifyIndex      {m}\nSession          -\n\
             Value            two words\n",
            c = b["CreateIndex"],
            m = b["ModifyIndex"]
        )
    );
    fails(
        &agent,
        &["kv", "get", "app/none"],
        "Error! No key exists at: app/none",
    )
    .await;
    fails(&agent, &["kv", "get"], "Error! Missing KEY argument").await;

    // Base64 in, bytes stored; bytes out, or base64 out.
    ok_run(&agent, &["kv", "put", "-base64", "bin", "AAEC/w=="]).await;
    assert_eq!(
        raw(&agent, "bin").await.as_deref(),
        Some(&[0u8, 1, 2, 255][..])
    );
    let out = run(&agent, &["kv", "get", "bin"]).await;
    assert_eq!(out.stdout, [0, 1, 2, 255, b'\n']);
    assert_eq!(
        ok_run(&agent, &["kv", "get", "-base64", "bin"]).await,
        "AAEC/w==\n"
    );

    // Check-and-set, on put and on delete.
    let a = read(&agent, "app/a").await["ModifyIndex"]
        .as_u64()
        .expect("index");
    let stale = (a + 1000).to_string();
    fails(
        &agent,
        &["kv", "put", "-cas", "-modify-index", &stale, "app/a", "2"],
        "Error! Did not write to app/a: CAS failed",
    )
    .await;
    fails(
        &agent,
        &["kv", "put", "-cas", "app/a", "2"],
        "Must specify -modify-index with -cas!",
    )
    .await;
    assert_eq!(raw(&agent, "app/a").await.as_deref(), Some(&b"1"[..]));
    let current = a.to_string();
    ok_run(
        &agent,
        &["kv", "put", "-cas", "-modify-index", &current, "app/a", "2"],
    )
    .await;
    assert_eq!(raw(&agent, "app/a").await.as_deref(), Some(&b"2"[..]));
    let a = read(&agent, "app/a").await["ModifyIndex"]
        .as_u64()
        .expect("index");
    fails(
        &agent,
        &["kv", "delete", "-cas", "-modify-index", &current, "app/a"],
        "Error! Did not delete key app/a: CAS failed",
    )
    .await;
    assert!(raw(&agent, "app/a").await.is_some());
    assert_eq!(
        ok_run(
            &agent,
            &[
                "kv",
                "delete",
                "-cas",
                &format!("-modify-index={a}"),
                "app/a"
            ]
        )
        .await,
        "Success! Deleted key: app/a\n"
    );
    assert_eq!(raw(&agent, "app/a").await, None);
    assert_eq!(
        ok_run(&agent, &["kv", "delete", "app/b"]).await,
        "Success! Deleted key: app/b\n"
    );
    assert_eq!(
        ok_run(&agent, &["kv", "delete", "-recurse", "app"]).await,
        "Success! Deleted keys with prefix: app\n"
    );
    assert_eq!(ok_run(&agent, &["kv", "get", "-recurse", "app"]).await, "");
    fails(
        &agent,
        &[
            "kv",
            "delete",
            "-cas",
            "-recurse",
            "-modify-index",
            "3",
            "app",
        ],
        "Cannot specify both -cas and -recurse!",
    )
    .await;

    // Acquire and release with a session.
    let s = session(&agent, json!({"Name": "kv-cli", "TTL": "60s"})).await;
    assert_eq!(
        ok_run(
            &agent,
            &["kv", "put", "-acquire", "-session", &s, "held", "v"]
        )
        .await,
        "Success! Lock acquired on: held\n"
    );
    assert_eq!(read(&agent, "held").await["Session"], s.as_str());
    let detailed = ok_run(&agent, &["kv", "get", "-detailed", "held"]).await;
    assert!(
        detailed.contains(&format!("Session          {s}\n")),
        "{detailed}"
    );
    assert!(detailed.contains("LockIndex        1\n"), "{detailed}");
    fails(
        &agent,
        &["kv", "put", "-acquire", "held"],
        "Error! Missing -session (required with -acquire and -release)",
    )
    .await;
    assert_eq!(
        ok_run(&agent, &["kv", "put", "-release", "-session", &s, "held"]).await,
        "Success! Lock released on: held\n"
    );
    assert_eq!(read(&agent, "held").await.get("Session"), None);
    let out = run(
        &agent,
        &["kv", "put", "-acquire", "-session", "not-a-session", "held"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("Error! Failed writing data: Unexpected response code: 500 ("),
        "{err}"
    );
}

#[tokio::test]
async fn export_then_import_restores_the_tree_and_prefix_moves_it() {
    let agent = dev().await;
    ok_run(&agent, &["kv", "put", "cfg/a", "1"]).await;
    ok_run(
        &agent,
        &["kv", "put", "-flags", "7", "-base64", "cfg/bin", "AP8="],
    )
    .await;
    ok_run(&agent, &["kv", "put", "cfg/dir/"]).await;
    ok_run(&agent, &["kv", "put", "other", "not exported"]).await;

    let exported = ok_run(&agent, &["kv", "export", "cfg"]).await;
    assert_eq!(
        exported,
        "[\n\t{\n\t\t\"key\": \"cfg/a\",\n\t\t\"flags\": 0,\n\t\t\"value\": \"MQ==\"\n\t},\n\
         \t{\n\t\t\"key\": \"cfg/bin\",\n\t\t\"flags\": 7,\n\t\t\"value\": \"AP8=\"\n\t},\n\
         \t{\n\t\t\"key\": \"cfg/dir/\",\n\t\t\"flags\": 0,\n\t\t\"value\": \"\"\n\t}\n]\n"
    );
    let dir = temp_dir();
    let file = dir.path().join("cfg.json");
    std::fs::write(&file, &exported).expect("write export");

    ok_run(&agent, &["kv", "delete", "-recurse", "cfg"]).await;
    assert_eq!(ok_run(&agent, &["kv", "export", "cfg"]).await, "[]\n");
    let at_file = format!("@{}", file.display());
    assert_eq!(
        ok_run(&agent, &["kv", "import", &at_file]).await,
        "Imported: cfg/a\nImported: cfg/bin\nImported: cfg/dir/\n"
    );
    assert_eq!(ok_run(&agent, &["kv", "export", "cfg"]).await, exported);
    assert_eq!(read(&agent, "cfg/bin").await["Flags"], 7);
    assert_eq!(
        raw(&agent, "cfg/bin").await.as_deref(),
        Some(&[0u8, 255][..])
    );

    // From stdin, under another prefix.
    let piped = run_with(
        &agent,
        &["kv", "import", "-prefix", "copy", "-"],
        Some(exported.as_bytes()),
    )
    .await;
    assert_eq!(
        ok(&piped, &["kv", "import"]),
        "Imported: copy/cfg/a\nImported: copy/cfg/bin\nImported: copy/cfg/dir/\n"
    );
    assert_eq!(
        ok_run(&agent, &["kv", "get", "-recurse", "-base64", "copy"]).await,
        "copy/cfg/a:MQ==\ncopy/cfg/bin:AP8=\ncopy/cfg/dir/:\n"
    );
    let out = run(&agent, &["kv", "import", "[{"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("Cannot unmarshal data: "), "{err}");
    fails(&agent, &["kv", "import"], "Error! Missing DATA argument").await;
}

// ---- trellis lock ----

/// A shell command line that logs `start <ns> <who>`, runs `body`, then
/// logs `end <ns> <who>`, all to `log`. The timestamps are the clock's
/// nanoseconds since the epoch, as `date +%s%N` prints them.
fn logged(log: &Path, who: &str, body: &str) -> String {
    let log = log.display();
    format!(
        "echo \"start $(date +%s%N) {who} $CONSUL_LOCK_HELD\" >> {log}; {body}; \
         echo \"end $(date +%s%N) {who}\" >> {log}"
    )
}

/// One command's run as its log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    who: String,
    start: u128,
    /// `None` while it runs (or if it was killed).
    end: Option<u128>,
}

/// The runs in `log`, in the order they started.
fn spans(log: &Path) -> Vec<Span> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut spans: Vec<Span> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["start", ns, who, held] => {
                assert_eq!(*held, "true", "CONSUL_LOCK_HELD in {line:?}");
                spans.push(Span {
                    who: (*who).to_string(),
                    start: ns.parse().expect("a timestamp"),
                    end: None,
                });
            }
            ["end", ns, who] => {
                let span = spans
                    .iter_mut()
                    .rev()
                    .find(|s| s.who == *who)
                    .unwrap_or_else(|| panic!("end before start: {text}"));
                span.end = Some(ns.parse().expect("a timestamp"));
            }
            _ => panic!("unexpected log line {line:?} in {text}"),
        }
    }
    spans
}

/// The most runs that overlapped at any moment.
fn most_at_once(spans: &[Span]) -> usize {
    let mut events: Vec<(u128, i32)> = Vec::new();
    for s in spans {
        events.push((s.start, 1));
        events.push((s.end.unwrap_or(u128::MAX), -1));
    }
    // At equal times, ends first: touching runs do not overlap.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

/// Waits for a lock command to exit and returns its output.
async fn finished(child: tokio::process::Child, deadline: Duration, what: &str) -> Output {
    tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish in {deadline:?}"))
        .expect("lock output")
}

/// A dev agent on which sessions can be created (its node and serfHealth
/// registered), as `trellis lock` needs.
async fn lock_ready_agent() -> Agent {
    let agent = dev().await;
    let s = session(&agent, json!({"Name": "probe", "TTL": "10s"})).await;
    let r = crate::kv::call(&agent, "PUT", &format!("/v1/session/destroy/{s}"), b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    agent
}

#[tokio::test]
async fn contenders_for_one_lock_run_one_at_a_time_and_clean_up() {
    let agent = lock_ready_agent().await;
    let dir = temp_dir();
    let log = dir.path().join("runs");
    let children: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|who| {
            let script = logged(&log, who, "sleep 0.4");
            command(&agent, &["lock", "jobs/nightly", &script])
                .spawn()
                .expect("start trellis lock")
        })
        .collect();
    for child in children {
        let out = finished(child, QUICK, "a lock holder").await;
        ok(&out, &["lock"]);
    }
    let runs = spans(&log);
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(runs.iter().all(|s| s.end.is_some()), "{runs:?}");
    assert_eq!(
        most_at_once(&runs),
        1,
        "two held the lock at once: {runs:?}"
    );
    // The last one out removed the lock key; nothing else is left.
    let r = get(&agent, "/v1/kv/jobs?recurse").await;
    assert_eq!(r.status, 404, "left behind: {}", r.text);
    let r = get(&agent, "/v1/session/list").await;
    assert_eq!(r.json(), json!([]), "sessions left behind");
}

#[tokio::test]
async fn the_lock_exits_as_consuls_and_times_out_cleanly() {
    let agent = lock_ready_agent().await;
    // As `consul lock`: a failed command is the lock's success, unless
    // `-child-exit-code` asks for 2.
    let out = run(&agent, &["lock", "svc/leader", "exit 3"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = run(
        &agent,
        &["lock", "-child-exit-code", "svc/leader", "exit 3"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run(
        &agent,
        &["lock", "-child-exit-code", "svc/leader", "exit 0"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let dir = temp_dir();
    let started = dir.path().join("started");
    let holder = command(
        &agent,
        &[
            "lock",
            "svc/leader",
            &format!("touch {}; sleep 30", started.display()),
        ],
    )
    .spawn()
    .expect("start the holder");
    wait_until_async("the holder's command to start", QUICK, || async {
        if started.exists() {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    let t0 = Instant::now();
    let out = run(
        &agent,
        &["lock", "-timeout", "1s", "svc/leader", "echo never"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Shutdown triggered or timeout during lock acquisition\n"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());
    // The one that gave up left no session behind: only the holder's.
    let sessions = get(&agent, "/v1/session/list").await.json();
    assert_eq!(sessions.as_array().map(Vec::len), Some(1), "{sessions}");

    // SIGTERM to the holder stops its command, releases, and exits.
    let pid = holder.id().expect("a pid");
    // SAFETY: kill(2) has no memory effects; the holder is unreaped (we hold it).
    unsafe {
        libc::kill(i32::try_from(pid).expect("a pid"), libc::SIGTERM);
    }
    let out = finished(holder, QUICK, "the terminated holder").await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = get(&agent, "/v1/kv/svc/leader/.lock").await;
    assert_eq!(r.status, 404, "the lock key is cleaned up: {}", r.text);
}

#[tokio::test]
async fn a_lost_lock_stops_the_command() {
    let agent = lock_ready_agent().await;
    let dir = temp_dir();
    let log = dir.path().join("runs");
    let forever = "while :; do sleep 0.1; done";
    let holder = command(
        &agent,
        &[
            "lock",
            "-verbose",
            "ops/cron",
            &logged(&log, "only", forever),
        ],
    )
    .spawn()
    .expect("start the holder");
    wait_until_async("the command to start", QUICK, || async {
        if spans(&log).is_empty() {
            Err("not yet".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    // An operator destroys the session: the lock is lost at once.
    let held = read(&agent, "ops/cron/.lock").await;
    let id = held["Session"].as_str().expect("held by a session");
    let r = crate::kv::call(&agent, "PUT", &format!("/v1/session/destroy/{id}"), b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    let out = finished(holder, QUICK, "the holder that lost its lock").await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Lock lost, killing child\n"), "{said}");
    assert!(said.contains("Child terminated\n"), "{said}");
    let runs = spans(&log);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].end.is_none(), "stopped, not finished: {runs:?}");
}

#[tokio::test]
async fn a_hard_killed_holder_is_replaced_only_after_its_session_is_invalidated() {
    let agent = lock_ready_agent().await;
    let dir = temp_dir();
    let log = dir.path().join("runs");
    let ticks = dir.path().join("ticks");
    let forever = format!(
        "while :; do date +%s%N >> {}; sleep 0.1; done",
        ticks.display()
    );
    let holder = command(
        &agent,
        &["lock", "db/primary", &logged(&log, "first", &forever)],
    )
    .spawn()
    .expect("start the first holder");
    wait_until_async("the first holder's command to start", QUICK, || async {
        if spans(&log).is_empty() {
            Err("not yet".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    let held = read(&agent, "db/primary/.lock").await;
    let session_id = held["Session"]
        .as_str()
        .expect("held by a session")
        .to_string();
    assert_eq!(
        held["Flags"], 0x2ddc_cbc0_58a5_0c18_u64,
        "Consul's lock flags"
    );

    let waiter = command(
        &agent,
        &[
            "lock",
            "-verbose",
            "db/primary",
            &logged(&log, "second", "true"),
        ],
    )
    .spawn()
    .expect("start the second holder");
    // The waiter is queued: it has a session, but not the lock.
    wait_until_async("the waiter's session", QUICK, || async {
        let sessions = get(&agent, "/v1/session/list").await.json();
        match sessions.as_array().map_or(0, Vec::len) {
            2 => Ok(()),
            n => Err(format!("{n} sessions")),
        }
    })
    .await;

    let mut holder = holder;
    holder.start_kill().expect("SIGKILL the first holder");
    let _ = holder.wait().await;
    let killed_at = Instant::now();

    // While the dead holder's session lives, the waiter must not start.
    let info = format!("/v1/session/info/{session_id}");
    let last_seen_valid = Cell::new(now_ns());
    let invalidated = wait_until_async("the dead holder's session to expire", HANDOVER, || async {
        let before = now_ns();
        let alive = get(&agent, &info)
            .await
            .json()
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if !alive {
            return Ok(Instant::now());
        }
        last_seen_valid.set(before);
        let runs = spans(&log);
        assert!(
            runs.iter().all(|s| s.who != "second"),
            "the waiter ran while the holder's session was valid: {runs:?}"
        );
        Err("still valid".to_string())
    })
    .await;
    // The holder's death released nothing: its session ran out (twice its
    // 15 s TTL after the last renewal, which was at most 7.5 s before).
    assert!(
        invalidated - killed_at >= Duration::from_secs(15),
        "invalidated {:?} after the kill",
        invalidated - killed_at
    );

    let out = finished(waiter, HANDOVER, "the waiting holder").await;
    let said = ok(&out, &["lock"]);
    // The expiry started the key's lock-delay, and the waiter was told why
    // its first try was refused.
    assert!(
        said.contains(
            "Lock acquisition refused: failed to lock key \"db/primary/.lock\" due to lock delay\n"
        ),
        "{said}"
    );
    let runs = spans(&log);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let second = runs.iter().find(|s| s.who == "second").expect("second ran");
    assert!(
        second.start > last_seen_valid.get(),
        "the waiter started while the holder's session was valid: {runs:?}"
    );
    // The dead holder's command was stopped with it (parent-death
    // signal), well before the waiter started: never two at once.
    let last_tick: u128 = std::fs::read_to_string(&ticks)
        .expect("ticks")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .max()
        .expect("a tick");
    assert!(
        last_tick < second.start,
        "the dead holder's command still ran when the waiter started: {runs:?}"
    );
}

#[tokio::test]
async fn a_semaphore_of_two_admits_two_of_three() {
    let agent = lock_ready_agent().await;
    let dir = temp_dir();
    let log = dir.path().join("runs");
    let go = dir.path().join("go");
    let wait_for_go = format!("while [ ! -e {} ]; do sleep 0.05; done", go.display());
    let children: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|who| {
            let script = logged(&log, who, &wait_for_go);
            command(&agent, &["lock", "-n", "2", "workers", &script])
                .spawn()
                .expect("start trellis lock -n 2")
        })
        .collect();
    // Two run, and the third is queued: three contender keys, two holders.
    let holders = wait_until_async("two holders and a third contender", QUICK, || async {
        let runs = spans(&log);
        let r = get(&agent, "/v1/kv/workers?recurse").await;
        let pairs = r.json();
        let contenders = pairs.as_array().map_or(0, |a| {
            a.iter().filter(|p| p["Key"] != "workers/.lock").count()
        });
        let lock = pairs
            .as_array()
            .and_then(|a| a.iter().find(|p| p["Key"] == "workers/.lock").cloned());
        match (runs.len(), contenders, lock) {
            (2, 3, Some(lock)) => Ok(lock),
            (n, c, _) => Err(format!("{n} running, {c} contenders: {}", r.text)),
        }
    })
    .await;
    assert_eq!(
        holders["Flags"], 0xe0f6_9a2b_aa41_4de0_u64,
        "Consul's semaphore flags"
    );
    let value = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        holders["Value"].as_str().expect("a holder record"),
    )
    .expect("base64");
    let record: Value = serde_json::from_slice(&value).expect("JSON holders");
    assert_eq!(record["Limit"], 2, "{record}");
    assert_eq!(
        record["Holders"].as_object().map(|h| h.len()),
        Some(2),
        "{record}"
    );
    assert_eq!(spans(&log).len(), 2);

    std::fs::write(&go, b"").expect("let them finish");
    for child in children {
        let out = finished(child, QUICK, "a semaphore holder").await;
        ok(&out, &["lock", "-n", "2"]);
    }
    let runs = spans(&log);
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!(most_at_once(&runs), 2, "{runs:?}");
    let r = get(&agent, "/v1/kv/workers?recurse").await;
    assert_eq!(r.status, 404, "left behind: {}", r.text);
}
