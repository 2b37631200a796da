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
//!
//! This file is the loop: the driver's state, its wake-ups, the timer
//! schedule, draining foca and publishing the membership. Beside it:
//! `io.rs` (datagrams in and out, the counters), `notice.rs` (suspicion
//! notices), `join_leave.rs` (join, leave and force-leave),
//! `reconnect.rs` (announcing while foca is not connected) and
//! `refusal.rs` (name claims the membership view refused, logged and
//! reported).

mod coordinates;
mod io;
mod join_leave;
mod notice;
mod reconnect;
mod refusal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foca::{AccumulatingRuntime, Foca, OwnedNotification, State, Timer};
use foca_rand::SeedableRng as _;
use foca_rand::rngs::SmallRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::GossipError;
use super::codec::CompactCodec;
use super::coordinates::Published;
use super::crypto::{self, Cipher};
use super::health::{Decision, Pacer, ProbeTimer};
use super::identity::MemberId;
use super::membership::{self, DepartureHandler, Departures, Member, Refusal, Sources};
use super::profile::{MAX_PACKET_SIZE, Profile};
use super::timers::TimerQueue;
use super::wire;
pub(crate) use io::Counters;
use join_leave::PendingJoin;
use refusal::RefusalLog;

/// foca as this crate instantiates it.
type Swim = Foca<MemberId, CompactCodec, SmallRng, DepartureHandler>;

/// The membership as published to subscribers.
pub(crate) type MemberList = Arc<Vec<Member>>;

/// What the handle asks of the driver (join, leave, force-leave, stop).
#[derive(Debug)]
pub(crate) enum Control {
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

/// What the schedule holds.
#[derive(Debug)]
enum Event {
    /// One of foca's timers.
    Foca(Timer<MemberId>),
    /// Re-announce for the pending join with this id.
    JoinRetry(u64),
    /// Resend a suspicion notice while the suspicion stands.
    Notice {
        suspect: MemberId,
        incarnation: u16,
        remaining: u32,
    },
    /// Gossip the departure once more.
    LeaveRound(u32),
    /// Announce to a few known members while foca is not connected; the
    /// number tells a round of the current spell from a stale one.
    Reconnect(u64),
    /// Send a coordinate ping (`coordinates.rs`).
    CoordinatePing,
    /// A coordinate ping held back by the test delay.
    #[cfg(feature = "test-delay")]
    DelayedSend {
        /// Its destination.
        to: SocketAddr,
        /// The framed plaintext.
        frame: Vec<u8>,
    },
}

/// Everything the driver task owns.
pub(crate) struct Driver {
    /// The SWIM state machine.
    foca: Swim,
    /// Where foca leaves its output between calls.
    rt: AccumulatingRuntime<MemberId>,
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
    members_tx: watch::Sender<MemberList>,
    /// Where a refusal of this member's own name claim is reported, so the
    /// agent can stop instead of running as if it had joined.
    refusal_tx: watch::Sender<Option<Refusal>>,
    /// When each refused claim was last logged, to log each one once a
    /// while however often the view is rebuilt.
    refusals: RefusalLog,
    /// When a protocol-1 datagram was last logged (see `wire`): one line a
    /// while is enough to tell the operator an old agent is about.
    old_protocol_logged: Option<Instant>,
    /// The digest of the last published membership.
    digest: u64,
    /// How many members of another pool the last view left out.
    strangers: usize,
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
    /// While foca is not connected (every member it knows is down, or it
    /// just rejoined): the wait before the next announce round after the
    /// one scheduled. `None` while connected.
    reconnect_interval: Option<Duration>,
    /// Counts the spells without connection, to drop stale rounds.
    reconnect_spell: u64,
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
    /// Our network coordinate and what measuring it keeps.
    vivaldi: crate::coordinate::Client,
    /// Coordinate pings awaiting their pong.
    pings: coordinates::Pings,
    /// Where every known coordinate is published.
    coordinates: Published,
    /// Per-datacenter delays of coordinate pings (`TRELLIS_TEST_DELAY`).
    #[cfg(feature = "test-delay")]
    test_delay: std::collections::BTreeMap<String, Duration>,
    /// Reused buffers: the framed plaintext, the sealed datagram and the
    /// opened one.
    frame_buf: Vec<u8>,
    seal_buf: Vec<u8>,
    open_buf: Vec<u8>,
}

/// The foca timer kinds the pacer cares about.
fn probe_timer(timer: &Timer<MemberId>) -> ProbeTimer {
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
        identity: MemberId,
        socket: UdpSocket,
        cipher: Option<Cipher>,
        profile: Profile,
        counters: Arc<Counters>,
        members_tx: watch::Sender<MemberList>,
        refusal_tx: watch::Sender<Option<Refusal>>,
    ) -> Self {
        let departures = Departures::default();
        let vivaldi = crate::coordinate::Client::default();
        let coordinates = Published::new(identity.name(), vivaldi.coordinate().clone());
        // The identity is made from the socket's own address.
        let local_addr = identity.addr();
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
            refusal_tx,
            refusals: RefusalLog::default(),
            old_protocol_logged: None,
            digest: 0,
            strangers: 0,
            profile,
            joins: Vec::new(),
            next_join: 0,
            left: false,
            leave_reply: None,
            stop: false,
            reconnect_interval: None,
            reconnect_spell: 0,
            probe_in_flight: false,
            probe_started: false,
            suspicion_raised: false,
            judging_own_probe: false,
            last_notice: None,
            vivaldi,
            pings: coordinates::Pings::default(),
            coordinates,
            #[cfg(feature = "test-delay")]
            test_delay: coordinates::test_delays(),
            frame_buf: Vec::with_capacity(MAX_PACKET_SIZE + 1),
            seal_buf: Vec::with_capacity(MAX_PACKET_SIZE + 1 + crypto::OVERHEAD),
            open_buf: Vec::with_capacity(MAX_PACKET_SIZE + 1),
        };
        driver.publish();
        let first = now();
        let interval = driver.coordinate_interval();
        driver
            .timers
            .schedule(first, interval, Event::CoordinatePing);
        driver
    }

    /// The published coordinates, for the handle.
    pub(crate) fn coordinates(&self) -> Published {
        self.coordinates.clone()
    }

    /// Runs until shut down, left, or every handle is gone.
    pub(crate) async fn run(mut self, mut controls: mpsc::Receiver<Control>) {
        let mut buf = vec![0u8; self.max_datagram + 1];
        while !self.stop {
            let wake_at = self
                .timers
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                control = controls.recv() => match control {
                    Some(control) => self.on_control(control),
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

    fn on_control(&mut self, control: Control) {
        match control {
            Control::Join { addr, reply } => self.start_join(addr, reply),
            Control::Leave { reply } => self.start_leave(reply),
            Control::ForceLeave { name, reply } => {
                let _ = reply.send(self.force_leave(&name));
            }
            Control::Shutdown => self.stop = true,
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
                Event::Reconnect(spell) => self.reconnect_round(spell, now),
                Event::CoordinatePing => self.coordinate_round(now),
                #[cfg(feature = "test-delay")]
                Event::DelayedSend { to, frame } => {
                    self.frame_buf = frame;
                    self.send_frame(to);
                }
            }
            if self.stop {
                return;
            }
        }
    }

    fn deliver(&mut self, timer: Timer<MemberId>, kind: ProbeTimer) {
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
    fn drop_courtesy_to_refuted(&mut self, suspect: &MemberId) {
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

    fn schedule_foca(&mut self, now: Instant, after: Duration, timer: Timer<MemberId>) {
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

    fn on_notification(&mut self, notification: OwnedNotification<MemberId>) {
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
                self.start_reconnect(now());
            }
            OwnedNotification::Active => {
                tracing::debug!("gossip connected");
                self.reconnected();
            }
            OwnedNotification::Idle => {
                tracing::debug!("every known member is down; gossip not connected");
                self.start_reconnect(now());
            }
            OwnedNotification::Defunct => {
                tracing::warn!("declared down by the pool and unable to rejoin");
            }
            other => tracing::trace!(notification = ?other, "gossip notification"),
        }
    }

    /// Publishes the membership if it changed, and answers the joins it
    /// satisfies.
    fn publish(&mut self) {
        self.answer_joins();
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
        let membership::View {
            members: view,
            refused,
        } = membership::view(Sources {
            local: self.foca.identity(),
            local_left: self.left,
            members: self.foca.iter_membership_state(),
            departures: &self.departures,
        });
        // Another pool's members (a join pointed at the wrong port) stay
        // out of the view; said once each time their number changes.
        let me = self.foca.identity().name().to_owned();
        let (view, strangers): (Vec<_>, Vec<_>) = view
            .into_iter()
            .partition(|m| membership::same_pool(&me, m));
        if strangers.len() != self.strangers {
            self.strangers = strangers.len();
            if !strangers.is_empty() {
                let names: Vec<&str> = strangers.iter().map(|m| m.name.as_str()).collect();
                tracing::warn!(
                    ?names,
                    "members of another gossip pool (LAN and WAN mixed by a join to the wrong port) are left out"
                );
            }
        }
        let names: Vec<&str> = view.iter().map(|m| m.name.as_str()).collect();
        self.prune_coordinates(&names);
        self.members_tx.send_if_modified(|current| {
            if **current == view {
                false
            } else {
                *current = Arc::new(view);
                true
            }
        });
        // After the view: whoever hears of a refusal finds the view that
        // made it already published.
        self.on_refused(&refused, now());
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_or_forever(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
