//! The floor under the fan-out on this machine: what the kernel alone
//! costs to hand one answer to one parked client over loopback TCP. One
//! thread writes an answer of the agent's size to each of `n` connected
//! sockets, then reads each back; nothing else runs. An agent can come no
//! closer to it than its own work per answer allows, so the two side by
//! side say how much of the fan-out is the machine and how much the agent.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The floor's two halves, over `n` sockets.
#[derive(Debug)]
pub(crate) struct Floor {
    pub(crate) n: usize,
    /// Writing one answer to each.
    pub(crate) write: Duration,
    /// Reading each back.
    pub(crate) read: Duration,
}

/// Connects `n` pairs on `ip`, then times writing `len` bytes to each
/// server side and reading them back on each client side.
pub(crate) fn measure(ip: IpAddr, n: usize, len: usize) -> anyhow::Result<Floor> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).context("binding the floor")?;
    let addr = listener.local_addr()?;
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let client = TcpStream::connect(addr).context("connecting the floor")?;
        let (server, _) = listener.accept().context("accepting the floor")?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        pairs.push((server, client));
    }
    let answer = vec![b'x'; len];
    let started = Instant::now();
    for (server, _) in &mut pairs {
        server.write_all(&answer)?;
    }
    let write = started.elapsed();
    let mut buf = vec![0u8; len.max(1)];
    let started = Instant::now();
    for (_, client) in &mut pairs {
        let mut got = 0;
        while got < len {
            match client.read(&mut buf)? {
                0 => bail!("a floor connection closed"),
                k => got += k,
            }
        }
    }
    let read = started.elapsed();
    Ok(Floor { n, write, read })
}
