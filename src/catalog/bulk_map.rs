//! Reading a snapshot's tables into maps whose nodes are full.
//!
//! serde builds a `BTreeMap` by inserting entries one at a time. A snapshot
//! holds each table in key order, and std's B-tree, inserted into at its
//! right edge, splits every full leaf into one of six entries and one of
//! five, and never fills the left one again: a table read back that way
//! left close to half of every node empty, and rows sit in the nodes. At
//! 100,000 rich instances the state rebuilt from a snapshot took 1,426
//! bytes per instance against 1,230 for the same state built by applying
//! the log (`benches/scale`, `--only breakdown`). [`deserialize`] reads the
//! entries into a vector and builds the map in bulk (`FromIterator`),
//! which fills its nodes. The bytes read are the same: only the map's
//! shape in memory changes.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// The most entries reserved ahead from a length the input claims: a
/// corrupt or hostile length must not reserve gigabytes before the first
/// entry is read (serde's own maps cap theirs the same way).
const MAX_RESERVED_BYTES: usize = 1 << 20;

/// A map from its serialized entries, built in bulk. Later duplicates of a
/// key replace earlier ones, as inserting them in order would.
pub(crate) fn deserialize<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    d.deserialize_map(Entries(PhantomData))
}

struct Entries<K, V>(PhantomData<(K, V)>);

impl<'de, K, V> Visitor<'de> for Entries<K, V>
where
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    type Value = BTreeMap<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let most = MAX_RESERVED_BYTES / size_of::<(K, V)>().max(1);
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(most));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(BTreeMap::from_iter(entries))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Table {
        #[serde(deserialize_with = "deserialize")]
        rows: BTreeMap<String, u64>,
    }

    #[test]
    fn a_map_read_in_bulk_equals_the_one_written() {
        let table = Table {
            rows: (0..1000u64).map(|i| (format!("row{i:04}"), i)).collect(),
        };
        let bytes = postcard::to_allocvec(&table).expect("encode");
        let back: Table = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, table);
        let empty = Table {
            rows: BTreeMap::new(),
        };
        let bytes = postcard::to_allocvec(&empty).expect("encode");
        assert_eq!(
            postcard::from_bytes::<Table>(&bytes).expect("decode"),
            empty
        );
    }

    #[test]
    fn a_later_duplicate_replaces_an_earlier_one_and_disorder_is_sorted() {
        let back: Table =
            serde_json::from_str(r#"{"rows": {"b": 1, "a": 2, "b": 3}}"#).expect("decode");
        let want: BTreeMap<String, u64> = [("a".to_string(), 2), ("b".to_string(), 3)].into();
        assert_eq!(back.rows, want);
    }

    #[test]
    fn a_length_claimed_past_the_input_reserves_little_and_fails_cleanly() {
        // postcard: the map's length as a varint (u32::MAX), then one entry.
        let mut bytes = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
        bytes.extend_from_slice(&[1, b'a', 7]);
        assert!(postcard::from_bytes::<Table>(&bytes).is_err());
    }
}
