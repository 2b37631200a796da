//! [`Tags`]: a service instance's tags, held once and shared by every copy
//! the catalog keeps of them.
//!
//! An instance's tags are in its service row, again in each of its checks
//! (Consul denormalizes them there: `ServiceTags`), and again in its DNS
//! view entry. Each copy was a list of its own (the view's lowercased):
//! 48 bytes for two short tags, three times over (`benches/scale`,
//! `--only breakdown`). The list is now reference-counted, and the check
//! and the view entry take their instance's (the view compares tags
//! ignoring case), so the three are one allocation. No tags is no
//! allocation at all, as a bare instance's are.
//!
//! The list is one word in each holder (a thin `Arc` with the length in
//! its allocation, `triomphe::ThinArc`), where a `std` `Arc<[_]>` is two:
//! that keeps an instance's row within a smaller allocator size class
//! (see `ROW_SIZES` in `types.rs`).
//!
//! Equal lists are one list across instances too ([`TagLists`]): the
//! instances of a service mostly carry the same tags, and many services
//! the same few sets, so a catalog holds far fewer distinct lists than
//! instances.
//!
//! It is written as a sequence of strings, on the wire, on disk and in
//! JSON alike, as the boxed list it replaces was, so a stored snapshot or
//! log entry reads back unchanged. A decoded list is the decoder's own;
//! `State::from_snapshot` makes equal instances' lists one again
//! (`Services::from_rows`) and shares a check's with its instance's.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::ops::Deref;

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use triomphe::ThinArc;

/// A list of tags, in registration order, each inline up to 24 bytes;
/// clones share it.
#[derive(Clone, Default)]
pub struct Tags(Option<ThinArc<(), CompactString>>);

impl Tags {
    /// `tags` as a row keeps them.
    pub fn from_strings(tags: &[String]) -> Self {
        tags.iter().map(CompactString::new).collect()
    }

    /// Whether these are `tags`, in the same order.
    pub fn same_as(&self, tags: &[String]) -> bool {
        self.len() == tags.len() && self.iter().zip(tags).all(|(a, b)| *a == **b)
    }

    /// Whether `self` and `other` are one list, not merely equal.
    pub fn is_shared_with(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => a.ptr() == b.ptr(),
            _ => false,
        }
    }

    /// Whether this holder is the list's only one.
    fn held_once(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|list| ThinArc::strong_count(list) == 1)
    }
}

/// Every distinct list of tags a table's rows hold, so that an instance
/// registering a list another holds shares it. A cache, not data: it is
/// not in snapshots, and two tables are equal whatever their lists.
///
/// A list no row holds any more stays until the next sweep, which runs
/// when the lists have doubled since the last one: amortized, a sweep
/// costs a constant per list added. A sweep reads each list's count under
/// the state's write lock; a list counted once is held by this alone, so
/// no reader can be cloning it meanwhile.
#[derive(Clone, Default)]
pub(crate) struct TagLists {
    lists: hashbrown::HashTable<Tags>,
    hasher: RandomState,
    /// How many lists to hold before dropping those only this holds.
    sweep_at: usize,
}

/// The fewest lists a sweep waits for.
const SWEEP_MIN: usize = 1024;

impl TagLists {
    /// `tags` as a row keeps them: the list another row holds, if equal.
    pub(crate) fn list_of(&mut self, tags: &[String]) -> Tags {
        if tags.is_empty() {
            return Tags::default();
        }
        let hash = self.hasher.hash_one(tags);
        match self.lists.find(hash, |list| list.same_as(tags)) {
            Some(list) => list.clone(),
            None => self.insert(hash, Tags::from_strings(tags)),
        }
    }

    /// `tags`, or the equal list another row holds.
    pub(crate) fn share(&mut self, tags: &Tags) -> Tags {
        if tags.is_empty() {
            return Tags::default();
        }
        let hash = self.hasher.hash_one(&**tags);
        match self.lists.find(hash, |list| **list == **tags) {
            Some(list) => list.clone(),
            None => self.insert(hash, tags.clone()),
        }
    }

    fn insert(&mut self, hash: u64, tags: Tags) -> Tags {
        if self.lists.len() >= self.sweep_at {
            self.lists.retain(|list| !list.held_once());
            self.sweep_at = (2 * self.lists.len()).max(SWEEP_MIN);
        }
        let hasher = &self.hasher;
        self.lists
            .insert_unique(hash, tags.clone(), |list| hasher.hash_one(&**list));
        tags
    }

    /// How many lists it holds, swept or not.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lists.len()
    }
}

impl PartialEq for TagLists {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for TagLists {}

impl fmt::Debug for TagLists {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagLists({})", self.lists.len())
    }
}

impl Deref for Tags {
    type Target = [CompactString];

    fn deref(&self) -> &[CompactString] {
        self.0.as_ref().map_or(&[], |list| &list.slice)
    }
}

impl PartialEq for Tags {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Tags {}

impl FromIterator<CompactString> for Tags {
    fn from_iter<I: IntoIterator<Item = CompactString>>(iter: I) -> Self {
        let tags: Vec<CompactString> = iter.into_iter().collect();
        if tags.is_empty() {
            Self(None)
        } else {
            Self(Some(ThinArc::from_header_and_iter((), tags.into_iter())))
        }
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<CompactString>::deserialize(d).map(|v| v.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::written_as;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn is_one_word() {
        assert_eq!(size_of::<Tags>(), size_of::<usize>());
    }

    #[test]
    fn none_is_no_allocation_and_reads_as_empty() {
        let t = Tags::from_strings(&[]);
        assert!(t.0.is_none());
        assert!(t.is_empty());
        assert!(t.same_as(&[]));
        assert_eq!(t, Tags::default());
        assert!(!t.is_shared_with(&t.clone()));
    }

    #[test]
    fn clones_share_one_list_and_equal_lists_compare_equal() {
        let t = Tags::from_strings(&strings(&["primary", "v2"]));
        assert!(t.same_as(&strings(&["primary", "v2"])));
        assert!(!t.same_as(&strings(&["v2", "primary"])));
        assert!(!t.same_as(&strings(&["primary"])));
        assert!(t.is_shared_with(&t.clone()));
        let again = Tags::from_strings(&strings(&["primary", "v2"]));
        assert!(!t.is_shared_with(&again));
        assert_eq!(t, again);
        assert_ne!(t, Tags::from_strings(&strings(&["Primary", "v2"])));
    }

    #[test]
    fn equal_lists_are_one_and_a_sweep_drops_those_no_row_holds() {
        let mut lists = TagLists::default();
        let a = lists.list_of(&strings(&["primary", "v2"]));
        let again = lists.list_of(&strings(&["primary", "v2"]));
        assert!(a.is_shared_with(&again));
        let decoded = Tags::from_strings(&strings(&["primary", "v2"]));
        assert!(lists.share(&decoded).is_shared_with(&a));
        assert!(
            !lists
                .list_of(&strings(&["v2", "primary"]))
                .is_shared_with(&a)
        );
        assert!(lists.list_of(&[]).0.is_none());
        assert!(lists.share(&Tags::default()).0.is_none());
        assert_eq!(lists.len(), 2);
        // Only `a`'s list is still held; the reversed one goes at the sweep.
        drop(again);
        for i in 0..SWEEP_MIN {
            lists.list_of(&[format!("t{i}")]);
        }
        // The sweep ran as t1022 came: `a`'s list stayed, then two more.
        assert_eq!(lists.len(), 3);
        assert!(
            lists
                .list_of(&strings(&["primary", "v2"]))
                .is_shared_with(&a)
        );
    }

    #[test]
    fn is_written_and_read_as_the_boxed_list_was() {
        for v in [&[][..], &["primary", "v2"][..]] {
            let boxed: Box<[Box<str>]> = v.iter().map(|s| Box::from(*s)).collect();
            written_as(&Tags::from_strings(&strings(v)), &boxed);
        }
    }
}
