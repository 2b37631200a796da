//! On the leader: `acl.tokens.initial_management`. The server that leads
//! makes sure a management token with that secret exists, proposing it
//! through the log once when it does not, as Consul's leader does on
//! establishing leadership. Creating it ends bootstrapping, so
//! `PUT /v1/acl/bootstrap` is refused afterwards.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::catalog::{AclOp, AclToken, Command, Outcome, Replica, secret_hash};
use crate::consensus::Consensus;

/// How often a server that does not lead asks whether it leads now.
const LEADER_POLL: Duration = Duration::from_millis(250);

/// The pause after a failed proposal.
const RETRY: Duration = Duration::from_secs(1);

/// Until `stop`: whenever this server leads and the token is missing,
/// proposes it.
pub async fn run(
    consensus: Arc<Consensus>,
    replica: Arc<Replica>,
    secret: String,
    stop: CancellationToken,
) {
    let hash = secret_hash(&secret);
    loop {
        let present = replica.read().acl_token_by_secret(&hash).is_some();
        let pause = if present || !consensus.is_leader() {
            LEADER_POLL
        } else {
            let token = AclToken {
                accessor_id: uuid::Uuid::new_v4().to_string(),
                secret_id: secret.clone(),
                secret_hash: hash,
                description: "Initial Management Token".into(),
                policies: Vec::new(),
                local: false,
                create_time: 0,
                create_index: 0,
                modify_index: 0,
            };
            match consensus
                .write_as_leader(Command::Acl(AclOp::InitialManagement(token)))
                .await
            {
                Ok(Outcome::Applied(_)) => {
                    tracing::info!("created the initial management token");
                    LEADER_POLL
                }
                Ok(other) => {
                    tracing::error!(?other, "the initial management token was refused");
                    RETRY
                }
                Err(e) => {
                    tracing::warn!(error = %e, "proposing the initial management token");
                    RETRY
                }
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
