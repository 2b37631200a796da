//! The driver: one task that owns the foca instance, its UDP socket and its
//! timer schedule.
//!
//! After every call into foca the driver drains foca's runtime completely:
//! packets go out on the socket (framed, then sealed), timers go into the
//! schedule (paced by local health, never dropped), and notifications are
//! acted on (a member's failure is gossiped on at once). Then it publishes
//! the membership if it changed.
//!
//! Each time the task wakes it first reads every datagram already waiting,
//! then fires the timers that are due. The order matters to a member that
//! was starved of CPU: the acks that arrived while it was stalled are seen
//! before the probe timers that would otherwise call their senders dead.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use foca::{AccumulatingRuntime, Foca, OwnedNotification, State, Timer};
use foca_rand::SeedableRng as _;
use foca_rand::rngs::SmallRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::GossipError;
use super::codec::CompactCodec;
use super::crypto::{self, Cipher};
use super::health::{Decision, Pacer, ProbeTimer};
use super::identity::NodeId;
use super::membership::{self, DepartureHandler, Departures, LeaveNotice, Member, Sources};
use super::profile::{MAX_PACKET_SIZE, Profile};
use super::timers::TimerQueue;
use super::wire::{self, Frame, SuspicionNotice};

/// foca as this crate instantiates it.
type Swim = Foca<NodeId, CompactCodec, SmallRng, DepartureHandler>;

/// The membership as published to subscribers.
pub(crate) type Snapshot = Arc<Vec<Member>>;

/// How many datagrams one wake-up reads at most before it turns to the
/// timers, so a flood cannot starve them.
const READ_BATCH: usize = 256;

/// How many joins may wait for an answer at once; more are refused as
/// busy rather than queued.
const MAX_PENDING_JOINS: usize = 64;

/// What the handle asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Announce to `addr` until a member there answers.
    Join {
        /// The address to announce to.
        addr: SocketAddr,
        /// Told once a member at `addr` is known, or the join timed out.
        reply: oneshot::Sender<Result<(), GossipError>>,
    },
    /// Leave gracefully, then stop.
    Leave {
        /// Told once the departure has been gossiped.
        reply: oneshot::Sender<()>,
    },
    /// Gossip a departure on behalf of the failed member `name`.
    ForceLeave {
        /// The member's name.
        name: String,
        /// Told whether there was such a failed member.
        reply: oneshot::Sender<Result<(), GossipError>>,
    },
    /// Stop without leaving.
    Shutdown,
}

/// Counters shared with the handle.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) packets_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) packets_received: AtomicU64,
    pub(crate) dropped_bad_key: AtomicU64,
    pub(crate) dropped_oversize: AtomicU64,
    pub(crate) dropped_undecodable: AtomicU64,
}

fn bump(counter: &AtomicU64, by: usize) {
    counter.fetch_add(by as u64, Ordering::Relaxed);
}

/// What the schedule holds.
#[derive(Debug)]
enum Event {
    /// One of foca's timers.
    Foca(Timer<NodeId>),
    /// Re-announce for the pending join with this id.
    JoinRetry(u64),
    /// Resend a suspicion notice while the suspicion stands.
    Notice {
        suspect: NodeId,
        incarnation: u16,
        remaining: u32,
    },
    /// Gossip the departure once more.
    LeaveRound(u32),
}

/// A join waiting for an answer.
#[derive(Debug)]
struct PendingJoin {
    id: u64,
    addr: SocketAddr,
    deadline: Instant,
    reply: oneshot::Sender<Result<(), GossipError>>,
}

/// Everything the driver task owns.
pub(crate) struct Driver {
    /// The SWIM state machine.
    foca: Swim,
    /// Where foca leaves its output between calls.
    rt: AccumulatingRuntime<NodeId>,
    /// Timers and the driver's own deferred work.
    timers: TimerQueue<Event>,
    /// Local health and probe pacing.
    pacer: Pacer,
    /// The gossip socket, bound by the caller.
    socket: UdpSocket,
    /// Our own address, to refuse joining ourselves.
    local_addr: SocketAddr,
    /// Seals and opens packets when the pool is encrypted.
    cipher: Option<Cipher>,
    /// The largest datagram we accept.
    max_datagram: usize,
    /// Traffic counters, read by the handle.
    counters: Arc<Counters>,
    /// Departure notices heard, shared with foca's broadcast handler.
    departures: Departures,
    /// Where the membership is published.
    members_tx: watch::Sender<Snapshot>,
    /// The digest of the last published membership.
    digest: u64,
    /// The tuning.
    profile: Profile,
    /// Joins waiting for an answer.
    joins: Vec<PendingJoin>,
    /// The next join id.
    next_join: u64,
    /// Set once we have left the pool.
    left: bool,
    /// Told when the last leave round went out.
    leave_reply: Option<oneshot::Sender<()>>,
    /// Set to end the task.
    stop: bool,
    /// Whether a probe of ours is in flight (foca started one and has not
    /// ended it yet), to tell a probe that succeeded from no probe at all.
    probe_in_flight: bool,
    /// Set while draining when foca started a probe.
    probe_started: bool,
    /// Set while draining when foca raised a suspicion (our probe failed).
    suspicion_raised: bool,
    /// Set while foca handles our probe timer: a suspicion raised then is
    /// our own probe failing. foca schedules the same suspicion timer in
    /// every member that merely hears of a suspicion, and those must not
    /// count against this member's health, or one dead member would slow
    /// the whole pool's probing (and so the next detection).
    judging_own_probe: bool,
    /// The incarnation of the last suspicion notice about us.
    last_notice: Option<u16>,
    /// Reused buffers: the framed plaintext, the sealed datagram and the
    /// opened one.
    frame_buf: Vec<u8>,
    seal_buf: Vec<u8>,
    open_buf: Vec<u8>,
}

/// The foca timer kinds the pacer cares about.
fn probe_timer(timer: &Timer<NodeId>) -> ProbeTimer {
    match timer {
        Timer::ProbeRandomMember(_) => ProbeTimer::Probe,
        Timer::SendIndirectProbe { .. } => ProbeTimer::Indirect,
        _ => ProbeTimer::Other,
    }
}

/// The tokio clock as a std instant, so a paused test clock stays
/// consistent with the schedule.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    /// Builds the driver; nothing runs until [`Driver::run`].
    pub(crate) fn new(
        identity: NodeId,
        socket: UdpSocket,
        local_addr: SocketAddr,
        cipher: Option<Cipher>,
        profile: Profile,
        counters: Arc<Counters>,
        members_tx: watch::Sender<Snapshot>,
    ) -> Self {
        let departures = Departures::default();
        let foca = Foca::with_custom_broadcast(
            identity.clone(),
            profile.foca_config(),
            SmallRng::seed_from_u64(rand::random()),
            CompactCodec::new(identity),
            DepartureHandler(departures.clone()),
        );
        let overhead = if cipher.is_some() {
            crypto::OVERHEAD
        } else {
            0
        };
        let mut driver = Self {
            foca,
            rt: AccumulatingRuntime::new(),
            timers: TimerQueue::new(),
            pacer: Pacer::new(
                profile.probe_period,
                profile.probe_rtt,
                profile.max_health_score,
                profile.late_timer,
            ),
            socket,
            local_addr,
            cipher,
            max_datagram: 1 + MAX_PACKET_SIZE + overhead,
            counters,
            departures,
            members_tx,
            digest: 0,
            profile,
            joins: Vec::new(),
            next_join: 0,
            left: false,
            leave_reply: None,
            stop: false,
            probe_in_flight: false,
            probe_started: false,
            suspicion_raised: false,
            judging_own_probe: false,
            last_notice: None,
            frame_buf: Vec::with_capacity(MAX_PACKET_SIZE + 1),
            seal_buf: Vec::with_capacity(MAX_PACKET_SIZE + 1 + crypto::OVERHEAD),
            open_buf: Vec::with_capacity(MAX_PACKET_SIZE + 1),
        };
        driver.publish();
        driver
    }

    /// Runs until shut down, left, or every handle is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; self.max_datagram + 1];
        while !self.stop {
            let wake_at = self
                .timers
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                ready = self.socket.readable() => {
                    if let Err(error) = ready {
                        tracing::warn!(%error, "gossip socket failed");
                        break;
                    }
                }
                () = sleep_until_or_forever(wake_at) => {}
            }
            self.read_ready(&mut buf);
            self.fire_due();
        }
        tracing::debug!(addr = %self.local_addr, "gossip driver stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Join { addr, reply } => self.start_join(addr, reply),
            Command::Leave { reply } => self.start_leave(reply),
            Command::ForceLeave { name, reply } => {
                let _ = reply.send(self.force_leave(&name));
            }
            Command::Shutdown => self.stop = true,
        }
    }

    /// Reads every datagram already waiting (up to a batch).
    fn read_ready(&mut self, buf: &mut [u8]) {
        for _ in 0..READ_BATCH {
            match self.socket.try_recv_from(buf) {
                Ok((len, from)) => self.on_datagram(&buf[..len], from),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP errors surface here on some systems; they say nothing
                // about the next datagram.
                Err(error) => tracing::debug!(%error, "gossip receive failed"),
            }
        }
    }

    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        bump(&self.counters.packets_received, 1);
        bump(&self.counters.bytes_received, datagram.len());
        if datagram.len() > self.max_datagram {
            bump(&self.counters.dropped_oversize, 1);
            return;
        }
        let mut open_buf = std::mem::take(&mut self.open_buf);
        let plaintext = match &self.cipher {
            Some(cipher) => match cipher.open(datagram, &mut open_buf) {
                Ok(plaintext) => Some(plaintext),
                Err(error) => {
                    tracing::trace!(%from, %error, "dropped gossip packet");
                    bump(&self.counters.dropped_bad_key, 1);
                    None
                }
            },
            None => Some(datagram),
        };
        if let Some(plaintext) = plaintext {
            match Frame::decode(plaintext) {
                Ok(Frame::Foca(packet)) => {
                    let result = self.foca.handle_data(packet, &mut self.rt);
                    if let Err(error) = result {
                        self.count_foca_error(&error, from);
                    }
                    self.drain();
                }
                Ok(Frame::Notice(notice)) => self.on_notice(*notice),
                Err(error) => {
                    tracing::trace!(%from, %error, "dropped gossip packet");
                    bump(&self.counters.dropped_undecodable, 1);
                }
            }
        }
        self.open_buf = open_buf;
    }

    fn count_foca_error(&self, error: &foca::Error, from: SocketAddr) {
        match error {
            foca::Error::DataTooBig => bump(&self.counters.dropped_oversize, 1),
            foca::Error::Decode(_)
            | foca::Error::MalformedPacket
            | foca::Error::CustomBroadcast(_)
            | foca::Error::DataFromOurselves
            | foca::Error::IndirectForOurselves => {
                tracing::trace!(%from, %error, "dropped gossip packet");
                bump(&self.counters.dropped_undecodable, 1);
            }
            other => tracing::warn!(%from, error = %other, "foca refused a packet"),
        }
    }

    /// Someone suspects us: refute at once, and tell the suspecter directly.
    fn on_notice(&mut self, notice: SuspicionNotice) {
        if self.left || notice.suspect != *self.foca.identity() {
            return;
        }
        // One suspicion counts once against our health, however many of
        // its notices get through.
        if self.last_notice != Some(notice.incarnation) {
            self.last_notice = Some(notice.incarnation);
            self.pacer.suspected();
        }
        let me = self.foca.identity().clone();
        let suspicion = foca::Member::new(me.clone(), notice.incarnation, State::Suspect);
        if let Err(error) = self
            .foca
            .apply_many(std::iter::once(suspicion), true, &mut self.rt)
        {
            tracing::warn!(%error, "could not refute a suspicion");
        }
        self.drain();
        if notice.from.addr() != me.addr() && *self.foca.identity() == me {
            // An announcement carries our new incarnation in its header,
            // which is all the suspecter needs to drop the suspicion.
            if let Err(error) = self.foca.announce(notice.from, &mut self.rt) {
                tracing::warn!(%error, "could not answer a suspicion notice");
            }
            self.drain();
        }
    }

    /// Fires every timer that is due.
    fn fire_due(&mut self) {
        let now = now();
        while let Some(due) = self.timers.pop_due(now) {
            match due.event {
                Event::Foca(timer) => {
                    let kind = probe_timer(&timer);
                    match self.pacer.on_due(kind, now, due.lateness) {
                        Decision::Postpone(at) => self.timers.schedule_at(at, Event::Foca(timer)),
                        Decision::Deliver => self.deliver(timer, kind),
                    }
                }
                Event::JoinRetry(id) => self.retry_join(id, now),
                Event::Notice {
                    suspect,
                    incarnation,
                    remaining,
                } => self.resend_notice(suspect, incarnation, remaining, now),
                Event::LeaveRound(round) => self.leave_round(round, now),
            }
            if self.stop {
                return;
            }
        }
    }

    fn deliver(&mut self, timer: Timer<NodeId>, kind: ProbeTimer) {
        let had_probe = self.probe_in_flight;
        if kind == ProbeTimer::Probe {
            self.probe_started = false;
            self.suspicion_raised = false;
        }
        let suspect = match &timer {
            Timer::ChangeSuspectToDown { member_id, .. } => Some(member_id.clone()),
            _ => None,
        };
        self.judging_own_probe = kind == ProbeTimer::Probe;
        if let Err(error) = self.foca.handle_timer(timer, &mut self.rt) {
            tracing::warn!(%error, "foca timer failed");
        }
        if let Some(suspect) = suspect {
            self.drop_courtesy_to_refuted(&suspect);
        }
        self.drain();
        self.judging_own_probe = false;
        if kind == ProbeTimer::Probe {
            // A suspicion raised while handling the probe timer is the
            // previous probe failing (counted when it was scheduled);
            // otherwise a probe that was in flight succeeded.
            if had_probe && !self.suspicion_raised {
                self.pacer.probe_succeeded();
            }
            self.probe_in_flight = self.probe_started;
        }
    }

    /// foca 2.0.0 sends its "you are down" courtesy message (`TurnUndead`,
    /// with `notify_down_members`) when a suspicion timer fires even if the
    /// suspect refuted in time and stays alive; the suspect then believes
    /// itself down and rejoins under a new generation, which looks like a
    /// failure to everyone. When the suspect is not down, the only packet
    /// that timer produced is that message: drop it.
    fn drop_courtesy_to_refuted(&mut self, suspect: &NodeId) {
        let declared_down = self
            .foca
            .iter_membership_state()
            .any(|m| m.id() == suspect && m.state() == State::Down);
        if declared_down {
            return;
        }
        while let Some((to, data)) = self.rt.to_send() {
            if to != *suspect {
                wire::encode_foca(&data, &mut self.frame_buf);
                self.send_frame(to.addr());
            }
        }
    }

    /// Empties foca's runtime, acting on everything in it, then publishes.
    fn drain(&mut self) {
        let now = now();
        loop {
            while let Some((to, data)) = self.rt.to_send() {
                wire::encode_foca(&data, &mut self.frame_buf);
                self.send_frame(to.addr());
            }
            while let Some((after, timer)) = self.rt.to_schedule() {
                self.schedule_foca(now, after, timer);
            }
            while let Some(notification) = self.rt.to_notify() {
                self.on_notification(notification);
            }
            if self.rt.backlog() == 0 {
                break;
            }
        }
        self.publish();
    }

    fn schedule_foca(&mut self, now: Instant, after: Duration, timer: Timer<NodeId>) {
        let kind = probe_timer(&timer);
        match &timer {
            Timer::SendIndirectProbe { .. } => self.probe_started = true,
            Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                ..
            } => {
                if self.judging_own_probe {
                    self.suspicion_raised = true;
                    self.pacer.probe_failed();
                }
                let (suspect, incarnation) = (member_id.clone(), *incarnation);
                tracing::debug!(suspect = suspect.name(), incarnation, "suspecting member");
                self.notice_round(suspect, incarnation, self.profile.notice_attempts, now);
            }
            _ => {}
        }
        let delay = self.pacer.delay(kind, after);
        self.timers.schedule(now, delay, Event::Foca(timer));
    }

    fn on_notification(&mut self, notification: OwnedNotification<NodeId>) {
        match notification {
            OwnedNotification::MemberDown(id) => {
                tracing::info!(member = id.name(), addr = %id.addr(), "gossip member down");
                // Spread the verdict now rather than at the next periodic
                // round: every member that learns it does the same, so the
                // whole pool knows within a few hops.
                if !self.left
                    && let Err(error) = self.foca.gossip(&mut self.rt)
                {
                    tracing::warn!(%error, "could not gossip a failure");
                }
            }
            OwnedNotification::MemberUp(id) => {
                tracing::debug!(member = id.name(), addr = %id.addr(), "gossip member up");
            }
            OwnedNotification::Rejoin(id) => {
                tracing::info!(
                    generation = id.generation(),
                    "declared down; rejoined with a new generation"
                );
            }
            OwnedNotification::Defunct => {
                tracing::warn!("declared down by the pool and unable to rejoin");
            }
            other => tracing::trace!(notification = ?other, "gossip notification"),
        }
    }

    /// Frames are in `frame_buf`; seals them if needed and sends.
    fn send_frame(&mut self, to: SocketAddr) {
        if self.frame_buf.is_empty() {
            return;
        }
        let loss = self.profile.simulated_loss_per_mille;
        if loss > 0 && rand::random_range(0..1000) < loss {
            return;
        }
        let datagram = match &self.cipher {
            Some(cipher) => {
                cipher.seal(&self.frame_buf, &mut self.seal_buf);
                &self.seal_buf
            }
            None => &self.frame_buf,
        };
        match self.socket.try_send_to(datagram, to) {
            Ok(sent) => {
                bump(&self.counters.packets_sent, 1);
                bump(&self.counters.bytes_sent, sent);
            }
            // A full send buffer or an unreachable peer is packet loss, which
            // SWIM is built to tolerate.
            Err(error) => tracing::debug!(%to, %error, "gossip send failed"),
        }
    }

    fn send_notice(&mut self, suspect: &NodeId, incarnation: u16) {
        let notice = SuspicionNotice {
            suspect: suspect.clone(),
            incarnation,
            from: self.foca.identity().clone(),
        };
        wire::encode_notice(&notice, &mut self.frame_buf);
        self.send_frame(suspect.addr());
    }

    fn resend_notice(&mut self, suspect: NodeId, incarnation: u16, remaining: u32, now: Instant) {
        let still_suspect = self.foca.iter_membership_state().any(|m| {
            m.id() == &suspect && m.state() == State::Suspect && m.incarnation() == incarnation
        });
        if !still_suspect || self.left {
            return;
        }
        self.notice_round(suspect, incarnation, remaining, now);
    }

    /// Sends one suspicion notice and schedules the next while `remaining`
    /// (this one included) allows.
    fn notice_round(&mut self, suspect: NodeId, incarnation: u16, remaining: u32, now: Instant) {
        self.send_notice(&suspect, incarnation);
        if remaining > 1 {
            self.timers.schedule(
                now,
                self.profile.notice_interval,
                Event::Notice {
                    suspect,
                    incarnation,
                    remaining: remaining - 1,
                },
            );
        }
    }

    fn knows_active(&self, addr: SocketAddr) -> bool {
        self.foca.iter_members().any(|m| m.id().addr() == addr)
    }

    fn start_join(&mut self, addr: SocketAddr, reply: oneshot::Sender<Result<(), GossipError>>) {
        if self.left {
            let _ = reply.send(Err(GossipError::Stopped));
            return;
        }
        if addr == self.local_addr {
            let _ = reply.send(Err(GossipError::JoinSelf(addr)));
            return;
        }
        if self.knows_active(addr) {
            let _ = reply.send(Ok(()));
            return;
        }
        if self.joins.len() >= MAX_PENDING_JOINS {
            let _ = reply.send(Err(GossipError::Busy));
            return;
        }
        let now = now();
        let id = self.next_join;
        self.next_join += 1;
        self.joins.push(PendingJoin {
            id,
            addr,
            deadline: now + self.profile.join_timeout,
            reply,
        });
        self.announce_to(addr);
        self.timers
            .schedule(now, self.profile.join_retry, Event::JoinRetry(id));
    }

    fn announce_to(&mut self, addr: SocketAddr) {
        if let Err(error) = self.foca.announce(NodeId::placeholder(addr), &mut self.rt) {
            tracing::warn!(%addr, %error, "could not announce");
        }
        self.drain();
    }

    fn retry_join(&mut self, id: u64, now: Instant) {
        let Some(index) = self.joins.iter().position(|j| j.id == id) else {
            return; // answered already
        };
        if now >= self.joins[index].deadline {
            let join = self.joins.swap_remove(index);
            let _ = join.reply.send(Err(GossipError::JoinTimeout {
                addr: join.addr,
                waited: self.profile.join_timeout,
            }));
            return;
        }
        let addr = self.joins[index].addr;
        self.announce_to(addr);
        self.timers
            .schedule(now, self.profile.join_retry, Event::JoinRetry(id));
    }

    fn start_leave(&mut self, reply: oneshot::Sender<()>) {
        if self.left {
            let _ = reply.send(());
            return;
        }
        let me = self.foca.identity().clone();
        if let Err(error) = self.foca.add_broadcast(&LeaveNotice::of(&me).encode()) {
            tracing::warn!(%error, "could not queue the departure notice");
        }
        if let Err(error) = self.foca.leave_cluster(&mut self.rt) {
            tracing::warn!(%error, "could not announce the departure");
        }
        self.left = true;
        self.drain();
        for join in self.joins.drain(..) {
            let _ = join.reply.send(Err(GossipError::Stopped));
        }
        self.leave_reply = Some(reply);
        self.leave_round(1, now());
    }

    /// Spreads a departure notice for the failed member `name` (every
    /// process of it that foca knows down), as its own graceful leave would.
    fn force_leave(&mut self, name: &str) -> Result<(), GossipError> {
        let mut down = Vec::new();
        let mut known = false;
        for m in self.foca.iter_membership_state() {
            if m.id().name() == name {
                known = true;
                if m.state() == State::Down {
                    down.push(LeaveNotice::of(m.id()));
                }
            }
        }
        if down.is_empty() {
            return Err(if known || self.foca.identity().name() == name {
                GossipError::NotFailed(name.to_owned())
            } else {
                GossipError::UnknownMember(name.to_owned())
            });
        }
        for notice in down {
            // foca hands the notice to our broadcast handler, which records
            // it here too; only then is it news worth spreading.
            if let Err(error) = self.foca.add_broadcast(&notice.encode()) {
                tracing::warn!(%error, "could not queue the departure notice");
            }
        }
        tracing::info!(member = name, "forced to leave");
        self.publish();
        Ok(())
    }

    /// Gossips the departure again (foca's `leave_cluster` reaches only a
    /// few members, and packets get lost), then stops.
    fn leave_round(&mut self, round: u32, now: Instant) {
        if round >= self.profile.leave_rounds || self.foca.num_members() == 0 {
            if let Some(reply) = self.leave_reply.take() {
                let _ = reply.send(());
            }
            self.stop = true;
            return;
        }
        if let Err(error) = self.foca.gossip(&mut self.rt) {
            tracing::warn!(%error, "could not gossip the departure");
        }
        self.drain();
        self.timers.schedule(
            now,
            self.profile.leave_round_interval,
            Event::LeaveRound(round + 1),
        );
    }

    /// Publishes the membership if it changed, and answers the joins it
    /// satisfies.
    fn publish(&mut self) {
        let mut index = 0;
        while index < self.joins.len() {
            if self.knows_active(self.joins[index].addr) {
                let join = self.joins.swap_remove(index);
                let _ = join.reply.send(Ok(()));
            } else {
                index += 1;
            }
        }
        let digest = membership::digest(Sources {
            local: self.foca.identity(),
            local_left: self.left,
            members: self.foca.iter_membership_state(),
            departures: &self.departures,
        });
        if digest == self.digest && !self.members_tx.borrow().is_empty() {
            return;
        }
        self.digest = digest;
        let view = membership::view(Sources {
            local: self.foca.identity(),
            local_left: self.left,
            members: self.foca.iter_membership_state(),
            departures: &self.departures,
        });
        self.members_tx.send_if_modified(|current| {
            if **current == view {
                false
            } else {
                *current = Arc::new(view);
                true
            }
        });
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_or_forever(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
