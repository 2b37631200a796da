//! Reads of the KV store, and the index each answer blocks on: one key's
//! own index, a prefix's, or the table's.

use super::super::kv_types::{KvEntry, Time, TxnError, TxnOp, TxnResult};
use super::super::rules;
use super::super::state::State;
use super::super::types::Index;

impl State {
    /// One key.
    pub fn kv_get(&self, key: &str) -> Option<&KvEntry> {
        self.tables.kv.get(key)
    }

    /// The index a read of one key reports and blocks on: its ModifyIndex
    /// while it exists, else that of its delete (or of the last reaping),
    /// so it moves only when that key changes.
    pub fn kv_key_index(&self, key: &str) -> Index {
        self.tables.kv.key_index(key)
    }

    /// Every key under `prefix`, in key order.
    pub fn kv_list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> {
        self.tables.kv.under(prefix)
    }

    /// The index a listing of `prefix` reports and blocks on: never lower
    /// than before, deletes included.
    pub fn kv_prefix_index(&self, prefix: &str) -> Index {
        self.tables.kv.prefix_index(prefix)
    }

    /// The keys under `prefix`, each cut after the first `separator` past
    /// the prefix and listed once (`?keys&separator=/`), as Consul lists them.
    pub fn kv_keys(&self, prefix: &str, separator: &str) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for e in self.tables.kv.under(prefix) {
            let rest = &e.key[prefix.len()..];
            let cut = match (separator.is_empty(), rest.find(separator)) {
                (false, Some(at)) => &e.key[..prefix.len() + at + separator.len()],
                _ => e.key.as_str(),
            };
            if keys.last().map(String::as_str) != Some(cut) {
                keys.push(cut.to_string());
            }
        }
        keys
    }

    /// Runs a transaction of reads (`get`, `get-tree`, the checks) against
    /// the state as it is, without a log entry.
    pub fn kv_read_txn(&self, ops: &[TxnOp]) -> Result<Vec<TxnResult>, Vec<TxnError>> {
        rules::evaluate_txn(&self.tables, ops)
    }

    /// Number of keys.
    pub fn kv_len(&self) -> usize {
        self.tables.kv.len()
    }

    /// When the earliest lock-delay ends, if one is on: the leader clears
    /// those over with the tombstones.
    pub fn kv_earliest_delay_end(&self) -> Option<Time> {
        self.tables.kv.earliest_delay_end()
    }

    /// When the oldest tombstone was made, if there is one: the leader reaps
    /// those older than `tombstone_ttl`.
    pub fn kv_oldest_tombstone(&self) -> Option<Time> {
        self.tables.kv.oldest_tombstone()
    }
}
