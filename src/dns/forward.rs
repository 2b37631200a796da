//! Forwarding foreign names to the configured recursors.
//!
//! Each recursor is asked over UDP from a fresh ephemeral port with a fresh
//! random ID, and over TCP when its answer comes back truncated; it gets
//! `timeout` per attempt and the next recursor is tried on any failure. Only
//! a response that matches our ID and question is accepted, so stray or
//! spoofed datagrams are ignored rather than relayed.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::fit::{self, MAX_TCP};
use super::shuffle;

/// The recursors and how long each may take.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    /// Upstream servers, in the order to try them.
    recursors: Vec<SocketAddr>,
    /// Budget for one attempt (UDP, or the TCP retry) at one recursor.
    timeout: Duration,
}

impl Forwarder {
    pub(crate) fn new(recursors: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self { recursors, timeout }
    }

    /// The first good answer from a recursor, or `None` when all failed.
    pub(crate) async fn forward(&self, request: &Message) -> Option<Message> {
        let mut query = request.clone();
        // Truncation to 16 bits is the point: any ID will do if unpredictable.
        query.metadata.id = shuffle::next() as u16;
        let bytes = fit::encode(&query)?;
        for &server in &self.recursors {
            match self.ask(server, &bytes, &query).await {
                Ok(answer) => return Some(answer),
                Err(error) => tracing::debug!(%server, %error, "recursor failed"),
            }
        }
        None
    }

    async fn ask(&self, server: SocketAddr, bytes: &[u8], query: &Message) -> io::Result<Message> {
        let answer = timeout(self.timeout, udp_exchange(server, bytes, query))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "UDP timeout"))??;
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        timeout(self.timeout, tcp_exchange(server, bytes, query))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP timeout"))?
    }
}

/// Whether `answer` is the response to `query`.
fn matches(query: &Message, answer: &Message) -> bool {
    answer.metadata.message_type == MessageType::Response
        && answer.metadata.id == query.metadata.id
        && answer.queries == query.queries
}

async fn udp_exchange(server: SocketAddr, bytes: &[u8], query: &Message) -> io::Result<Message> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; MAX_TCP];
    loop {
        let n = socket.recv(&mut buf).await?;
        match Message::from_vec(&buf[..n]) {
            Ok(answer) if matches(query, &answer) => return Ok(answer),
            // Someone else's datagram: keep waiting until the deadline.
            _ => continue,
        }
    }
}

async fn tcp_exchange(server: SocketAddr, bytes: &[u8], query: &Message) -> io::Result<Message> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(bytes.len()).map_err(|_| io::Error::other("query too large"))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    let len = usize::from(stream.read_u16().await?);
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await?;
    let answer = Message::from_vec(&buf).map_err(io::Error::other)?;
    if matches(query, &answer) {
        Ok(answer)
    } else {
        Err(io::Error::other("TCP answer does not match the query"))
    }
}
