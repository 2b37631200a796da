//! Tests of snapshots encoded a slice at a time (`catalog/capture.rs`):
//! writes applied between the slices never show in the bytes, which are
//! the borrowed snapshot's at the capture, whatever the writes touch.

use std::cell::RefCell;

use proptest::prelude::*;

use super::state::golden_query_state;
use super::*;
use super::{kv_props, props};
use crate::catalog::{CaptureError, Secrets, State};

/// The snapshot body of `state` as it stands, in one piece.
fn whole(state: &State) -> Vec<u8> {
    postcard::to_allocvec(&state.snapshot_ref()).unwrap()
}

/// Encodes a capture of `state` in slices of `slice` rows, applying the
/// next of `writes` before each slice is read; returns the bytes and how
/// many writes went in while it was read.
fn encode_while_writing(
    state: &mut State,
    slice: usize,
    writes: &[(Time, Command)],
    secrets: Secrets,
) -> (Result<Vec<u8>, CaptureError>, usize) {
    let capture = state.capture();
    let cell = RefCell::new(std::mem::take(state));
    let mut pending = writes.iter();
    let mut applied = 0;
    let mut index = capture.last_index();
    let mut out = Vec::new();
    let encoded = capture.encode_sliced(
        &mut out,
        || {
            if let Some((time, cmd)) = pending.next() {
                index += 1;
                cell.borrow_mut().apply(index, *time, cmd);
                applied += 1;
            }
            cell.borrow()
        },
        secrets,
        slice,
    );
    *state = cell.into_inner();
    (encoded.map(|()| out), applied)
}

/// Writes that change every table of [`golden_query_state`]: nodes,
/// instances and checks come and go, keys are written and deleted (a
/// tombstone, a lock released by a destroyed session), a policy's removal
/// edits a token in place, a token and a prepared query are deleted.
fn writes_to_every_table() -> Vec<(Time, Command)> {
    let mut fresh = with_svc(node("n9", "10.0.0.9"), svc("api"));
    fresh.checks = vec![chk("alive", HealthStatus::Passing)];
    vec![
        (6_000, reg(fresh)),
        (6_000, Command::Kv(kv(KvVerb::Set, "a/new", "v"))),
        (6_000, Command::Kv(kv(KvVerb::Delete, "a/1", ""))),
        (6_000, Command::Acl(AclOp::DeletePolicy("p-1".into()))),
        (6_000, Command::Acl(AclOp::DeleteToken("a-1".into()))),
        (
            6_100,
            Command::Session(SessionOp::Destroy { id: "s-2".into() }),
        ),
        (6_100, dereg("N1", "", "")),
        (6_200, reg(node("n1", "10.0.0.2"))),
        (
            60_000,
            Command::ReapTombstones {
                deleted_before: 59_000,
            },
        ),
        (60_000, Command::Kv(kv(KvVerb::Set, "a/1", "back"))),
    ]
}

#[test]
fn a_capture_encodes_as_the_borrowed_snapshot() {
    let mut state = golden_query_state();
    let expected = whole(&state);
    let (bytes, _) = encode_while_writing(&mut state, 1024, &[], Secrets::Keep);
    assert_eq!(bytes.unwrap(), expected);
}

#[test]
fn writes_between_slices_do_not_show_in_the_snapshot() {
    let mut state = golden_query_state();
    let at_capture = state.clone();
    let writes = writes_to_every_table();
    for slice in [1, 2, 3, 7] {
        let mut state = state.clone();
        let (bytes, applied) = encode_while_writing(&mut state, slice, &writes, Secrets::Keep);
        assert_eq!(bytes.unwrap(), whole(&at_capture), "slices of {slice}");
        // The writes went in, and changed what a snapshot now holds.
        assert_eq!(applied, writes.len(), "slices of {slice}");
        assert_ne!(whole(&state), whole(&at_capture));
    }
    // And a capture taken after them holds them.
    let (bytes, _) = encode_while_writing(&mut state, 1, &writes, Secrets::Keep);
    let after = state.clone();
    let (again, _) = encode_while_writing(&mut state, 2, &[], Secrets::Keep);
    assert_eq!(again.unwrap(), whole(&after));
    assert_ne!(bytes.unwrap(), whole(&after));
}

#[test]
fn a_capture_for_client_agents_blanks_the_secrets() {
    let mut state = golden_query_state();
    let redacted = postcard::to_allocvec(&state.to_snapshot().redacted()).unwrap();
    let writes = writes_to_every_table();
    let (bytes, _) = encode_while_writing(&mut state, 1, &writes, Secrets::Blank);
    assert_eq!(bytes.unwrap(), redacted);
}

#[test]
fn captures_overlap_and_each_reads_its_own_moment() {
    let mut state = golden_query_state();
    let first_at = whole(&state);
    let first = state.capture();
    let mut writes = writes_to_every_table().into_iter();
    let mut index = state.last_index();
    for (time, cmd) in writes.by_ref().take(5) {
        index += 1;
        state.apply(index, time, &cmd);
    }
    let second_at = whole(&state);
    let second = state.capture();
    for (time, cmd) in writes {
        index += 1;
        state.apply(index, time, &cmd);
    }
    let mut out = Vec::new();
    second.encode(&mut out, || &state, Secrets::Keep).unwrap();
    assert_eq!(out, second_at);
    out.clear();
    first.encode(&mut out, || &state, Secrets::Keep).unwrap();
    assert_eq!(out, first_at);
    assert_ne!(first_at, second_at);
}

#[test]
fn a_capture_is_lost_when_the_state_is_replaced() {
    let mut state = golden_query_state();
    let capture = state.capture();
    let replaced = State::from_snapshot(state.to_snapshot());
    assert!(matches!(
        capture.encode(&mut Vec::new(), || &replaced, Secrets::Keep),
        Err(CaptureError::Lost)
    ));
}

/// A command of the catalog's or of KV's and sessions' property tests.
fn any_step() -> impl Strategy<Value = (Time, Command)> {
    prop_oneof![props::command().prop_map(|c| (0, c)), kv_props::step(),]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_capture_holds_the_state_at_its_index_whatever_is_written_meanwhile(
        before in prop::collection::vec(any_step(), 0..40),
        during in prop::collection::vec(any_step(), 1..40),
        slice in 1usize..4,
    ) {
        let mut state = State::new();
        let mut time: Time = 1_000;
        let mut index = 0;
        for (elapsed, cmd) in &before {
            time += elapsed;
            index += 1;
            state.apply(index, time, cmd);
        }
        let at_capture = state.clone();
        let during: Vec<(Time, Command)> = during
            .into_iter()
            .map(|(elapsed, cmd)| {
                time += elapsed;
                (time, cmd)
            })
            .collect();
        let (bytes, applied) = encode_while_writing(&mut state, slice, &during, Secrets::Keep);
        prop_assert_eq!(bytes.unwrap(), whole(&at_capture));
        // The live tables are what applying the commands made them.
        let mut replay = at_capture;
        for (time, cmd) in during.iter().take(applied) {
            index += 1;
            replay.apply(index, *time, cmd);
        }
        prop_assert_eq!(whole(&replay), whole(&state));
    }
}
