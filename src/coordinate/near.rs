//! Ordering by estimated round trip: nodes for `?near=` (Consul's
//! `agent/consul/rtt.go`) and datacenters for `/v1/catalog/datacenters`
//! (Consul's `router.GetDatacentersByDistance`).

use std::collections::BTreeMap;

use super::Coordinate;

/// The estimated round trip in seconds between two coordinates; +∞ when
/// either is missing or they are of different spaces, so such nodes sort
/// last.
pub fn distance(a: Option<&Coordinate>, b: Option<&Coordinate>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => a.distance_secs(b).unwrap_or(f64::INFINITY),
        _ => f64::INFINITY,
    }
}

/// Sorts `items` by estimated round trip from `from`, stably (equal
/// distances, and every item without a coordinate, keep their order, the
/// latter at the end). With no `from` coordinate nothing moves: Consul
/// leaves the answer as it was when the near node has no coordinate.
pub fn sort_by_distance<T>(
    items: &mut [T],
    from: Option<&Coordinate>,
    coordinate_of: impl Fn(&T) -> Option<Coordinate>,
) {
    let Some(from) = from else {
        return;
    };
    let mut keyed: Vec<(f64, usize)> = items
        .iter()
        .enumerate()
        .map(|(i, item)| (distance(Some(from), coordinate_of(item).as_ref()), i))
        .collect();
    // Stable: ties keep their index order.
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
    permute(items, &order);
}

/// Puts `items[order[k]]` at position `k`.
fn permute<T>(items: &mut [T], order: &[usize]) {
    // Cycle-following with a visited mark: each element moves once.
    let mut placed = vec![false; items.len()];
    for start in 0..items.len() {
        if placed[start] {
            continue;
        }
        let mut k = start;
        loop {
            placed[k] = true;
            let from = order[k];
            if from == start {
                break;
            }
            items.swap(k, from);
            k = from;
        }
    }
}

/// Each other datacenter's distance from `own`: the median of the
/// estimated round trips to its servers (`peers`: datacenter and
/// coordinate of each server heard of). Datacenters with no coordinate are
/// left out, which `Datacenters` counts as unknown distance (+∞).
pub fn datacenter_distances<'a>(
    own: &Coordinate,
    peers: impl IntoIterator<Item = (&'a str, &'a Coordinate)>,
) -> BTreeMap<String, f64> {
    let mut by_dc: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (dc, coord) in peers {
        if let Some(d) = own.distance_secs(coord) {
            by_dc.entry(dc).or_default().push(d);
        }
    }
    by_dc
        .into_iter()
        .map(|(dc, mut dists)| {
            dists.sort_by(f64::total_cmp);
            (dc.to_owned(), dists[dists.len() / 2])
        })
        .collect()
}
