//! What one DNS answer costs in process, at 100,000 instances (33,334
//! services × 3 on 10,000 nodes): the fast path (`dns/wire`) against the
//! full responder (hickory parse, records, fit, encode), and against a
//! memo hit (a hash of the request and a copy: the most the old per-worker
//! memo could save, had every question been in it). Also what building the
//! view takes, in time and bytes.
//!
//! `cargo bench --bench dns_answer` prints ns per query for each path.
//! For instruction counts, which do not depend on the machine's load:
//!
//! ```text
//! cargo bench --bench dns_answer --no-run
//! DNS_ANSWER_PATH=fast valgrind --tool=callgrind --collect-atstart=no \
//!     --toggle-collect='*dns_answer::measured*' target/release/deps/dns_answer-*
//! ```
//!
//! and divide the `Collected` Ir by the query count printed
//! (`DNS_ANSWER_PATH` is `fast`, `old` or `memo`; `DNS_ANSWER_QUERIES`
//! how many).

#![allow(clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use trellis::catalog::view::View;
use trellis::catalog::{Command, Registration, ServiceRegistration, State};
use trellis::config::DnsSettings;
use trellis::config::defaults::DATACENTER;
use trellis::dns::{Caller, Reply, Responder, Scratch, Transport};

/// Counts live heap bytes, to weigh the view.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NODES: usize = 10_000;
const SERVICES: usize = 33_334;

fn catalog() -> State {
    let mut state = State::new();
    let mut index = 0;
    for s in 0..SERVICES {
        for k in 0..3 {
            index += 1;
            let node = (s * 3 + k) % NODES;
            let cmd = Command::register(Registration {
                node: format!("node-{node:05}"),
                id: String::new(),
                address: format!("10.{}.{}.{}", node >> 16, (node >> 8) & 255, node & 255),
                datacenter: DATACENTER.into(),
                tagged_addresses: Default::default(),
                node_meta: Default::default(),
                skip_node_update: false,
                service: Some(ServiceRegistration {
                    id: format!("svc-{s:05}-{k}"),
                    service: format!("svc-{s:05}"),
                    tags: Vec::new(),
                    address: String::new(),
                    tagged_addresses: Default::default(),
                    meta: Default::default(),
                    port: 8000 + k as u16,
                    weights: None,
                    enable_tag_override: false,
                }),
                checks: Vec::new(),
            });
            state.apply(index, 0, &cmd);
        }
    }
    state
}

/// The query mix of `dns_vs_nsd`: 50% A, 40% SRV, 10% NXDOMAIN, spread
/// over every service, plain UDP (Consul's answer limit applies).
fn queries(n: usize) -> Vec<Vec<u8>> {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let s = (rng % SERVICES as u64) as usize;
            let (name, qtype) = match i % 10 {
                0..5 => (format!("svc-{s:05}.service.consul."), RecordType::A),
                5..9 => (format!("svc-{s:05}.service.consul."), RecordType::SRV),
                _ => (format!("nope-{s:05}.service.consul."), RecordType::A),
            };
            let mut m = Message::query();
            m.metadata.id = i as u16;
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(Name::from_ascii(&name).expect("valid"), qtype));
            if std::env::var_os("DNS_ANSWER_EDNS").is_some() {
                let mut e = Edns::new();
                e.set_max_payload(1232);
                m.set_edns(e);
            }
            m.to_vec().expect("encodes")
        })
        .collect()
}

#[inline(never)]
fn measured_fast(r: &Responder, view: &View, qs: &[Vec<u8>], rounds: usize) -> usize {
    let mut scratch = Scratch::new(7);
    let mut out = Vec::with_capacity(4096);
    let mut bytes = 0;
    for _ in 0..rounds {
        for q in qs {
            assert!(r.respond_wire(
                view,
                Caller::Anyone,
                q,
                Transport::Udp,
                &mut scratch,
                &mut out
            ));
            bytes += out.len();
        }
    }
    bytes
}

#[inline(never)]
fn measured_old(r: &Responder, view: &View, qs: &[Vec<u8>], rounds: usize) -> usize {
    let peer: SocketAddr = ([127, 0, 21, 1], 5353).into();
    let mut bytes = 0;
    for _ in 0..rounds {
        for q in qs {
            let Reply::Respond(m) = r.respond(view, q, Transport::Udp, peer) else {
                panic!("the responder answers every query of the mix");
            };
            bytes += m.to_vec().expect("encodes").len();
        }
    }
    bytes
}

#[inline(never)]
fn measured_memo(memo: &HashMap<Vec<u8>, Vec<u8>>, qs: &[Vec<u8>], rounds: usize) -> usize {
    let mut out = Vec::with_capacity(4096);
    let mut key = Vec::with_capacity(512);
    let mut bytes = 0;
    for _ in 0..rounds {
        for q in qs {
            key.clear();
            key.extend(q[2..].iter().map(u8::to_ascii_lowercase));
            let hit = memo.get(&key).expect("every question is in the memo");
            out.clear();
            out.extend_from_slice(hit);
            out[..2].copy_from_slice(&q[..2]);
            bytes += out.len();
        }
    }
    bytes
}

fn main() {
    let started = Instant::now();
    let state = catalog();
    println!(
        "catalog of {} instances built in {:?}",
        SERVICES * 3,
        started.elapsed()
    );
    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let view = View::build(&state);
    let took = started.elapsed();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "View::build: {took:?}, {bytes} heap bytes ({} per instance, nodes included)",
        bytes / (SERVICES * 3)
    );
    let r = Responder::new(&DnsSettings::default(), DATACENTER).expect("defaults are valid");
    let n: usize = std::env::var("DNS_ANSWER_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let qs = queries(n);
    let path = std::env::var("DNS_ANSWER_PATH").unwrap_or_default();
    let rounds = if path.is_empty() { 3 } else { 1 };
    let run = |name: &str, f: &dyn Fn() -> usize| {
        if !path.is_empty() && path != name {
            return;
        }
        let started = Instant::now();
        let bytes = f();
        let per = started.elapsed().as_nanos() as f64 / (n * rounds) as f64;
        println!(
            "{name:>5}: {per:8.0} ns/query over {} queries ({} response bytes)",
            n * rounds,
            bytes
        );
    };
    run("fast", &|| measured_fast(&r, &view, &qs, rounds));
    run("old", &|| measured_old(&r, &view, &qs, rounds));
    if path.is_empty() || path == "memo" {
        let peer: SocketAddr = ([127, 0, 21, 1], 5353).into();
        let memo: HashMap<Vec<u8>, Vec<u8>> = qs
            .iter()
            .filter_map(|q| match r.respond(&view, q, Transport::Udp, peer) {
                Reply::Respond(m) => Some((q[2..].to_ascii_lowercase(), m.to_vec().ok()?)),
                _ => None,
            })
            .collect();
        run("memo", &|| measured_memo(&memo, &qs, rounds));
    }
}
