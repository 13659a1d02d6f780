//! Where typed message fields are written: into the document model ([`Group`]), or straight
//! into the compact text of a frame body ([`CompactSink`]), without building a document.
//!
//! Both give the same text: writing a message into a [`Group`] and that with
//! [`write_compact`](crate::write_compact) is byte for byte what [`CompactSink`] writes. That
//! holds because a message writes each of its variables once (no two fields of a message
//! share a name), so the model's "set replaces" and the text's "append" agree.

use crate::model::{Group, Value};
use crate::write;

/// A group that typed fields are written into.
pub trait FieldSink {
    /// Sets the char variable `name` to `value`.
    fn put_char(&mut self, name: &str, value: &str);
    /// Sets the char variable `name` to `values`; no values, no variable.
    fn put_chars(&mut self, name: &str, values: &[String]);
    /// Sets the int variable `name` to `value`.
    fn put_int(&mut self, name: &str, value: i32);
    /// Sets the bin variable `name` to `value`.
    fn put_bin(&mut self, name: &str, value: &[u8]);
    /// Appends a nested group `name`, filled by `fill`.
    fn put_group(&mut self, name: &str, fill: impl FnOnce(&mut Self));
    /// Appends `group`'s entries as a nested group `name` (the group's own name is not used).
    fn put_whole_group(&mut self, name: &str, group: &Group);
}

impl FieldSink for Group {
    fn put_char(&mut self, name: &str, value: &str) {
        self.set_char(name, value);
    }
    fn put_chars(&mut self, name: &str, values: &[String]) {
        self.set_values(
            name,
            values.iter().map(|s| Value::Char(s.clone())).collect(),
        );
    }
    fn put_int(&mut self, name: &str, value: i32) {
        self.set_int(name, value);
    }
    fn put_bin(&mut self, name: &str, value: &[u8]) {
        self.set_bin(name, value);
    }
    fn put_group(&mut self, name: &str, fill: impl FnOnce(&mut Self)) {
        let mut g = Group::new(name);
        fill(&mut g);
        self.add_group(g);
    }
    fn put_whole_group(&mut self, name: &str, group: &Group) {
        let mut g = group.clone();
        g.name = name.to_owned();
        self.add_group(g);
    }
}

/// Writes fields as compact group-format text at the end of a buffer.
///
/// ```
/// use chipcard_ipc::sink::{CompactSink, FieldSink};
/// let mut out = Vec::new();
/// CompactSink(&mut out).put_char("CardId", "0x0000002a");
/// assert_eq!(out, b"char CardId=\"0x0000002a\"\n");
/// ```
#[derive(Debug)]
pub struct CompactSink<'a>(pub &'a mut Vec<u8>);

impl FieldSink for CompactSink<'_> {
    fn put_char(&mut self, name: &str, value: &str) {
        write::write_char_line(name, value, self.0);
    }
    fn put_chars(&mut self, name: &str, values: &[String]) {
        write::write_chars_line(name, values, self.0);
    }
    fn put_int(&mut self, name: &str, value: i32) {
        write::write_int_line(name, value, self.0);
    }
    fn put_bin(&mut self, name: &str, value: &[u8]) {
        write::write_bin_line(name, value, self.0);
    }
    fn put_group(&mut self, name: &str, fill: impl FnOnce(&mut Self)) {
        write::write_group_open(name, self.0);
        fill(self);
        write::write_group_close(self.0);
    }
    fn put_whole_group(&mut self, name: &str, group: &Group) {
        write::write_group_open(name, self.0);
        write::write_compact_entries(group, self.0);
        write::write_group_close(self.0);
    }
}
