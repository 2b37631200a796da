//! Raw bytes as a server RPC connection's first bytes and as a frame body,
//! as a server reads them off the network: the preface and the decoding of
//! every request and response family must never panic, and whatever decodes
//! must encode again (so an answer to it could be framed).

#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis::rpc::frame;
use trellis::rpc::message::{Envelope, Request, Response};
use trellis::rpc::preface::{self, PREFACE_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(first) = data.first_chunk::<PREFACE_LEN>()
        && let Ok(version) = preface::parse(first)
    {
        assert_eq!(
            preface::encode(version),
            *first,
            "a preface encodes as it parsed"
        );
    }
    if let Ok(req) = frame::decode::<Envelope<Request>>(data) {
        let _ = frame::encode(&req).expect("a decoded request encodes");
    }
    if let Ok(resp) = frame::decode::<Envelope<Response>>(data) {
        let _ = frame::encode(&resp).expect("a decoded response encodes");
    }
});
