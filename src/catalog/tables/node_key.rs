//! A node's key (its lowercased name) as the tables hold it: one word,
//! shared by the node's row and the keys of its instances and checks.
//!
//! The key of a row that belongs to a node is (node's key, ID), and it
//! sits in every slot of its table's B-tree. With the node's part inline
//! (`CompactString`, 24 bytes) a slot of the services or checks table took
//! 56 bytes, and a leaf of eleven slots 640 in jemalloc's size classes. As
//! one pointer to a counted string that the nodes table holds, a slot
//! takes 40 and a leaf 512, and the lookup by service name holds 32 bytes
//! per instance where it held 48 (`benches/scale`, `--only breakdown`). A
//! node has about ten instances and checks, so its one allocation is paid
//! for many times over.
//!
//! A key built for a lookup ([`NodeKey::new`]) is its own allocation, as
//! equal as a shared one; rows are keyed with the nodes table's
//! (`Nodes::upsert`, `Nodes::key_of`), so that a node's rows share it.
//! It compares, hashes and is written as the string it holds, so a stored
//! snapshot reads back unchanged.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use serde::de::{Deserialize, Deserializer, Visitor};
use serde::{Serialize, Serializer};
use triomphe::ThinArc;

/// A node's lowercased name; clones share it.
#[derive(Clone)]
pub(crate) struct NodeKey(ThinArc<(), u8>);

impl NodeKey {
    /// The key `key`, in an allocation of its own.
    pub(crate) fn new(key: &str) -> Self {
        Self(ThinArc::from_header_and_slice((), key.as_bytes()))
    }

    /// The key as a string.
    pub(crate) fn as_str(&self) -> &str {
        // SAFETY: the bytes were copied from a `&str` in `new`, the only
        // constructor, and a `ThinArc`'s slice is never changed after.
        unsafe { std::str::from_utf8_unchecked(&self.0.slice) }
    }

    /// Whether `self` and `other` are one allocation, not merely equal.
    pub(crate) fn is_shared_with(&self, other: &Self) -> bool {
        self.0.ptr() == other.0.ptr()
    }
}

impl Deref for NodeKey {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for NodeKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for NodeKey {
    fn eq(&self, other: &Self) -> bool {
        self.is_shared_with(other) || self.as_str() == other.as_str()
    }
}

impl Eq for NodeKey {}

impl PartialOrd for NodeKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// As the strings order: the tables' ranges of a node's rows rely on it.
impl Ord for NodeKey {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.is_shared_with(other) {
            return Ordering::Equal;
        }
        self.as_str().cmp(other.as_str())
    }
}

/// As the string hashes, as `Borrow<str>` requires.
impl Hash for NodeKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_str().hash(h);
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_str().fmt(f)
    }
}

impl Serialize for NodeKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NodeKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;

        impl Visitor<'_> for Key {
            type Value = NodeKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node's key")
            }

            fn visit_str<E>(self, v: &str) -> Result<NodeKey, E> {
                Ok(NodeKey::new(v))
            }
        }

        d.deserialize_str(Key)
    }
}

#[cfg(test)]
mod tests {
    use compact_str::CompactString;

    use super::*;
    use crate::catalog::tests::written_as;

    #[test]
    fn one_word_that_orders_and_is_written_as_its_string() {
        assert_eq!(size_of::<NodeKey>(), 8);
        let keys = ["", "a", "ab", "b", "node-10", "node-9", "ünï"];
        for a in keys {
            written_as(&NodeKey::new(a), &CompactString::new(a));
            for b in keys {
                assert_eq!(NodeKey::new(a).cmp(&NodeKey::new(b)), a.cmp(b), "{a} {b}");
                assert_eq!(NodeKey::new(a) == NodeKey::new(b), a == b);
            }
        }
    }

    #[test]
    fn clones_share_and_a_new_key_does_not() {
        let a = NodeKey::new("node-1");
        assert!(a.clone().is_shared_with(&a));
        assert!(!NodeKey::new("node-1").is_shared_with(&a));
        assert_eq!(NodeKey::new("node-1"), a);
    }
}
