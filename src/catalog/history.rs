//! The recent applied entries a server keeps for the client agents that
//! follow it, bounded by their number of commands and their encoded size.
//!
//! The newest [`DECODED_TAIL`] entries are kept as applied, shared with
//! whoever else holds them: followers near the head ask for those, and get
//! them without a copy. Older ones are kept as their encoded bytes, decoded
//! again only for a follower that far behind. A registration that carries
//! two tags, one meta key and a check is about 1,400 bytes decoded and a
//! fifth of that encoded, and a server keeps 8,192 commands: 11 MB held as
//! applied, ~2.5 MB as bytes (`benches/scale`, `--only breakdown`).

use std::collections::VecDeque;
use std::sync::Arc;

use super::command::Command;
use super::kv_types::Time;
use super::types::Index;

/// Most encoded bytes of commands the history holds, whatever their number:
/// KV values make one command up to half a MiB.
const MAX_HISTORY_BYTES: usize = 64 << 20;

/// The newest entries kept as applied: about what a follower that keeps up
/// can be behind.
const DECODED_TAIL: usize = 64;

/// One applied log entry, as followers replay it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Applied {
    /// The entry's index.
    pub index: Index,
    /// The leader's time when it proposed the entry.
    pub time: Time,
    /// Its commands; none for a blank or membership entry.
    pub commands: Arc<[Command]>,
}

/// What a follower at some index needs next.
#[derive(Debug, PartialEq)]
pub enum Since {
    /// The entries after its index, in order (none when it is current).
    Entries(Vec<Applied>),
    /// Its index is older than the history: it needs the whole state.
    TooOld,
}

/// The encoded size of an entry's commands, as a follow answer carries them.
pub fn encoded_size(commands: &[Command]) -> usize {
    // Encoding a command cannot fail; count it as large if it ever does.
    postcard::experimental::serialized_size(commands).unwrap_or(MAX_HISTORY_BYTES)
}

/// Applied entries, oldest first.
#[derive(Debug, Default)]
pub(super) struct History {
    /// Every entry after `floor`; an entry without commands (blank,
    /// membership) is kept with none, so followers' indexes match.
    entries: VecDeque<Kept>,
    /// Commands held in `entries`.
    commands: usize,
    /// Encoded bytes of the commands held in `entries`.
    bytes: usize,
    /// Most commands to hold; 0 keeps no history.
    pub(super) capacity: usize,
    /// Every entry after this index is in `entries` (the snapshot or the
    /// last entry evicted).
    pub(super) floor: Index,
}

/// One entry as the history holds it.
#[derive(Debug)]
struct Kept {
    index: Index,
    time: Time,
    /// How many commands it has.
    count: usize,
    /// Their encoded size.
    bytes: usize,
    commands: Commands,
}

/// An entry's commands, as applied or as their bytes.
#[derive(Debug, Clone)]
enum Commands {
    Applied(Arc<[Command]>),
    /// postcard's encoding of the commands, a `Vec<Command>`.
    Encoded(Arc<[u8]>),
}

impl Commands {
    /// The commands; `None` if the bytes do not decode, which this
    /// module's own encoding never gives.
    fn decoded(self) -> Option<Arc<[Command]>> {
        match self {
            Self::Applied(c) => Some(c),
            Self::Encoded(bytes) => postcard::from_bytes::<Vec<Command>>(&bytes)
                .ok()
                .map(Into::into),
        }
    }
}

impl History {
    /// Keeps `entry`, whose commands encode to `bytes` (measured here
    /// when the caller has not), and encodes the entry that now falls out
    /// of the decoded tail.
    pub(super) fn push(&mut self, entry: Applied, bytes: Option<usize>) {
        if self.capacity == 0 {
            self.floor = entry.index;
            return;
        }
        let bytes = bytes.unwrap_or_else(|| encoded_size(&entry.commands));
        let count = entry.commands.len();
        self.commands += count;
        self.bytes += bytes;
        self.entries.push_back(Kept {
            index: entry.index,
            time: entry.time,
            count,
            bytes,
            commands: Commands::Applied(entry.commands),
        });
        if let Some(aged) = self
            .entries
            .len()
            .checked_sub(DECODED_TAIL + 1)
            .and_then(|at| self.entries.get_mut(at))
        {
            aged.encode();
        }
        while self.commands > self.capacity || self.bytes > MAX_HISTORY_BYTES {
            let Some(gone) = self.entries.pop_front() else {
                break;
            };
            self.commands -= gone.count;
            self.bytes -= gone.bytes;
            self.floor = gone.index;
        }
    }

    /// Forgets every entry: the state is now a snapshot's, at `index`.
    pub(super) fn reset(&mut self, index: Index) {
        self.entries.clear();
        self.commands = 0;
        self.bytes = 0;
        self.floor = index;
    }

    /// The entries after `index`, not yet decoded: at most `max_entries`
    /// and about `max_commands` commands (always at least one entry when
    /// there is one). Cheap, so the lock around the history is held
    /// briefly; the caller decodes them with [`Pending::decode`] after
    /// releasing it.
    pub(super) fn after(&self, index: Index, max_entries: usize, max_commands: usize) -> Pending {
        if index < self.floor {
            return Pending(None);
        }
        let start = self.entries.partition_point(|e| e.index <= index);
        let mut commands = 0;
        let entries = self
            .entries
            .range(start..)
            .take(max_entries.max(1))
            .take_while(|e| {
                let first = commands == 0;
                commands += e.count.max(1);
                first || commands <= max_commands
            })
            .map(|e| (e.index, e.time, e.commands.clone()))
            .collect();
        Pending(Some(entries))
    }
}

impl Kept {
    /// Replaces the commands with their bytes, unless there are none (a
    /// blank entry) or they will not encode. Written into a vector of the
    /// size measured when the entry was pushed (up to 1 MiB, past which it
    /// grows; an entry that large is rare): grown as it was written,
    /// it was reallocated a few times per entry (a tenth of applying a
    /// registration, under callgrind).
    fn encode(&mut self) {
        if let Commands::Applied(c) = &self.commands
            && !c.is_empty()
            && let Ok(bytes) =
                postcard::to_extend(&**c, Vec::with_capacity(self.bytes.min(1 << 20)))
        {
            self.commands = Commands::Encoded(bytes.into());
        }
    }
}

/// Entries taken from the history, not yet decoded; `None` when the
/// follower is behind the history.
#[derive(Debug)]
pub struct Pending(Option<Vec<(Index, Time, Commands)>>);

impl Pending {
    /// The index of the last entry, when there is one: with the follower's
    /// own index, it names the range (a cached encoding of it needs no
    /// decoding).
    pub fn last(&self) -> Option<Index> {
        self.0.as_ref()?.last().map(|&(index, _, _)| index)
    }

    /// What the follower needs next. An entry whose bytes did not decode
    /// sends it the whole state rather than a gap.
    pub fn decode(self) -> Since {
        let Some(entries) = self.0 else {
            return Since::TooOld;
        };
        let mut out = Vec::with_capacity(entries.len());
        for (index, time, commands) in entries {
            let Some(commands) = commands.decoded() else {
                return Since::TooOld;
            };
            out.push(Applied {
                index,
                time,
                commands,
            });
        }
        Since::Entries(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{Applied, Commands, DECODED_TAIL, History, Since};
    use crate::catalog::{CatalogOp, Command, Deregistration};

    fn entry(index: u64) -> Applied {
        let cmd = Command::Catalog(CatalogOp::Deregister(Deregistration {
            node: format!("node{index}"),
            service_id: "web".into(),
            check_id: String::new(),
        }));
        Applied {
            index,
            time: index * 10,
            commands: vec![cmd].into(),
        }
    }

    #[test]
    fn older_entries_are_held_encoded_and_come_back_as_they_were_applied() {
        let mut h = History {
            capacity: 1000,
            ..History::default()
        };
        let n = DECODED_TAIL as u64 + 10;
        for i in 1..=n {
            h.push(entry(i), None);
        }
        // The history holds only the newest ones as applied.
        let encoded = h
            .entries
            .iter()
            .filter(|e| matches!(e.commands, Commands::Encoded(_)))
            .count();
        assert_eq!(encoded, 10);
        assert!(matches!(
            h.entries.back().map(|e| &e.commands),
            Some(Commands::Applied(_))
        ));
        let Since::Entries(all) = h.after(0, 1000, 1000).decode() else {
            panic!("the whole history is there");
        };
        assert_eq!(all, (1..=n).map(entry).collect::<Vec<_>>());
        let Since::Entries(tail) = h.after(n - 2, 1000, 1000).decode() else {
            panic!("the tail is there");
        };
        assert_eq!(tail, vec![entry(n - 1), entry(n)]);
    }

    #[test]
    fn entries_held_as_bytes_are_evicted_and_counted_as_the_others() {
        let mut h = History {
            capacity: 100,
            ..History::default()
        };
        for i in 1..=300 {
            h.push(entry(i), None);
        }
        assert_eq!((h.entries.len(), h.commands, h.floor), (100, 100, 200));
        let bytes: usize = (201..=300)
            .map(|i| super::encoded_size(&entry(i).commands))
            .sum();
        assert_eq!(h.bytes, bytes);
        let encoded = h
            .entries
            .iter()
            .filter(|e| matches!(e.commands, Commands::Encoded(_)))
            .count();
        assert_eq!(encoded, 100 - DECODED_TAIL);
        assert_eq!(h.after(199, 1000, 1000).decode(), Since::TooOld);
        let pending = h.after(200, 1000, 1000);
        assert_eq!(pending.last(), Some(300));
        let Since::Entries(kept) = pending.decode() else {
            panic!("200 is the floor: 201..=300 follow it");
        };
        assert_eq!(kept, (201..=300).map(entry).collect::<Vec<_>>());
        // At most 10 commands: the first ten entries, the oldest held as bytes.
        let Since::Entries(first) = h.after(200, 1000, 10).decode() else {
            panic!("within the history");
        };
        assert_eq!(first, (201..=210).map(entry).collect::<Vec<_>>());
    }

    #[test]
    fn bytes_that_do_not_decode_send_the_whole_state() {
        let mut h = History {
            capacity: 1000,
            ..History::default()
        };
        h.push(entry(1), None);
        if let Some(e) = h.entries.front_mut() {
            e.commands = Commands::Encoded(vec![0xff, 0xff, 0xff].into());
        }
        assert_eq!(h.after(0, 10, 10).decode(), Since::TooOld);
    }
}
