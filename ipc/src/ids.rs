//! Object ids: clients, drivers, readers, cards, services and contexts.
//!
//! Every id is a 32-bit number assigned by the server and written as `0x%08x`
//! (PROTOCOL §3). Readers accept the value with or without `0x`, in either case.

use std::fmt;
use std::str::FromStr;

use crate::error::FieldError;

/// Parses `0x0000002a`, `0X2A` or `2a` (hex, with or without the prefix).
pub fn parse_object_id(s: &str) -> Option<u32> {
    // What the server writes, `0x` and eight hex digits, directly; anything else as below.
    if let Some(id) = canonical_id(s.as_bytes()) {
        return Some(id);
    }
    let s = s.trim();
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// `0x` and exactly eight hex digits (either case), as `0x%08x` writes them.
fn canonical_id(b: &[u8]) -> Option<u32> {
    let digits = b.strip_prefix(b"0x")?;
    if digits.len() != 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |id, &c| {
        let digit = crate::view::hex_value(c);
        (digit < 16).then_some((id << 4) | u32::from(digit))
    })
}

macro_rules! object_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u32);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "0x{:08x}", self.0)
            }
        }

        impl FromStr for $name {
            type Err = FieldError;
            fn from_str(s: &str) -> Result<Self, FieldError> {
                parse_object_id(s)
                    .map($name)
                    .ok_or_else(|| FieldError::invalid(stringify!($name), format!("not an id: '{s}'")))
            }
        }
    };
}

object_id!(
    /// A client connection, assigned by the server.
    ClientId
);
object_id!(
    /// A driver process, assigned by the server.
    DriverId
);
object_id!(
    /// A reader, assigned by the server (global), or by a driver (its own, in driver messages).
    ReaderId
);
object_id!(
    /// A card, assigned by the server when the card is inserted; never reused.
    CardId
);
object_id!(
    /// A service process, assigned by the server.
    ServiceId
);
object_id!(
    /// A service context, assigned by the service.
    ContextId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse() {
        assert_eq!(CardId(42).to_string(), "0x0000002a");
        assert_eq!("0x0000002a".parse::<CardId>().ok(), Some(CardId(42)));
        assert_eq!("0X2A".parse::<CardId>().ok(), Some(CardId(42)));
        assert_eq!(
            "12345678".parse::<ServiceId>().ok(),
            Some(ServiceId(0x1234_5678))
        );
        assert!("0x".parse::<CardId>().is_err());
        assert!("0x123456789".parse::<CardId>().is_err());
        assert!("zz".parse::<CardId>().is_err());
    }
}
