//! Raw bytes as a server RPC frame body, as a server reads them off the
//! network: decoding must never panic, and whatever decodes must encode
//! again (so an answer to it could be framed).

#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis::rpc::frame;
use trellis::rpc::message::{Envelope, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = frame::decode::<Envelope<Request>>(data) {
        let _ = frame::encode(&req).expect("a decoded request encodes");
    }
    if let Ok(resp) = frame::decode::<Envelope<Response>>(data) {
        let _ = frame::encode(&resp).expect("a decoded response encodes");
    }
});
