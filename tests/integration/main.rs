//! Integration tests: each starts real `trellis` processes on loopback and
//! talks to them with real DNS and HTTP clients.

mod harness;

mod acl_api;
mod acl_dns;
mod acl_enforce;
mod checks;
mod cli;
mod clients;
mod cluster;
mod cluster_membership;
mod config_files;
mod coordinates;
mod cross_dc;
mod dns_answers;
mod dns_rrl;
mod durability;
mod http_api;
mod identity;
mod input_limits;
mod kv;
mod kv_cli;
mod kv_cluster;
mod lifecycle;
mod limits;
mod membership;
mod partition;
mod recovery;
mod rpc_outsider;
mod rpc_tls;
mod sessions;
mod storage;
mod tls;
mod txn;
mod upgrade;
mod wan;
