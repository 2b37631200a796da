//! [`Meta`]: the key/value metadata of nodes and services, held as a
//! sorted list of pairs.
//!
//! Consul caps it at 64 pairs, and most nodes and services carry none or a
//! few. A `BTreeMap` allocates a node of eleven slots for its first pair
//! (544 bytes for `String` pairs), which made the metadata the largest part
//! of a service row, and of every registration the log's tail and the
//! follow history hold (measured by `benches/scale`); the list holds
//! exactly its pairs, each string inline up to 24 bytes (`CompactString`,
//! as the catalog's rows keep theirs), boxed: 16 bytes in its row, where a
//! `Vec` takes 24 and holds its spare room (see `ROW_SIZES` in `types.rs`).
//! It is written as a map, on the wire and on disk alike (postcard writes
//! a map and a list of pairs the same way), so a stored snapshot or log
//! entry reads back unchanged.

use std::borrow::Borrow;
use std::fmt;

use compact_str::CompactString;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Key/value metadata as Consul stores it (`Meta`, `NodeMeta`), ordered
/// by key, each key once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Meta(Box<[(CompactString, CompactString)]>);

impl Meta {
    /// No pairs.
    pub fn new() -> Self {
        Self(Box::default())
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// The value for `key`.
    pub fn get<Q: Borrow<str> + ?Sized>(&self, key: &Q) -> Option<&str> {
        self.find(key.borrow()).ok().map(|i| self.0[i].1.as_str())
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q: Borrow<str> + ?Sized>(&self, key: &Q) -> bool {
        self.find(key.borrow()).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value.into()).into_string()),
            Err(i) => {
                let mut pairs = std::mem::take(&mut self.0).into_vec();
                pairs.insert(i, (key.into(), value.into()));
                self.0 = pairs.into_boxed_slice();
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q: Borrow<str> + ?Sized>(&mut self, key: &Q) -> Option<String> {
        let i = self.find(key.borrow()).ok()?;
        let mut pairs = std::mem::take(&mut self.0).into_vec();
        let (_, value) = pairs.remove(i);
        self.0 = pairs.into_boxed_slice();
        Some(value.into_string())
    }

    /// The pairs, ordered by key.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &str)> + ExactSizeIterator {
        self.0.iter().map(pair_str)
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// The values, in their keys' order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v.as_str())
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `pairs` as a map holds them: ordered by key, the last value of a
    /// key kept.
    fn from_pairs(mut pairs: Vec<(CompactString, CompactString)>) -> Self {
        // Stable: of equal keys the last stays last, and is the one kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(CompactString, CompactString)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        Self(out.into_boxed_slice())
    }
}

impl FromIterator<(String, String)> for Meta {
    /// As a map collects: ordered by key, the last value of a key kept.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self::from_pairs(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<const N: usize> From<[(String, String); N]> for Meta {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl From<std::collections::BTreeMap<String, String>> for Meta {
    fn from(map: std::collections::BTreeMap<String, String>) -> Self {
        // Already ordered and unique.
        Self(map.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl Extend<(String, String)> for Meta {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl IntoIterator for Meta {
    type Item = (String, String);
    type IntoIter = std::iter::Map<
        std::vec::IntoIter<(CompactString, CompactString)>,
        fn((CompactString, CompactString)) -> (String, String),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0
            .into_vec()
            .into_iter()
            .map(|(k, v)| (k.into_string(), v.into_string()))
    }
}

impl<'a> IntoIterator for &'a Meta {
    type Item = (&'a str, &'a str);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (CompactString, CompactString)>,
        fn(&'a (CompactString, CompactString)) -> (&'a str, &'a str),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(pair_str)
    }
}

/// A pair as two string slices.
fn pair_str((k, v): &(CompactString, CompactString)) -> (&str, &str) {
    (k, v)
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MetaVisitor)
    }
}

struct MetaVisitor;

impl<'de> Visitor<'de> for MetaVisitor {
    type Value = Meta;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of strings to strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
        // The hint comes from the input: bound what it may reserve.
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(pair) = map.next_entry::<CompactString, CompactString>()? {
            pairs.push(pair);
        }
        Ok(Meta::from_pairs(pairs))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalog::tests::written_as;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn is_two_words() {
        assert_eq!(size_of::<Meta>(), 2 * size_of::<usize>());
    }

    #[test]
    fn behaves_as_the_map_it_replaces() {
        let mut meta = Meta::new();
        let mut map = BTreeMap::new();
        for (k, v) in [("b", "1"), ("a", "2"), ("c", "3"), ("a", "4")] {
            assert_eq!(meta.insert(s(k), s(v)), map.insert(s(k), s(v)));
        }
        assert_eq!(meta.remove("c"), map.remove("c"));
        assert_eq!(meta.remove("zz"), map.remove("zz"));
        assert!(
            meta.iter()
                .eq(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        );
        assert_eq!(meta.get("a"), map.get("a").map(String::as_str));
        assert_eq!(meta.get("nope"), None);
        assert_eq!(meta.len(), 2);
        let collected: Meta = [(s("x"), s("1")), (s("w"), s("2")), (s("x"), s("3"))].into();
        assert!(collected.iter().eq([("w", "2"), ("x", "3")]));
    }

    #[test]
    fn is_written_and_read_as_the_map_was() {
        let map = BTreeMap::from([(s("rack"), s("r1")), (s("az"), s("a"))]);
        written_as(&Meta::from(map.clone()), &map);
        let unordered: Meta = serde_json::from_str(r#"{"z":"1","a":"2"}"#).expect("json");
        assert_eq!(unordered.keys().collect::<Vec<_>>(), [&s("a"), &s("z")]);
    }
}
