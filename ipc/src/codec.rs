//! Frames (PROTOCOL §2) as a tokio-util codec.
//!
//! ```text
//! POST /chipcard HTTP/1.1\r\n
//! Content-Length: 123\r\n
//! \r\n
//! <123 bytes: the message in group format>
//! ```
//!
//! [`FrameCodec`] cuts a byte stream into bodies, enforcing the header and body limits before
//! any body byte is buffered. [`EnvelopeCodec`] adds the group-format envelope on top: a body
//! that does not parse is handed up as an `Err` item (the peer gets an error reply and the
//! stream goes on), while a framing error ends the stream. [`MessageCodec`] does the same for
//! the typed messages of one set, reading and writing them without the document model.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use std::cell::RefCell;
use std::marker::PhantomData;

use crate::envelope::{Addressed, Envelope, Incoming};
use crate::error::{Error, FrameError};
use crate::message::{MessageSet, Outgoing};
use crate::parse::Limits;

/// The default limit of a header block, in bytes.
pub const MAX_HEADER: usize = 4 * 1024;
/// The default limit of a body, in bytes.
pub const MAX_BODY: usize = 256 * 1024;

const START_LINE: &[u8] = b"POST /chipcard HTTP/1.1\r\n";

/// Cuts a byte stream into frame bodies, and frames bodies for sending.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_header: usize,
    max_body: usize,
    /// The length of the body being read, once its header is complete.
    body_len: Option<usize>,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new()
    }
}

impl FrameCodec {
    /// A codec with the default limits (4 KiB header, 256 KiB body).
    pub fn new() -> Self {
        FrameCodec::with_limits(MAX_HEADER, MAX_BODY)
    }

    /// A codec with the given header and body limits in bytes.
    pub fn with_limits(max_header: usize, max_body: usize) -> Self {
        FrameCodec {
            max_header,
            max_body,
            body_len: None,
        }
    }

    /// The body limit in bytes.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Reads a complete header block from the front of `src`, if there is one, and returns
    /// the body length it declares. The header bytes are consumed.
    fn read_header(&self, src: &mut BytesMut) -> Result<Option<usize>, FrameError> {
        let mut start = 0;
        let mut lines = 0usize;
        let mut content_length: Option<usize> = None;
        loop {
            let Some(nl) = src[start..].iter().position(|&b| b == b'\n') else {
                if src.len() > self.max_header {
                    return Err(FrameError::HeaderTooLarge {
                        limit: self.max_header,
                    });
                }
                return Ok(None);
            };
            let end = start + nl;
            if end + 1 > self.max_header {
                return Err(FrameError::HeaderTooLarge {
                    limit: self.max_header,
                });
            }
            let mut line = &src[start..end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            start = end + 1;
            if lines == 0 {
                if line.is_empty() {
                    // Blank lines before the start line are tolerated, as HTTP does.
                    continue;
                }
                check_start_line(line)?;
                lines += 1;
                continue;
            }
            if line.is_empty() {
                let length = content_length
                    .ok_or_else(|| FrameError::MalformedHeader("no Content-Length".to_owned()))?;
                src.advance(start);
                return Ok(Some(length));
            }
            lines += 1;
            if let Some(value) = content_length_of(line)? {
                if value > self.max_body as u64 {
                    return Err(FrameError::BodyTooLarge {
                        length: value,
                        limit: self.max_body,
                    });
                }
                let value = value as usize;
                if content_length.is_some_and(|old| old != value) {
                    return Err(FrameError::MalformedHeader(
                        "conflicting Content-Length headers".to_owned(),
                    ));
                }
                content_length = Some(value);
            }
        }
    }
}

fn check_start_line(line: &[u8]) -> Result<(), FrameError> {
    let text = std::str::from_utf8(line)
        .map_err(|_| FrameError::MalformedHeader("start line is not text".to_owned()))?;
    let mut words = text.split_ascii_whitespace();
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some(_method), Some(_target), Some(version), None) if version.starts_with("HTTP/") => {
            Ok(())
        }
        _ => Err(FrameError::MalformedHeader(format!(
            "bad start line '{}'",
            text.chars().take(64).collect::<String>()
        ))),
    }
}

/// The value of a `Content-Length` line (any case), `None` for other headers.
fn content_length_of(line: &[u8]) -> Result<Option<u64>, FrameError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| FrameError::MalformedHeader("header line without ':'".to_owned()))?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if !name.eq_ignore_ascii_case(b"content-length") {
        return Ok(None);
    }
    let value = std::str::from_utf8(value)
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| FrameError::MalformedHeader("Content-Length is not a number".to_owned()))?;
    value
        .parse::<u64>()
        .map(Some)
        .map_err(|_| FrameError::BodyTooLarge {
            length: u64::MAX,
            limit: usize::MAX,
        })
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        let length = match self.body_len {
            Some(length) => length,
            None => match self.read_header(src)? {
                Some(length) => {
                    self.body_len = Some(length);
                    length
                }
                None => return Ok(None),
            },
        };
        if src.len() < length {
            src.reserve(length - src.len());
            return Ok(None);
        }
        self.body_len = None;
        Ok(Some(src.split_to(length).freeze()))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && self.body_len.is_none() => Ok(None),
            None => Err(Error::Frame(FrameError::Truncated)),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, body: Bytes, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&body[..], dst)
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, body: &[u8], dst: &mut BytesMut) -> Result<(), Error> {
        if body.len() > self.max_body {
            return Err(Error::Frame(FrameError::BodyTooLarge {
                length: body.len() as u64,
                limit: self.max_body,
            }));
        }
        dst.reserve(START_LINE.len() + 40 + body.len());
        dst.put_slice(START_LINE);
        dst.put_slice(b"Content-Length: ");
        dst.put_slice(body.len().to_string().as_bytes());
        dst.put_slice(b"\r\n\r\n");
        dst.put_slice(body);
        Ok(())
    }
}

/// Frames carrying envelopes: decodes to `Ok(Envelope)` or, for a body that is not a valid
/// document or envelope, to an `Err` item while the stream goes on.
#[derive(Debug, Clone, Default)]
pub struct EnvelopeCodec {
    frames: FrameCodec,
    limits: Limits,
}

impl EnvelopeCodec {
    /// A codec with the default limits.
    pub fn new() -> Self {
        EnvelopeCodec::default()
    }

    /// A codec with the given frame codec and document limits.
    pub fn with_limits(frames: FrameCodec, limits: Limits) -> Self {
        EnvelopeCodec { frames, limits }
    }
}

impl Decoder for EnvelopeCodec {
    type Item = Result<Envelope, Error>;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        Ok(self.frames.decode(src)?.map(|body| self.envelope(&body)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        Ok(self
            .frames
            .decode_eof(src)?
            .map(|body| self.envelope(&body)))
    }
}

impl EnvelopeCodec {
    fn envelope(&self, body: &[u8]) -> Result<Envelope, Error> {
        let doc = crate::parse::parse_bytes(body, &self.limits)?;
        Envelope::from_document(doc)
    }
}

impl Encoder<&Envelope> for EnvelopeCodec {
    type Error = Error;

    fn encode(&mut self, envelope: &Envelope, dst: &mut BytesMut) -> Result<(), Error> {
        let body = envelope.encode();
        self.frames.encode(&body[..], dst)
    }
}

impl Encoder<Envelope> for EnvelopeCodec {
    type Error = Error;

    fn encode(&mut self, envelope: Envelope, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&envelope, dst)
    }
}

/// Frames carrying the messages of one set `M` ([`FromClient`](crate::message::FromClient),
/// [`FromDriver`](crate::message::FromDriver), ...), read straight into their typed form
/// without the document model ([`Incoming::decode`]), and typed messages written straight
/// into the frame buffer ([`Addressed`]).
///
/// Decodes to `Ok(Incoming)` (whose `message` is an `Err` when the command is unknown or a
/// field is bad, the ids and command name kept), or, for a body that is not a valid document
/// or envelope, to an `Err` item while the stream goes on; a framing error ends the stream.
/// The same items, errors included, as [`EnvelopeCodec`] followed by `M::decode`.
#[derive(Debug)]
pub struct MessageCodec<M> {
    frames: FrameCodec,
    limits: Limits,
    set: PhantomData<fn() -> M>,
}

thread_local! {
    /// The body being encoded, before its header is known: one buffer per thread, kept
    /// between messages, rather than one per connection (idle connections cost nothing).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl<M> Default for MessageCodec<M> {
    fn default() -> Self {
        MessageCodec::with_limits(FrameCodec::new(), Limits::default())
    }
}

impl<M> MessageCodec<M> {
    /// A codec with the default limits.
    pub fn new() -> Self {
        MessageCodec::default()
    }

    /// A codec with the given frame codec and document limits.
    pub fn with_limits(frames: FrameCodec, limits: Limits) -> Self {
        MessageCodec {
            frames,
            limits,
            set: PhantomData,
        }
    }
}

impl<M: MessageSet> Decoder for MessageCodec<M> {
    type Item = Result<Incoming<M>, Error>;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        Ok(self
            .frames
            .decode(src)?
            .map(|body| Incoming::decode(&body, &self.limits)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Error> {
        Ok(self
            .frames
            .decode_eof(src)?
            .map(|body| Incoming::decode(&body, &self.limits)))
    }
}

impl<M, O: Outgoing + ?Sized> Encoder<Addressed<'_, O>> for MessageCodec<M> {
    type Error = Error;

    fn encode(&mut self, message: Addressed<'_, O>, dst: &mut BytesMut) -> Result<(), Error> {
        let mut frame = |scratch: &mut Vec<u8>| {
            scratch.clear();
            message.encode_into(scratch);
            let result = self.frames.encode(&scratch[..], dst);
            // A rare large message does not keep its buffer.
            if scratch.capacity() > SCRATCH_KEPT {
                *scratch = Vec::new();
            }
            result
        };
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => frame(&mut scratch),
            // Only if a message's own encoding encodes through a codec: a buffer of its own.
            Err(_) => frame(&mut Vec::new()),
        })
    }
}

/// The largest encoding buffer a [`MessageCodec`] keeps between messages.
const SCRATCH_KEPT: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut FrameCodec, input: &[u8]) -> Result<Vec<Bytes>, Error> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(frame) = codec.decode(&mut buf)? {
            out.push(frame);
        }
        Ok(out)
    }

    #[test]
    fn decodes_crlf_and_bare_lf_and_any_case() {
        let input = b"POST /chipcard HTTP/1.1\r\nContent-length: 3\r\n\r\nabcPOST /chipcard HTTP/1.1\nX-Other: 1\nCONTENT-LENGTH:2\n\nde";
        let frames = decode_all(&mut FrameCodec::new(), input).expect("valid frames");
        assert_eq!(
            frames,
            vec![Bytes::from_static(b"abc"), Bytes::from_static(b"de")]
        );
    }

    #[test]
    fn byte_by_byte_gives_the_same_frames() {
        let mut encoded = BytesMut::new();
        let mut codec = FrameCodec::new();
        for body in [&b"one"[..], b"", b"three"] {
            codec.encode(body, &mut encoded).expect("under the limit");
        }
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for b in encoded.iter() {
            buf.put_u8(*b);
            while let Some(f) = codec.decode(&mut buf).expect("valid") {
                frames.push(f);
            }
        }
        assert_eq!(
            frames,
            vec![
                Bytes::from_static(b"one"),
                Bytes::new(),
                Bytes::from_static(b"three")
            ]
        );
    }

    #[test]
    fn oversized_body_is_refused_before_it_arrives() {
        let input = b"POST /chipcard HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n";
        let err = decode_all(&mut FrameCodec::new(), input).expect_err("too large");
        assert!(
            matches!(err, Error::Frame(FrameError::BodyTooLarge { .. })),
            "{err}"
        );
        let input = b"POST /chipcard HTTP/1.1\r\nContent-Length: 300000\r\n\r\n";
        let mut buf = BytesMut::from(&input[..]);
        assert!(FrameCodec::new().decode(&mut buf).is_err());
        assert!(
            buf.capacity() < 300_000,
            "no room was reserved for the body"
        );
    }

    #[test]
    fn header_limit_holds_without_newlines() {
        let input = vec![b'A'; MAX_HEADER + 1];
        let err = decode_all(&mut FrameCodec::new(), &input).expect_err("header too large");
        assert!(matches!(
            err,
            Error::Frame(FrameError::HeaderTooLarge { .. })
        ));
    }

    #[test]
    fn malformed_headers_are_errors() {
        for input in [
            &b"garbage\r\n\r\n"[..],
            b"POST /chipcard HTTP/1.1\r\n\r\n",
            b"POST /chipcard HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"POST /chipcard HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST /chipcard HTTP/1.1\r\nno colon\r\n\r\n",
            b"POST /chipcard HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            let err = decode_all(&mut FrameCodec::new(), input).expect_err("malformed");
            assert!(
                matches!(err, Error::Frame(FrameError::MalformedHeader(_))),
                "{err}"
            );
        }
    }

    #[test]
    fn truncated_frame_at_eof_is_an_error() {
        let mut buf =
            BytesMut::from(&b"POST /chipcard HTTP/1.1\r\nContent-Length: 5\r\n\r\nab"[..]);
        let mut codec = FrameCodec::new();
        assert!(codec.decode(&mut buf).expect("incomplete").is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(Error::Frame(FrameError::Truncated))
        ));
        let mut empty = BytesMut::new();
        assert!(FrameCodec::new()
            .decode_eof(&mut empty)
            .expect("clean end")
            .is_none());
    }

    #[test]
    fn encoding_over_the_limit_fails() {
        let mut codec = FrameCodec::with_limits(MAX_HEADER, 4);
        let mut dst = BytesMut::new();
        assert!(codec.encode(&b"12345"[..], &mut dst).is_err());
    }
}
