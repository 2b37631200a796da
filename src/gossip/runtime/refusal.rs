//! Name claims the membership view refused (see `membership::view`): the
//! claimant is told through [`crate::gossip::Gossip::refusal`] that it is
//! the one refused, so its agent stops; the holder and the servers log each
//! refused claim, once a while rather than on every rebuild of the view.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Driver;
use crate::gossip::identity::Role;
use crate::gossip::membership::Refusal;

/// How long one refused claim stays quiet after it was logged.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// How many refused claims are remembered; past that the memory starts
/// over (a flood of claimants is then logged again, at most once per view
/// rebuild each, which membership changes already bound).
const MAX_REMEMBERED: usize = 256;

/// When each refused claim, by the claimant's process, was last logged.
#[derive(Debug, Default)]
pub(super) struct RefusalLog {
    /// (claimant address, claimant generation) → last logged.
    logged: HashMap<(SocketAddr, u64), Instant>,
}

impl RefusalLog {
    /// Whether `refusal` is due to be logged at `now`; records it if so.
    fn due(&mut self, refusal: &Refusal, now: Instant) -> bool {
        let key = (refusal.claimant_addr, refusal.claimant_generation);
        if self
            .logged
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < LOG_EVERY)
        {
            return false;
        }
        if self.logged.len() >= MAX_REMEMBERED && !self.logged.contains_key(&key) {
            self.logged.clear();
        }
        self.logged.insert(key, now);
        true
    }
}

impl Driver {
    /// Acts on the claims the view just refused: reports our own, logs the
    /// others (loudly on servers and on the holder, quietly elsewhere: every
    /// agent of a large pool saying the same would drown the news).
    pub(super) fn on_refused(&mut self, refused: &[Refusal], now: Instant) {
        let me = self.local_addr;
        for refusal in refused {
            if !self.refusals.due(refusal, now) {
                continue;
            }
            if refusal.claimant_addr == me {
                tracing::error!(
                    "{refusal}: another live node holds this agent's node name; \
                     give this agent another name (node_name, --node) or stop the other node"
                );
            } else if refusal.holder_addr == me || self.foca.identity().role() == Role::Server {
                tracing::warn!(
                    "{refusal}: the node is kept out of the members list and the catalog"
                );
            } else {
                tracing::debug!("{refusal}");
            }
        }
        let mine = refused.iter().find(|r| r.claimant_addr == me).cloned();
        self.refusal_tx.send_if_modified(|current| {
            // A refusal stays reported: the agent acts on the first one.
            if current.is_none() && mine.is_some() {
                *current = mine;
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(generation: u64) -> Refusal {
        Refusal {
            name: "s3".into(),
            holder_id: uuid::Uuid::from_u128(1),
            holder_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            claimant_id: uuid::Uuid::from_u128(2),
            claimant_addr: SocketAddr::from(([127, 0, 0, 2], 1)),
            claimant_generation: generation,
        }
    }

    #[test]
    fn a_claim_is_logged_once_a_while_and_a_new_process_at_once() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert!(log.due(&refusal(1), t0));
        assert!(!log.due(&refusal(1), t0 + Duration::from_secs(59)));
        assert!(log.due(&refusal(2), t0 + Duration::from_secs(59)));
        assert!(log.due(&refusal(1), t0 + LOG_EVERY));
    }

    #[test]
    fn the_memory_is_bounded() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        for g in 0..(MAX_REMEMBERED as u64 * 3) {
            assert!(log.due(&refusal(g), t0));
        }
        assert!(log.logged.len() <= MAX_REMEMBERED);
    }
}
