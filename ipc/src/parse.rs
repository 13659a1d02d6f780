//! The group-format parser (PROTOCOL §1).
//!
//! A document is read line by line. Lines end at LF; a CR right before the LF is dropped.
//! Each line is parsed by the grammar below, one small nom function per rule. The grammar
//! follows what libgwenhywfar's `GWEN_DB_ReadFromFastBuffer` (`dbrw.c`) accepts, with the
//! differences listed at the end.
//!
//! ```text
//! line          = blanks ( EOL | comment | group-close | group-open | variable )
//! comment       = "#" *any
//! group-close   = "}" *any
//! group-open    = group-name blanks "{" *any
//! variable      = [ type blanks1 ] var-name blanks ( "=" / ":" ) values
//! type          = "char" / "int" / "bin"                       ; any case
//! var-name      = 1*( ALPHA / DIGIT / "_" / "-" / "." )
//! group-name    = 1*( ALPHA / DIGIT / "_" / "-" / "." / "%" / "*" / "?" / "," / "&" HEX HEX )
//! values        = value *( blanks "," value ) blanks [ ( "#" / ";" ) *any ] EOL
//! value         = blanks ( quoted-value / unquoted-value )
//! quoted-value  = DQUOTE *( any but DQUOTE ) DQUOTE
//! unquoted-value= *( any but "," ";" "#" DQUOTE )             ; trimmed
//! blanks        = *( SP / HTAB / CR / VT / FF )
//! ```
//!
//! Values are decoded by the variable's type (`char` when no type is given):
//!
//! - **Escapes.** The only escape is `%XX` (two hex digits, either case) for the byte 0xXX,
//!   in quoted and unquoted values alike. There is no backslash escape: a backslash is an
//!   ordinary character, and a quoted value ends at the next `"` (a `"` inside a value is
//!   written `%22`). This is what libgwenhywfar does: `GWEN_DB__ReadValues` decodes `%XX` and
//!   nothing else, and its writer escapes `"` and `\` as `%22` and `%5C`. The bytes of a
//!   decoded char value must be UTF-8.
//! - **int**: a signed 32-bit decimal number, blanks around it allowed.
//! - **bin**: an even number of hex digits, either case.
//!
//! A variable line whose name (any case) already exists in the same group appends its values
//! to that variable. Groups with the same name are kept apart, in order.
//!
//! Differences from libgwenhywfar's reader, all of them stricter or clearer:
//!
//! - An unquoted value is trimmed at both ends (Gwen keeps trailing blanks).
//! - `%` must be followed by two hex digits, `&` in a group name too (Gwen reads garbage, or
//!   takes the `&` literally).
//! - An int must be a whole number in range (Gwen's `sscanf("%d")` reads `12abc` as 12 and
//!   wraps overflows).
//! - Names are restricted to the characters above: Gwen takes `/` in a name as a path and
//!   creates nested groups, and crashes on an empty group name.
//! - `:` is accepted instead of `=` with or without blanks around it (Gwen needs a blank
//!   before it).
//! - Groups with the same name are always kept apart (Gwen merges them unless the reader
//!   passes `GWEN_PATH_FLAGS_CREATE_GROUP`).
//! - `,` is accepted in group names, which Gwen's writer writes unescaped but its reader
//!   rejects.
//!
//! Errors carry the 1-based line and column (in characters) and what was expected, for
//! example `2:14: expected '=' or ':' after the variable name`.
//!
//! Speed: the lines writers produce (`char Name="value", "value"`, `NAME {`, `}`, blank and
//! comment lines, values without `%`) take a byte-level fast path that reads them in one pass,
//! and every other line (and every error) goes through the grammar. The fast path gives exactly
//! what the grammar gives; debug builds (tests, fuzzing) check that on every line.

use std::borrow::Cow;

use nom::branch::alt;
use nom::bytes::complete::{is_not, take_while, take_while1};
use nom::character::complete::{alpha1, char as chr, one_of};
use nom::combinator::{cut, map_opt, opt, rest, value};
use nom::sequence::{preceded, terminated};
use nom::IResult;

use crate::error::ParseError;
use crate::model::{Entry, Group, Value, ValueType, Variable};

/// Limits enforced while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of groups (default 32).
    pub max_depth: usize,
    /// Longest line in bytes, without its LF (default 256 KiB).
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
///
/// ```
/// let doc = chipcard_ipc::parse("TakeCard {\n  char CardId=\"0x12345678\"\n}\n")?;
/// assert_eq!(doc.get_group("TakeCard")?.get_char("CardId")?, "0x12345678");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse(text: &str) -> Result<Group, ParseError> {
    parse_with(text, &Limits::default())
}

/// Parses a document with the given limits.
///
/// The document limit is checked before anything is read, the line limit before a line is
/// looked at, and the depth limit when a group is opened.
pub fn parse_with(text: &str, limits: &Limits) -> Result<Group, ParseError> {
    if text.len() > limits.max_document {
        let (line, column) = position_of(text, limits.max_document);
        return Err(ParseError {
            line,
            column,
            message: format!(
                "document of {} bytes is over the limit of {} bytes",
                text.len(),
                limits.max_document
            ),
        });
    }
    Reader::new(limits).read(text)
}

/// Parses a document from bytes that must be UTF-8.
///
/// Invalid UTF-8 is reported at the line and column of its first byte.
pub fn parse_bytes(bytes: &[u8], limits: &Limits) -> Result<Group, ParseError> {
    if bytes.len() > limits.max_document {
        // Locate the limit, reading nothing beyond it.
        let head = &bytes[..limits.max_document];
        let head = match std::str::from_utf8(head) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
        };
        let (line, column) = position_of(head, head.len());
        return Err(ParseError {
            line,
            column,
            message: format!(
                "document of {} bytes is over the limit of {} bytes",
                bytes.len(),
                limits.max_document
            ),
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_with(text, limits),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            // The prefix is valid UTF-8 by construction.
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            let (line, column) = position_of(prefix, prefix.len());
            Err(ParseError {
                line,
                column,
                message: "invalid UTF-8".to_owned(),
            })
        }
    }
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn position_of(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

// ----- the line loop -----

/// Reads a document line by line.
///
/// The entries of the open group at each depth collect in a vector per depth, which the next
/// group at that depth reuses; closing a group moves its entries into a vector of their own,
/// of exactly their size. So a group costs one allocation for its entries, however many it
/// has, and no vector grows larger than the largest group.
struct Reader<'l> {
    limits: &'l Limits,
    /// `levels[d]`: the entries so far of the open group at depth `d` (0: the root).
    /// Always longer than `open`.
    levels: Vec<Vec<Entry>>,
    /// The open groups but the root, outermost first.
    open: Vec<OpenGroup>,
}

/// A group being read.
struct OpenGroup {
    name: String,
    /// Where it was opened: line and column.
    line: usize,
    column: usize,
}

impl<'l> Reader<'l> {
    fn new(limits: &'l Limits) -> Self {
        Reader {
            limits,
            levels: vec![Vec::with_capacity(4)],
            open: Vec::with_capacity(8),
        }
    }

    fn read(mut self, text: &str) -> Result<Group, ParseError> {
        let mut rest = text;
        let mut line_no = 0usize;
        while !rest.is_empty() {
            line_no += 1;
            // Look for the end of the line no further than the line limit.
            let mut window = rest.len().min(self.limits.max_line.saturating_add(1));
            while !rest.is_char_boundary(window) {
                window -= 1;
            }
            let fast = fast_line(&rest[..window], window == rest.len()).filter(|&(_, taken)| {
                // The window has room for the LF; a last line without one must fit as well.
                taken - usize::from(rest.as_bytes()[..taken].ends_with(b"\n"))
                    <= self.limits.max_line
            });
            if let Some((parsed, consumed)) = fast {
                let line = &rest[..line_len(rest.as_bytes(), consumed)];
                debug_assert!(
                    rest[..consumed].find('\n').map(|i| i + 1) == Some(consumed)
                        || (consumed == rest.len() && !rest.contains('\n')),
                    "the fast path ends the line {line:?} elsewhere"
                );
                debug_assert_eq!(
                    document_line(line).ok().map(|(_, l)| l).as_ref(),
                    Some(&parsed),
                    "the fast path and the grammar disagree on {line:?}"
                );
                self.apply(parsed, line, line_no)?;
                rest = &rest[consumed..];
                continue;
            }
            let (line, next) = match rest[..window].find('\n') {
                Some(i) => (&rest[..line_len(rest.as_bytes(), i + 1)], &rest[i + 1..]),
                None if rest.len() > self.limits.max_line => {
                    let (_, column) = position_of(rest, self.limits.max_line);
                    return Err(ParseError {
                        line: line_no,
                        column,
                        message: format!("line over the limit of {} bytes", self.limits.max_line),
                    });
                }
                None => (rest, ""),
            };
            self.line(line, line_no)?;
            rest = next;
        }
        if let Some(group) = self.open.last() {
            let (eof_line, eof_column) = position_of(text, text.len());
            return Err(ParseError {
                line: eof_line,
                column: eof_column,
                message: format!(
                    "expected '}}' to close group '{}' (opened at {}:{}) \
                     before the end of the document",
                    group.name, group.line, group.column
                ),
            });
        }
        Ok(Group {
            name: String::new(),
            entries: self.levels.swap_remove(0),
        })
    }

    /// Reads one line with the grammar.
    fn line(&mut self, line: &str, line_no: usize) -> Result<(), ParseError> {
        let parsed = match document_line(line) {
            Ok((_, parsed)) => parsed,
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                return Err(error_at(line, line_no, e))
            }
            Err(nom::Err::Incomplete(_)) => {
                return Err(error_at(line, line_no, Fail::new(line, "a complete line")))
            }
        };
        self.apply(parsed, line, line_no)
    }

    /// Applies one parsed line to the document.
    fn apply(&mut self, parsed: Line<'_>, line: &str, line_no: usize) -> Result<(), ParseError> {
        let at_error = |e: Fail<'_>| error_at(line, line_no, e);
        match parsed {
            Line::Ignored => {}
            Line::Open { name, at } => {
                if self.open.len() >= self.limits.max_depth {
                    return Err(at_error(Fail {
                        at,
                        expected: format!(
                            "groups nested deeper than the limit of {}",
                            self.limits.max_depth
                        )
                        .into(),
                    }));
                }
                let column = at_error(Fail::new(at, "")).column;
                self.open.push(OpenGroup {
                    name,
                    line: line_no,
                    column,
                });
                if self.levels.len() <= self.open.len() {
                    // Room for most groups (and under glibc's 1 KiB "large" threshold).
                    self.levels.push(Vec::with_capacity(16));
                }
            }
            Line::Close { at } => {
                let Some(group) = self.open.pop() else {
                    return Err(at_error(Fail::new(
                        at,
                        "'}' without an open group (expected a variable, a group or a comment)",
                    )));
                };
                let depth = self.open.len();
                let entries: Vec<Entry> = self.levels[depth + 1].drain(..).collect();
                self.levels[depth].push(Entry::Group(Group {
                    name: group.name,
                    entries,
                }));
            }
            Line::Var { name, values } => {
                let group = &mut self.levels[self.open.len()];
                let existing = group.iter_mut().find_map(|e| match e {
                    Entry::Var(v) if v.name.eq_ignore_ascii_case(name) => Some(v),
                    _ => None,
                });
                match existing {
                    Some(var) => var.values.extend(values),
                    None => group.push(Entry::Var(Variable {
                        name: name.to_owned(),
                        values,
                    })),
                }
            }
        }
        Ok(())
    }
}

/// The length of the line that takes the first `taken` bytes of `b`: without its LF, and
/// without a CR right before the LF.
fn line_len(b: &[u8], taken: usize) -> usize {
    match b[..taken] {
        [.., b'\r', b'\n'] => taken - 2,
        [.., b'\n'] => taken - 1,
        _ => taken,
    }
}

/// The error `e`, positioned in `line` (`e.at` points into it).
fn error_at(line: &str, line_no: usize, e: Fail<'_>) -> ParseError {
    let offset = (e.at.as_ptr() as usize).saturating_sub(line.as_ptr() as usize);
    let offset = offset.min(line.len());
    ParseError {
        line: line_no,
        column: line.get(..offset).map_or(offset, |s| s.chars().count()) + 1,
        message: e.expected.into_owned(),
    }
}

// ----- the fast path -----

/// The common, well-formed line shapes, read byte by byte: blank and comment lines, `}`,
/// `NAME {`, and variable lines (`char`, `int` or `bin` in lower case, or no type) whose
/// values are all quoted and free of `%`, separated and surrounded by spaces and tabs only.
/// Anything else (including every error) gives `None`, and the grammar decides.
///
/// `text` starts with the line and holds no more than the line limit allows; `whole` says
/// whether it is all the rest of the document. On success: the line, and how many bytes of
/// `text` it takes with its line end. A line that does not end within `text` is left to the
/// slow path (which reports it if it is over the limit).
///
/// When it gives `Some`, the line is exactly what [`document_line`] gives for the line's text;
/// debug builds (tests, fuzzing) check that on every line.
fn fast_line(text: &str, whole: bool) -> Option<(Line<'_>, usize)> {
    let b = text.as_bytes();
    let skip_spaces = |k: usize| {
        b.get(k..).map_or(k, |tail| {
            k + tail
                .iter()
                .position(|&c| c != b' ' && c != b'\t')
                .unwrap_or(tail.len())
        })
    };
    let name_end = |k: usize| {
        b.get(k..).map_or(k, |tail| {
            k + tail
                .iter()
                .position(|&c| !NAME_BYTE[usize::from(c)])
                .unwrap_or(tail.len())
        })
    };
    // The bytes taken by the line when it ends at `k`, if it does (LF, CR LF, or the end).
    let end_at = |k: usize| match b.get(k) {
        None if whole => Some(k),
        Some(b'\n') => Some(k + 1),
        Some(b'\r') if b.get(k + 1) == Some(&b'\n') => Some(k + 2),
        _ => None,
    };
    // The bytes taken by the line when the rest of it from `k` on is ignored.
    let end_after = |k: usize| match text[k..].find('\n') {
        Some(i) => Some(k + i + 1),
        None if whole => Some(b.len()),
        None => None,
    };
    let start = skip_spaces(0);
    if let Some(end) = end_at(start) {
        return Some((Line::Ignored, end));
    }
    match b.get(start) {
        Some(b'#') => return Some((Line::Ignored, end_after(start)?)),
        Some(b'}') => {
            let end = end_after(start)?;
            let at = &text[start..line_len(b, end)];
            return Some((Line::Close { at }, end));
        }
        _ => {}
    }
    let word_end = name_end(start);
    if word_end == start {
        return None;
    }
    let word = &text[start..word_end];
    let mut k = skip_spaces(word_end);
    let (ty, name) = match b.get(k) {
        Some(b'{') => {
            let end = end_after(k)?;
            let open = Line::Open {
                name: word.to_owned(),
                at: &text[start..line_len(b, end)],
            };
            return Some((open, end));
        }
        Some(b'=') => (ValueType::Char, word),
        _ => {
            let ty = match word {
                "char" => ValueType::Char,
                "int" => ValueType::Int,
                "bin" => ValueType::Bin,
                _ => return None,
            };
            let name_start = k;
            let end = name_end(name_start);
            if name_start == word_end || end == name_start {
                return None;
            }
            k = skip_spaces(end);
            if b.get(k) != Some(&b'=') {
                return None;
            }
            (ty, &text[name_start..end])
        }
    };
    let mut values = Vec::new();
    k += 1;
    loop {
        k = skip_spaces(k);
        if b.get(k) != Some(&b'"') {
            return None;
        }
        let len = quoted_len(&text[k + 1..])?;
        let raw = &text[k + 1..k + 1 + len];
        let value = match ty {
            ValueType::Char => Value::Char(raw.to_owned()),
            ValueType::Int => Value::Int(int_value(raw)?),
            ValueType::Bin => Value::Bin(bin_value(raw)?),
        };
        k = skip_spaces(k + len + 2);
        let end = match b.get(k) {
            Some(b',') => None,
            Some(b'#' | b';') => Some(end_after(k)?),
            _ => Some(end_at(k)?),
        };
        // One allocation for the values: exact for one value, room for four otherwise.
        if values.capacity() == 0 {
            values.reserve_exact(if end.is_some() { 1 } else { 4 });
        }
        values.push(value);
        if let Some(end) = end {
            return Some((Line::Var { name, values }, end));
        }
        k += 1;
    }
}

/// The length of a quoted value's text up to its closing quote, when it has no `%` and ends
/// on its line.
fn quoted_len(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    // Short values byte by byte; long ones (APDUs) with the standard library's memchr.
    for (k, &c) in b.iter().enumerate().take(32) {
        match c {
            b'"' => return Some(k),
            b'%' | b'\n' => return None,
            _ => {}
        }
    }
    let k = text.get(32..)?.find('"')? + 32;
    let raw = &b[32..k];
    (!raw.contains(&b'%') && !raw.contains(&b'\n')).then_some(k)
}

/// Bytes of variable names: `A-Z a-z 0-9 _ - .`.
const NAME_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut k = 0;
    while k < 256 {
        let c = k as u8;
        t[k] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.';
        k += 1;
    }
    t
};

// ----- the grammar -----

/// A parse failure inside one line: where, and what was expected there.
#[derive(Debug)]
struct Fail<'a> {
    /// The input at the point of failure (a suffix or a slice of the line).
    at: &'a str,
    /// What was expected, or what is wrong.
    expected: Cow<'static, str>,
}

impl<'a> Fail<'a> {
    fn new(at: &'a str, expected: &'static str) -> Self {
        Fail {
            at,
            expected: Cow::Borrowed(expected),
        }
    }
}

impl<'a> nom::error::ParseError<&'a str> for Fail<'a> {
    fn from_error_kind(input: &'a str, _kind: nom::error::ErrorKind) -> Self {
        Fail::new(input, "valid group-format syntax")
    }

    fn append(_input: &'a str, _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a str, T, Fail<'a>>;

/// Runs `parser`; if it fails (recoverably), fails instead at its start with `expected`.
fn expect<'a, O>(
    expected: &'static str,
    mut parser: impl FnMut(&'a str) -> PResult<'a, O>,
) -> impl FnMut(&'a str) -> PResult<'a, O> {
    move |input| match parser(input) {
        Err(nom::Err::Error(_)) => Err(nom::Err::Error(Fail::new(input, expected))),
        other => other,
    }
}

/// A failure that ends the line's parse (no other rule can apply).
fn fail<'a, T>(at: &'a str, expected: impl Into<Cow<'static, str>>) -> PResult<'a, T> {
    Err(nom::Err::Failure(Fail {
        at,
        expected: expected.into(),
    }))
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
enum Line<'a> {
    /// Empty or a comment.
    Ignored,
    /// `NAME {`: the decoded name, and where it starts.
    Open { name: String, at: &'a str },
    /// `}`, and where it is.
    Close { at: &'a str },
    /// A variable line, values decoded.
    Var { name: &'a str, values: Vec<Value> },
}

/// `blank = SP / HTAB / CR / VT / FF` (C's `isspace` without LF, as libgwenhywfar).
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\x0b' | '\x0c')
}

/// `blanks = *blank`
fn blanks(i: &str) -> PResult<'_, &str> {
    take_while(is_blank)(i)
}

/// `blanks1 = 1*blank`
fn blanks1(i: &str) -> PResult<'_, &str> {
    take_while1(is_blank)(i)
}

/// `line = blanks ( EOL | comment | group-close | group-open | variable )`
fn document_line(i: &str) -> PResult<'_, Line<'_>> {
    let (i, _) = blanks(i)?;
    if i.is_empty() {
        return Ok((i, Line::Ignored));
    }
    alt((comment, group_close, entry_line))(i)
}

/// `comment = "#" *any`
fn comment(i: &str) -> PResult<'_, Line<'_>> {
    value(Line::Ignored, preceded(chr('#'), rest))(i)
}

/// `group-close = "}" *any` (anything after the brace, such as `#name`, is ignored)
fn group_close(i: &str) -> PResult<'_, Line<'_>> {
    let (r, _) = terminated(chr('}'), rest)(i)?;
    Ok((r, Line::Close { at: i }))
}

/// `entry-line = group-open / variable`, told apart by what follows the first word:
/// `{` opens a group, `=` or `:` starts an untyped variable, anything else must be a type
/// word followed by the variable's name.
fn entry_line(i: &str) -> PResult<'_, Line<'_>> {
    let (after_word, word) = expect(
        "expected a variable, a group, '}' or a comment",
        take_while1(is_group_name_char),
    )(i)?;
    let (next, _) = blanks(after_word)?;
    match next.chars().next() {
        Some('{') => group_open(i),
        Some('=' | ':') => {
            let (r, name) = var_name(i)?;
            variable_rest(r, name, ValueType::Char)
        }
        _ => variable(i, word, after_word),
    }
}

/// `group-open = group-name blanks "{" *any` (anything after the brace is ignored)
fn group_open(i: &str) -> PResult<'_, Line<'_>> {
    let (r, raw) = group_name(i)?;
    let (r, _) = cut(expect(
        "expected '{' after the group name",
        preceded(blanks, chr('{')),
    ))(r)?;
    let (r, _) = rest(r)?;
    let name = decode_group_name(raw)?;
    Ok((r, Line::Open { name, at: i }))
}

/// `group-name = 1*( ALPHA / DIGIT / "_" / "-" / "." / "%" / "*" / "?" / "," / "&" HEX HEX )`
///
/// libgwenhywfar writes `%`, `*`, `?` and `,` in group names as they are and every other
/// byte as `&XX`.
fn group_name(i: &str) -> PResult<'_, &str> {
    expect("expected a group name", take_while1(is_group_name_char))(i)
}

fn is_group_name_char(c: char) -> bool {
    is_name_char(c) || matches!(c, '&' | '%' | '*' | '?' | ',')
}

/// Decodes `&XX` in a group name; the result must be UTF-8.
fn decode_group_name(raw: &str) -> Result<String, nom::Err<Fail<'_>>> {
    if !raw.contains('&') {
        return Ok(raw.to_owned());
    }
    let bytes = decode_hex_escapes(raw, b'&').map_err(|at| {
        nom::Err::Failure(Fail::new(
            at,
            "expected two hex digits after '&' in the group name",
        ))
    })?;
    String::from_utf8(bytes).map_err(|_| {
        nom::Err::Failure(Fail::new(
            raw,
            "group name is not UTF-8 after decoding '&XX'",
        ))
    })
}

/// `variable = type blanks1 var-name blanks ( "=" / ":" ) values`, the typed form; `word` is
/// the line's first word, `after_word` what follows it.
fn variable<'a>(i: &'a str, word: &'a str, after_word: &'a str) -> PResult<'a, Line<'a>> {
    let ty = match value_type(word) {
        Ok(("", ty)) => ty,
        _ => {
            // Not a type word: then the word is a name missing its '=' or '{'.
            let (r, _) = var_name(i)?;
            return fail(
                r,
                "expected '=' or ':' after the variable name, or '{' after the group name",
            );
        }
    };
    let (r, _) = cut(expect("expected a blank after the type", blanks1))(after_word)?;
    let (r, name) = var_name(r)?;
    variable_rest(r, name, ty)
}

/// `type = "char" / "int" / "bin"` (any case)
fn value_type(i: &str) -> PResult<'_, ValueType> {
    map_opt(alpha1, |word: &str| {
        [ValueType::Char, ValueType::Int, ValueType::Bin]
            .into_iter()
            .find(|ty| word.eq_ignore_ascii_case(ty.keyword()))
    })(i)
}

/// `var-name = 1*( ALPHA / DIGIT / "_" / "-" / "." )`
fn var_name(i: &str) -> PResult<'_, &str> {
    let (r, name) = cut(expect(
        "expected a variable name",
        take_while1(is_name_char),
    ))(i)?;
    match r.chars().next() {
        Some(c) if is_group_name_char(c) => fail(
            r,
            "expected '=' or ':' after the variable name (a variable name has only letters, \
             digits, '_', '-' and '.')",
        ),
        _ => Ok((r, name)),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// `blanks ( "=" / ":" ) values`, after the variable's name.
fn variable_rest<'a>(i: &'a str, name: &'a str, ty: ValueType) -> PResult<'a, Line<'a>> {
    let (r, _) = blanks(i)?;
    let (r, _) = cut(expect(
        "expected '=' or ':' after the variable name",
        assign,
    ))(r)?;
    let (r, values) = values(r, ty)?;
    Ok((r, Line::Var { name, values }))
}

/// `assign = "=" / ":"` (`:` is what old writers used)
fn assign(i: &str) -> PResult<'_, char> {
    one_of("=:")(i)
}

/// `values = value *( blanks "," value ) trailer`
fn values(i: &str, ty: ValueType) -> PResult<'_, Vec<Value>> {
    let mut out = Vec::with_capacity(1);
    let (mut r, first) = typed_value(i, ty)?;
    out.push(first);
    loop {
        let (after_blanks, _) = blanks(r)?;
        match after_blanks.as_bytes().first() {
            Some(b',') => {
                let (next, v) = typed_value(&after_blanks[1..], ty)?;
                out.push(v);
                r = next;
            }
            _ => {
                let (r, _) = trailer(after_blanks)?;
                return Ok((r, out));
            }
        }
    }
}

/// `trailer = [ ( "#" / ";" ) *any ] EOL`: a comment or anything after `;` may follow the
/// last value.
fn trailer(i: &str) -> PResult<'_, ()> {
    if i.is_empty() {
        return Ok((i, ()));
    }
    let (r, _) = cut(expect(
        "expected ',', '#', ';' or the end of the line after a value",
        preceded(one_of("#;"), rest),
    ))(i)?;
    Ok((r, ()))
}

/// `value = blanks ( quoted-value / unquoted-value )`, decoded as `ty`.
fn typed_value(i: &str, ty: ValueType) -> PResult<'_, Value> {
    let (i, _) = blanks(i)?;
    if i.is_empty() {
        return fail(i, "expected a value");
    }
    let (r, raw) = alt((quoted_value, unquoted_value))(i)?;
    let value = decode_value(raw, ty)?;
    Ok((r, value))
}

/// `quoted-value = DQUOTE *( any but DQUOTE ) DQUOTE` (no backslash escapes; see the module
/// documentation)
fn quoted_value(i: &str) -> PResult<'_, &str> {
    let (r, _) = chr('"')(i)?;
    match r.find('"') {
        Some(end) => Ok((&r[end + 1..], &r[..end])),
        None => fail(i, "expected a closing '\"' for this value"),
    }
}

/// `unquoted-value = *( any but "," ";" "#" DQUOTE )`, trimmed
fn unquoted_value(i: &str) -> PResult<'_, &str> {
    let (r, raw) = opt(is_not(",;#\""))(i)?;
    if r.starts_with('"') {
        return fail(
            r,
            "unexpected '\"' in an unquoted value (quote the whole value)",
        );
    }
    let raw = raw.unwrap_or("");
    Ok((r, raw.trim_end_matches(is_blank)))
}

/// Decodes a value's text (`%XX` escapes, then by type). Errors point into `raw`.
fn decode_value(raw: &str, ty: ValueType) -> Result<Value, nom::Err<Fail<'_>>> {
    let text: Cow<'_, str> = if raw.contains('%') {
        let bytes = decode_hex_escapes(raw, b'%')
            .map_err(|at| nom::Err::Failure(Fail::new(at, "expected two hex digits after '%'")))?;
        match String::from_utf8(bytes) {
            Ok(s) => Cow::Owned(s),
            Err(_) => {
                return Err(nom::Err::Failure(Fail::new(
                    raw,
                    "value is not UTF-8 after decoding '%XX'",
                )))
            }
        }
    } else {
        Cow::Borrowed(raw)
    };
    match ty {
        ValueType::Char => Ok(Value::Char(text.into_owned())),
        ValueType::Int => int_value(&text).map(Value::Int).ok_or_else(|| {
            nom::Err::Failure(Fail::new(raw, "expected a signed 32-bit decimal integer"))
        }),
        ValueType::Bin => bin_value(&text).map(Value::Bin).ok_or_else(|| {
            nom::Err::Failure(Fail::new(raw, "expected an even number of hex digits"))
        }),
    }
}

/// `int = blanks [ "+" / "-" ] 1*DIGIT blanks`, in the range of i32.
fn int_value(text: &str) -> Option<i32> {
    let t = text.trim_matches(is_blank);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// `bin = *( HEX HEX )`
fn bin_value(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks_exact(2) {
        out.push((hex_digit(pair[0])? << 4) | hex_digit(pair[1])?);
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match HEX_VALUE[usize::from(b)] {
        0xff => None,
        v => Some(v),
    }
}

/// The value of each hex digit byte; 0xff for other bytes.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut k = 0;
    while k < 10 {
        t[b'0' as usize + k] = k as u8;
        k += 1;
    }
    let mut k = 0;
    while k < 6 {
        t[b'a' as usize + k] = 10 + k as u8;
        t[b'A' as usize + k] = 10 + k as u8;
        k += 1;
    }
    t
};

/// Decodes `<mark>XX` escapes into bytes; on a bad escape, the input from the mark on.
fn decode_hex_escapes(raw: &str, mark: u8) -> Result<Vec<u8>, &str> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        if b[k] == mark {
            let hi = b.get(k + 1).copied().and_then(hex_digit);
            let lo = b.get(k + 2).copied().and_then(hex_digit);
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    out.push((hi << 4) | lo);
                    k += 3;
                }
                // `k` is at an ASCII mark, so a char boundary.
                _ => return Err(raw.get(k..).unwrap_or(raw)),
            }
        } else {
            out.push(b[k]);
            k += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(v: &[&str]) -> Vec<Value> {
        v.iter().map(|s| Value::Char((*s).to_owned())).collect()
    }

    /// Known answers for single variable lines: line → (name, values).
    #[test]
    fn variable_lines() {
        let table: &[(&str, &str, Vec<Value>)] = &[
            ("char a=\"x\"", "a", chars(&["x"])),
            ("a=\"x\"", "a", chars(&["x"])),
            (
                "  char CardId     =\"0x12345678\"",
                "CardId",
                chars(&["0x12345678"]),
            ),
            ("code=\"OK\"     # or \"ERROR\"", "code", chars(&["OK"])),
            (
                "char f=\"DISPLAY\", \"KEYPAD\"",
                "f",
                chars(&["DISPLAY", "KEYPAD"]),
            ),
            ("char f = \"a\" ,\"b\",  c  ", "f", chars(&["a", "b", "c"])),
            ("x = plain text  # c", "x", chars(&["plain text"])),
            ("x=a;rest is ignored", "x", chars(&["a"])),
            ("x=,a", "x", chars(&["", "a"])),
            ("x=\"\"", "x", chars(&[""])),
            ("x=\"a%22b%5C%25\"", "x", chars(&["a\"b\\%"])),
            ("x=\"a\\\"", "x", chars(&["a\\"])),
            ("x=%c3%A4", "x", chars(&["ä"])),
            ("x=\"#;,{}\"", "x", chars(&["#;,{}"])),
            ("x : \"old\"", "x", chars(&["old"])),
            ("x:\"old\"", "x", chars(&["old"])),
            ("CHAR x=\"1\"", "x", chars(&["1"])),
            ("int n=\"5\"", "n", vec![Value::Int(5)]),
            (
                "int n=-2147483648, \" 2147483647 \", +3",
                "n",
                vec![Value::Int(i32::MIN), Value::Int(i32::MAX), Value::Int(3)],
            ),
            ("int n=\"%31\"", "n", vec![Value::Int(1)]),
            (
                "bin b=\"00ff10\"",
                "b",
                vec![Value::Bin(vec![0, 0xff, 0x10])],
            ),
            (
                "bin b=ABcd, \"\"",
                "b",
                vec![Value::Bin(vec![0xab, 0xcd]), Value::Bin(vec![])],
            ),
            ("char=\"x\"", "char", chars(&["x"])),
            ("int char=\"7\"", "char", vec![Value::Int(7)]),
            ("a.b-c_D9=1", "a.b-c_D9", chars(&["1"])),
        ];
        for (line, name, values) in table {
            let got = document_line(line).map(|(_, l)| l);
            let want = Line::Var {
                name,
                values: values.clone(),
            };
            assert_eq!(got.ok(), Some(want), "line {line:?}");
        }
    }

    /// Known answers for group lines.
    #[test]
    fn group_lines() {
        let table: &[(&str, &str)] = &[
            ("Readers {", "Readers"),
            ("  Reader{", "Reader"),
            ("data {             # additional data", "data"),
            ("a&20b&25 {", "a b%"),
            ("&C3&A4 {", "ä"),
            ("a%*?,.-_ {", "a%*?,.-_"),
            ("char {", "char"),
        ];
        for (line, name) in table {
            match document_line(line) {
                Ok((_, Line::Open { name: got, .. })) => assert_eq!(&got, name, "line {line:?}"),
                other => panic!("line {line:?}: {other:?}"),
            }
        }
        for line in ["}", "  } # Readers", "}junk"] {
            assert!(
                matches!(document_line(line), Ok((_, Line::Close { .. }))),
                "{line:?}"
            );
        }
        for line in ["", "   ", "# c", "  #", "\t\r"] {
            assert!(
                matches!(document_line(line), Ok((_, Line::Ignored))),
                "{line:?}"
            );
        }
    }

    /// Known answers for errors: document → "line:column: message".
    #[test]
    fn errors() {
        let table: &[(&str, &str)] = &[
            ("a {\n  char x \"1\"\n}\n", "2:10: expected '=' or ':' after the variable name"),
            ("x=\n", "1:3: expected a value"),
            ("x=\"a\",\n", "1:7: expected a value"),
            ("x=\"abc\n", "1:3: expected a closing '\"' for this value"),
            ("x=\"a\"b\n", "1:6: expected ',', '#', ';' or the end of the line after a value"),
            ("x=a\"b\"\n", "1:4: unexpected '\"' in an unquoted value (quote the whole value)"),
            ("x=\"%4\"\n", "1:4: expected two hex digits after '%'"),
            ("x=\"%ff\"\n", "1:4: value is not UTF-8 after decoding '%XX'"),
            ("int n=12abc\n", "1:7: expected a signed 32-bit decimal integer"),
            ("int n=2147483648\n", "1:7: expected a signed 32-bit decimal integer"),
            ("bin b=\"abc\"\n", "1:8: expected an even number of hex digits"),
            ("bin b=\"0g\"\n", "1:8: expected an even number of hex digits"),
            ("foo x=\"1\"\n", "1:4: expected '=' or ':' after the variable name, or '{' after the group name"),
            ("char\n", "1:5: expected a blank after the type"),
            ("a&zz {\n}\n", "1:2: expected two hex digits after '&' in the group name"),
            ("&ff {\n}\n", "1:1: group name is not UTF-8 after decoding '&XX'"),
            ("a/b=\"1\"\n", "1:2: expected '=' or ':' after the variable name, or '{' after the group name"),
            ("a%=\"1\"\n", "1:2: expected '=' or ':' after the variable name (a variable name has only letters, digits, '_', '-' and '.')"),
            ("=\"1\"\n", "1:1: expected a variable, a group, '}' or a comment"),
            ("{\n}\n", "1:1: expected a variable, a group, '}' or a comment"),
            ("char %=\"1\"\n", "1:6: expected a variable name"),
            ("x=1\n}\n", "2:1: '}' without an open group (expected a variable, a group or a comment)"),
            ("a {\n  b {\n  }\n", "4:1: expected '}' to close group 'a' (opened at 1:1) before the end of the document"),
            ("a {\n  b {", "2:6: expected '}' to close group 'b' (opened at 2:3) before the end of the document"),
            ("é=1\n", "1:1: expected a variable, a group, '}' or a comment"),
            ("x=\"é\" é\n", "1:7: expected ',', '#', ';' or the end of the line after a value"),
        ];
        let mut wrong = Vec::new();
        for (doc, want) in table {
            let got = parse(doc).map(|_| ()).map_err(|e| e.to_string());
            if got != Err((*want).to_owned()) {
                wrong.push(format!("{doc:?}: got {got:?}, want {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn documents() {
        let doc = parse(
            "# comment\r\n\
             ipc {\r\n  char id=\"7\"\r\n  cmd=\"TakeCard\"\r\n} #ipc\r\n\
             \r\n\
             data {\n  r {\n    n=1\n  }\n  R {\n    n=2\n  }\n  x=a\n  X=b\n}\n",
        )
        .expect("parses");
        let ipc = doc.get_group("ipc").expect("ipc");
        assert_eq!(ipc.get_char("id").ok(), Some("7"));
        assert_eq!(ipc.get_char("cmd").ok(), Some("TakeCard"));
        let data = doc.get_group("data").expect("data");
        let ns: Vec<&str> = data
            .groups("r")
            .filter_map(|g| g.get_char("n").ok())
            .collect();
        assert_eq!(ns, vec!["1", "2"]);
        assert_eq!(data.get_chars("x").ok(), Some(vec!["a", "b"]));
        assert_eq!(data.var("X").map(|v| v.name.as_str()), Some("x"));
        assert_eq!(data.entries.len(), 3);
        assert_eq!(parse("").ok(), Some(Group::root()));
        assert_eq!(parse("\n\n# only comments\n").ok(), Some(Group::root()));
        assert_eq!(
            parse("StopWait {\n}\n").ok(),
            Some(Group::root().with_group(Group::new("StopWait")))
        );
        // a CR not before LF stays (and is a blank)
        assert_eq!(
            parse("x=a\r\r\n").ok(),
            Some(Group::root().with_char("x", "a"))
        );
    }

    #[test]
    fn limits() {
        let limits = Limits {
            max_depth: 2,
            max_line: 8,
            max_document: 40,
        };
        assert!(parse_with("a {\nb {\n}\n}\n", &limits).is_ok());
        let e = parse_with("a {\nb {\nc {\n}\n}\n}\n", &limits).expect_err("too deep");
        assert_eq!(
            e.to_string(),
            "3:1: groups nested deeper than the limit of 2"
        );
        assert!(parse_with("x=123456\n", &limits).is_ok());
        // the same on the fast path (quoted values), with LF, CR LF and at the end
        assert!(parse_with("x=\"1234\"\nx=\"123\"\r\nx=\"1234\"", &limits).is_ok());
        let e = parse_with("x=\"1234\"\nx=\"12345\"\n", &limits).expect_err("too long");
        assert_eq!(e.to_string(), "2:9: line over the limit of 8 bytes");
        let e = parse_with("x=\"1234\"\r\n", &limits).expect_err("too long with CR");
        assert_eq!(e.to_string(), "1:9: line over the limit of 8 bytes");
        let e = parse_with("x=\"12345\"", &limits).expect_err("too long at the end");
        assert_eq!(e.to_string(), "1:9: line over the limit of 8 bytes");
        let e = parse_with("}        \n", &limits).expect_err("too long");
        assert_eq!(e.to_string(), "1:9: line over the limit of 8 bytes");
        let e = parse_with("x=1\nx=1234567\n", &limits).expect_err("too long");
        assert_eq!(e.to_string(), "2:9: line over the limit of 8 bytes");
        let e = parse_with(&"x=1\n".repeat(11), &limits).expect_err("too big");
        assert_eq!(
            e.to_string(),
            "11:1: document of 44 bytes is over the limit of 40 bytes"
        );
        let e = parse_bytes(&[b'x'; 41], &limits).expect_err("too big");
        assert_eq!(e.line, 1);
        // a multi-byte character across the line limit
        let e = parse_with("x=\"ääää\"\n", &limits).expect_err("too long");
        assert_eq!(e.to_string(), "1:6: line over the limit of 8 bytes");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 4096, ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever the fast path accepts, the grammar reads the same way.
        #[test]
        fn fast_path_agrees_with_grammar(
            tokens in proptest::collection::vec(
                proptest::sample::select(vec![
                    "char", "int", "bin", "Char", " ", "  ", "\t", "\r", "=", ":", "\"", "\"a\"",
                    "\"1\"", "\"0a\"", "\"é\"", ",", ", ", ";", "#", "{", "}", "%", "&", "a",
                    "B9", "-", ".", "_", "12", "-3", "0a", "x y", "/",
                ]),
                0..14,
            )
        ) {
            let line = tokens.concat();
            if let Some((fast, taken)) = fast_line(&line, true) {
                proptest::prop_assert_eq!(taken, line.len());
                let slow = document_line(&line).ok().map(|(_, l)| l);
                proptest::prop_assert_eq!(slow, Some(fast), "line {:?}", line);
            }
        }
    }

    #[test]
    fn fast_path_takes_the_common_lines() {
        for line in [
            "",
            "  # c",
            "} #ipc",
            "ipc {",
            "  char cmd=\"TakeCard\"",
            "int  Slot=\"0\"",
            "bin  ATR=\"3B00\"",
            "char f=\"a\", \"b\" # c",
            "code=\"OK\"     # or \"ERROR\"",
        ] {
            assert!(fast_line(line, true).is_some(), "{line:?}");
        }
        for line in [
            "x=a",
            "x=\"%41\"",
            "CHAR x=\"1\"",
            "x : \"1\"",
            "a&20 {",
            "x=\"1\"\x0c",
        ] {
            assert!(fast_line(line, true).is_none(), "{line:?}");
        }
    }

    #[test]
    fn invalid_utf8_is_located() {
        let e = parse_bytes(b"a {\n  x=\"\xc3\xa4\xff\"\n}\n", &Limits::default())
            .expect_err("not UTF-8");
        assert_eq!(e.to_string(), "2:7: invalid UTF-8");
        assert!(parse_bytes("x=\"ä\"\n".as_bytes(), &Limits::default()).is_ok());
    }
}
