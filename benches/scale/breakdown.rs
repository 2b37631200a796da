//! The in-process part of `scale`: where the bytes and the start-up time
//! go. A counting global allocator measures the live heap after each step
//! of building what an agent holds from the generated catalog: the log
//! entries' commands, the state tables, the DNS view, the follow history,
//! the snapshot (encoded and decoded) and the state and view rebuilt from
//! it, timing each step of the rebuild as a restart runs it. It also times
//! a server's snapshot encoded a slice at a time from a capture (and the
//! longest slice, about the longest a write waits for it), beside encoding
//! the live tables in one piece and encoding an owned copy (which shares
//! the tables' tags lists).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use trellis::catalog::view::View;
use trellis::catalog::{
    CheckRegistration, Command, HealthStatus, Registration, Replica, Secrets, ServiceRegistration,
    State,
};

use crate::Instance;

/// Counts live heap bytes (as requested, without the allocator's own overhead).
pub(crate) struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; the
// counter is only arithmetic on the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The registration command of one instance, as the HTTP API builds it.
pub(crate) fn command(i: Instance, rich: bool) -> Command {
    let id = format!("svc{}-{}", i.service, i.index);
    let mut service = ServiceRegistration {
        id: id.clone(),
        service: format!("svc{}", i.service),
        tags: Vec::new(),
        address: String::new(),
        tagged_addresses: BTreeMap::new(),
        meta: Default::default(),
        port: 20_000 + (i.service % 20_000) as u16 + i.index as u16,
        weights: None,
        enable_tag_override: false,
    };
    let mut checks = Vec::new();
    if rich {
        service.tags = vec!["primary".into(), format!("v{}", i.index + 1)];
        service.meta.insert("version".into(), "1.4.2".into());
        checks.push(CheckRegistration {
            check_id: format!("service:{id}"),
            name: "Service health".into(),
            status: HealthStatus::Passing,
            notes: String::new(),
            output: "HTTP GET http://localhost/health: 200 OK".into(),
            service_id: id,
            kind: String::new(),
        });
    }
    Command::register(Registration {
        node: format!("node{}", i.node),
        id: String::new(),
        address: crate::node_addr(i.node).to_string(),
        datacenter: "dc1".into(),
        tagged_addresses: BTreeMap::new(),
        node_meta: Default::default(),
        skip_node_update: false,
        service: Some(service),
        checks,
    })
}

/// Prints the bytes per instance of each part, and the time of each step
/// of a rebuild from the snapshot.
pub(crate) fn run(cat: &[Instance], rich: bool, history: usize) -> anyhow::Result<()> {
    let n = cat.len() as f64;
    let per = |b: isize| b as f64 / n;
    let mut rows: Vec<(String, f64)> = Vec::new();
    let base = live();
    let cmds: Vec<Arc<[Command]>> = cat.iter().map(|&i| Arc::from([command(i, rich)])).collect();
    rows.push((
        "commands of every entry, decoded".into(),
        per(live() - base),
    ));

    // The server's replica: state, view and a follow history of `history`
    // commands, the entries applied one at a time as Raft applies them,
    // each from commands of its own, which only the history keeps (a
    // server's log holds an entry more than 64 behind its commit as bytes).
    let before = live();
    let replica = Replica::with_history(history);
    for (k, &i) in cat.iter().enumerate() {
        replica.apply_batch(k as u64 + 1, 0, Arc::from([command(i, rich)]));
    }
    let with_replica = live() - before;
    // Measure state and view alone by building them apart.
    let before = live();
    let mut state = State::new();
    for (k, c) in cmds.iter().enumerate() {
        state.apply(k as u64 + 1, 0, &c[0]);
    }
    let state_bytes = live() - before;
    let before = live();
    let view = View::build(&state);
    let view_bytes = live() - before;
    rows.push(("state tables".into(), per(state_bytes)));
    // One row of each kind, cloned: its struct and the heap it owns.
    let entries = state.health_service("svc1", &[], false);
    if let Some(e) = entries.first() {
        let size = |f: &dyn Fn() -> Box<dyn std::any::Any>| {
            let b = live();
            let v = f();
            let d = live() - b;
            drop(v);
            d as f64
        };
        rows.push((
            "  one service row (struct and heap, excluding its key)".into(),
            size(&|| Box::new(e.service.clone())),
        ));
        rows.push((
            "  one node row, per instance (10 instances a node)".into(),
            size(&|| Box::new(e.node.clone()))
                * (cat.len() as f64 / crate::nodes_of(cat) as f64).recip(),
        ));
        for c in &e.checks {
            rows.push((
                "  one check row (excluding its key)".into(),
                size(&|| Box::new((*c).clone())),
            ));
        }
    }
    drop(entries);
    rows.push(("DNS view (built once)".into(), per(view_bytes)));
    rows.push((
        format!("replica (state + view + history of {history} commands)"),
        per(with_replica),
    ));
    drop(view);
    drop(replica);

    // A server's snapshot, timed: encoded a slice at a time from a capture
    // (the server logs how long marking it held applying up: `stall`); and,
    // to compare, encoded in one piece from the live tables, as it was
    // under the read lock before captures.
    let capture = state.capture();
    let t = Instant::now();
    let mut sliced = Vec::new();
    // The longest gap between two turns of the read lock: about the
    // longest a write could wait for a slice.
    let mut turn = Instant::now();
    let mut longest_slice = std::time::Duration::ZERO;
    capture.encode(
        &mut sliced,
        || {
            longest_slice = longest_slice.max(turn.elapsed());
            turn = Instant::now();
            &state
        },
        Secrets::Keep,
    )?;
    let encode_sliced = t.elapsed();
    drop(capture);
    let t = Instant::now();
    let live_body = trellis::store::snapshot::encode_state(&state)?;
    let encode_live = t.elapsed();
    assert_eq!(sliced, live_body[1..], "the slices encode as the whole");
    drop((sliced, live_body));

    // A restart: encode the snapshot, then decode and rebuild, timed.
    let snap = state.to_snapshot();
    let t = Instant::now();
    let body = trellis::store::snapshot::encode_catalog(&snap)?;
    let encode = t.elapsed();
    drop(snap);
    rows.push(("encoded snapshot".into(), body.len() as f64 / n));
    drop(state);
    drop(cmds);
    let before = live();
    let t = Instant::now();
    let decoded = trellis::store::snapshot::decode_catalog(&body)?;
    let decode = t.elapsed();
    let decoded_bytes = live() - before;
    let t = Instant::now();
    let state = State::from_snapshot(decoded);
    let build = t.elapsed();
    let rebuilt = live() - before;
    let t = Instant::now();
    let view = View::build(&state);
    let view_build = t.elapsed();
    rows.push(("decoded snapshot (transient)".into(), per(decoded_bytes)));
    rows.push(("state rebuilt from the snapshot".into(), per(rebuilt)));
    println!(
        "\nin-process breakdown, {} catalog of {} instances (live heap bytes, as requested)",
        if rich { "rich" } else { "bare" },
        cat.len()
    );
    println!("| part | bytes per instance |\n|---|---:|");
    for (what, b) in rows {
        println!("| {what} | {b:.0} |");
    }
    println!(
        "snapshot: encoded in slices in {:.0} ms, the longest slice {:.2} ms",
        encode_sliced.as_secs_f64() * 1e3,
        longest_slice.as_secs_f64() * 1e3,
    );
    println!(
        "rebuild: encode {:.0} ms from the live tables in one piece, {:.0} ms from a copy; \
         decode {:.0} ms, State::from_snapshot {:.0} ms, View::build {:.0} ms",
        encode_live.as_secs_f64() * 1e3,
        encode.as_secs_f64() * 1e3,
        decode.as_secs_f64() * 1e3,
        build.as_secs_f64() * 1e3,
        view_build.as_secs_f64() * 1e3
    );
    drop((view, state));
    Ok(())
}
