//! Log entries of older data dirs, re-encoded once at open into the
//! current format (see `store::format`): version 1's flat catalog commands
//! and version 2's batches without the leader's time.

use std::collections::BTreeMap;

use openraft::{EntryPayload, Membership};

use super::types::{Entry, RaftMember};
use crate::catalog::{
    CheckRegistration, Command, Deregistration, HealthStatus, Registration, ServiceAddress,
    ServiceRegistration, Weights,
};
use crate::store::format::{self, FormatError, Version};
use crate::store::{self, StoreError, v1};

/// Re-encodes a log entry of a data dir in format `from` into the current
/// format, for [`format::upgrade`].
pub(crate) fn upgrade_entry(from: Version, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    if (2..=4).contains(&from) {
        // Format 2's batches decode as the current ones with time 0, formats
        // 3 and 4's as they were (formats 4 and 5 only appended commands).
        return store::encode(&store::decode::<Entry>(bytes)?);
    }
    if from != format::UNVERSIONED {
        return Err(FormatError::unreadable("a stored log entry", from).into());
    }
    let old: v1::Entry = store::decode(bytes)?;
    let payload = match old.payload {
        v1::EntryPayload::Blank => EntryPayload::Blank,
        v1::EntryPayload::Normal(commands) => {
            EntryPayload::Normal(commands.into_iter().map(command_from_v1).collect())
        }
        v1::EntryPayload::Membership(m) => EntryPayload::Membership(membership_from_v1(m)),
    };
    store::encode(&Entry {
        log_id: old.log_id,
        payload,
    })
}

/// Raft's membership as version 1 stored it; its shape has not changed.
pub(crate) fn membership_from_v1(m: v1::Membership) -> Membership<u64, RaftMember> {
    let nodes: BTreeMap<u64, RaftMember> = m
        .nodes
        .into_iter()
        .map(|(id, n)| (id, RaftMember::new(n.name, n.addr)))
        .collect();
    Membership::new(m.configs, nodes)
}

/// Version 1's flat commands were the catalog's; they are now its domain's
/// ops. Field by field, so that a change to a registration does not compile
/// until someone decides what it means for old data dirs.
fn command_from_v1(c: v1::Command) -> Command {
    match c {
        v1::Command::Register(r) => Command::register(Registration {
            node: r.node,
            id: r.id,
            address: r.address,
            datacenter: r.datacenter,
            tagged_addresses: r.tagged_addresses,
            node_meta: r.node_meta.into(),
            skip_node_update: r.skip_node_update,
            service: r.service.map(|s| ServiceRegistration {
                id: s.id,
                service: s.service,
                tags: s.tags,
                address: s.address,
                tagged_addresses: s
                    .tagged_addresses
                    .into_iter()
                    .map(|(k, a)| {
                        let a = ServiceAddress {
                            address: a.address,
                            port: a.port,
                        };
                        (k, a)
                    })
                    .collect(),
                meta: s.meta.into(),
                port: s.port,
                weights: s.weights.map(|w| Weights {
                    passing: w.passing,
                    warning: w.warning,
                }),
                enable_tag_override: s.enable_tag_override,
            }),
            checks: r
                .checks
                .into_iter()
                .map(|c| CheckRegistration {
                    check_id: c.check_id,
                    name: c.name,
                    status: match c.status {
                        v1::HealthStatus::Passing => HealthStatus::Passing,
                        v1::HealthStatus::Warning => HealthStatus::Warning,
                        v1::HealthStatus::Critical => HealthStatus::Critical,
                    },
                    notes: c.notes,
                    output: c.output,
                    service_id: c.service_id,
                    kind: c.kind,
                })
                .collect(),
        }),
        v1::Command::Deregister(d) => Command::deregister(Deregistration {
            node: d.node,
            service_id: d.service_id,
            check_id: d.check_id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::consensus::types::LogId;
    use crate::rpc::types::Batch;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 0), index)
    }

    fn strings<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// A version 1 registration with every field set, each to its own value.
    fn v1_register() -> v1::Command {
        v1::Command::Register(v1::Registration {
            node: "n1".into(),
            id: "id-1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: strings([("lan", "10.0.0.1")]),
            node_meta: strings([("rack", "r1")]),
            skip_node_update: true,
            service: Some(v1::ServiceRegistration {
                id: "web-1".into(),
                service: "web".into(),
                tags: vec!["v1".into(), "primary".into()],
                address: "10.0.0.2".into(),
                tagged_addresses: [(
                    "wan".to_owned(),
                    v1::ServiceAddress {
                        address: "10.0.0.3".into(),
                        port: 80,
                    },
                )]
                .into(),
                meta: strings([("version", "1.2")]),
                port: 8080,
                weights: Some(v1::Weights {
                    passing: 5,
                    warning: 2,
                }),
                enable_tag_override: true,
            }),
            checks: vec![v1::CheckRegistration {
                check_id: "web-alive".into(),
                name: "alive".into(),
                status: v1::HealthStatus::Critical,
                notes: "n".into(),
                output: "o".into(),
                service_id: "web-1".into(),
                kind: "ttl".into(),
            }],
        })
    }

    /// [`v1_register`] as the current catalog op.
    fn register() -> Command {
        Command::register(Registration {
            node: "n1".into(),
            id: "id-1".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: strings([("lan", "10.0.0.1")]),
            node_meta: strings([("rack", "r1")]).into(),
            skip_node_update: true,
            service: Some(ServiceRegistration {
                id: "web-1".into(),
                service: "web".into(),
                tags: vec!["v1".into(), "primary".into()],
                address: "10.0.0.2".into(),
                tagged_addresses: [(
                    "wan".to_owned(),
                    ServiceAddress {
                        address: "10.0.0.3".into(),
                        port: 80,
                    },
                )]
                .into(),
                meta: strings([("version", "1.2")]).into(),
                port: 8080,
                weights: Some(Weights {
                    passing: 5,
                    warning: 2,
                }),
                enable_tag_override: true,
            }),
            checks: vec![CheckRegistration {
                check_id: "web-alive".into(),
                name: "alive".into(),
                status: HealthStatus::Critical,
                notes: "n".into(),
                output: "o".into(),
                service_id: "web-1".into(),
                kind: "ttl".into(),
            }],
        })
    }

    fn v1_deregister() -> v1::Command {
        v1::Command::Deregister(v1::Deregistration {
            node: "n1".into(),
            service_id: "web-1".into(),
            check_id: "web-alive".into(),
        })
    }

    fn deregister() -> Command {
        Command::deregister(Deregistration {
            node: "n1".into(),
            service_id: "web-1".into(),
            check_id: "web-alive".into(),
        })
    }

    /// The frozen types still encode as the old main wrote: a flat command
    /// enum whose bytes the current ones prefix with the domain.
    #[test]
    fn version_1_commands_keep_their_encoding() {
        let v1_bytes = store::encode(&v1_deregister()).expect("encode");
        assert_eq!(
            v1_bytes, b"\x01\x02n1\x05web-1\x09web-alive",
            "store/v1.rs is the old format itself and must never change"
        );
        let current = store::encode(&deregister()).expect("encode");
        assert_eq!(current[0], 0, "Command::Catalog");
        assert_eq!(&current[1..], v1_bytes.as_slice());
        let v1_bytes = store::encode(&v1_register()).expect("encode");
        let current = store::encode(&register()).expect("encode");
        assert_eq!(&current[1..], v1_bytes.as_slice());
    }

    #[test]
    fn version_1_entries_upgrade_to_catalog_ops_field_by_field() {
        let node = v1::RaftNode {
            name: "s1".into(),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 8300)),
        };
        let v1_entries = [
            v1::EntryPayload::Normal(vec![v1_register(), v1_deregister()]),
            v1::EntryPayload::Blank,
            v1::EntryPayload::Membership(v1::Membership {
                configs: vec![[7].into()],
                nodes: [(7, node)].into(),
            }),
        ];
        let expected = [
            EntryPayload::Normal(Batch::from(vec![register(), deregister()])),
            EntryPayload::Blank,
            EntryPayload::Membership(Membership::new(
                vec![[7].into()],
                BTreeMap::from([(7, RaftMember::new("s1", ([127, 0, 0, 1], 8300).into()))]),
            )),
        ];
        for (index, (old, want)) in (1..).zip(v1_entries.into_iter().zip(expected)) {
            let old = v1::Entry {
                log_id: log_id(index),
                payload: old,
            };
            let bytes = upgrade_entry(1, &store::encode(&old).expect("encode")).expect("upgrade");
            let entry: Entry = store::decode(&bytes).expect("decode");
            assert_eq!(entry.log_id, log_id(index));
            assert_eq!(entry.payload, want);
        }
    }

    /// A normal entry as format 2 wrote it (see `rpc::types`'s goldens):
    /// log id (3, 7, 10) and a batch of version 2 holding one deregistration.
    const V2_ENTRY: &[u8] = b"\x03\x07\x0a\x01\x02\x0d\x01\x00\x01\x02n1\x05web-1\x00";

    #[test]
    fn version_2_entries_upgrade_to_batches_dated_0() {
        let bytes = upgrade_entry(2, V2_ENTRY).expect("upgrade");
        let entry: Entry = store::decode(&bytes).expect("decode");
        assert_eq!(entry.log_id, LogId::new(CommittedLeaderId::new(3, 7), 10));
        let deregister = Command::deregister(Deregistration {
            node: "n1".into(),
            service_id: "web-1".into(),
            check_id: String::new(),
        });
        let EntryPayload::Normal(batch) = &entry.payload else {
            panic!("{entry:?}");
        };
        assert_eq!(batch.time(), 0);
        assert_eq!(*batch, Batch::from(vec![deregister]));
        // Rewritten in the current format: the batch (after the log id and
        // the payload's variant) says so.
        assert_eq!(bytes[4], format::CURRENT as u8);
        assert_eq!(V2_ENTRY[4], 2);
    }

    #[test]
    fn an_entry_of_an_unknown_older_version_is_not_guessed_at() {
        let bytes = store::encode(&v1::Entry {
            log_id: log_id(1),
            payload: v1::EntryPayload::Blank,
        })
        .expect("encode");
        assert!(matches!(
            upgrade_entry(format::CURRENT, &bytes),
            Err(StoreError::Format(FormatError::Unreadable { .. }))
        ));
    }
}
