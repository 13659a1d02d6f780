//! How typed message fields map to group-format variables and groups.
//!
//! Each field type knows how to write itself into a group under a name and read itself back,
//! with errors that name the field. Multi-value variables are `Vec<String>`; repeated groups
//! are `Vec<R>` of a [`Record`]; absent fields are `Option<T>`.
//!
//! Fields are read from any [`FieldSource`]: the document model [`Group`], or the
//! [`GroupView`](crate::view::GroupView) that borrows from the text, which the typed messages
//! are read from on the hot path.

use std::borrow::Cow;

use bytes::Bytes;

use crate::error::FieldError;
use crate::ids::{CardId, ClientId, ContextId, DriverId, ReaderId, ServiceId};
use crate::model::{Group, Value};
use crate::sink::FieldSink;

/// A group that typed fields can be read from: [`Group`] or
/// [`GroupView`](crate::view::GroupView). Both give the same results and the same errors.
pub trait FieldSource {
    /// Its nested groups, as [`FieldSource::group`] gives them (`&Group` for a [`Group`]).
    type Group<'s>: FieldSource
    where
        Self: 's;

    /// Whether it has a variable `name` (any case).
    fn has_var(&self, name: &str) -> bool;
    /// The first value of `name` as text (see [`Group::get_char`]); a view decodes `%XX`
    /// escapes here.
    fn get_char(&self, name: &str) -> Result<Cow<'_, str>, FieldError>;
    /// All values of `name` as text, owned (an absent variable is an empty list).
    fn get_strings(&self, name: &str) -> Result<Vec<String>, FieldError>;
    /// The first value of `name` as an int (see [`Group::get_int`]).
    fn get_int(&self, name: &str) -> Result<i32, FieldError>;
    /// The first value of `name` as bytes (see [`Group::get_bin`]).
    fn get_bytes(&self, name: &str) -> Result<Bytes, FieldError>;
    /// The first group called `name` (any case).
    fn group<'s>(&'s self, name: &str) -> Option<Self::Group<'s>>;
    /// Every group called `name` (any case), in order.
    fn groups<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Self::Group<'s>> + 's;
    /// The group in the document model, name included.
    fn to_group(&self) -> Group;

    /// Like [`FieldSource::get_char`], but `None` when the variable is absent.
    fn opt_char(&self, name: &str) -> Result<Option<Cow<'_, str>>, FieldError> {
        if self.has_var(name) {
            self.get_char(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Like [`FieldSource::get_int`], but `None` when the variable is absent.
    fn opt_int(&self, name: &str) -> Result<Option<i32>, FieldError> {
        if self.has_var(name) {
            self.get_int(name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The group `name`, or a "missing" error.
    fn get_group(&self, name: &str) -> Result<Self::Group<'_>, FieldError> {
        self.group(name).ok_or_else(|| FieldError::missing(name))
    }
}

impl FieldSource for Group {
    type Group<'s> = &'s Group;

    fn has_var(&self, name: &str) -> bool {
        self.var(name).is_some()
    }
    fn get_char(&self, name: &str) -> Result<Cow<'_, str>, FieldError> {
        Group::get_char(self, name).map(Cow::Borrowed)
    }
    fn get_strings(&self, name: &str) -> Result<Vec<String>, FieldError> {
        match self.var(name) {
            None => Ok(Vec::new()),
            Some(v) => v
                .values
                .iter()
                .map(|val| match val {
                    Value::Char(s) => Ok(s.clone()),
                    other => Err(FieldError::wrong_type(name, "char", other)),
                })
                .collect(),
        }
    }
    fn get_int(&self, name: &str) -> Result<i32, FieldError> {
        Group::get_int(self, name)
    }
    fn get_bytes(&self, name: &str) -> Result<Bytes, FieldError> {
        Ok(match self.get_bin(name)? {
            Cow::Borrowed(b) => Bytes::copy_from_slice(b),
            Cow::Owned(v) => Bytes::from(v),
        })
    }
    fn group<'s>(&'s self, name: &str) -> Option<&'s Group> {
        Group::group(self, name)
    }
    fn groups<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Group> + 's {
        Group::groups(self, name)
    }
    fn to_group(&self) -> Group {
        self.clone()
    }
}

/// So that a `&Group` held in a variable can be passed as it is.
impl<T: FieldSource> FieldSource for &T {
    type Group<'s>
        = T::Group<'s>
    where
        Self: 's;

    fn has_var(&self, name: &str) -> bool {
        (**self).has_var(name)
    }
    fn get_char(&self, name: &str) -> Result<Cow<'_, str>, FieldError> {
        (**self).get_char(name)
    }
    fn get_strings(&self, name: &str) -> Result<Vec<String>, FieldError> {
        (**self).get_strings(name)
    }
    fn get_int(&self, name: &str) -> Result<i32, FieldError> {
        (**self).get_int(name)
    }
    fn get_bytes(&self, name: &str) -> Result<Bytes, FieldError> {
        (**self).get_bytes(name)
    }
    fn group<'s>(&'s self, name: &str) -> Option<T::Group<'s>> {
        (**self).group(name)
    }
    fn groups<'s>(&'s self, name: &'s str) -> impl Iterator<Item = T::Group<'s>> + 's {
        (**self).groups(name)
    }
    fn to_group(&self) -> Group {
        (**self).to_group()
    }
}

/// A type that maps to one named field of a group.
pub trait FieldValue: Sized {
    /// Writes the field into `group` as `name`.
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str);
    /// Reads the field `name` from `group`.
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError>;
    /// Whether the field is present in `group` (absent optional fields read as `None`).
    fn is_present<G: FieldSource>(group: &G, name: &str) -> bool {
        group.has_var(name)
    }
}

/// A typed view of a whole group, used for nested groups such as `reader {}`.
pub trait Record: Sized {
    /// Writes the fields into `group`.
    fn write_record<S: FieldSink>(&self, group: &mut S);
    /// Reads the fields from `group`.
    fn read_record<G: FieldSource>(group: &G) -> Result<Self, FieldError>;
}

/// A type that can stand in a list field (`Vec<T>`): values of one variable, or groups.
pub trait ListItem: Sized {
    /// Writes every item of `items` as `name`.
    fn write_all<S: FieldSink>(items: &[Self], group: &mut S, name: &str);
    /// Reads every item called `name`.
    fn read_all<G: FieldSource>(group: &G, name: &str) -> Result<Vec<Self>, FieldError>;
}

impl FieldValue for String {
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
        group.put_char(name, self);
    }
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
        group.get_char(name).map(Cow::into_owned)
    }
}

impl FieldValue for i32 {
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
        group.put_int(name, *self);
    }
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
        group.get_int(name)
    }
}

/// `yes` / `no` (reads also `true`/`false`, `1`/`0`, any case).
impl FieldValue for bool {
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
        group.put_char(name, if *self { "yes" } else { "no" });
    }
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
        let text = group.get_char(name)?;
        let is = |words: [&str; 3]| words.iter().any(|w| text.eq_ignore_ascii_case(w));
        if is(["yes", "true", "1"]) {
            Ok(true)
        } else if is(["no", "false", "0"]) {
            Ok(false)
        } else {
            Err(FieldError::invalid(name, format!("not yes/no: '{text}'")))
        }
    }
}

/// A `bin` field.
impl FieldValue for Bytes {
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
        group.put_bin(name, self);
    }
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
        group.get_bytes(name)
    }
}

/// A nested group kept as it is (`config {}`, `command {}`, `data {}`).
impl FieldValue for Group {
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
        group.put_whole_group(name, self);
    }
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
        group.get_group(name).map(|g| g.to_group())
    }
    fn is_present<G: FieldSource>(group: &G, name: &str) -> bool {
        group.group(name).is_some()
    }
}

impl<T: FieldValue> FieldValue for Option<T> {
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
        if let Some(v) = self {
            v.write_field(group, name);
        }
    }
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
        if T::is_present(group, name) {
            T::read_field(group, name).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl<T: ListItem> FieldValue for Vec<T> {
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
        T::write_all(self, group, name);
    }
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
        T::read_all(group, name)
    }
}

impl ListItem for String {
    fn write_all<S: FieldSink>(items: &[Self], group: &mut S, name: &str) {
        group.put_chars(name, items);
    }
    fn read_all<G: FieldSource>(group: &G, name: &str) -> Result<Vec<Self>, FieldError> {
        group.get_strings(name)
    }
}

impl<R: Record> ListItem for R {
    fn write_all<S: FieldSink>(items: &[Self], group: &mut S, name: &str) {
        for item in items {
            group.put_group(name, |g| item.write_record(g));
        }
    }
    fn read_all<G: FieldSource>(group: &G, name: &str) -> Result<Vec<Self>, FieldError> {
        // Counted first, so that the vector is allocated once.
        let mut out = Vec::with_capacity(group.groups(name).count());
        for (i, g) in group.groups(name).enumerate() {
            out.push(R::read_record(&g).map_err(|e| e.within(&format!("{name}[{i}]")))?);
        }
        Ok(out)
    }
}

macro_rules! id_field {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
                group.put_char(name, &self.to_string());
            }
            fn read_field<G: FieldSource>(
                group: &G,
                name: &str,
            ) -> Result<Self, FieldError> {
                let text = group.get_char(name)?;
                crate::ids::parse_object_id(&text)
                    .map(Self)
                    .ok_or_else(|| FieldError::invalid(name, format!("not an id: '{text}'")))
            }
        }
    )*};
}
id_field!(CardId, ClientId, ContextId, DriverId, ReaderId, ServiceId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_absent_is_none_present_bad_is_error() {
        let g = Group::new("d").with_char("Timeout", "abc");
        assert_eq!(Option::<i32>::read_field(&g, "Other").ok(), Some(None));
        let e = Option::<i32>::read_field(&g, "timeout").expect_err("not an int");
        assert_eq!(e.to_string(), "timeout: not an int: 'abc'");
    }

    #[test]
    fn ids_and_bools() {
        let mut g = Group::new("d");
        CardId(42).write_field(&mut g, "CardId");
        true.write_field(&mut g, "Taken");
        assert_eq!(g.get_char("CardId").ok(), Some("0x0000002a"));
        assert_eq!(CardId::read_field(&g, "cardid").ok(), Some(CardId(42)));
        assert_eq!(bool::read_field(&g, "taken").ok(), Some(true));
        let bad = Group::new("d").with_char("CardId", "card");
        assert_eq!(
            CardId::read_field(&bad, "CardId")
                .expect_err("bad")
                .to_string(),
            "CardId: not an id: 'card'"
        );
    }
}
