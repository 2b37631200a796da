//! A connection's phase (reading a request head, running a request, idle
//! between requests) and the watchdog that closes the connection when one
//! phase lasts too long: the header and idle timeouts of `listen.rs`.
//!
//! The watchdog keeps one timer per connection and looks at the phase
//! when it fires: at the deadline of the phase it last saw, or, while a
//! request runs, one idle limit later (the earliest an idle deadline could
//! fall, since an idle phase begins no sooner than that look). Only bytes
//! arriving on an idle connection wake it early, as the header deadline
//! they start comes sooner than the idle one. A request's start and end
//! cost it nothing: they store the phase, and the watchdog finds out at
//! its next look. Answering 10,000 parked blocking queries at once, this
//! keeps the watchdogs out of the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Reading a request head (or waiting for a new connection's first).
pub(super) const HEAD: u8 = 0;
/// Running a request.
pub(super) const BUSY: u8 = 1;
/// Between requests, waiting for the next one's first byte.
pub(super) const IDLE: u8 = 2;

/// Bits of [`PhaseCell::state`] that hold the phase; the rest hold when
/// it began.
const PHASE_BITS: u32 = 2;

/// The phase held in a [`PhaseCell`]'s state word.
fn phase_of(state: u64) -> u8 {
    (state & ((1 << PHASE_BITS) - 1)) as u8
}

/// The phase of one connection and when it began, set by its reads and its
/// requests, and the signal that wakes the watchdog.
#[derive(Debug)]
pub(super) struct PhaseCell {
    /// The phase in the low [`PHASE_BITS`], nanoseconds from `base` to its
    /// start above them: one word, so both are read together.
    state: AtomicU64,
    /// When the connection began.
    base: Instant,
    /// Wakes the watchdog before its time: bytes on an idle connection.
    changed: Notify,
}

impl PhaseCell {
    pub(super) fn new() -> Self {
        Self {
            state: AtomicU64::new(u64::from(HEAD)),
            base: Instant::now(),
            changed: Notify::new(),
        }
    }

    /// The phase now.
    pub(super) fn get(&self) -> u8 {
        self.read().0
    }

    /// The phase now and when it began.
    fn read(&self) -> (u8, Instant) {
        let state = self.state.load(Ordering::SeqCst);
        (
            phase_of(state),
            self.base + Duration::from_nanos(state >> PHASE_BITS),
        )
    }

    /// `phase`, beginning now.
    fn packed(&self, phase: u8) -> u64 {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        (nanos << PHASE_BITS) | u64::from(phase)
    }

    /// A request starts (`BUSY`) or ends (`IDLE`). Only the start of an
    /// idle phase is timed: nothing times a running request, and reading
    /// the clock is a fair part of what this costs.
    fn set(&self, to: u8) {
        let state = if to == IDLE {
            self.packed(to)
        } else {
            u64::from(to)
        };
        self.state.store(state, Ordering::SeqCst);
    }

    /// Bytes arrived: an idle connection is reading a request head now,
    /// whose deadline comes sooner than the idle one the watchdog waits for.
    pub(super) fn bytes_read(&self) {
        let state = self.state.load(Ordering::SeqCst);
        if phase_of(state) != IDLE {
            return;
        }
        let head = self.packed(HEAD);
        if self
            .state
            .compare_exchange(state, head, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.changed.notify_one();
        }
    }
}

/// A request running on a connection: `BUSY` while it lives, `IDLE` after
/// (also when the client goes away and hyper drops the request).
pub(super) struct Running(Arc<PhaseCell>);

impl Running {
    pub(super) fn start(phase: Arc<PhaseCell>) -> Self {
        phase.set(BUSY);
        Self(phase)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.set(IDLE);
    }
}

/// Waits until the connection has spent longer than `read_header` reading
/// a request head or `idle` between requests (`None`: no limit), and says
/// which; never returns while a request runs.
pub(super) async fn watchdog(
    phase: &PhaseCell,
    read_header: Option<Duration>,
    idle: Option<Duration>,
) -> &'static str {
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    loop {
        // Enabled before the phase is read, so a wake between the two is
        // kept for the wait below.
        let changed = phase.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let (now, since) = phase.read();
        let (limit, what) = match now {
            HEAD => (
                read_header,
                "no complete request headers within limits.http_read_header_timeout",
            ),
            IDLE => (idle, "idle for limits.http_idle_timeout between requests"),
            _ => (None, ""),
        };
        let look = match limit {
            Some(limit) => {
                let deadline = since + limit;
                if Instant::now() >= deadline {
                    return what;
                }
                deadline
            }
            // Nothing to time now; an idle phase may follow unannounced.
            None => match idle {
                Some(idle) => Instant::now() + idle,
                None => {
                    changed.await;
                    continue;
                }
            },
        };
        // A later time than the one set moves the timer in place.
        timer.as_mut().reset(look);
        tokio::select! {
            () = &mut timer => {}
            () = &mut changed => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE_LIMIT: Duration = Duration::from_secs(120);

    /// The watchdog of `phase` running on its own, and when it started.
    fn watch(phase: &Arc<PhaseCell>) -> (tokio::task::JoinHandle<&'static str>, Instant) {
        watch_with(phase, Some(HEADER), Some(IDLE_LIMIT))
    }

    fn watch_with(
        phase: &Arc<PhaseCell>,
        read_header: Option<Duration>,
        idle: Option<Duration>,
    ) -> (tokio::task::JoinHandle<&'static str>, Instant) {
        let phase = phase.clone();
        let started = Instant::now();
        let task = tokio::spawn(async move { watchdog(&phase, read_header, idle).await });
        (task, started)
    }

    async fn after(d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// What the watchdog closed the connection for, failing if it has not
    /// within a day.
    async fn closed(task: tokio::task::JoinHandle<&'static str>) -> &'static str {
        let day = Duration::from_secs(24 * 3600);
        match tokio::time::timeout(day, task).await {
            Ok(what) => what.unwrap(),
            Err(_) => panic!("the watchdog never closed the connection"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_times_each_phase_with_its_own_limit() {
        // A new connection that sends nothing: the header limit.
        let phase = Arc::new(PhaseCell::new());
        let (task, started) = watch(&phase);
        let what = closed(task).await;
        assert!(what.contains("http_read_header_timeout"), "{what}");
        assert_eq!(started.elapsed(), HEADER);
        // Idle between requests: the idle limit.
        let phase = Arc::new(PhaseCell::new());
        phase.set(IDLE);
        let (task, started) = watch(&phase);
        let what = closed(task).await;
        assert!(what.contains("http_idle_timeout"), "{what}");
        assert_eq!(started.elapsed(), IDLE_LIMIT);
        // A running request is never cut.
        let phase = Arc::new(PhaseCell::new());
        phase.set(BUSY);
        let (task, _) = watch(&phase);
        after(Duration::from_secs(3600)).await;
        assert!(!task.is_finished(), "a running request was timed out");
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_answered_within_the_header_limit_leaves_the_idle_limit_from_its_answer() {
        // Without a header limit too: the idle limit still ends the
        // connection, though nothing woke the watchdog when the request ended.
        for read_header in [Some(HEADER), None] {
            let phase = Arc::new(PhaseCell::new());
            let (task, started) = watch_with(&phase, read_header, Some(IDLE_LIMIT));
            after(Duration::from_secs(1)).await;
            let running = Running::start(phase.clone());
            after(Duration::from_secs(1)).await;
            drop(running);
            let what = closed(task).await;
            assert!(
                what.contains("http_idle_timeout"),
                "{read_header:?}: {what}"
            );
            assert_eq!(
                started.elapsed(),
                Duration::from_secs(2) + IDLE_LIMIT,
                "{read_header:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_running_past_the_header_limit_is_timed_idle_from_its_end() {
        let phase = Arc::new(PhaseCell::new());
        let (task, started) = watch(&phase);
        let running = Running::start(phase.clone());
        after(Duration::from_secs(300)).await;
        assert!(!task.is_finished(), "a running request was timed out");
        drop(running);
        let what = closed(task).await;
        assert!(what.contains("http_idle_timeout"), "{what}");
        assert_eq!(started.elapsed(), Duration::from_secs(300) + IDLE_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_on_an_idle_connection_bring_the_header_limit_forward() {
        let phase = Arc::new(PhaseCell::new());
        drop(Running::start(phase.clone()));
        let (task, started) = watch(&phase);
        after(Duration::from_secs(100)).await;
        // Half a request arrives, 20 s before the idle limit would end it.
        phase.bytes_read();
        let what = closed(task).await;
        assert!(what.contains("http_read_header_timeout"), "{what}");
        assert_eq!(started.elapsed(), Duration::from_secs(100) + HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn without_limits_a_connection_is_never_closed() {
        let phase = Arc::new(PhaseCell::new());
        let (task, _) = watch_with(&phase, None, None);
        drop(Running::start(phase.clone()));
        phase.bytes_read();
        after(Duration::from_secs(24 * 3600)).await;
        assert!(
            !task.is_finished(),
            "a connection without limits was closed"
        );
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_during_a_request_change_nothing() {
        let phase = Arc::new(PhaseCell::new());
        let running = Running::start(phase.clone());
        phase.bytes_read();
        assert_eq!(phase.get(), BUSY);
        drop(running);
        assert_eq!(phase.get(), IDLE);
    }
}
