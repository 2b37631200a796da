//! [`ThinStr`]: a string that is mostly empty, in one word.
//!
//! A check row carries two strings that most checks leave empty or set
//! to a few bytes: its notes, and its kind for checks registered through
//! the catalog. Boxed (`Box<str>`) each takes 16 bytes of the row, inline
//! (`CompactString`) 24. A row pays for its fields in jemalloc's size
//! classes (see `ROW_SIZES` in `types.rs`), so these two at 8 bytes each
//! keep a check row in the 192-byte class, not the 224-byte one. An empty
//! string is no allocation; a short one is one allocation of 24 bytes.
//!
//! It is written and read as a string, so a stored snapshot or log entry
//! reads back unchanged.

use std::fmt;
use std::ops::Deref;

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string in one word: empty is `None`, anything else boxed.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct ThinStr(Option<Box<CompactString>>);

impl ThinStr {
    /// `s`, boxed unless empty.
    pub fn new(s: &str) -> Self {
        Self((!s.is_empty()).then(|| Box::new(CompactString::new(s))))
    }
}

impl Deref for ThinStr {
    type Target = str;

    fn deref(&self) -> &str {
        self.0.as_deref().map_or("", CompactString::as_str)
    }
}

impl From<&str> for ThinStr {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for ThinStr {
    fn from(s: String) -> Self {
        Self((!s.is_empty()).then(|| Box::new(CompactString::from(s))))
    }
}

impl fmt::Debug for ThinStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl fmt::Display for ThinStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl Serialize for ThinStr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for ThinStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        CompactString::deserialize(d).map(|s| Self((!s.is_empty()).then(|| Box::new(s))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::written_as;

    #[test]
    fn is_one_word_and_empty_is_no_allocation() {
        assert_eq!(size_of::<ThinStr>(), size_of::<usize>());
        assert!(ThinStr::new("").0.is_none());
        assert!(ThinStr::from(String::new()).0.is_none());
        assert_eq!(ThinStr::default(), ThinStr::new(""));
        assert_eq!(&*ThinStr::new(""), "");
    }

    #[test]
    fn reads_as_the_string_it_was_given() {
        for s in ["ttl", "a note longer than twenty-four bytes, on the heap"] {
            assert_eq!(&*ThinStr::new(s), s);
            assert_eq!(&*ThinStr::from(s.to_owned()), s);
            assert_eq!(ThinStr::new(s).to_string(), s);
            assert_eq!(format!("{:?}", ThinStr::new(s)), format!("{s:?}"));
        }
    }

    #[test]
    fn is_written_and_read_as_a_boxed_string_was() {
        for s in [
            "",
            "http",
            "a note longer than twenty-four bytes, on the heap",
        ] {
            let boxed: Box<str> = s.into();
            written_as(&ThinStr::new(s), &boxed);
        }
    }
}
