//! The group-format parser (PROTOCOL §1). PLACEHOLDER: being written.

use crate::error::ParseError;
use crate::model::Group;

/// Limits enforced while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of groups (default 32).
    pub max_depth: usize,
    /// Longest line in bytes (default 256 KiB).
    pub max_line: usize,
    /// Largest document in bytes (default 256 KiB, the frame body limit).
    pub max_document: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_line: 256 * 1024,
            max_document: 256 * 1024,
        }
    }
}

/// Parses a document with the default limits.
pub fn parse(text: &str) -> Result<Group, ParseError> {
    parse_with(text, &Limits::default())
}

/// Parses a document.
pub fn parse_with(text: &str, limits: &Limits) -> Result<Group, ParseError> {
    let _ = (text, limits);
    todo!("parser")
}

/// Parses a document from bytes that must be UTF-8.
pub fn parse_bytes(bytes: &[u8], limits: &Limits) -> Result<Group, ParseError> {
    let _ = (bytes, limits);
    todo!("parser")
}
