//! Response APDUs and answers to reset.

use std::fmt;

use bytes::Bytes;

use crate::status::StatusWord;

/// A response APDU: the data the card returned and its status word.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Response {
    data: Bytes,
    sw: StatusWord,
}

impl Response {
    /// Splits a raw response APDU (data followed by SW1 SW2); `None` if it is shorter than
    /// two bytes.
    pub fn from_bytes(raw: Bytes) -> Option<Response> {
        let sw = StatusWord::from_response(&raw)?;
        let mut data = raw;
        data.truncate(data.len() - 2);
        Some(Response { data, sw })
    }

    /// A response from its parts.
    pub fn new(data: impl Into<Bytes>, sw: StatusWord) -> Response {
        Response {
            data: data.into(),
            sw,
        }
    }

    /// The response data, without the status word.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The response data as [`Bytes`], without the status word.
    pub fn into_data(self) -> Bytes {
        self.data
    }

    /// The status word.
    pub fn status(&self) -> StatusWord {
        self.sw
    }

    /// True when the status word is `9000`.
    pub fn is_success(&self) -> bool {
        self.sw.is_success()
    }

    /// The whole response APDU again: data followed by SW1 SW2.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(self.data.len() + 2);
        raw.extend_from_slice(&self.data);
        raw.extend_from_slice(&[self.sw.sw1(), self.sw.sw2()]);
        raw
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("data", &hex_upper(&self.data))
            .field("sw", &self.sw)
            .finish()
    }
}

/// A card's answer to reset.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Atr(Bytes);

impl Atr {
    /// The ATR from its bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Atr {
        Atr(bytes.into())
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes as [`Bytes`].
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl AsRef<[u8]> for Atr {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Upper-case hex without separators, e.g. `3B021450`.
impl fmt::Display for Atr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex_upper(&self.0))
    }
}

impl fmt::Debug for Atr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Atr({})", hex_upper(&self.0))
    }
}

/// Upper-case hex without separators.
pub fn hex_upper(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_splits_data_and_status() {
        let r = Response::from_bytes(Bytes::from_static(&[0x6F, 0x00, 0x90, 0x00]))
            .expect("long enough");
        assert_eq!(r.data(), &[0x6F, 0x00]);
        assert!(r.is_success());
        assert_eq!(r.to_bytes(), vec![0x6F, 0x00, 0x90, 0x00]);
        let r = Response::from_bytes(Bytes::from_static(&[0x6A, 0x82])).expect("sw only");
        assert!(r.data().is_empty());
        assert_eq!(r.status(), StatusWord(0x6A82));
        assert!(Response::from_bytes(Bytes::from_static(&[0x90])).is_none());
    }

    #[test]
    fn atr_prints_hex() {
        let atr = Atr::new(vec![0x3B, 0x02, 0x14, 0x50]);
        assert_eq!(atr.to_string(), "3B021450");
        assert_eq!(format!("{atr:?}"), "Atr(3B021450)");
    }
}
