//! The timer schedule: events due at instants, handed out in order and
//! never dropped.
//!
//! foca requires that every timer it asks for is delivered (a lost
//! `ProbeRandomMember` stops probing for good), so this is the one unbounded
//! queue in the agent. Its size stays small in practice: foca keeps a handful
//! of periodic timers, one per suspicion, and one `RemoveDown` per member
//! declared down.
//!
//! The schedule is pure: the caller passes the current instant in, which
//! lets tests drive it without a clock.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Events waiting for their instant.
#[derive(Debug)]
pub struct TimerQueue<E> {
    /// Min-heap on (deadline, sequence): the sequence number keeps events
    /// due at the same instant in the order they were scheduled.
    heap: BinaryHeap<Reverse<Entry<E>>>,
    /// The next sequence number.
    next_seq: u64,
}

/// One scheduled event.
#[derive(Debug)]
struct Entry<E> {
    /// When it is due.
    deadline: Instant,
    /// Tie-breaker, see [`TimerQueue::heap`].
    seq: u64,
    /// The event itself.
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

/// An event taken from the queue, with how late it is.
#[derive(Debug, PartialEq, Eq)]
pub struct Due<E> {
    /// The event.
    pub event: E,
    /// When it was due.
    pub deadline: Instant,
    /// How long after its deadline it was taken: a measure of how starved
    /// the task that runs the schedule is.
    pub lateness: Duration,
}

impl<E> Default for TimerQueue<E> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            next_seq: 0,
        }
    }
}

impl<E> TimerQueue<E> {
    /// An empty schedule.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `event` at `now + after`.
    pub fn schedule(&mut self, now: Instant, after: Duration, event: E) {
        // An instant too far in the future to represent is as good as never;
        // the largest representable one keeps the event without overflow.
        let deadline = now
            .checked_add(after)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        self.schedule_at(deadline, event);
    }

    /// Schedules `event` at `deadline` (which may be in the past: it is then
    /// due at once).
    pub fn schedule_at(&mut self, deadline: Instant, event: E) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry {
            deadline,
            seq,
            event,
        }));
    }

    /// When the earliest event is due, if any is scheduled.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(entry)| entry.deadline)
    }

    /// Takes the earliest event if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Due<E>> {
        if self.next_deadline()? > now {
            return None;
        }
        let Reverse(entry) = self.heap.pop()?;
        Some(Due {
            lateness: now.saturating_duration_since(entry.deadline),
            deadline: entry.deadline,
            event: entry.event,
        })
    }

    /// How many events are waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nothing_is_due_before_its_deadline() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.schedule(t0, Duration::from_millis(10), "a");
        assert_eq!(q.pop_due(t0 + Duration::from_millis(9)), None);
        let due = q.pop_due(t0 + Duration::from_millis(15)).unwrap();
        assert_eq!(due.event, "a");
        assert_eq!(due.lateness, Duration::from_millis(5));
        assert!(q.is_empty());
    }

    #[test]
    fn events_at_one_instant_keep_their_order() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        for i in 0..100 {
            q.schedule(t0, Duration::ZERO, i);
        }
        let got: Vec<_> = std::iter::from_fn(|| q.pop_due(t0).map(|d| d.event)).collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_huge_delay_does_not_overflow() {
        let t0 = Instant::now();
        let mut q = TimerQueue::new();
        q.schedule(t0, Duration::MAX, ());
        assert_eq!(q.len(), 1);
        assert!(q.pop_due(t0 + Duration::from_secs(3600)).is_none());
    }

    proptest! {
        /// Whatever the delays and however irregularly the clock is read,
        /// every event comes out exactly once, never before its deadline,
        /// and in deadline order.
        #[test]
        fn no_event_is_ever_lost(
            delays in proptest::collection::vec(0u64..5_000, 0..200),
            steps in proptest::collection::vec(0u64..700, 1..50),
        ) {
            let t0 = Instant::now();
            let mut q = TimerQueue::new();
            for (i, d) in delays.iter().enumerate() {
                q.schedule(t0, Duration::from_millis(*d), i);
            }
            let mut now = t0;
            let mut seen = Vec::new();
            let mut last_deadline = t0;
            for step in steps.iter().chain(std::iter::once(&10_000)) {
                now += Duration::from_millis(*step);
                while let Some(due) = q.pop_due(now) {
                    prop_assert!(due.deadline <= now);
                    prop_assert!(due.deadline >= last_deadline);
                    prop_assert_eq!(
                        due.deadline,
                        t0 + Duration::from_millis(delays[due.event])
                    );
                    last_deadline = due.deadline;
                    seen.push(due.event);
                }
            }
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..delays.len()).collect::<Vec<_>>());
        }
    }
}
