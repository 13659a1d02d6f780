//! The group-format document model: groups holding variables and groups, in order.
//!
//! A [`Group`] keeps the order of its entries, keeps groups with the same name apart, and
//! looks names up case-insensitively while keeping the case it was given. A document is a
//! root group with an empty name.

use std::borrow::Cow;
use std::fmt;

use crate::error::FieldError;

/// The type of a variable's values, as written before its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// `char`: UTF-8 text.
    Char,
    /// `int`: a signed 32-bit integer.
    Int,
    /// `bin`: bytes, written as hex.
    Bin,
}

impl ValueType {
    /// The word the group format uses for this type.
    pub fn keyword(self) -> &'static str {
        match self {
            ValueType::Char => "char",
            ValueType::Int => "int",
            ValueType::Bin => "bin",
        }
    }
}

/// One value of a variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// Text.
    Char(String),
    /// A signed 32-bit integer.
    Int(i32),
    /// Bytes.
    Bin(Vec<u8>),
}

impl Value {
    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::Char(_) => ValueType::Char,
            Value::Int(_) => ValueType::Int,
            Value::Bin(_) => ValueType::Bin,
        }
    }

    /// The value as text: char as is, int in decimal, bin in upper-case hex.
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            Value::Char(s) => Cow::Borrowed(s),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::Bin(b) => Cow::Owned(hex::encode_upper(b)),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_text())
    }
}

/// A named variable with one or more values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Variable {
    /// The name, in the case it was read or built with.
    pub name: String,
    /// The values, in order. Never empty in a parsed document.
    pub values: Vec<Value>,
}

/// An entry of a group: a variable or a nested group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A variable.
    Var(Variable),
    /// A nested group.
    Group(Group),
}

/// A named group of variables and groups, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Group {
    /// The name; empty for the root of a document.
    pub name: String,
    /// The entries, in order.
    pub entries: Vec<Entry>,
}

impl Group {
    /// An empty group called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Group {
            name: name.into(),
            entries: Vec::new(),
        }
    }

    /// An empty document root.
    pub fn root() -> Self {
        Group::default()
    }

    /// True when the group has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The variables, in order.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Var(v) => Some(v),
            Entry::Group(_) => None,
        })
    }

    /// All nested groups, in order.
    pub fn all_groups(&self) -> impl Iterator<Item = &Group> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Group(g) => Some(g),
            Entry::Var(_) => None,
        })
    }

    /// The variable called `name` (any case).
    pub fn var(&self, name: &str) -> Option<&Variable> {
        self.variables().find(|v| v.name.eq_ignore_ascii_case(name))
    }

    /// The variable called `name` (any case), for changing.
    pub fn var_mut(&mut self, name: &str) -> Option<&mut Variable> {
        self.entries.iter_mut().find_map(|e| match e {
            Entry::Var(v) if v.name.eq_ignore_ascii_case(name) => Some(v),
            _ => None,
        })
    }

    /// The first group called `name` (any case).
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.all_groups()
            .find(|g| g.name.eq_ignore_ascii_case(name))
    }

    /// The first group called `name` (any case), for changing.
    pub fn group_mut(&mut self, name: &str) -> Option<&mut Group> {
        self.entries.iter_mut().find_map(|e| match e {
            Entry::Group(g) if g.name.eq_ignore_ascii_case(name) => Some(g),
            _ => None,
        })
    }

    /// Every group called `name` (any case), in order.
    pub fn groups<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Group> + 'a {
        self.all_groups()
            .filter(move |g| g.name.eq_ignore_ascii_case(name))
    }

    /// Appends `value` to the variable `name`, creating the variable at the end if needed.
    /// This is what a repeated variable line does when read.
    pub fn append_value(&mut self, name: &str, value: Value) {
        match self.var_mut(name) {
            Some(v) => v.values.push(value),
            None => self.entries.push(Entry::Var(Variable {
                name: name.to_owned(),
                values: vec![value],
            })),
        }
    }

    /// Sets the variable `name` to exactly `values`, keeping its position if it exists.
    /// An empty `values` removes the variable.
    pub fn set_values(&mut self, name: &str, values: Vec<Value>) {
        if values.is_empty() {
            self.remove_var(name);
            return;
        }
        match self.var_mut(name) {
            Some(v) => v.values = values,
            None => self.entries.push(Entry::Var(Variable {
                name: name.to_owned(),
                values,
            })),
        }
    }

    /// Removes the variable `name`; true when there was one.
    pub fn remove_var(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|e| !matches!(e, Entry::Var(v) if v.name.eq_ignore_ascii_case(name)));
        before != self.entries.len()
    }

    /// Sets a char variable.
    pub fn set_char(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.set_values(name, vec![Value::Char(value.into())]);
        self
    }

    /// Sets a multi-value char variable; an empty list removes it.
    pub fn set_chars<S: AsRef<str>>(&mut self, name: &str, values: &[S]) -> &mut Self {
        let values = values
            .iter()
            .map(|s| Value::Char(s.as_ref().to_owned()))
            .collect();
        self.set_values(name, values);
        self
    }

    /// Sets an int variable.
    pub fn set_int(&mut self, name: &str, value: i32) -> &mut Self {
        self.set_values(name, vec![Value::Int(value)]);
        self
    }

    /// Sets a bin variable.
    pub fn set_bin(&mut self, name: &str, value: impl Into<Vec<u8>>) -> &mut Self {
        self.set_values(name, vec![Value::Bin(value.into())]);
        self
    }

    /// Appends a nested group and returns it for filling.
    pub fn add_group(&mut self, group: Group) -> &mut Group {
        self.entries.push(Entry::Group(group));
        match self.entries.last_mut() {
            Some(Entry::Group(g)) => g,
            _ => unreachable!("a group was just pushed"),
        }
    }

    /// Builder form of [`Group::set_char`].
    pub fn with_char(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set_char(name, value);
        self
    }

    /// Builder form of [`Group::set_int`].
    pub fn with_int(mut self, name: &str, value: i32) -> Self {
        self.set_int(name, value);
        self
    }

    /// Builder form of [`Group::set_bin`].
    pub fn with_bin(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.set_bin(name, value);
        self
    }

    /// Builder form of [`Group::add_group`].
    pub fn with_group(mut self, group: Group) -> Self {
        self.add_group(group);
        self
    }

    // ----- typed getters -----

    fn first_value(&self, name: &str) -> Result<&Value, FieldError> {
        self.var(name)
            .and_then(|v| v.values.first())
            .ok_or_else(|| FieldError::missing(name))
    }

    /// The first value of `name` as text. Char values as they are; int values in decimal.
    /// A bin value is an error: it is not text.
    pub fn get_char(&self, name: &str) -> Result<&str, FieldError> {
        match self.first_value(name)? {
            Value::Char(s) => Ok(s),
            other => Err(FieldError::wrong_type(name, "char", other)),
        }
    }

    /// Like [`Group::get_char`], but `None` when the variable is absent.
    pub fn opt_char(&self, name: &str) -> Result<Option<&str>, FieldError> {
        match self.var(name) {
            None => Ok(None),
            Some(_) => self.get_char(name).map(Some),
        }
    }

    /// All values of `name` as text (an absent variable is an empty list).
    pub fn get_chars(&self, name: &str) -> Result<Vec<&str>, FieldError> {
        match self.var(name) {
            None => Ok(Vec::new()),
            Some(v) => v
                .values
                .iter()
                .map(|val| match val {
                    Value::Char(s) => Ok(s.as_str()),
                    other => Err(FieldError::wrong_type(name, "char", other)),
                })
                .collect(),
        }
    }

    /// The first value of `name` as an int. A char value holding a decimal number is accepted.
    pub fn get_int(&self, name: &str) -> Result<i32, FieldError> {
        match self.first_value(name)? {
            Value::Int(i) => Ok(*i),
            Value::Char(s) => s
                .trim()
                .parse()
                .map_err(|_| FieldError::invalid(name, format!("not an int: '{s}'"))),
            other => Err(FieldError::wrong_type(name, "int", other)),
        }
    }

    /// Like [`Group::get_int`], but `None` when the variable is absent.
    pub fn opt_int(&self, name: &str) -> Result<Option<i32>, FieldError> {
        match self.var(name) {
            None => Ok(None),
            Some(_) => self.get_int(name).map(Some),
        }
    }

    /// The first value of `name` as bytes. A char value holding hex digits is accepted.
    pub fn get_bin(&self, name: &str) -> Result<Cow<'_, [u8]>, FieldError> {
        match self.first_value(name)? {
            Value::Bin(b) => Ok(Cow::Borrowed(b)),
            Value::Char(s) => hex::decode(s)
                .map(Cow::Owned)
                .map_err(|_| FieldError::invalid(name, format!("not hex: '{s}'"))),
            other => Err(FieldError::wrong_type(name, "bin", other)),
        }
    }

    /// Like [`Group::get_bin`], but `None` when the variable is absent.
    pub fn opt_bin(&self, name: &str) -> Result<Option<Cow<'_, [u8]>>, FieldError> {
        match self.var(name) {
            None => Ok(None),
            Some(_) => self.get_bin(name).map(Some),
        }
    }

    /// The group `name`, or a "missing" error.
    pub fn get_group(&self, name: &str) -> Result<&Group, FieldError> {
        self.group(name).ok_or_else(|| FieldError::missing(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_keeps_case() {
        let mut g = Group::new("data");
        g.set_char("CardId", "0x00000001");
        assert_eq!(g.get_char("cardid").ok(), Some("0x00000001"));
        assert_eq!(g.var("CARDID").map(|v| v.name.as_str()), Some("CardId"));
    }

    #[test]
    fn append_value_extends_existing_variable() {
        let mut g = Group::new("x");
        g.append_value("flag", Value::Char("a".into()));
        g.append_value("FLAG", Value::Char("b".into()));
        assert_eq!(g.get_chars("flag").ok(), Some(vec!["a", "b"]));
        assert_eq!(g.entries.len(), 1);
    }

    #[test]
    fn typed_getters_report_path_and_reason() {
        let g = Group::new("data").with_char("Slot", "x");
        let e = g.get_int("Slot").expect_err("x is not an int");
        assert_eq!(e.to_string(), "Slot: not an int: 'x'");
        let e = g.get_char("CardId").expect_err("absent");
        assert_eq!(e.within("data").to_string(), "data/CardId: missing");
    }

    #[test]
    fn lenient_int_and_bin_from_char() {
        let g = Group::new("d")
            .with_char("n", " 42 ")
            .with_char("b", "0aFF");
        assert_eq!(g.get_int("n").ok(), Some(42));
        assert_eq!(g.get_bin("b").ok().as_deref(), Some(&[0x0a, 0xff][..]));
    }

    #[test]
    fn groups_with_same_name_stay_apart() {
        let g = Group::new("r")
            .with_group(Group::new("reader").with_int("n", 1))
            .with_group(Group::new("Reader").with_int("n", 2));
        let ns: Vec<i32> = g
            .groups("READER")
            .filter_map(|r| r.get_int("n").ok())
            .collect();
        assert_eq!(ns, vec![1, 2]);
    }
}
