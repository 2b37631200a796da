//! Packets in and out: reading every waiting datagram, opening and
//! decoding it for foca or as a suspicion notice, and sealing and sending
//! what foca and the driver frame; the traffic counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Driver, now};
use crate::gossip::wire::{Frame, WireError};

/// How long after logging a protocol-1 datagram the next ones stay quiet.
const OLD_PROTOCOL_LOG_EVERY: Duration = Duration::from_secs(30);

/// How many datagrams one wake-up reads at most before it turns to the
/// timers, so a flood cannot starve them.
const READ_BATCH: usize = 256;

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

impl Driver {
    /// Reads every datagram already waiting (up to a batch).
    pub(super) fn read_ready(&mut self, buf: &mut [u8]) {
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
                Ok(Frame::CoordinatePing(probe)) => self.on_coordinate_ping(probe, from),
                Ok(Frame::CoordinatePong(probe)) => self.on_coordinate_pong(probe, from),
                Err(error @ WireError::OldProtocol(_)) => {
                    // Not noise: an agent of the pool cannot gossip with us
                    // until it is upgraded, and would otherwise look dead.
                    let now = now();
                    let quiet = self
                        .old_protocol_logged
                        .is_some_and(|at| now.duration_since(at) < OLD_PROTOCOL_LOG_EVERY);
                    if !quiet {
                        self.old_protocol_logged = Some(now);
                        tracing::warn!(%from, "dropped gossip: {error}");
                    }
                    bump(&self.counters.dropped_undecodable, 1);
                }
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

    /// Frames are in `frame_buf`; seals them if needed and sends.
    pub(super) fn send_frame(&mut self, to: SocketAddr) {
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
}
