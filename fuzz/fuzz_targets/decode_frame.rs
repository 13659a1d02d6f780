//! Any bytes → `FrameCodec` decode loop until `None` or an error, then `decode_eof`.
//! Nothing may panic, and a body handed out is never over the body limit.
#![no_main]

use bytes::BytesMut;
use chipcard_ipc::FrameCodec;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = FrameCodec::new();
    let limit = codec.max_body();
    // The input arrives in two pieces, split at a point the input chooses.
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut buf = BytesMut::new();
    for piece in [&data[..split], &data[split..]] {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(body)) => assert!(body.len() <= limit),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    while let Ok(Some(body)) = codec.decode_eof(&mut buf) {
        assert!(body.len() <= limit);
    }
});
