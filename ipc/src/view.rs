//! A parsed document that borrows its names and values from the text it was read from.
//!
//! [`crate::parse::parse_view`] reads the same grammar as [`crate::parse()`], with the same
//! limits and errors, into a [`DocumentView`] instead of a [`Group`]: one vector of small
//! nodes, one per group, variable line and value, in the order of the text. Names and values
//! are slices of the text; `%XX` (and `&XX` in group names) are checked while parsing and
//! decoded only when a value is asked for. So a document costs one allocation, however many
//! groups and variables it has (none when the thread's last view left its vector behind),
//! where the document model makes three for every `char ReaderName="..."` (the name, the
//! value, the vector of values) and one per group.
//!
//! It is what typed messages are read from on the hot path ([`crate::codec::MessageCodec`],
//! [`crate::envelope::Received::decode`]): the text is read once into the view, and the
//! typed message then allocates exactly the strings and bytes it keeps. [`GroupView`]'s
//! getters behave as [`Group`]'s, with the same errors; [`GroupView::to_group`] gives the
//! document model.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use smallvec::SmallVec;

use crate::error::FieldError;
use crate::model::{Entry, Group, Value, ValueType, Variable};

// ----- values -----

/// A value as read: a slice of the text, checked by the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Raw<'a> {
    /// Text; `escaped`: it holds `%XX` escapes (all valid, and UTF-8 once decoded).
    Char { text: &'a str, escaped: bool },
    /// A signed 32-bit integer (decoded by the parser).
    Int(i32),
    /// Hex digits, an even number once `%XX` escapes (if `escaped`) are decoded.
    Bin { text: &'a str, escaped: bool },
}

impl<'a> Raw<'a> {
    fn value_type(&self) -> ValueType {
        match self {
            Raw::Char { .. } => ValueType::Char,
            Raw::Int(_) => ValueType::Int,
            Raw::Bin { .. } => ValueType::Bin,
        }
    }

    /// A group name as written, with its `&XX` escapes (if `escaped`) decoded.
    pub(crate) fn unescape_group_name(name: &str, escaped: bool) -> Cow<'_, str> {
        unescape_with(name, escaped, b'&')
    }

    /// The value, decoded.
    pub(crate) fn to_view(self) -> ValueView<'a> {
        match self {
            Raw::Char { text, escaped } => ValueView::Char(unescape(text, escaped)),
            Raw::Int(i) => ValueView::Int(i),
            Raw::Bin { text, escaped } => ValueView::Bin(HexText(unescape(text, escaped))),
        }
    }

    /// The value in the document model.
    pub(crate) fn to_value(self) -> Value {
        match self.to_view() {
            ValueView::Char(s) => Value::Char(s.into_owned()),
            ValueView::Int(i) => Value::Int(i),
            ValueView::Bin(hex) => Value::Bin(hex.to_vec()),
        }
    }
}

/// `text` with its `%XX` escapes decoded, if it has any.
fn unescape(text: &str, escaped: bool) -> Cow<'_, str> {
    unescape_with(text, escaped, b'%')
}

/// `text` with its `<mark>XX` escapes decoded, if it has any. The parser checked the escapes
/// and that the result is UTF-8; the lossy conversion only keeps this total.
fn unescape_with(text: &str, escaped: bool, mark: u8) -> Cow<'_, str> {
    if !escaped {
        return Cow::Borrowed(text);
    }
    match crate::parse::decode_hex_escapes(text, mark) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(s) => Cow::Owned(s),
            Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        },
        Err(_) => Cow::Borrowed(text),
    }
}

/// One value of a variable, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueView<'a> {
    /// Text, borrowed from the document unless it held `%XX` escapes.
    Char(Cow<'a, str>),
    /// A signed 32-bit integer.
    Int(i32),
    /// Bytes, as the hex text they were written as.
    Bin(HexText<'a>),
}

impl ValueView<'_> {
    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            ValueView::Char(_) => ValueType::Char,
            ValueView::Int(_) => ValueType::Int,
            ValueView::Bin(_) => ValueType::Bin,
        }
    }

    /// The same value in the document model.
    pub fn to_value(&self) -> Value {
        match self {
            ValueView::Char(s) => Value::Char(s.as_ref().to_owned()),
            ValueView::Int(i) => Value::Int(*i),
            ValueView::Bin(hex) => Value::Bin(hex.to_vec()),
        }
    }
}

/// Hex text known to hold an even number of hex digits (either case): a `bin` value.
///
/// Only the parser makes one, after checking the text, so decoding it cannot fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexText<'a>(Cow<'a, str>);

impl HexText<'_> {
    /// The hex digits, as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        self.0.len() / 2
    }

    /// True for no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        decode_hex(&self.0)
    }
}

/// The bytes of hex digits checked by [`is_hex`]; `& 0xf` only keeps this total.
fn decode_hex(text: &str) -> Vec<u8> {
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| ((hex_value(pair[0]) & 0xf) << 4) | (hex_value(pair[1]) & 0xf))
        .collect()
}

/// True when `b` is an even number of hex digits.
pub(crate) fn is_hex(b: &[u8]) -> bool {
    // Branch-free per byte (`&`, not `&&`), so that the compiler can vectorise the check of a
    // long value (an APDU); the lookup table is for decoding.
    let digit = |c: u8| (c.wrapping_sub(b'0') < 10) | ((c | 0x20).wrapping_sub(b'a') < 6);
    b.len() % 2 == 0 && b.iter().fold(true, |ok, &c| ok & digit(c))
}

/// The value of a hex digit; 0xff for other bytes.
pub(crate) fn hex_value(b: u8) -> u8 {
    HEX_VALUE[usize::from(b)]
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

// ----- the nodes -----

/// Where a name or a value is in the text: its byte offset and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

/// A value as the nodes keep it: [`Raw`] with spans of the text for slices.
#[derive(Debug, Clone, Copy)]
enum RawSpan {
    Char { text: Span, escaped: bool },
    Int(i32),
    Bin { text: Span, escaped: bool },
}

/// One node of a [`DocumentView`]. A group's nodes follow it up to its `end`; a variable
/// line's values follow it. Names and values are spans of the text rather than slices, so
/// that the vector of nodes does not borrow the text and can be kept for the next document
/// (see [`SPARE`]).
#[derive(Debug)]
enum Node {
    /// A group: its name as written (`escaped`: with `&XX` escapes), the index just past its
    /// last node, and where the next variable lookup in it starts (see [`GroupView::var`]).
    Group {
        name: Span,
        escaped: bool,
        end: u32,
        hint: AtomicU32,
    },
    /// The first line of a variable: its name, the number of values that follow, and the
    /// index of the variable's next line in the group (a repeated name appends; 0: none).
    Var { name: Span, count: u32, next: u32 },
    /// A further line of a variable, reached through `next` only.
    More { count: u32, next: u32 },
    /// A value.
    Value(RawSpan),
}

/// `span` of `text`. Spans are made by the builder from slices of the text, so they are in
/// it and on character boundaries; the empty fallback only keeps this total.
fn slice(text: &str, span: Span) -> &str {
    let start = span.start as usize;
    text.get(start..start + span.len as usize)
        .unwrap_or_default()
}

impl RawSpan {
    fn raw(self, text: &str) -> Raw<'_> {
        match self {
            RawSpan::Char { text: t, escaped } => Raw::Char {
                text: slice(text, t),
                escaped,
            },
            RawSpan::Int(i) => Raw::Int(i),
            RawSpan::Bin { text: t, escaped } => Raw::Bin {
                text: slice(text, t),
                escaped,
            },
        }
    }
}

thread_local! {
    /// The node vector of the last view dropped on this thread, emptied, for the next view:
    /// a message read on the hot path then costs no allocation for its view. Kept only up to
    /// [`SPARE_MAX`] nodes, so that a thread holds little memory after a large document.
    static SPARE: Cell<Vec<Node>> = const { Cell::new(Vec::new()) };
}

/// The most nodes a kept vector may have room for (about 80 KiB).
const SPARE_MAX: usize = 4096;

/// The node after `k` and everything under it: the next entry of `k`'s group.
fn skip(nodes: &[Node], k: u32) -> u32 {
    match nodes.get(k as usize) {
        Some(Node::Group { end, .. }) => *end,
        Some(Node::Var { count, .. } | Node::More { count, .. }) => k + 1 + count,
        _ => k + 1,
    }
}

/// Compares names as lookups do: ignoring ASCII case. Names are mostly looked up as they
/// are written, so an exact comparison, eight bytes at a time, comes first; it is quicker
/// than the case-folding one, byte by byte.
#[inline]
fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    let exact = x
        .by_ref()
        .zip(y.by_ref())
        .all(|(x, y)| u64::from_ne_bytes(word(x)) == u64::from_ne_bytes(word(y)))
        && x.remainder().iter().zip(y.remainder()).all(|(x, y)| x == y);
    exact || a.eq_ignore_ascii_case(b)
}

/// An eight-byte chunk as an array.
fn word(chunk: &[u8]) -> [u8; 8] {
    let mut w = [0; 8];
    w.copy_from_slice(chunk);
    w
}

/// A parsed document: the root group of its text, and all under it.
#[derive(Debug)]
pub struct DocumentView<'a> {
    text: &'a str,
    nodes: Vec<Node>,
}

impl Drop for DocumentView<'_> {
    fn drop(&mut self) {
        let mut nodes = std::mem::take(&mut self.nodes);
        if nodes.capacity() <= SPARE_MAX {
            nodes.clear();
            SPARE.set(nodes);
        }
    }
}

impl<'a> DocumentView<'a> {
    /// The root group (its name is empty).
    pub fn root(&self) -> GroupView<'_, 'a> {
        GroupView {
            text: self.text,
            nodes: &self.nodes,
            at: 0,
        }
    }

    /// The document in the document model.
    pub fn to_group(&self) -> Group {
        self.root().to_group()
    }
}

/// An empty group without a name.
static EMPTY: [Node; 1] = [Node::Group {
    name: Span { start: 0, len: 0 },
    escaped: false,
    end: 1,
    hint: AtomicU32::new(0),
}];

/// A group of a [`DocumentView`]: its variables and groups, in order.
///
/// Lookups are case-insensitive, as [`Group`]'s.
#[derive(Debug, Clone, Copy)]
pub struct GroupView<'v, 'a> {
    text: &'a str,
    nodes: &'v [Node],
    /// The index of its `Group` node.
    at: u32,
}

/// The indexes of a group's entries' nodes (a further line of a variable is not an entry).
struct EntryIndexes<'v> {
    nodes: &'v [Node],
    next: u32,
    end: u32,
}

impl Iterator for EntryIndexes<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        while self.next < self.end {
            let k = self.next;
            self.next = skip(self.nodes, k);
            if !matches!(self.nodes.get(k as usize), Some(Node::More { .. })) {
                return Some(k);
            }
        }
        None
    }
}

/// An entry of a group: a variable or a nested group.
#[derive(Debug, Clone, Copy)]
pub enum EntryView<'v, 'a> {
    /// A variable.
    Var(VariableView<'v, 'a>),
    /// A nested group.
    Group(GroupView<'v, 'a>),
}

impl<'v, 'a: 'v> GroupView<'v, 'a> {
    /// An empty group without a name.
    pub fn empty() -> GroupView<'static, 'static> {
        GroupView {
            text: "",
            nodes: &EMPTY,
            at: 0,
        }
    }

    fn node(&self) -> (&'a str, bool, u32, &'v AtomicU32) {
        match &self.nodes[self.at as usize] {
            Node::Group {
                name,
                escaped,
                end,
                hint,
            } => (slice(self.text, *name), *escaped, *end, hint),
            // `at` is always a group's index.
            _ => unreachable!("a GroupView is made for a group node"),
        }
    }

    /// The name; empty for the root of a document.
    pub fn name(&self) -> Cow<'a, str> {
        let (name, escaped, _, _) = self.node();
        unescape_with(name, escaped, b'&')
    }

    fn has_name(&self, name: &str) -> bool {
        let (raw, escaped, _, _) = self.node();
        if escaped {
            same_name(&self.name(), name)
        } else {
            same_name(raw, name)
        }
    }

    /// The indexes of the entries' nodes from `from` on.
    fn entry_indexes(&self, from: u32) -> EntryIndexes<'v> {
        let (_, _, end, _) = self.node();
        EntryIndexes {
            nodes: self.nodes,
            next: from,
            end,
        }
    }

    fn entry(&self, k: u32) -> EntryView<'v, 'a> {
        let (text, nodes) = (self.text, self.nodes);
        match self.nodes.get(k as usize) {
            Some(Node::Group { .. }) => EntryView::Group(GroupView { text, nodes, at: k }),
            _ => EntryView::Var(VariableView { text, nodes, at: k }),
        }
    }

    /// The entries, in order.
    pub fn entries(&self) -> impl Iterator<Item = EntryView<'v, 'a>> + 'v {
        let this = *self;
        self.entry_indexes(self.at + 1).map(move |k| this.entry(k))
    }

    /// True when the group has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries().next().is_none()
    }

    /// The variables, in order.
    pub fn variables(&self) -> impl Iterator<Item = VariableView<'v, 'a>> + 'v {
        self.entries().filter_map(|e| match e {
            EntryView::Var(v) => Some(v),
            EntryView::Group(_) => None,
        })
    }

    /// All nested groups, in order.
    pub fn all_groups(&self) -> impl Iterator<Item = GroupView<'v, 'a>> + 'v {
        let (text, nodes) = (self.text, self.nodes);
        self.entry_indexes(self.at + 1)
            .filter(move |&k| matches!(nodes.get(k as usize), Some(Node::Group { .. })))
            .map(move |at| GroupView { text, nodes, at })
    }

    /// The variable called `name` (any case).
    ///
    /// The lookup starts at the entry after the variable found last in this group, and goes
    /// on around to where it started. Typed messages read their fields in the order they are
    /// written, so it mostly finds its variable at the first entry it looks at, rather than
    /// after comparing the name with every variable before it. A parsed group's variables
    /// all have different names (a repeated name appends), so the first match found from
    /// anywhere is the only one. (The hint is atomic, with relaxed loads and stores, which
    /// are plain ones, only so that a view can be shared between threads.)
    pub fn var(&self, name: &str) -> Option<VariableView<'v, 'a>> {
        let (_, _, end, hint) = self.node();
        let (text, nodes) = (self.text, self.nodes);
        let is_it = |k: u32| {
            matches!(nodes.get(k as usize),
                Some(Node::Var { name: n, .. }) if same_name(slice(text, *n), name))
        };
        let found = |k: u32| {
            hint.store(k, Ordering::Relaxed);
            Some(VariableView { text, nodes, at: k })
        };
        let last = hint.load(Ordering::Relaxed);
        let start = if last > self.at && last < end {
            // The entry after the one found last, then that one again (`opt_char` and the
            // like look twice).
            let next = skip(nodes, last);
            if next < end && is_it(next) {
                return found(next);
            }
            if is_it(last) {
                return found(last);
            }
            next
        } else {
            self.at + 1
        };
        // From the hint to the end, then from the start to the hint.
        for (from, to) in [(start, end), (self.at + 1, start)] {
            let mut k = from;
            while k < to {
                if is_it(k) {
                    return found(k);
                }
                k = skip(nodes, k);
            }
        }
        None
    }

    /// The first group called `name` (any case).
    pub fn group(&self, name: &str) -> Option<GroupView<'v, 'a>> {
        self.all_groups().find(|g| g.has_name(name))
    }

    /// Every group called `name` (any case), in order.
    pub fn groups<'s>(&self, name: &'s str) -> impl Iterator<Item = GroupView<'v, 'a>> + 's
    where
        'v: 's,
    {
        self.all_groups().filter(move |g| g.has_name(name))
    }

    /// The group `name`, or a "missing" error.
    pub fn get_group(&self, name: &str) -> Result<GroupView<'v, 'a>, FieldError> {
        self.group(name).ok_or_else(|| FieldError::missing(name))
    }

    /// The same group in the document model.
    pub fn to_group(&self) -> Group {
        Group {
            name: self.name().into_owned(),
            entries: self
                .entries()
                .map(|e| match e {
                    EntryView::Var(v) => Entry::Var(v.to_variable()),
                    EntryView::Group(g) => Entry::Group(g.to_group()),
                })
                .collect(),
        }
    }

    // ----- typed getters, as `Group`'s -----

    fn first_value(&self, name: &str) -> Result<Raw<'a>, FieldError> {
        self.var(name)
            .map(|v| v.first_raw())
            .ok_or_else(|| FieldError::missing(name))
    }

    /// The first value of `name` as text; see [`Group::get_char`].
    pub fn get_char(&self, name: &str) -> Result<Cow<'a, str>, FieldError> {
        match self.first_value(name)? {
            Raw::Char { text, escaped } => Ok(unescape(text, escaped)),
            other => Err(wrong_type(name, "char", other)),
        }
    }

    /// Like [`GroupView::get_char`], but `None` when the variable is absent.
    pub fn opt_char(&self, name: &str) -> Result<Option<Cow<'a, str>>, FieldError> {
        match self.var(name) {
            None => Ok(None),
            Some(_) => self.get_char(name).map(Some),
        }
    }

    /// All values of `name` as text (an absent variable is an empty list).
    pub fn get_chars(&self, name: &str) -> Result<Vec<Cow<'a, str>>, FieldError> {
        self.char_values(name, |s| s)
    }

    /// All values of `name` as text, each through `f`, in a vector of exactly their number.
    fn char_values<T>(
        &self,
        name: &str,
        f: impl Fn(Cow<'a, str>) -> T,
    ) -> Result<Vec<T>, FieldError> {
        let Some(v) = self.var(name) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(v.len());
        for raw in v.raws() {
            match raw {
                Raw::Char { text, escaped } => out.push(f(unescape(text, escaped))),
                other => return Err(wrong_type(name, "char", other)),
            }
        }
        Ok(out)
    }

    /// The first value of `name` as an int; see [`Group::get_int`].
    pub fn get_int(&self, name: &str) -> Result<i32, FieldError> {
        match self.first_value(name)? {
            Raw::Int(i) => Ok(i),
            Raw::Char { text, escaped } => {
                let s = unescape(text, escaped);
                s.trim()
                    .parse()
                    .map_err(|_| FieldError::invalid(name, format!("not an int: '{s}'")))
            }
            other => Err(wrong_type(name, "int", other)),
        }
    }

    /// Like [`GroupView::get_int`], but `None` when the variable is absent.
    pub fn opt_int(&self, name: &str) -> Result<Option<i32>, FieldError> {
        match self.var(name) {
            None => Ok(None),
            Some(_) => self.get_int(name).map(Some),
        }
    }

    /// The first value of `name` as bytes; see [`Group::get_bin`].
    pub fn get_bin(&self, name: &str) -> Result<Vec<u8>, FieldError> {
        match self.first_value(name)? {
            Raw::Bin { text, escaped } => Ok(decode_hex(&unescape(text, escaped))),
            Raw::Char { text, escaped } => {
                let s = unescape(text, escaped);
                hex::decode(s.as_bytes())
                    .map_err(|_| FieldError::invalid(name, format!("not hex: '{s}'")))
            }
            other => Err(wrong_type(name, "bin", other)),
        }
    }
}

fn wrong_type(name: &str, expected: &str, got: Raw<'_>) -> FieldError {
    FieldError::invalid(
        name,
        format!("expected {expected}, got {}", got.value_type().keyword()),
    )
}

/// The values of a variable, line after line.
struct Raws<'v, 'a> {
    text: &'a str,
    nodes: &'v [Node],
    /// The node of the variable's next line (0: none).
    next_line: u32,
    /// The next value's node, and the end of the line's values.
    value: u32,
    end: u32,
}

impl Raws<'_, '_> {
    /// Goes on with the values of the line whose node is at `line`.
    fn start_line(&mut self, line: u32) {
        let (count, next) = match self.nodes.get(line as usize) {
            Some(Node::Var { count, next, .. } | Node::More { count, next }) => (*count, *next),
            _ => (0, 0),
        };
        (self.value, self.end, self.next_line) = (line + 1, line + 1 + count, next);
    }
}

impl<'a> Iterator for Raws<'_, 'a> {
    type Item = Raw<'a>;

    fn next(&mut self) -> Option<Raw<'a>> {
        loop {
            if self.value < self.end {
                let k = self.value;
                self.value += 1;
                if let Some(Node::Value(raw)) = self.nodes.get(k as usize) {
                    return Some(raw.raw(self.text));
                }
            } else if self.next_line != 0 {
                self.start_line(self.next_line);
            } else {
                return None;
            }
        }
    }
}

/// A variable of a [`DocumentView`]: its name and values.
#[derive(Debug, Clone, Copy)]
pub struct VariableView<'v, 'a> {
    text: &'a str,
    nodes: &'v [Node],
    /// The index of its first line's `Var` node.
    at: u32,
}

impl<'v, 'a: 'v> VariableView<'v, 'a> {
    /// The name, as written on its first line.
    pub fn name(&self) -> &'a str {
        match self.nodes.get(self.at as usize) {
            Some(Node::Var { name, .. }) => slice(self.text, *name),
            _ => "",
        }
    }

    /// The values of all its lines, in order, checked by the parser.
    fn raws(&self) -> Raws<'v, 'a> {
        let mut raws = Raws {
            text: self.text,
            nodes: self.nodes,
            next_line: 0,
            value: 0,
            end: 0,
        };
        raws.start_line(self.at);
        raws
    }

    fn first_raw(&self) -> Raw<'a> {
        match self.nodes.get(self.at as usize + 1) {
            Some(Node::Value(raw)) => raw.raw(self.text),
            // A variable has at least one value.
            _ => Raw::Char {
                text: "",
                escaped: false,
            },
        }
    }

    /// The values, in order; there is at least one.
    pub fn values(&self) -> impl Iterator<Item = ValueView<'a>> + 'v {
        self.raws().map(Raw::to_view)
    }

    /// The first value.
    pub fn first(&self) -> ValueView<'a> {
        self.first_raw().to_view()
    }

    /// The number of values (at least one).
    pub fn len(&self) -> usize {
        let nodes = self.nodes;
        std::iter::successors(Some(self.at), |&k| match nodes.get(k as usize) {
            Some(Node::Var { next, .. } | Node::More { next, .. }) if *next != 0 => Some(*next),
            _ => None,
        })
        .map(|k| match nodes.get(k as usize) {
            Some(Node::Var { count, .. } | Node::More { count, .. }) => *count as usize,
            _ => 0,
        })
        .sum()
    }

    /// Always false: a variable has at least one value.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The same variable in the document model.
    pub fn to_variable(&self) -> Variable {
        let mut values = Vec::with_capacity(self.len());
        values.extend(self.raws().map(Raw::to_value));
        Variable {
            name: self.name().to_owned(),
            values,
        }
    }
}

impl<'v, 'a: 'v> crate::field::FieldSource for GroupView<'v, 'a> {
    type Group<'s>
        = GroupView<'v, 'a>
    where
        Self: 's;

    fn has_var(&self, name: &str) -> bool {
        self.var(name).is_some()
    }
    fn get_char(&self, name: &str) -> Result<Cow<'_, str>, FieldError> {
        GroupView::get_char(self, name)
    }
    fn get_strings(&self, name: &str) -> Result<Vec<String>, FieldError> {
        self.char_values(name, Cow::into_owned)
    }
    fn get_int(&self, name: &str) -> Result<i32, FieldError> {
        GroupView::get_int(self, name)
    }
    fn get_bytes(&self, name: &str) -> Result<Bytes, FieldError> {
        self.get_bin(name).map(Bytes::from)
    }
    fn group<'s>(&'s self, name: &str) -> Option<GroupView<'v, 'a>> {
        GroupView::group(self, name)
    }
    fn groups<'s>(&'s self, name: &'s str) -> impl Iterator<Item = GroupView<'v, 'a>> + 's {
        GroupView::groups(self, name)
    }
    fn to_group(&self) -> Group {
        GroupView::to_group(self)
    }
}

// ----- building -----

/// Builds a [`DocumentView`] for the parser (see `parse::Builder`). The methods the fast path
/// calls once per line are inlined into the parser's loop (see the comment at
/// `impl Builder for ViewBuilder` in `parse.rs`).
pub(crate) struct ViewBuilder<'a> {
    text: &'a str,
    nodes: Vec<Node>,
    /// The open groups, the root first: the index of each one's node, and a filter of its
    /// variables' names (as in the document model's builder: bit `name_bit` of each is set).
    open: SmallVec<[(u32, u64); 8]>,
    /// The index of the node of the variable line being read.
    line: u32,
}

/// What undoes a variable line: the number of nodes before it, and the line it was linked
/// to, if it was a repeated name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ViewMark {
    len: usize,
    linked: Option<u32>,
}

impl<'a> ViewBuilder<'a> {
    /// A builder for `text`, which the parser has checked is at most `u32::MAX` bytes.
    pub(crate) fn new(text: &'a str) -> Self {
        let mut nodes = SPARE.take();
        // About one node per 16 bytes of text; more comes with the vector's growth.
        nodes.reserve(text.len() / 16 + 4);
        nodes.push(Node::Group {
            name: Span { start: 0, len: 0 },
            escaped: false,
            end: 0,
            hint: AtomicU32::new(0),
        });
        ViewBuilder {
            text,
            nodes,
            open: smallvec::smallvec![(0, 0)],
            line: 0,
        }
    }

    /// Where `part`, a slice of the text, is in it.
    fn span(&self, part: &str) -> Span {
        // Offsets fit: the text is at most `u32::MAX` bytes.
        let start = (part.as_ptr() as usize).saturating_sub(self.text.as_ptr() as usize);
        Span {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            len: u32::try_from(part.len()).unwrap_or(0),
        }
    }

    fn raw_span(&self, raw: Raw<'a>) -> RawSpan {
        match raw {
            Raw::Char { text, escaped } => RawSpan::Char {
                text: self.span(text),
                escaped,
            },
            Raw::Int(i) => RawSpan::Int(i),
            Raw::Bin { text, escaped } => RawSpan::Bin {
                text: self.span(text),
                escaped,
            },
        }
    }

    /// The index the next node gets. The parser refuses documents over `u32::MAX` bytes for
    /// a view, and there are fewer nodes than bytes.
    fn next_index(&self) -> u32 {
        u32::try_from(self.nodes.len()).unwrap_or(u32::MAX)
    }

    #[inline(always)]
    pub(crate) fn open(&mut self, name: &'a str, escaped: bool) {
        let at = self.next_index();
        let name = self.span(name);
        self.nodes.push(Node::Group {
            name,
            escaped,
            end: 0,
            hint: AtomicU32::new(0),
        });
        self.open.push((at, 0));
    }

    #[inline(always)]
    pub(crate) fn close(&mut self) {
        let end = self.next_index();
        // The root stays open until `finish`.
        if self.open.len() > 1 {
            if let Some((at, _)) = self.open.pop() {
                self.set_end(at, end);
            }
        }
    }

    fn set_end(&mut self, at: u32, to: u32) {
        if let Some(Node::Group { end, .. }) = self.nodes.get_mut(at as usize) {
            *end = to;
        }
    }

    #[inline(always)]
    pub(crate) fn variable(&mut self, name: &'a str, first: Raw<'a>, bit: u64) -> ViewMark {
        let len = self.nodes.len();
        let here = self.next_index();
        let (group, names) = self.open.last().copied().unwrap_or((0, 0));
        let existing = if names & bit != 0 {
            self.find_var(group, name)
        } else {
            None
        };
        let linked = match existing {
            Some(first_line) => {
                // Link the new line after the variable's last one.
                let mut last = first_line;
                while let Some(Node::Var { next, .. } | Node::More { next, .. }) =
                    self.nodes.get(last as usize)
                {
                    if *next == 0 {
                        break;
                    }
                    last = *next;
                }
                if let Some(Node::Var { next, .. } | Node::More { next, .. }) =
                    self.nodes.get_mut(last as usize)
                {
                    *next = here;
                }
                self.nodes.push(Node::More { count: 1, next: 0 });
                Some(last)
            }
            None => {
                if let Some(open) = self.open.last_mut() {
                    open.1 |= bit;
                }
                let name = self.span(name);
                self.nodes.push(Node::Var {
                    name,
                    count: 1,
                    next: 0,
                });
                None
            }
        };
        let first = self.raw_span(first);
        self.nodes.push(Node::Value(first));
        self.line = here;
        ViewMark { len, linked }
    }

    /// The first line of the variable `name` in the open group whose node is at `group`.
    fn find_var(&self, group: u32, name: &str) -> Option<u32> {
        let (text, nodes) = (self.text, &self.nodes);
        let end = self.next_index();
        std::iter::successors(Some(group + 1), |&k| Some(skip(nodes, k)))
            .take_while(|&k| k < end)
            .find(|&k| {
                matches!(nodes.get(k as usize),
                    Some(Node::Var { name: n, .. }) if same_name(slice(text, *n), name))
            })
    }

    #[inline(always)]
    pub(crate) fn push_value(&mut self, value: Raw<'a>) {
        if let Some(Node::Var { count, .. } | Node::More { count, .. }) =
            self.nodes.get_mut(self.line as usize)
        {
            *count += 1;
        }
        let value = self.raw_span(value);
        self.nodes.push(Node::Value(value));
    }

    pub(crate) fn undo(&mut self, mark: ViewMark) {
        self.nodes.truncate(mark.len);
        if let Some(last) = mark.linked {
            if let Some(Node::Var { next, .. } | Node::More { next, .. }) =
                self.nodes.get_mut(last as usize)
            {
                *next = 0;
            }
        }
    }

    /// The values that the line of `mark` added, in the document model (for checks).
    #[cfg(debug_assertions)]
    pub(crate) fn values_since(&self, mark: ViewMark) -> Vec<Value> {
        self.nodes
            .get(mark.len + 1..)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| match n {
                Node::Value(raw) => Some(raw.raw(self.text).to_value()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn finish(mut self) -> DocumentView<'a> {
        let end = self.next_index();
        self.set_end(0, end);
        DocumentView {
            text: self.text,
            nodes: self.nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_check_and_decode() {
        for good in ["", "00", "0aFf", "3B6700002D203600"] {
            assert!(is_hex(good.as_bytes()), "{good}");
            assert_eq!(decode_hex(good), hex::decode(good).expect("hex"), "{good}");
        }
        for bad in [
            "0", "0g", "g0", "0 ", "/0", ":0", "@A", "`a", "GA", "ga", "é0",
        ] {
            assert!(!is_hex(bad.as_bytes()), "{bad}");
        }
        // Every byte value, in the first and the second digit.
        for b in 0..=255u8 {
            let ok = b.is_ascii_hexdigit();
            assert_eq!(is_hex(&[b, b'0']), ok, "{b}");
            assert_eq!(is_hex(&[b'0', b]), ok, "{b}");
        }
    }

    #[test]
    fn node_is_small() {
        // One cache line holds three of them.
        assert!(std::mem::size_of::<Node>() <= 20);
    }
}
