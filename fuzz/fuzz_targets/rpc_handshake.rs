//! Raw bytes as everything a peer sends when it opens a server RPC
//! connection, read by the accepting side: the preface, then the cluster
//! membership proof, with and without a cluster key. Whatever the bytes,
//! the handshake must end (never wait for more than was sent once the peer
//! has closed), never panic, and never accept a peer that did not prove
//! the key: a fuzzer cannot forge an HMAC, so with a key every input must
//! be refused.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;
use trellis::rpc::ClusterKey;
use trellis::rpc::preface::{self, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let key = ClusterKey::derive(&[7; 32]);
        for key in [None, Some(&key)] {
            let (mut peer, mut server) = tokio::io::duplex(1 << 16);
            peer.write_all(data).await.expect("the bytes fit the pipe");
            // The peer hangs up after its bytes, so the handshake cannot
            // wait for more.
            drop(peer);
            let accepted = preface::accept(&mut server, PROTOCOL_VERSION, key).await;
            if key.is_some() {
                assert!(accepted.is_err(), "a forged proof was accepted");
            }
        }
    });
});
