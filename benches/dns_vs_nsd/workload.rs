//! The benchmark's data, generated deterministically so that every run and
//! every machine measures the same thing: the catalog registered into trellis,
//! the equivalent static zone served by Knot and NSD, the dnsperf query file,
//! and the writes that churn the catalog during a run.
//!
//! Two sizes ([`Size`]): today's 1,000 services × 3 on 300 nodes, and a
//! datacenter's 33,334 services × 3 on 10,000 nodes (100,002 instances).

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Services in the small catalog (the default `catalog`, which
/// `acl_overhead` shares).
pub(crate) const SERVICES: usize = 1_000;
/// Instances of each service, each on a different node.
pub(crate) const INSTANCES: usize = 3;
/// Nodes the small catalog's instances are spread over.
pub(crate) const NODES: usize = 300;
/// Lines in the dnsperf query file; dnsperf loops over it. Its 90,000
/// lines naming services cover every service of either size.
pub(crate) const QUERIES: usize = 100_000;

/// A catalog size: `services` × [`INSTANCES`] on `nodes` nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size {
    /// What the report and `BENCH_SIZES` call it.
    pub(crate) name: &'static str,
    /// Services (`svc0`…).
    pub(crate) services: usize,
    /// Nodes (`node0`…).
    pub(crate) nodes: usize,
}

impl Size {
    /// Instances in the catalog.
    pub(crate) fn instances(&self) -> usize {
        self.services * INSTANCES
    }
}

/// Today's workload: 3,000 instances.
pub(crate) const SMALL: Size = Size {
    name: "3k",
    services: SERVICES,
    nodes: NODES,
};

/// A datacenter: 100,002 instances, as Consul's published scale test.
pub(crate) const LARGE: Size = Size {
    name: "100k",
    services: 33_334,
    nodes: 10_000,
};

/// One service instance, as registered through `PUT /v1/catalog/register`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instance {
    /// Index of the service (`svcK`).
    pub(crate) service: usize,
    /// Which of the service's instances (`svcK-i`).
    pub(crate) index: usize,
    /// Index of the node it runs on (`nodeN`).
    pub(crate) node: usize,
    /// Service port, distinct per instance so SRV answers differ.
    pub(crate) port: u16,
}

impl Instance {
    /// The JSON body of the catalog registration, in Consul's field names.
    pub(crate) fn register_body(&self) -> serde_json::Value {
        serde_json::json!({
            "Node": node_name(self.node),
            "Address": node_addr(self.node).to_string(),
            "Service": {
                "ID": format!("svc{}-{}", self.service, self.index),
                "Service": format!("svc{}", self.service),
                "Port": self.port,
            },
        })
    }
}

/// `nodeN`.
pub(crate) fn node_name(node: usize) -> String {
    format!("node{node}")
}

/// The node's address: 10.1.x.y, unique per node.
pub(crate) fn node_addr(node: usize) -> Ipv4Addr {
    let n = u32::try_from(node).unwrap_or(u32::MAX);
    Ipv4Addr::new(10, 1, ((n / 250) & 0xff) as u8, (n % 250 + 1) as u8)
}

/// Every instance of the small catalog.
pub(crate) fn catalog() -> Vec<Instance> {
    catalog_of(SMALL)
}

/// Every instance of a catalog of `size`. The three instances of a service
/// land on three distinct nodes (offsets 0, 101 and 202 modulo the node
/// count), and consecutive services start 7 nodes apart (7 is prime to
/// both node counts), so the targets spread over all nodes. Ports count up
/// from 20,000 and wrap after 45,000, a multiple of 3: a service's three
/// ports stay consecutive, so its SRV records differ.
pub(crate) fn catalog_of(size: Size) -> Vec<Instance> {
    let mut out = Vec::with_capacity(size.instances());
    for service in 0..size.services {
        for index in 0..INSTANCES {
            let node = (service * 7 + index * 101) % size.nodes;
            let port = 20_000 + (service * INSTANCES + index) % 45_000;
            out.push(Instance {
                service,
                index,
                node,
                // 20_000 + 44_999 at most: always fits.
                port: u16::try_from(port).unwrap_or(u16::MAX),
            });
        }
    }
    out
}

/// The zone NSD serves: the same names, records and additional-section
/// addresses as trellis answers from `catalog`. TTL 0 like Consul's default.
pub(crate) fn zone(catalog: &[Instance], ns_addr: Ipv4Addr) -> String {
    let mut z = String::with_capacity(catalog.len() * 120);
    z.push_str("$ORIGIN consul.\n$TTL 0\n");
    z.push_str("@ IN SOA ns.consul. hostmaster.consul. 1 3600 600 86400 0\n");
    z.push_str("@ IN NS ns.consul.\n");
    let _ = writeln!(z, "ns IN A {ns_addr}");
    for inst in catalog {
        let node = node_name(inst.node);
        let _ = writeln!(
            z,
            "svc{}.service IN A {}",
            inst.service,
            node_addr(inst.node)
        );
        let _ = writeln!(
            z,
            "svc{}.service IN SRV 1 1 {} {node}.node.dc1",
            inst.service, inst.port
        );
    }
    let nodes = catalog.iter().map(|i| i.node + 1).max().unwrap_or(0);
    for node in 0..nodes {
        let _ = writeln!(z, "{}.node.dc1 IN A {}", node_name(node), node_addr(node));
    }
    z
}

/// The kind of a query line; the mix is fixed by `query_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryKind {
    /// `svcK.service.consul A`: 50 %.
    A,
    /// `svcK.service.consul SRV`: 40 %.
    Srv,
    /// `missingK.service.consul A`: 10 %, answered NXDOMAIN.
    Missing,
}

/// Share of the queries that must come back NXDOMAIN.
pub(crate) const NXDOMAIN_SHARE: f64 = 0.10;

/// The dnsperf input for the small catalog.
pub(crate) fn query_file() -> String {
    query_file_of(SMALL)
}

/// The dnsperf input: `QUERIES` lines, 50 % A, 40 % SRV, 10 % names that do
/// not exist, shuffled with a fixed seed. The lines naming a service walk a
/// shuffled order of all of them, round after round, so every service is
/// asked about (33,334 services take 90,000 lines 2.7 rounds).
pub(crate) fn query_file_of(size: Size) -> String {
    let mut rng = SplitMix64(0x0074_7265_6c6c_6973); // "trellis"
    let mut kinds: Vec<QueryKind> = (0..QUERIES)
        .map(|i| match i * 10 / QUERIES {
            0..=4 => QueryKind::A,
            5..=8 => QueryKind::Srv,
            _ => QueryKind::Missing,
        })
        .collect();
    // Fisher-Yates.
    for i in (1..kinds.len()).rev() {
        let j = rng.below(i + 1);
        kinds.swap(i, j);
    }
    let mut order: Vec<usize> = (0..size.services).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let mut next = order.iter().cycle();
    let mut out = String::with_capacity(QUERIES * 28);
    for kind in kinds {
        // `order` is never empty: both sizes have services.
        let mut k = || next.next().copied().unwrap_or(0);
        let _ = match kind {
            QueryKind::A => writeln!(out, "svc{}.service.consul A", k()),
            QueryKind::Srv => writeln!(out, "svc{}.service.consul SRV", k()),
            QueryKind::Missing => {
                writeln!(out, "missing{}.service.consul A", rng.below(size.services))
            }
        };
    }
    out
}

/// The `n`th churn write: instance `pick` of `catalog` registered again with
/// a port no instance had before the run (`10,000 + n % 10,000`) and a tag
/// naming the write, so every write changes what its service answers.
pub(crate) fn churn_body(catalog: &[Instance], pick: u64, n: u64) -> serde_json::Value {
    let inst = &catalog[(pick % catalog.len() as u64) as usize];
    let mut body = inst.register_body();
    body["Service"]["Port"] = serde_json::json!(10_000 + n % 10_000);
    body["Service"]["Tags"] = serde_json::json!([format!("churn{n}")]);
    body
}

/// A seeded generator for the churn's choice of instances.
pub(crate) fn churn_rng() -> impl FnMut() -> u64 {
    let mut rng = SplitMix64(0x6368_7572_6e00); // "churn"
    move || rng.next()
}

/// A tiny fixed PRNG (SplitMix64): `rand`'s generators do not promise the
/// same stream across versions, and the query file must never change.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for a workload (n is tiny next to 2^64).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Checks the generators without any process or socket; run by
/// `cargo test --bench dns_vs_nsd`.
pub(crate) fn self_check() {
    let cat = catalog();
    assert_eq!(cat.len(), SERVICES * INSTANCES);
    assert_eq!(cat, catalog(), "the catalog is deterministic");
    for svc in cat.chunks(INSTANCES) {
        let mut nodes: Vec<usize> = svc.iter().map(|i| i.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        assert_eq!(
            nodes.len(),
            INSTANCES,
            "instances of a service sit on distinct nodes"
        );
    }
    let used: std::collections::HashSet<usize> = cat.iter().map(|i| i.node).collect();
    assert_eq!(used.len(), NODES, "every node carries instances");
    let addrs: std::collections::HashSet<Ipv4Addr> = (0..NODES).map(node_addr).collect();
    assert_eq!(addrs.len(), NODES, "node addresses are unique");

    let body = cat[4].register_body();
    assert_eq!(body["Node"], "node108");
    assert_eq!(body["Service"]["ID"], "svc1-1");
    assert_eq!(body["Service"]["Port"], 20_004);

    let q = query_file();
    assert_eq!(q, query_file(), "the query file is deterministic");
    let lines: Vec<&str> = q.lines().collect();
    assert_eq!(lines.len(), QUERIES);
    let count = |f: &dyn Fn(&str) -> bool| lines.iter().filter(|l| f(l)).count();
    assert_eq!(count(&|l| l.starts_with("missing")), QUERIES / 10);
    assert_eq!(count(&|l| l.ends_with(" SRV")), QUERIES * 4 / 10);
    assert_eq!(
        count(&|l| l.starts_with("svc") && l.ends_with(" A")),
        QUERIES / 2
    );
    // Shuffled: the first tenth is not all of one kind.
    assert!(lines[..QUERIES / 10].iter().any(|l| l.ends_with(" SRV")));

    let z = zone(&cat, Ipv4Addr::LOCALHOST);
    assert_eq!(
        z.lines().filter(|l| l.contains(" SRV ")).count(),
        SERVICES * INSTANCES
    );
    assert!(z.contains("svc1.service IN SRV 1 1 20004 node108.node.dc1\n"));
    assert!(z.contains("node108.node.dc1 IN A 10.1.0.109\n"));

    let big = catalog_of(LARGE);
    assert_eq!(big.len(), 100_002);
    let used: std::collections::HashSet<usize> = big.iter().map(|i| i.node).collect();
    assert_eq!(used.len(), LARGE.nodes, "every node carries instances");
    let addrs: std::collections::HashSet<Ipv4Addr> = (0..LARGE.nodes).map(node_addr).collect();
    assert_eq!(addrs.len(), LARGE.nodes, "node addresses are unique");
    for svc in big.chunks(INSTANCES) {
        let mut nodes: Vec<usize> = svc.iter().map(|i| i.node).collect();
        let mut ports: Vec<u16> = svc.iter().map(|i| i.port).collect();
        nodes.sort_unstable();
        nodes.dedup();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!((nodes.len(), ports.len()), (INSTANCES, INSTANCES));
    }
    let q = query_file_of(LARGE);
    let asked: std::collections::HashSet<&str> = q
        .lines()
        .filter(|l| l.starts_with("svc"))
        .filter_map(|l| l.split('.').next())
        .collect();
    assert_eq!(
        asked.len(),
        LARGE.services,
        "the queries cover every service"
    );
    assert_eq!(
        q.lines().filter(|l| l.starts_with("missing")).count(),
        QUERIES / 10
    );
    let mut rng = churn_rng();
    let b = churn_body(&big, rng(), 7);
    assert_eq!(b["Service"]["Port"], 10_007);
    assert_eq!(b["Service"]["Tags"][0], "churn7");
}
