//! The group-format writers (PROTOCOL §1).
//!
//! [`write_pretty`] writes byte for byte what libgwenhywfar 5's
//! `GWEN_DB_WriteToBuffer(db, buf, GWEN_DB_FLAGS_DEFAULT)` writes (checked against the real
//! library by `tests/gwen.rs`):
//!
//! - Two blanks of indentation per depth.
//! - A variable is one line: the type word of its **first** value padded to five characters
//!   (`char `, `int  `, `bin  `), the name as it is, `=`, and every value in double quotes,
//!   separated by `, `. A variable with values of mixed types is written with its first
//!   value's type word, so it reads back with every value of that type. A variable without
//!   values writes nothing.
//! - Char values: every byte outside `A-Z a-z 0-9 space . , * ? _ -` is written `%XX`
//!   (upper-case hex). Int values in decimal. Bin values in upper-case hex.
//! - A group is written `NAME {`, its entries one level deeper, then `} #NAME`. In the
//!   opening line every byte of the name outside `A-Z a-z 0-9 % . , * ? _ -` is written `&XX`;
//!   in the closing comment the name is written as it is.
//! - An empty line comes before a group when the entry before it is a variable (even one
//!   without values), and after a group when another entry follows it in the same group.
//!   So there is no empty line at the end of a group or of the document.
//!
//! [`write_compact`] writes the same lines without indentation, without the closing comment
//! (`}` alone) and without empty lines; and a variable with values of mixed types as one line
//! per run of values of one type (`int  x="1"` then `char x="a"`), which reads back as the
//! same variable because a repeated name appends. libgwenhywfar reads that form the same way.
//!
//! Both forms read back to the same document with [`crate::parse()`] when the names are names
//! the grammar accepts (variable names of letters, digits, `_`, `-`, `.`; non-empty group
//! names) and no variable is empty or repeated in its group (case-insensitively); every
//! parsed document is such a document. Two Gwen quirks make the pretty form lossy:
//!
//! - a variable with values of mixed types is written with its first value's type word, so it
//!   reads back with every value of that type (or not at all: `int  x="1", "a"`);
//! - a group name containing a line feed is written raw in the closing comment.
//!
//! The compact form has neither problem.

use crate::model::{Entry, Group, Value, ValueType};

/// The pretty form, byte-for-byte as libgwenhywfar 5 writes it.
///
/// ```
/// use chipcard_ipc::{write_pretty, Group};
/// let doc = Group::root().with_group(Group::new("data").with_char("CardId", "0x0000002a").with_int("Slot", 0));
/// assert_eq!(write_pretty(&doc), "data {\n  char CardId=\"0x0000002a\"\n  int  Slot=\"0\"\n} #data\n");
/// ```
pub fn write_pretty(doc: &Group) -> String {
    let mut out = Vec::with_capacity(estimate(doc, 2));
    write_entries(doc, &mut out, 0, true);
    // Everything written is either ASCII or a whole name, which is a `String`.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The compact wire form, appended to `out`.
///
/// ```
/// use chipcard_ipc::{write_compact, Group};
/// let doc = Group::root().with_group(Group::new("data").with_char("CardId", "0x0000002a"));
/// let mut out = Vec::new();
/// write_compact(&doc, &mut out);
/// assert_eq!(out, b"data {\nchar CardId=\"0x0000002a\"\n}\n");
/// ```
pub fn write_compact(doc: &Group, out: &mut Vec<u8>) {
    out.reserve(estimate(doc, 0));
    write_entries(doc, out, 0, false);
}

/// Writes `g`'s entries in the compact form: what [`write_compact`] writes inside a group.
pub(crate) fn write_compact_entries(g: &Group, out: &mut Vec<u8>) {
    write_entries(g, out, 0, false);
}

/// [`estimate`] for the compact form.
pub(crate) fn estimate_compact(g: &Group) -> usize {
    estimate(g, 0)
}

/// A char value, escaped, without its quotes.
pub(crate) fn write_char_value(s: &str, out: &mut Vec<u8>) {
    escape(s.as_bytes(), b'%', &CHAR_PLAIN, out);
}

/// The compact line of a variable with one char value: `char NAME="value"`.
pub(crate) fn write_char_line(name: &str, value: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"char ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    write_char_value(value, out);
    out.extend_from_slice(b"\"\n");
}

/// The compact line of a variable with char values; nothing without values.
pub(crate) fn write_chars_line<S: AsRef<str>>(name: &str, values: &[S], out: &mut Vec<u8>) {
    if values.is_empty() {
        return;
    }
    out.extend_from_slice(b"char ");
    write_values(name, values, out, |value, out| {
        write_char_value(value.as_ref(), out)
    });
}

/// The compact line of a variable with one int value: `int  NAME="value"`.
pub(crate) fn write_int_line(name: &str, value: i32, out: &mut Vec<u8>) {
    out.extend_from_slice(b"int  ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    write_int(value, out);
    out.extend_from_slice(b"\"\n");
}

/// The compact line of a variable with one bin value: `bin  NAME="HEX"`.
pub(crate) fn write_bin_line(name: &str, value: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"bin  ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    write_hex(value, out);
    out.extend_from_slice(b"\"\n");
}

/// The compact opening line of a group: `NAME {`.
pub(crate) fn write_group_open(name: &str, out: &mut Vec<u8>) {
    escape_group_name(name, out);
    out.extend_from_slice(b" {\n");
}

/// The compact closing line of a group: `}`.
pub(crate) fn write_group_close(out: &mut Vec<u8>) {
    out.extend_from_slice(b"}\n");
}

/// A number in decimal.
pub(crate) fn write_u32(n: u32, out: &mut Vec<u8>) {
    let mut buf = [0u8; 10];
    let mut k = buf.len();
    let mut n = n;
    loop {
        k -= 1;
        buf[k] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[k..]);
}

/// A close upper estimate of the output size, so that the buffer grows at most once or twice.
fn estimate(g: &Group, indent: usize) -> usize {
    let mut n = 0;
    for e in &g.entries {
        match e {
            Entry::Group(sub) => n += 2 * sub.name.len() + 16 + estimate(sub, indent),
            Entry::Var(v) => {
                n += v.name.len() + 8 + indent;
                for value in &v.values {
                    n += 4 + match value {
                        Value::Char(s) => s.len() + s.len() / 4,
                        Value::Int(_) => 11,
                        Value::Bin(b) => 2 * b.len(),
                    };
                }
            }
        }
    }
    n
}

fn write_entries(g: &Group, out: &mut Vec<u8>, depth: usize, pretty: bool) {
    let mut last_was_var = false;
    let count = g.entries.len();
    for (k, entry) in g.entries.iter().enumerate() {
        match entry {
            Entry::Group(sub) => {
                if pretty && last_was_var {
                    out.push(b'\n');
                }
                indent(out, depth, pretty);
                escape_group_name(&sub.name, out);
                out.extend_from_slice(b" {\n");
                write_entries(sub, out, depth + 1, pretty);
                indent(out, depth, pretty);
                if pretty {
                    out.extend_from_slice(b"} #");
                    out.extend_from_slice(sub.name.as_bytes());
                    out.push(b'\n');
                    if k + 1 < count {
                        out.push(b'\n');
                    }
                } else {
                    out.extend_from_slice(b"}\n");
                }
                last_was_var = false;
            }
            Entry::Var(var) => {
                if pretty {
                    // As Gwen: one line, typed by the first value.
                    write_var_line(&var.name, &var.values, out, depth, pretty);
                } else {
                    // One line per run of values of one type, so that a variable with mixed
                    // types reads back as it is (each further line appends).
                    let mut values = &var.values[..];
                    while let Some(first) = values.first() {
                        let ty = first.value_type();
                        let run = values
                            .iter()
                            .position(|v| v.value_type() != ty)
                            .unwrap_or(values.len());
                        write_var_line(&var.name, &values[..run], out, depth, pretty);
                        values = &values[run..];
                    }
                }
                last_was_var = true;
            }
        }
    }
}

/// `TYPE NAME="v1", "v2"` and a line feed, typed by the first value; nothing without values.
fn write_var_line(name: &str, values: &[Value], out: &mut Vec<u8>, depth: usize, pretty: bool) {
    let Some(first) = values.first() else {
        return;
    };
    indent(out, depth, pretty);
    out.extend_from_slice(match first.value_type() {
        ValueType::Char => b"char ",
        ValueType::Int => b"int  ",
        ValueType::Bin => b"bin  ",
    });
    write_values(name, values, out, write_value);
}

/// The rest of a variable line after the type word: `NAME="v1", "v2"` and a line feed.
fn write_values<T>(
    name: &str,
    values: &[T],
    out: &mut Vec<u8>,
    write_one: impl Fn(&T, &mut Vec<u8>),
) {
    out.extend_from_slice(name.as_bytes());
    out.push(b'=');
    for (n, value) in values.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b", ");
        }
        out.push(b'"');
        write_one(value, out);
        out.push(b'"');
    }
    out.push(b'\n');
}

fn indent(out: &mut Vec<u8>, depth: usize, pretty: bool) {
    if pretty {
        out.resize(out.len() + 2 * depth, b' ');
    }
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Char(s) => escape(s.as_bytes(), b'%', &CHAR_PLAIN, out),
        Value::Int(i) => write_int(*i, out),
        Value::Bin(b) => write_hex(b, out),
    }
}

/// Bytes in upper-case hex.
fn write_hex(b: &[u8], out: &mut Vec<u8>) {
    out.reserve(2 * b.len());
    // Through a small buffer: one copy per 32 bytes rather than a push per digit.
    let mut buf = [0u8; 64];
    for chunk in b.chunks(32) {
        for (pair, &byte) in buf.chunks_exact_mut(2).zip(chunk) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        out.extend_from_slice(&buf[..2 * chunk.len()]);
    }
}

fn write_int(i: i32, out: &mut Vec<u8>) {
    if i < 0 {
        out.push(b'-');
    }
    write_u32(i.unsigned_abs(), out);
}

fn escape_group_name(name: &str, out: &mut Vec<u8>) {
    escape(name.as_bytes(), b'&', &GROUP_NAME_PLAIN, out);
}

/// Copies `bytes`, writing every byte not in `plain` as `mark` and two upper-case hex digits.
#[inline]
fn escape(bytes: &[u8], mark: u8, plain: &[bool; 256], out: &mut Vec<u8>) {
    // Most values need no escape at all: one check, one copy.
    let Some(first) = bytes.iter().position(|&b| !plain[usize::from(b)]) else {
        out.extend_from_slice(bytes);
        return;
    };
    out.reserve(bytes.len() + 8);
    let mut start = 0;
    for (k, &b) in bytes.iter().enumerate().skip(first) {
        if !plain[usize::from(b)] {
            out.extend_from_slice(&bytes[start..k]);
            out.extend_from_slice(&[mark, HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            start = k + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Bytes written as they are in char values (`GWEN_Text_EscapeToBufferTolerant`).
const CHAR_PLAIN: [bool; 256] = plain_table(b" .,*?_-");

/// Bytes written as they are in group names (`GWEN_DB_EscapeToBufferTolerant`).
const GROUP_NAME_PLAIN: [bool; 256] = plain_table(b"%.,*?_-");

const fn plain_table(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric();
        b += 1;
    }
    let mut k = 0;
    while k < extra.len() {
        t[extra[k] as usize] = true;
        k += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Variable;

    fn compact(doc: &Group) -> String {
        let mut out = Vec::new();
        write_compact(doc, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    /// Known answers, checked against libgwenhywfar 5.10.1 by hand and by `tests/gwen.rs`.
    #[test]
    fn pretty_known_answers() {
        let doc = Group::root()
            .with_char("x", "1")
            .with_group(Group::new("a"))
            .with_char("y", "2")
            .with_group(Group::new("b").with_char("z", "3"));
        assert_eq!(
            write_pretty(&doc),
            "char x=\"1\"\n\na {\n} #a\n\nchar y=\"2\"\n\nb {\n  char z=\"3\"\n} #b\n"
        );

        let doc = Group::root().with_group(
            Group::new("a")
                .with_group(Group::new("b"))
                .with_group(Group::new("c")),
        );
        assert_eq!(
            write_pretty(&doc),
            "a {\n  b {\n  } #b\n\n  c {\n  } #c\n} #a\n"
        );

        let mut g = Group::new("a b%&,ä");
        g.set_chars("f", &["DISPLAY", "KEYPAD"]);
        g.set_values(
            "m",
            vec![
                Value::Int(-5),
                Value::Char("x".into()),
                Value::Bin(vec![0xab]),
            ],
        );
        g.set_bin("b", vec![0x00, 0xff, 0x10]);
        g.set_char("s", "a b%\"\\#;,{}*?_-.é\n");
        assert_eq!(
            write_pretty(&Group::root().with_group(g)),
            "a&20b%&26,&C3&A4 {\n  char f=\"DISPLAY\", \"KEYPAD\"\n  int  m=\"-5\", \"x\", \"AB\"\n  \
             bin  b=\"00FF10\"\n  char s=\"a b%25%22%5C%23%3B,%7B%7D*?_-.%C3%A9%0A\"\n} #a b%&,ä\n"
        );
    }

    #[test]
    fn empty_variables_write_nothing_but_count_as_variables() {
        let mut g = Group::new("g2");
        g.entries.push(Entry::Var(Variable {
            name: "z".into(),
            values: vec![],
        }));
        g.add_group(Group::new("g3"));
        g.entries.push(Entry::Var(Variable {
            name: "z2".into(),
            values: vec![],
        }));
        let doc = Group::root().with_group(g);
        assert_eq!(write_pretty(&doc), "g2 {\n\n  g3 {\n  } #g3\n\n} #g2\n");
        assert_eq!(compact(&doc), "g2 {\ng3 {\n}\n}\n");
    }

    #[test]
    fn compact_known_answers() {
        let doc = Group::root()
            .with_group(
                Group::new("ipc")
                    .with_char("id", "7")
                    .with_char("cmd", "TakeCard"),
            )
            .with_group(
                Group::new("data")
                    .with_int("n", i32::MIN)
                    .with_bin("e", vec![]),
            );
        assert_eq!(
            compact(&doc),
            "ipc {\nchar id=\"7\"\nchar cmd=\"TakeCard\"\n}\ndata {\nint  n=\"-2147483648\"\nbin  e=\"\"\n}\n"
        );
        let mut g = Group::root();
        g.set_values(
            "m",
            vec![
                Value::Int(1),
                Value::Int(2),
                Value::Char("a".into()),
                Value::Int(3),
            ],
        );
        assert_eq!(
            compact(&g),
            "int  m=\"1\", \"2\"\nchar m=\"a\"\nint  m=\"3\"\n"
        );
        assert_eq!(write_pretty(&g), "int  m=\"1\", \"2\", \"a\", \"3\"\n");
        assert_eq!(write_pretty(&Group::root()), "");
        assert_eq!(compact(&Group::root()), "");
    }

    #[test]
    fn ints() {
        for i in [0, 1, -1, 9, 10, 99, -100, 12345, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            write_int(i, &mut out);
            assert_eq!(out, i.to_string().into_bytes());
        }
    }
}
