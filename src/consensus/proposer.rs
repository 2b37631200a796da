//! Group commit in front of Raft: writes that arrive while an entry is being
//! committed travel together in the next entry.
//!
//! openraft 0.9 appends one entry at a time on the leader and waits for its
//! flush before appending the next, so batching in the storage writer alone
//! would still cost one fsync per write. Here a single task proposes one
//! [`Batch`] at a time, made of everything queued while the previous one was
//! in flight: under load one entry, and one fsync, carries many commands;
//! alone, a write goes straight through.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::types::{Batch, Raft};
use super::write::write_refused;
use crate::catalog::{Command, Outcome};
use crate::rpc::WriteError;
use crate::store::Space;

type Reply = oneshot::Sender<Result<Outcome, WriteError>>;

/// Stop adding commands to an entry once it holds this many encoded bytes.
/// With openraft's `max_payload_entries` (16) an AppendEntries message stays
/// under 16 × (1 MiB + one 1 MiB command), well below the 64 MiB RPC frame
/// limit.
const MAX_BATCH_BYTES: usize = 1 << 20;

fn encoded_size(cmd: &Command) -> usize {
    // Encoding a command cannot fail (no maps with non-string keys, no
    // unsupported types); count it as large if it ever does.
    postcard::experimental::serialized_size(cmd).unwrap_or(MAX_BATCH_BYTES)
}

/// Handle to the proposing task.
#[derive(Debug)]
pub(crate) struct Proposer {
    /// Bounded: when Raft falls behind, writers wait here (and time out)
    /// rather than queue without limit.
    tx: mpsc::Sender<(Command, Reply)>,
    /// Stops the task on shutdown.
    cancel: CancellationToken,
    /// Joined on shutdown.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Proposer {
    /// Starts the task. `queue` bounds waiting writes, `max_batch` the
    /// commands per entry, and `timeout` how long one entry may take.
    /// `space` is the data dir's: a write is refused before it enters the
    /// log while the disk is full.
    pub(crate) fn spawn(
        raft: Raft,
        space: Arc<Space>,
        queue: usize,
        max_batch: usize,
        timeout: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let cancel = CancellationToken::new();
        let max_batch = max_batch.max(1);
        let task = tokio::spawn(run(raft, space, rx, cancel.clone(), max_batch, timeout));
        Self {
            tx,
            cancel,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues `cmd` for the next entry and waits for its outcome.
    pub(crate) async fn propose(&self, cmd: Command) -> Result<Outcome, WriteError> {
        let (reply, outcome) = oneshot::channel();
        self.tx.send((cmd, reply)).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// Stops proposing; queued writes fail with [`WriteError::Fatal`].
    pub(crate) async fn stop(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            // The task only ends by returning; a panic in it is a bug we
            // would rather see in the logs than at shutdown.
            if let Err(e) = task.await {
                tracing::error!(error = %e, "proposer task failed");
            }
        }
    }
}

fn stopped() -> WriteError {
    WriteError::Fatal("consensus is shut down".into())
}

async fn run(
    raft: Raft,
    space: Arc<Space>,
    mut rx: mpsc::Receiver<(Command, Reply)>,
    cancel: CancellationToken,
    max_batch: usize,
    timeout: Duration,
) {
    let mut queued = Vec::with_capacity(max_batch);
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            next = rx.recv() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let mut bytes = encoded_size(&first.0);
        queued.push(first);
        // Bounded in commands and in bytes, so that an AppendEntries message
        // of `max_payload_entries` entries stays far below the RPC frame
        // limit even when clients send large bodies. A command that does
        // not fit waits for the next entry.
        while queued.len() < max_batch && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += encoded_size(&next.0);
                    queued.push(next);
                }
                Err(_) => break,
            }
        }
        let (commands, replies): (Vec<Command>, Vec<Reply>) = queued.drain(..).unzip();
        let batch = Batch::from(commands);
        // A full disk refuses the write before it enters the log, so that
        // it is certainly not made (see `store::space`).
        if let Err(full) = space.check() {
            // Fatal's text goes to the client as is; a new variant would
            // change the RPC answer's encoding.
            let e = WriteError::Fatal(full.to_string());
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            continue;
        }
        // The entry's time: what sessions' deadlines, lock-delays and
        // tombstones are dated by on every server.
        let batch = batch.at(now_ms());
        let result = tokio::select! {
            _ = cancel.cancelled() => Err(stopped()),
            r = tokio::time::timeout(timeout, raft.client_write(batch)) => match r {
                // The disk filled after the check: the entry is in the log
                // and waits for space, so it may still be made.
                Err(_) if space.stalled() => Err(held_for_space(&space)),
                Err(_) => Err(WriteError::Timeout),
                Ok(r) => r.map(|response| response.data).map_err(write_refused),
            },
        };
        match result {
            Ok(outcomes) if outcomes.len() == replies.len() => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // The writer may have given up waiting; nothing to do.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Ok(outcomes) => {
                let e = WriteError::Fatal(format!(
                    "state machine returned {} outcomes for {} commands",
                    outcomes.len(),
                    replies.len()
                ));
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A write whose entry waits in the log for disk space: not acknowledged,
/// and possibly made later.
fn held_for_space(space: &Space) -> WriteError {
    let full = match space.check() {
        Err(full) => full,
        Ok(()) => space.full(0),
    };
    WriteError::Fatal(format!(
        "{full}; this write was not acknowledged and may still be applied once space is freed"
    ))
}

/// The leader's clock as a log entry carries it: milliseconds since the
/// Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> crate::catalog::Time {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
