//! Suspicion notices: a member we suspect is told directly, a few times
//! while the suspicion stands, so it can refute in time; a notice about us
//! is refuted at once.

use std::time::Instant;

use foca::State;

use super::{Driver, Event};
use crate::gossip::identity::MemberId;
use crate::gossip::wire::{self, SuspicionNotice};

impl Driver {
    /// Someone suspects us: refute at once, and tell the suspecter directly.
    pub(super) fn on_notice(&mut self, notice: SuspicionNotice) {
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

    fn send_notice(&mut self, suspect: &MemberId, incarnation: u16) {
        let notice = SuspicionNotice {
            suspect: suspect.clone(),
            incarnation,
            from: self.foca.identity().clone(),
        };
        wire::encode_notice(&notice, &mut self.frame_buf);
        self.send_frame(suspect.addr());
    }

    pub(super) fn resend_notice(
        &mut self,
        suspect: MemberId,
        incarnation: u16,
        remaining: u32,
        now: Instant,
    ) {
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
    pub(super) fn notice_round(
        &mut self,
        suspect: MemberId,
        incarnation: u16,
        remaining: u32,
        now: Instant,
    ) {
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
}
