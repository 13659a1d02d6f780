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
//! [`parse_view`] reads the same grammar, with the same limits and errors, into a
//! [`DocumentView`] that borrows names and values from the text instead of the document
//! model; typed messages are read from it (see [`crate::view`]). The reader is one, generic
//! over what it builds.
//!
//! Speed: the lines writers produce (`char Name="value", "value"`, `NAME {`, `}`, blank and
//! comment lines, values without `%`) take a byte-level fast path that reads them in one pass,
//! scanning names and quoted values eight bytes at a time, and every other line (and every
//! error) goes through the grammar. The fast path gives exactly what the grammar gives; debug
//! builds (tests, fuzzing) check that on every line.

use std::borrow::Cow;

use nom::branch::alt;
use nom::bytes::complete::{is_not, take_while, take_while1};
use nom::character::complete::{alpha1, char as chr, one_of};
use nom::combinator::{cut, map_opt, opt, rest, value};
use nom::sequence::{preceded, terminated};
use nom::IResult;
use smallvec::SmallVec;

use crate::error::ParseError;
use crate::model::{Entry, Group, ValueType, Variable};
use crate::view::{hex_value, is_hex, DocumentView, Raw, ViewBuilder, ViewMark};

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
    check_size(text, limits)?;
    Reader::new(limits, GroupBuilder::new()).read(text)
}

/// Parses a document from bytes that must be UTF-8.
///
/// Invalid UTF-8 is reported at the line and column of its first byte.
pub fn parse_bytes(bytes: &[u8], limits: &Limits) -> Result<Group, ParseError> {
    parse_with(utf8_text(bytes, limits)?, limits)
}

/// Parses a document into a [`DocumentView`] that borrows from `text`: the same grammar,
/// limits and errors as [`parse_with`], without copying names and values.
///
/// A view indexes its text with 32 bits: a document over `u32::MAX` bytes is refused whatever
/// the limits.
///
/// ```
/// use chipcard_ipc::parse::parse_view;
/// let text = "data {\n  char CardId=\"0x0000002a\"\n  int  Slot=\"0\"\n}\n";
/// let doc = parse_view(text, &Default::default())?;
/// let data = doc.root().get_group("data")?;
/// assert_eq!(data.get_char("cardid")?, "0x0000002a");
/// assert_eq!(data.get_int("Slot")?, 0);
/// assert_eq!(doc.to_group(), chipcard_ipc::parse(text)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_view<'a>(text: &'a str, limits: &Limits) -> Result<DocumentView<'a>, ParseError> {
    let within_u32 = Limits {
        max_document: limits.max_document.min(u32::MAX as usize),
        ..*limits
    };
    check_size(text, &within_u32)?;
    Reader::new(limits, ViewBuilder::new(text)).read(text)
}

/// Like [`parse_view`], from bytes that must be UTF-8 (as [`parse_bytes`]).
pub fn parse_view_bytes<'a>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<DocumentView<'a>, ParseError> {
    parse_view(utf8_text(bytes, limits)?, limits)
}

/// Checks the document limit.
fn check_size(text: &str, limits: &Limits) -> Result<(), ParseError> {
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
    Ok(())
}

/// `bytes` as text, checking the document limit before the UTF-8 (which is reported at the
/// line and column of its first invalid byte).
fn utf8_text<'a>(bytes: &'a [u8], limits: &Limits) -> Result<&'a str, ParseError> {
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
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        // The prefix is valid UTF-8 by construction.
        let prefix = std::str::from_utf8(valid).unwrap_or_default();
        let (line, column) = position_of(prefix, prefix.len());
        ParseError {
            line,
            column,
            message: "invalid UTF-8".to_owned(),
        }
    })
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
pub(crate) fn position_of(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

// ----- what is built -----

/// What the reader builds: the document model ([`Group`]) or the view ([`DocumentView`]).
/// The reader is generic over it, so both get the same grammar, limits and errors, and each
/// is built directly, with no intermediate tree.
trait Builder<'a> {
    /// What is built.
    type Output;
    /// What undoes a variable line.
    type Mark: Copy + std::fmt::Debug;
    /// Opens a group, inside the innermost open one (the root at first); `escaped`: its name
    /// has `&XX` escapes (checked).
    fn open(&mut self, name: &'a str, escaped: bool);
    /// Closes the innermost open group (there is one).
    fn close(&mut self);
    /// Adds the first value of a variable line to the variable `name` of the innermost open
    /// group, made if it is not there yet; `more`: more values follow on the line.
    fn variable(&mut self, name: &'a str, first: Raw<'a>, more: bool) -> Self::Mark;
    /// Adds a further value of the line to the same variable.
    fn push_value(&mut self, value: Raw<'a>);
    /// Undoes the variable line of `mark` (the fast path found it is not one it takes).
    fn undo(&mut self, mark: Self::Mark);
    /// The document.
    fn finish(self) -> Self::Output;
    /// The values the line of `mark` added, in the document model (for checks).
    #[cfg(debug_assertions)]
    fn values_since(&self, mark: Self::Mark) -> Vec<crate::model::Value>;
}

/// A filter of the names of a group's variables: bit [`name_bit`] of each is set. A variable
/// line whose bit is clear starts a new variable, without comparing its name with every
/// variable of the group (which a repeated name would append to).
///
/// The bit comes from the name's length and its first and last bytes, ignoring ASCII case as
/// name lookups do (`| 0x20` lower-cases letters; names are ASCII).
fn name_bit(name: &str) -> u64 {
    let b = name.as_bytes();
    let (first, last) = (b.first().copied(), b.last().copied());
    let h = b.len() * 31
        + usize::from(first.unwrap_or(0) | 0x20) * 7
        + usize::from(last.unwrap_or(0) | 0x20);
    1 << (h % 64)
}

/// Builds the document model.
///
/// The entries of the open group at each depth collect in a vector per depth, which the next
/// group at that depth reuses; closing a group moves its entries into a vector of their own,
/// of exactly their size. So a group costs one allocation for its entries, however many it
/// has, and no vector grows larger than the largest group.
struct GroupBuilder {
    /// `levels[d]`: the entries so far of the open group at depth `d` (0: the root), and the
    /// filter of their names. Longer than `depth`.
    levels: Vec<(Vec<Entry>, u64)>,
    /// The names of the open groups but the root, outermost first.
    names: Vec<String>,
    /// The index of the variable of the line being read, in the innermost group.
    line: usize,
}

impl GroupBuilder {
    fn new() -> Self {
        GroupBuilder {
            levels: vec![(Vec::with_capacity(4), 0)],
            names: Vec::with_capacity(8),
            line: 0,
        }
    }

    fn innermost(&mut self) -> &mut (Vec<Entry>, u64) {
        let depth = self.names.len();
        &mut self.levels[depth]
    }
}

/// What undoes a variable line in the document model: the variable's index, and how many
/// values it had before (0: it was made by the line).
#[derive(Debug, Clone, Copy)]
struct GroupMark {
    index: usize,
    before: usize,
}

impl<'a> Builder<'a> for GroupBuilder {
    type Output = Group;
    type Mark = GroupMark;

    fn open(&mut self, name: &'a str, escaped: bool) {
        self.names
            .push(Raw::unescape_group_name(name, escaped).into_owned());
        let depth = self.names.len();
        match self.levels.get_mut(depth) {
            Some(level) => level.1 = 0,
            // Room for most groups (and under glibc's 1 KiB "large" threshold).
            None => self.levels.push((Vec::with_capacity(16), 0)),
        }
    }

    fn close(&mut self) {
        if let Some(name) = self.names.pop() {
            let depth = self.names.len();
            // An exactly sized vector: one allocation.
            let entries: Vec<Entry> = self.levels[depth + 1].0.drain(..).collect();
            self.levels[depth]
                .0
                .push(Entry::Group(Group { name, entries }));
        }
    }

    fn variable(&mut self, name: &'a str, first: Raw<'a>, more: bool) -> GroupMark {
        let (entries, names) = self.innermost();
        let bit = name_bit(name);
        let existing = if *names & bit != 0 {
            entries
                .iter()
                .position(|e| matches!(e, Entry::Var(v) if v.name.eq_ignore_ascii_case(name)))
        } else {
            None
        };
        let mark = match existing {
            Some(index) => match &mut entries[index] {
                Entry::Var(v) => {
                    let before = v.values.len();
                    v.values.push(first.to_value());
                    GroupMark { index, before }
                }
                Entry::Group(_) => GroupMark { index, before: 0 },
            },
            None => {
                *names |= bit;
                // One allocation for the values: exact for one value, room for four
                // otherwise.
                let mut values = Vec::with_capacity(if more { 4 } else { 1 });
                values.push(first.to_value());
                entries.push(Entry::Var(Variable {
                    name: name.to_owned(),
                    values,
                }));
                GroupMark {
                    index: entries.len() - 1,
                    before: 0,
                }
            }
        };
        self.line = mark.index;
        mark
    }

    fn push_value(&mut self, value: Raw<'a>) {
        let line = self.line;
        if let Some(Entry::Var(v)) = self.innermost().0.get_mut(line) {
            v.values.push(value.to_value());
        }
    }

    fn undo(&mut self, mark: GroupMark) {
        let entries = &mut self.innermost().0;
        if mark.before == 0 {
            entries.truncate(mark.index);
        } else if let Some(Entry::Var(v)) = entries.get_mut(mark.index) {
            v.values.truncate(mark.before);
        }
    }

    fn finish(mut self) -> Group {
        Group {
            name: String::new(),
            entries: std::mem::take(&mut self.levels[0].0),
        }
    }

    #[cfg(debug_assertions)]
    fn values_since(&self, mark: GroupMark) -> Vec<crate::model::Value> {
        match self.levels[self.names.len()].0.get(mark.index) {
            Some(Entry::Var(v)) => v.values.get(mark.before..).unwrap_or_default().to_vec(),
            _ => Vec::new(),
        }
    }
}

// Inlined into the reader's loop: a value the fast path has just read is then stored into the
// node vector from registers. Called, it is passed through the stack, and the copy reads back
// in wide loads what was just stored in narrow ones (a store-forwarding stall on x86, once per
// line: about an eighth of reading a view in the benchmarks).
impl<'a> Builder<'a> for ViewBuilder<'a> {
    type Output = DocumentView<'a>;
    type Mark = ViewMark;

    #[inline(always)]
    fn open(&mut self, name: &'a str, escaped: bool) {
        ViewBuilder::open(self, name, escaped);
    }
    #[inline(always)]
    fn close(&mut self) {
        ViewBuilder::close(self);
    }
    #[inline(always)]
    fn variable(&mut self, name: &'a str, first: Raw<'a>, _more: bool) -> ViewMark {
        ViewBuilder::variable(self, name, first, name_bit(name))
    }
    #[inline(always)]
    fn push_value(&mut self, value: Raw<'a>) {
        ViewBuilder::push_value(self, value);
    }
    fn undo(&mut self, mark: ViewMark) {
        ViewBuilder::undo(self, mark);
    }
    fn finish(self) -> DocumentView<'a> {
        ViewBuilder::finish(self)
    }
    #[cfg(debug_assertions)]
    fn values_since(&self, mark: ViewMark) -> Vec<crate::model::Value> {
        ViewBuilder::values_since(self, mark)
    }
}

// ----- the line loop -----

/// Reads a document line by line into a builder.
struct Reader<'a, 'l, B> {
    limits: &'l Limits,
    builder: B,
    /// The open groups but the root, outermost first (inline up to a depth of 8: no
    /// allocation for the messages of the protocol).
    open: SmallVec<[OpenGroup<'a>; 8]>,
}

/// A group being read.
struct OpenGroup<'a> {
    /// The name as written, and whether it has `&XX` escapes.
    name: &'a str,
    escaped: bool,
    /// Where it was opened: line and column.
    line: usize,
    column: usize,
}

impl<'a, 'l, B: Builder<'a>> Reader<'a, 'l, B> {
    fn new(limits: &'l Limits, builder: B) -> Self {
        Reader {
            limits,
            builder,
            open: SmallVec::new(),
        }
    }

    fn read(mut self, text: &'a str) -> Result<B::Output, ParseError> {
        let mut rest = text;
        let mut line_no = 0usize;
        while !rest.is_empty() {
            line_no += 1;
            // Look for the end of the line no further than the line limit: the window has
            // room for the line and its LF.
            let mut window = rest.len().min(self.limits.max_line.saturating_add(1));
            while window < rest.len() && !rest.is_char_boundary(window) {
                window -= 1;
            }
            // A last line without LF must fit the limit as well; otherwise the fast path must
            // find the LF inside the window. So a line it takes is within the limit.
            let whole = window == rest.len() && rest.len() <= self.limits.max_line;
            #[cfg(debug_assertions)]
            let grammar = debug_grammar_line(rest, window);
            if let Some((done, consumed)) = self.fast_line(&rest[..window], whole, line_no) {
                #[cfg(debug_assertions)]
                self.check_fast(&rest[..consumed], grammar, done);
                let _ = done;
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
                    Raw::unescape_group_name(group.name, group.escaped),
                    group.line,
                    group.column
                ),
            });
        }
        Ok(self.builder.finish())
    }

    /// Reads one line with the grammar.
    fn line(&mut self, line: &'a str, line_no: usize) -> Result<(), ParseError> {
        let parsed = match document_line(line) {
            Ok((_, parsed)) => parsed,
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                return Err(error_at(line, line_no, e))
            }
            Err(nom::Err::Incomplete(_)) => {
                return Err(error_at(line, line_no, Fail::new(line, "a complete line")))
            }
        };
        let at_error = |e: Fail<'_>| error_at(line, line_no, e);
        match parsed {
            Line::Ignored => {}
            Line::Open { name, escaped, at } => {
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
                self.open_group(name, escaped, line_no, column);
            }
            Line::Close { at } => {
                if self.open.is_empty() {
                    return Err(at_error(Fail::new(
                        at,
                        "'}' without an open group (expected a variable, a group or a comment)",
                    )));
                }
                self.close_group();
            }
            Line::Var { name, values } => {
                let mut values = values.into_iter();
                if let Some(first) = values.next() {
                    self.builder.variable(name, first, values.len() > 0);
                    for value in values {
                        self.builder.push_value(value);
                    }
                }
            }
        }
        Ok(())
    }

    fn open_group(&mut self, name: &'a str, escaped: bool, line: usize, column: usize) {
        self.open.push(OpenGroup {
            name,
            escaped,
            line,
            column,
        });
        self.builder.open(name, escaped);
    }

    /// Closes the innermost open group (there must be one).
    fn close_group(&mut self) {
        if self.open.pop().is_some() {
            self.builder.close();
        }
    }

    /// The fast path: the common, well-formed line shapes, read byte by byte and given to the
    /// builder as they are read: blank and comment lines, `}`, `NAME {`, and variable lines
    /// (`char`, `int` or `bin` in lower case, or no type) whose values are all quoted and
    /// free of `%`, separated and surrounded by spaces and tabs only. Anything else
    /// (including every error) gives `None` with the document as it was, and the grammar
    /// decides.
    ///
    /// `text` starts with the line and holds no more than the line limit allows; `whole`
    /// says whether a line may end at its end (without LF). On success: what was done, and
    /// how many bytes of `text` the line takes with its line end.
    ///
    /// What it reads is exactly what [`document_line`] reads; debug builds (tests, fuzzing)
    /// check that on every line.
    fn fast_line(
        &mut self,
        text: &'a str,
        whole: bool,
        line_no: usize,
    ) -> Option<(Fast<B::Mark>, usize)> {
        let b = text.as_bytes();
        let start = skip_spaces(b, 0);
        if let Some(end) = end_at(b, start, whole) {
            return Some((Fast::Ignored, end));
        }
        match b.get(start) {
            Some(b'#') => return Some((Fast::Ignored, end_after(b, start, whole)?)),
            Some(b'}') if !self.open.is_empty() => {
                let end = end_after(b, start, whole)?;
                self.close_group();
                return Some((Fast::Close, end));
            }
            _ => {}
        }
        let word_end = name_end(b, start);
        let word = text.get(start..word_end).filter(|w| !w.is_empty())?;
        let mut k = skip_spaces(b, word_end);
        let (ty, name) = match b.get(k) {
            Some(b'{') if self.open.len() < self.limits.max_depth => {
                let end = end_after(b, k, whole)?;
                // Only blanks (ASCII) before the name: its column is its byte offset + 1.
                self.open_group(word, false, line_no, start + 1);
                return Some((Fast::Open, end));
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
                let end = name_end(b, name_start);
                if name_start == word_end || end == name_start {
                    return None;
                }
                k = skip_spaces(b, end);
                if b.get(k) != Some(&b'=') {
                    return None;
                }
                (ty, text.get(name_start..end)?)
            }
        };
        let (first, mut k, mut end) = fast_value(text, k + 1, ty, whole)?;
        // The values go straight to the builder; if the line turns out not to be one the
        // fast path takes, they are taken back.
        let mark = self.builder.variable(name, first, end.is_none());
        while end.is_none() {
            match fast_value(text, k + 1, ty, whole) {
                Some((value, next, line_end)) => {
                    self.builder.push_value(value);
                    (k, end) = (next, line_end);
                }
                None => {
                    self.builder.undo(mark);
                    return None;
                }
            }
        }
        Some((Fast::Var(mark), end?))
    }

    /// Checks what the fast path did with the line `taken` against what the grammar reads.
    #[cfg(debug_assertions)]
    fn check_fast(&self, taken: &str, grammar: Option<Line<'_>>, done: Fast<B::Mark>) {
        let line = &taken[..line_len(taken.as_bytes(), taken.len())];
        assert!(
            taken.find('\n').map_or(true, |i| i + 1 == taken.len()),
            "the fast path ends the line {line:?} elsewhere"
        );
        let same = match (&grammar, done) {
            (Some(Line::Ignored), Fast::Ignored) | (Some(Line::Close { .. }), Fast::Close) => true,
            (Some(Line::Open { name, escaped, .. }), Fast::Open) => self
                .open
                .last()
                .is_some_and(|g| g.name == *name && g.escaped == *escaped),
            (Some(Line::Var { values, .. }), Fast::Var(mark)) => {
                let want: Vec<_> = values.iter().map(|v| v.to_value()).collect();
                self.builder.values_since(mark) == want
            }
            _ => false,
        };
        assert!(
            same,
            "the fast path ({done:?}) and the grammar ({grammar:?}) disagree on {line:?}"
        );
    }
}

/// What the fast path did with a line.
#[derive(Debug, Clone, Copy)]
enum Fast<M> {
    Ignored,
    Open,
    Close,
    /// Added a variable line, undone by the mark.
    Var(M),
}

/// The grammar's reading of the line at the start of `rest`, for [`Reader::check_fast`].
#[cfg(debug_assertions)]
fn debug_grammar_line(rest: &str, window: usize) -> Option<Line<'_>> {
    let end = rest[..window].find('\n').map_or(window, |i| i + 1);
    let line = &rest[..line_len(rest.as_bytes(), end)];
    document_line(line).ok().map(|(_, l)| l)
}

/// The fast path's value: the quoted value at byte `k` of `text` (blanks before it allowed).
/// On success: the value, where what follows it starts (`,` or the end of the line), and the
/// bytes the line takes if it ends after this value (`None` when a `,` follows).
// Inlined for the reason given at `impl Builder for ViewBuilder`.
#[inline(always)]
fn fast_value(
    text: &str,
    k: usize,
    ty: ValueType,
    whole: bool,
) -> Option<(Raw<'_>, usize, Option<usize>)> {
    let b = text.as_bytes();
    let k = skip_spaces(b, k);
    if b.get(k) != Some(&b'"') {
        return None;
    }
    let len = quoted_len(b.get(k + 1..)?)?;
    let raw = text.get(k + 1..k + 1 + len)?;
    let value = match ty {
        ValueType::Char => Raw::Char {
            text: raw,
            escaped: false,
        },
        ValueType::Int => Raw::Int(int_value(raw)?),
        ValueType::Bin if is_hex(raw.as_bytes()) => Raw::Bin {
            text: raw,
            escaped: false,
        },
        ValueType::Bin => return None,
    };
    let k = skip_spaces(b, k + len + 2);
    let end = match b.get(k) {
        Some(b',') => None,
        Some(b'#' | b';') => Some(end_after(b, k, whole)?),
        _ => Some(end_at(b, k, whole)?),
    };
    Some((value, k, end))
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

// ----- the fast path's scanning -----

/// The first byte at or after `k` that is not a space or a tab.
fn skip_spaces(b: &[u8], mut k: usize) -> usize {
    while let Some(b' ' | b'\t') = b.get(k) {
        k += 1;
    }
    k
}

/// The end of the name (variable-name bytes) starting at `k`.
fn name_end(b: &[u8], mut k: usize) -> usize {
    // Eight bytes at a time, without a branch per byte: a name's length varies from line to
    // line, so a byte loop's exit is a mispredicted branch per name, which costs more than
    // classifying eight bytes.
    while let Some(chunk) = b.get(k..k + 8) {
        let mut names = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            names |= u32::from(NAME_BYTE[usize::from(c)]) << i;
        }
        let run = (!names).trailing_zeros() as usize;
        if run < 8 {
            return k + run;
        }
        k += 8;
    }
    while b.get(k).is_some_and(|&c| NAME_BYTE[usize::from(c)]) {
        k += 1;
    }
    k
}

/// The bytes taken by the line when it ends at `k`, if it does (LF, CR LF, or the end).
fn end_at(b: &[u8], k: usize, whole: bool) -> Option<usize> {
    match b.get(k) {
        None if whole => Some(k),
        Some(b'\n') => Some(k + 1),
        Some(b'\r') if b.get(k + 1) == Some(&b'\n') => Some(k + 2),
        _ => None,
    }
}

/// The bytes taken by the line when the rest of it from `k` on is ignored.
fn end_after(b: &[u8], k: usize, whole: bool) -> Option<usize> {
    match memchr::memchr(b'\n', b.get(k..)?) {
        Some(i) => Some(k + i + 1),
        None if whole => Some(b.len()),
        None => None,
    }
}

/// The length of a quoted value's text up to its closing quote, when it has no `%` and ends
/// on its line. `b` starts after the opening quote.
#[inline(always)]
fn quoted_len(b: &[u8]) -> Option<usize> {
    // Eight bytes at a time (for the same reason as `name_end`), then memchr for long values
    // (APDUs), vectorised, which costs more than it saves on a few bytes.
    let mut k = 0;
    while let Some(chunk) = b.get(k..k + 8).filter(|_| k < 32) {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        let stops = has_byte(word, b'"') | has_byte(word, b'%') | has_byte(word, b'\n');
        if stops != 0 {
            // The lowest flag is exact (a false one can only follow a true one).
            let at = k + (stops.trailing_zeros() / 8) as usize;
            return (b[at] == b'"').then_some(at);
        }
        k += 8;
    }
    let at = k + memchr::memchr3(b'"', b'%', b'\n', b.get(k..)?)?;
    (b[at] == b'"').then_some(at)
}

/// The high bit of each byte of `word` that equals `byte` is set, and possibly of bytes
/// after such a byte ("Bit Twiddling Hacks": determine if a word has a byte equal to n).
fn has_byte(word: u64, byte: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & (ONES << 7)
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
    /// `NAME {`: the name as written, whether it has `&XX` escapes (checked), and where it
    /// starts.
    Open {
        name: &'a str,
        escaped: bool,
        at: &'a str,
    },
    /// `}`, and where it is.
    Close { at: &'a str },
    /// A variable line, values checked.
    Var { name: &'a str, values: Vec<Raw<'a>> },
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
    let escaped = check_group_name(raw)?;
    Ok((
        r,
        Line::Open {
            name: raw,
            escaped,
            at: i,
        },
    ))
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

/// Checks the `&XX` escapes of a group name (the result must be UTF-8); whether it has any.
fn check_group_name(raw: &str) -> Result<bool, nom::Err<Fail<'_>>> {
    if !raw.contains('&') {
        return Ok(false);
    }
    let bytes = decode_hex_escapes(raw, b'&').map_err(|at| {
        nom::Err::Failure(Fail::new(
            at,
            "expected two hex digits after '&' in the group name",
        ))
    })?;
    match std::str::from_utf8(&bytes) {
        Ok(_) => Ok(true),
        Err(_) => Err(nom::Err::Failure(Fail::new(
            raw,
            "group name is not UTF-8 after decoding '&XX'",
        ))),
    }
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
fn values(i: &str, ty: ValueType) -> PResult<'_, Vec<Raw<'_>>> {
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
fn typed_value(i: &str, ty: ValueType) -> PResult<'_, Raw<'_>> {
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

/// Checks a value's text (`%XX` escapes, then by type); an int is decoded. Errors point
/// into `raw`.
fn decode_value(raw: &str, ty: ValueType) -> Result<Raw<'_>, nom::Err<Fail<'_>>> {
    let escaped = raw.contains('%');
    let decoded: Cow<'_, str> = if escaped {
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
        ValueType::Char => Ok(Raw::Char { text: raw, escaped }),
        ValueType::Int => int_value(&decoded).map(Raw::Int).ok_or_else(|| {
            nom::Err::Failure(Fail::new(raw, "expected a signed 32-bit decimal integer"))
        }),
        ValueType::Bin if is_hex(decoded.as_bytes()) => Ok(Raw::Bin { text: raw, escaped }),
        ValueType::Bin => Err(nom::Err::Failure(Fail::new(
            raw,
            "expected an even number of hex digits",
        ))),
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

fn hex_digit(b: u8) -> Option<u8> {
    match hex_value(b) {
        0xff => None,
        v => Some(v),
    }
}

/// Decodes `<mark>XX` escapes into bytes; on a bad escape, the input from the mark on.
pub(crate) fn decode_hex_escapes(raw: &str, mark: u8) -> Result<Vec<u8>, &str> {
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

    use crate::model::Value;

    fn chars(v: &[&str]) -> Vec<Value> {
        v.iter().map(|s| Value::Char((*s).to_owned())).collect()
    }

    /// A line's values in the document model.
    fn owned(line: Line<'_>) -> Option<(String, Vec<Value>)> {
        match line {
            Line::Var { name, values } => Some((
                name.to_owned(),
                values.into_iter().map(Raw::to_value).collect(),
            )),
            _ => None,
        }
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
            let got = document_line(line).ok().and_then(|(_, l)| owned(l));
            let want = ((*name).to_owned(), values.clone());
            assert_eq!(got, Some(want), "line {line:?}");
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
                Ok((
                    _,
                    Line::Open {
                        name: got, escaped, ..
                    },
                )) => assert_eq!(
                    Raw::unescape_group_name(got, escaped),
                    *name,
                    "line {line:?}"
                ),
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

        /// Whatever the fast path accepts, the grammar reads the same way (debug builds check
        /// that on every line the reader reads), in a document of its own and after a
        /// variable line that a repeated name appends to; and the view reads what the
        /// document model reads.
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
            for text in [line.clone(), format!("g {{\na=\"1\"\n{line}\n}}\n")] {
                let view = parse_view(&text, &Limits::default()).map(|v| v.to_group());
                proptest::prop_assert_eq!(view, parse(&text), "text {:?}", text);
            }
        }
    }

    /// Whether the fast path takes `line`, inside a group.
    fn fast_takes(line: &str) -> bool {
        let limits = Limits::default();
        let mut reader = Reader::new(&limits, GroupBuilder::new());
        reader.open_group("g", false, 1, 1);
        reader.fast_line(line, true, 2).is_some()
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
            assert!(fast_takes(line), "{line:?}");
        }
        for line in [
            "x=a",
            "x=\"%41\"",
            "CHAR x=\"1\"",
            "x : \"1\"",
            "a&20 {",
            "x=\"1\"\x0c",
        ] {
            assert!(!fast_takes(line), "{line:?}");
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
