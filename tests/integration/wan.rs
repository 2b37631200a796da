//! The WAN pool of real agents: two datacenters of three servers and a
//! client agent each, joined by ONE WAN join; join flooding brings every
//! server in, both datacenters know each other on servers and client
//! agents, a killed server turns failed within seconds (and alive again
//! when restarted), the CLI lists, joins and force-leaves, and
//! `retry_join_wan` joins the pool at start. A LAN join pointed at a WAN
//! port mixes no pools.

use std::time::{Duration, Instant};

use trellis_testkit::federation::{datacenters, wan_members};
use trellis_testkit::{Agent, wait_until_async};

use crate::harness::trellis;

const DEADLINE: Duration = Duration::from_secs(30);

/// `trellis members -wan` against `agent`, its standard output.
fn members_wan_cli(agent: &Agent) -> String {
    let out = trellis().run(&[
        "members",
        "-wan",
        "-http-addr",
        &agent.addrs().http.to_string(),
    ]);
    assert!(
        out.status.success(),
        "trellis members -wan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wan_join_federates_every_server_of_two_datacenters() {
    let mut f = trellis().federation(&["dc1", "dc2"], 3).start_apart().await;
    f.add_client("dc1", "c1", |b| b);
    f.add_client("dc2", "c2", |b| b);

    // Before any WAN join, each server's pool holds its own datacenter's
    // servers only (flooding) and knows no other datacenter.
    for dc in ["dc1", "dc2"] {
        for s in f.dc(dc).servers() {
            let what = format!("{} sees its own 3 servers in the WAN pool", s.name());
            wait_until_async(&what, DEADLINE, || async {
                let seen = wan_members(s).await?;
                let ours = seen
                    .values()
                    .filter(|m| m.dc == dc && m.status == 1)
                    .count();
                if ours == 3 && seen.len() == 3 {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            })
            .await;
            assert_eq!(datacenters(s).await.expect("datacenters"), [dc]);
        }
    }

    // ONE join: dc2's s1 joins dc1's s1. Every server then lists all six.
    f.join_wan(f.dc("dc2").node("s1"), f.dc("dc1").node("s1"))
        .await;
    f.wait_wan_alive(DEADLINE).await;
    for s in f.servers() {
        let seen = wan_members(s).await.expect("WAN members");
        let names: Vec<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["s1.dc1", "s1.dc2", "s2.dc1", "s2.dc2", "s3.dc1", "s3.dc2"],
            "on {}",
            s.name()
        );
    }

    // catalog/datacenters: own first, on servers and client agents alike.
    for (dc, other) in [("dc1", "dc2"), ("dc2", "dc1")] {
        let cluster = f.dc(dc);
        for a in cluster.members() {
            let what = format!("{} knows both datacenters", a.name());
            wait_until_async(&what, DEADLINE, || async {
                let names = datacenters(a).await?;
                if names == [dc, other] {
                    Ok(())
                } else {
                    Err(format!("{names:?}"))
                }
            })
            .await;
        }
    }

    // A client agent is in no WAN pool: it lists none, and cannot join one.
    let c1 = f.dc("dc1").node("c1");
    let r = c1.get("/v1/agent/members?wan=1").await.expect("answer");
    assert_eq!((r.status, r.text.as_str()), (200, "null"), "as Consul's");
    assert!(
        wan_members(c1)
            .await
            .expect("client WAN members")
            .is_empty()
    );
    let target = format!("/v1/agent/join/{}?wan=1", f.dc("dc2").node("s1").serf_wan());
    let r = c1.request("PUT", &target, None).await.expect("answer");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.text.contains("Must be a server"), "{}", r.text);
    assert_eq!(members_wan_cli(c1).lines().count(), 1, "the header alone");

    // `trellis members -wan` prints the pool with each member's datacenter.
    let out = members_wan_cli(f.dc("dc1").node("s2"));
    for name in ["s1.dc1", "s2.dc1", "s3.dc1", "s1.dc2", "s2.dc2", "s3.dc2"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("{name} missing from:\n{out}"));
        let dc = name.split('.').nth(1).expect("dc");
        assert!(line.contains("\talive\tserver\t"), "{line}");
        assert!(line.ends_with(dc), "{line}");
    }

    // A killed dc2 server turns failed in every other server's WAN view
    // within seconds (Consul's WAN timing takes 30 s to 3 min).
    let victim = f.dc("dc2").node("s3");
    victim.kill();
    let killed = Instant::now();
    for s in f.servers().filter(|s| *s != victim) {
        let what = format!("{} sees s3.dc2 failed", s.name());
        wait_until_async(&what, DEADLINE, || async {
            let seen = wan_members(s).await?;
            match seen.get("s3.dc2").map(|m| m.status) {
                Some(4) => Ok(()),
                other => Err(format!("s3.dc2 status {other:?}")),
            }
        })
        .await;
    }
    eprintln!(
        "s3.dc2 failed on every WAN member {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let out = members_wan_cli(f.dc("dc1").node("s1"));
    assert!(
        out.lines()
            .any(|l| l.starts_with("s3.dc2\t") && l.contains("\tfailed\t")),
        "{out}"
    );
    // `trellis force-leave -wan` marks it left in every server's view at
    // once, instead of after reconnect_timeout_wan.
    let out = trellis().run(&[
        "force-leave",
        "-wan",
        "-http-addr",
        &f.dc("dc1").node("s2").addrs().http.to_string(),
        "s3.dc2",
    ]);
    assert!(
        out.status.success(),
        "trellis force-leave -wan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in f.servers().filter(|s| *s != victim) {
        let what = format!("{} sees s3.dc2 left", s.name());
        wait_until_async(&what, DEADLINE, || async {
            let seen = wan_members(s).await?;
            match seen.get("s3.dc2").map(|m| m.status) {
                Some(3) => Ok(()),
                other => Err(format!("s3.dc2 status {other:?}")),
            }
        })
        .await;
    }
    // The datacenter is still known and reachable through its other two.
    assert_eq!(
        datacenters(f.dc("dc1").node("c1"))
            .await
            .expect("datacenters"),
        ["dc1", "dc2"]
    );

    // Restarted (same address and WAN port), s3.dc2 is back alive in every
    // server's view: its datacenter's servers flood it in again.
    victim.restart_async().await.expect("restart s3.dc2");
    for s in f.servers() {
        let what = format!("{} sees s3.dc2 alive again", s.name());
        wait_until_async(&what, DEADLINE, || async {
            let seen = wan_members(s).await?;
            match seen.get("s3.dc2").map(|m| m.status) {
                Some(1) => Ok(()),
                other => Err(format!("s3.dc2 status {other:?}")),
            }
        })
        .await;
    }

    // A third datacenter joins by configuration (`--retry-join-wan`, whose
    // first address nobody gossips at: the next one is tried), a fourth
    // with `trellis join -wan`; every datacenter's agents then know all
    // four, their own first.
    let nobody = trellis_testkit::Placement::loopback().serf();
    let dc3 = trellis()
        .server()
        .node("s1")
        .datacenter("dc3")
        .bootstrap_expect(1)
        .arg("--retry-interval-wan", "1s")
        .retry_join_wan(nobody)
        .retry_join_wan(f.dc("dc1").node("s2").serf_wan())
        .start();
    let dc4 = trellis()
        .server()
        .node("s1")
        .datacenter("dc4")
        .bootstrap_expect(1)
        .start();
    let out = trellis().run(&[
        "join",
        "-wan",
        "-http-addr",
        &dc4.addrs().http.to_string(),
        &f.dc("dc2").node("s2").serf_wan().to_string(),
    ]);
    assert!(
        out.status.success(),
        "trellis join -wan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (a, own) in [
        (f.dc("dc2").node("c2"), "dc2"),
        (&dc3, "dc3"),
        (&dc4, "dc4"),
    ] {
        let mut want = vec![own];
        want.extend(
            ["dc1", "dc2", "dc3", "dc4"]
                .into_iter()
                .filter(|d| *d != own),
        );
        let what = format!("{} knows four datacenters", a.name());
        wait_until_async(&what, DEADLINE, || async {
            // Own first; the others by estimated round trip, which network
            // coordinates measure on loopback too: any order of them.
            let mut names = datacenters(a).await?;
            if let Some(others) = names.get_mut(1..) {
                others.sort();
            }
            if names == want {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lan_join_to_a_wan_port_mixes_no_pools() {
    let s1 = trellis().server().node("s1").bootstrap_expect(1).start();
    // A client agent told the server's WAN address as its LAN join address:
    // gossip answers there, but each side leaves the other pool's member
    // out of its view and says so.
    let stray = trellis()
        .client()
        .node("stray")
        .retry_join(s1.serf_wan())
        .start();
    let said = "members of another gossip pool";
    for a in [&s1, &stray] {
        let what = format!("{} warns of the other pool", a.name());
        wait_until_async(&what, DEADLINE, || async {
            if a.log().contains(said) {
                Ok(())
            } else {
                Err("no warning yet".to_string())
            }
        })
        .await;
    }
    let wan = wan_members(&s1).await.expect("WAN members");
    assert_eq!(wan.keys().collect::<Vec<_>>(), ["s1.dc1"], "{wan:?}");
    let r = stray.get("/v1/agent/members").await.expect("members");
    let lan: Vec<String> = r
        .json()
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|m| m["Name"].as_str().map(String::from))
        .collect();
    assert_eq!(lan, ["stray"], "the WAN member stays out of the LAN view");
    let r = s1.get("/v1/catalog/nodes").await.expect("nodes");
    assert!(!r.text.contains("s1.dc1"), "{}", r.text);
}
