//! Batched UDP I/O for the DNS workers: one `recvmmsg` reads every datagram
//! queued on the socket, up to [`BATCH`], and one `sendmmsg` writes the
//! replies to them, as Knot and NSD do. Under load that is two system calls
//! per batch instead of two per query; a lone query costs the same two as
//! `recv_from` and `send_to` did.
//!
//! The receive blocks for the first datagram only (`MSG_WAITFORONE`), within
//! the socket's read timeout, so a worker still looks at its stop flag every
//! poll. The buffers are allocated once per worker and reused; the kernel's
//! headers point into them and are rebuilt before each call, so nothing
//! here refers to itself across calls.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd as _;

/// Datagrams read, and replies written, in one system call at most.
pub(super) const BATCH: usize = 32;

/// One worker's receive and send buffers.
pub(super) struct Batch {
    /// `BATCH` receive buffers of `size` bytes, one after another.
    bufs: Vec<u8>,
    /// Each receive buffer's size: the largest datagram read.
    size: usize,
    /// Where each datagram came from.
    addrs: Vec<libc::sockaddr_storage>,
    /// The kernel's view of the receive buffers.
    iov: Vec<libc::iovec>,
    /// The receive headers; after a receive, each holds its datagram's
    /// length and its source address's length.
    hdrs: Vec<libc::mmsghdr>,
    /// The replies, reused: the first `ready` are to be sent.
    replies: Vec<Vec<u8>>,
    /// The datagram (index into `addrs`) each ready reply answers.
    reply_to: Vec<usize>,
    /// Replies written since the last send.
    ready: usize,
    /// The kernel's view of the replies.
    out_iov: Vec<libc::iovec>,
    /// The send headers.
    out_hdrs: Vec<libc::mmsghdr>,
}

/// An all-zero `T`.
///
/// # Safety
/// `T` must be valid when zeroed: a C struct of integers and raw pointers.
unsafe fn zeroed<T>() -> T {
    // SAFETY: the caller vouches that all-zero is a valid `T`.
    unsafe { std::mem::zeroed() }
}

impl Batch {
    /// Buffers for datagrams of up to `size` bytes (longer ones are cut,
    /// as `recv_from` cuts them).
    pub(super) fn new(size: usize) -> Self {
        // SAFETY: `sockaddr_storage`, `iovec` and `mmsghdr` are C structs of
        // integers and raw pointers, for which all-zero (null) is valid.
        let (addr, iov, hdr) = unsafe {
            (
                zeroed::<libc::sockaddr_storage>(),
                zeroed::<libc::iovec>(),
                zeroed::<libc::mmsghdr>(),
            )
        };
        Self {
            // Zeroed memory the allocator maps lazily: an idle worker's
            // pages are never touched.
            bufs: vec![0; BATCH * size],
            size,
            addrs: vec![addr; BATCH],
            iov: vec![iov; BATCH],
            hdrs: vec![hdr; BATCH],
            replies: (0..BATCH).map(|_| Vec::with_capacity(size)).collect(),
            reply_to: vec![0; BATCH],
            ready: 0,
            out_iov: vec![iov; BATCH],
            out_hdrs: vec![hdr; BATCH],
        }
    }

    /// Waits for a datagram on `socket` (at most its read timeout, then a
    /// `WouldBlock` error), and reads it with every other one already
    /// queued, up to [`BATCH`]. Returns how many it read.
    pub(super) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iov[i] = libc::iovec {
                iov_base: self.bufs[i * self.size..].as_mut_ptr().cast(),
                iov_len: self.size,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&raw mut self.addrs[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &raw mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: `hdrs` holds BATCH headers, each pointing at its own live
        // iovec, `size`-byte buffer and address storage with their true
        // lengths; none of them moves or is read during the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        // A negative count is an error; any other fits a usize.
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Datagram `i` of the last receive: its bytes, its source (`None` for
    /// an address family DNS is not served on), and the buffer to write
    /// its reply into; [`Self::reply`] then queues that reply.
    pub(super) fn slot(&mut self, i: usize) -> (&[u8], Option<SocketAddr>, &mut Vec<u8>) {
        let len = (self.hdrs[i].msg_len as usize).min(self.size);
        let request = &self.bufs[i * self.size..i * self.size + len];
        let peer = socket_addr(&self.addrs[i], self.hdrs[i].msg_hdr.msg_namelen);
        (request, peer, &mut self.replies[self.ready])
    }

    /// Queues the reply [`Self::slot`] gave the buffer for, to datagram `i`'s
    /// source.
    pub(super) fn reply(&mut self, i: usize) {
        self.reply_to[self.ready] = i;
        self.ready += 1;
    }

    /// Sends every queued reply, in as few `sendmmsg` calls as the kernel
    /// takes them. A reply the kernel refuses (an unreachable source, a
    /// full buffer) is skipped, as a failed `send_to` was.
    pub(super) fn send(&mut self, socket: &UdpSocket) {
        let ready = std::mem::take(&mut self.ready);
        for j in 0..ready {
            let i = self.reply_to[j];
            self.out_iov[j] = libc::iovec {
                iov_base: self.replies[j].as_mut_ptr().cast(),
                iov_len: self.replies[j].len(),
            };
            let h = &mut self.out_hdrs[j].msg_hdr;
            h.msg_name = (&raw mut self.addrs[i]).cast();
            h.msg_namelen = self.hdrs[i].msg_hdr.msg_namelen;
            h.msg_iov = &raw mut self.out_iov[j];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut sent = 0;
        while sent < ready {
            // SAFETY: headers `sent..ready` point at live replies, iovecs and
            // addresses with their true lengths, unchanged during the call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.out_hdrs[sent..].as_mut_ptr(),
                    (ready - sent) as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(n) {
                Ok(n) if n > 0 => sent += n,
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    let peer = socket_addr(
                        &self.addrs[self.reply_to[sent]],
                        self.out_hdrs[sent].msg_hdr.msg_namelen,
                    );
                    tracing::debug!(?peer, error = %e, "sending a DNS response failed");
                    sent += 1;
                }
            }
        }
    }
}

/// The address the kernel wrote into `addr` (`len` bytes of it).
fn socket_addr(addr: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(addr.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, the
            // length that it is whole, and sockaddr_storage is aligned for
            // every socket address type.
            let a = unsafe { &*(&raw const *addr).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(&raw const *addr).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many datagrams queued at once come back in one receive, each with
    /// its own bytes and source, and every reply reaches its own source.
    #[test]
    fn a_batch_reads_many_and_answers_each_at_its_source() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let clients: Vec<UdpSocket> = (0..5)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (k, c) in clients.iter().enumerate() {
            c.send_to(&[k as u8; 3], server.local_addr().unwrap())
                .unwrap();
        }
        let mut batch = Batch::new(512);
        let mut seen = 0;
        while seen < clients.len() {
            let n = batch.recv(&server).unwrap();
            assert!(n >= 1);
            for i in 0..n {
                let (request, peer, out) = batch.slot(i);
                let k = usize::from(request[0]);
                assert_eq!(request, &[request[0]; 3]);
                assert_eq!(peer, Some(clients[k].local_addr().unwrap()));
                out.clear();
                out.extend_from_slice(b"re");
                out.push(request[0]);
                batch.reply(i);
            }
            batch.send(&server);
            seen += n;
        }
        for (k, c) in clients.iter().enumerate() {
            c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 16];
            let (len, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], &[b'r', b'e', k as u8]);
            assert_eq!(from, server.local_addr().unwrap());
        }
    }

    #[test]
    fn an_idle_socket_times_out_as_would_block() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_millis(10)))
            .unwrap();
        let e = Batch::new(64).recv(&server).unwrap_err();
        assert!(matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
    }
}
