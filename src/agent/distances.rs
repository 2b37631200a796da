//! On a server with a WAN pool: how far each datacenter is, fed to
//! `Datacenters` so `/v1/catalog/datacenters` (and prepared queries'
//! `NearestN`) order datacenters by estimated round trip, as Consul's
//! `GetDatacentersByDistance`: the median of the estimates from our WAN
//! coordinate to each datacenter's servers, left servers skipped; and the
//! servers' WAN coordinates themselves, for `/v1/coordinate/datacenters`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::coordinate::DatacenterCoordinates;
use crate::coordinate::near::datacenter_distances;
use crate::datacenters::Datacenters;
use crate::gossip::{Gossip, MemberStatus, Role};

/// How often the estimates are refreshed: coordinates move once a probe
/// period at most, and the order changes far more slowly than that.
const EVERY: Duration = Duration::from_secs(2);

/// Refreshes `datacenters`' distances from `wan` until `stop`.
pub(super) async fn feed(wan: Arc<Gossip>, datacenters: Arc<Datacenters>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                datacenters.set_distances(estimate(&wan));
                datacenters.set_coordinates(maps(&wan));
            }
        }
    }
}

/// Every datacenter the WAN pool names, by name, with the coordinates of
/// its servers known so far, each named without its `.dc` suffix (as
/// Consul's `ListDatacenters`).
fn maps(wan: &Gossip) -> Vec<DatacenterCoordinates> {
    let coordinates = wan.coordinates();
    let mut by_dc: BTreeMap<String, Vec<(String, crate::coordinate::Coordinate)>> = BTreeMap::new();
    for member in wan.members().iter().filter(|m| m.role == Role::Server) {
        let nodes = by_dc.entry(member.dc.clone()).or_default();
        if let Some(coord) = coordinates.by_name.get(&member.name) {
            let suffix = format!(".{}", member.dc);
            let node = member.name.strip_suffix(&suffix).unwrap_or(&member.name);
            nodes.push((node.to_owned(), coord.clone()));
        }
    }
    by_dc
        .into_iter()
        .map(|(datacenter, nodes)| DatacenterCoordinates { datacenter, nodes })
        .collect()
}

/// Each datacenter's distance as the WAN pool's coordinates give it.
fn estimate(wan: &Gossip) -> BTreeMap<String, f64> {
    let coordinates = wan.coordinates();
    let members = wan.members();
    let servers = members
        .iter()
        .filter(|m| m.role == Role::Server && m.status != MemberStatus::Left);
    datacenter_distances(
        &coordinates.own,
        servers.filter_map(|m| Some((m.dc.as_str(), coordinates.by_name.get(&m.name)?))),
    )
}
