//! The four messages of an APDU round trip (client → chipcardd → driver and back), read and
//! written the way the hot paths did before `MessageCodec` (the frame through
//! `EnvelopeCodec` into an `Envelope`, then the set's `decode`; `Envelope::new`, which builds
//! a `Group`, then the codec) and the way they do now (`MessageCodec`: straight into and out
//! of the typed message). A read starts from a copy of the framed bytes, a write ends with
//! the frame in the buffer.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use chipcard_ipc::message::{
    CardCommand, CardCommandResponse, CommandCard, CommandCardResponse, FromClient, FromDriver,
    MessageSet, ToClient, ToDriver,
};
use chipcard_ipc::{
    Addressed, CardId, Envelope, EnvelopeCodec, MessageCodec, Outcome, Outgoing, ReaderId,
};
use tokio_util::codec::{Decoder, Encoder};

/// Prints one row per message: ns per read and per write, old → new, timed by `time`.
pub fn table(time: &dyn Fn(&mut dyn FnMut()) -> f64) {
    println!();
    println!(
        "{:<20} {:>6} | {:>9} {:>9} | {:>9} {:>9}",
        "hot path, ns", "bytes", "read old", "read new", "write old", "write new"
    );
    let apdu = Bytes::from_static(&[0x00, 0xa4, 0x00, 0x00, 0x02, 0x3f, 0x00]);
    let sw = Bytes::from_static(&[0x90, 0x00]);
    row::<FromClient>(
        time,
        "CommandCard",
        &CommandCard {
            card_id: CardId(42),
            data: apdu.clone(),
            target: None,
        },
    );
    row::<ToDriver>(
        time,
        "CardCommand",
        &CardCommand {
            reader_id: ReaderId(1),
            slot: 0,
            data: apdu,
            target: None,
        },
    );
    row::<FromDriver>(
        time,
        "CardCommandResponse",
        &CardCommandResponse {
            outcome: Outcome::ok("ok"),
            data: Some(sw.clone()),
        },
    );
    row::<ToClient>(
        time,
        "CommandCardResponse",
        &CommandCardResponse {
            outcome: Outcome::ok("ok"),
            data: Some(sw),
        },
    );
}

fn row<M: MessageSet>(time: &dyn Fn(&mut dyn FnMut()) -> f64, name: &str, msg: &impl Outgoing) {
    let mut old = EnvelopeCodec::new();
    let mut new = MessageCodec::<M>::new();
    let mut framed = BytesMut::new();
    old.encode(Envelope::new(17, Some(3), msg), &mut framed)
        .expect("encodes");
    let read_old = time(&mut || {
        let env = read_one(&mut old, &framed).expect("an envelope");
        black_box(M::decode_data(&env.cmd, &env.data).expect("the message"));
    });
    let read_new = time(&mut || {
        let got = read_one(&mut new, &framed).expect("an envelope");
        black_box(got.message.expect("the message"));
    });
    let mut dst = BytesMut::with_capacity(4096);
    let write_old = time(&mut || {
        dst.clear();
        old.encode(Envelope::new(17, Some(3), black_box(msg)), &mut dst)
            .expect("encodes");
    });
    let write_new = time(&mut || {
        dst.clear();
        let message = Addressed {
            id: 17,
            refid: Some(3),
            message: black_box(msg),
        };
        new.encode(message, &mut dst).expect("encodes");
    });
    println!(
        "{name:<20} {:>6} | {read_old:>9.0} {read_new:>9.0} | {write_old:>9.0} {write_new:>9.0}",
        framed.len()
    );
}

/// Decodes the one frame of a copy of `framed`.
fn read_one<D: Decoder>(codec: &mut D, framed: &BytesMut) -> D::Item
where
    D::Error: std::fmt::Debug,
{
    let mut src = black_box(framed).clone();
    codec.decode(&mut src).expect("a frame").expect("whole")
}
