//! How typed message fields map to group-format variables and groups.
//!
//! Each field type knows how to write itself into a group under a name and read itself back,
//! with errors that name the field. Multi-value variables are `Vec<String>`; repeated groups
//! are `Vec<R>` of a [`Record`]; absent fields are `Option<T>`.

use bytes::Bytes;

use crate::error::FieldError;
use crate::ids::{CardId, ClientId, ContextId, DriverId, ReaderId, ServiceId};
use crate::model::{Group, Value};

/// A type that maps to one named field of a group.
pub trait FieldValue: Sized {
    /// Writes the field into `group` as `name`.
    fn write_field(&self, group: &mut Group, name: &str);
    /// Reads the field `name` from `group`.
    fn read_field(group: &Group, name: &str) -> Result<Self, FieldError>;
    /// Whether the field is present in `group` (absent optional fields read as `None`).
    fn is_present(group: &Group, name: &str) -> bool {
        group.var(name).is_some()
    }
}

/// A typed view of a whole group, used for nested groups such as `reader {}`.
pub trait Record: Sized {
    /// Writes the fields into `group`.
    fn write_record(&self, group: &mut Group);
    /// Reads the fields from `group`.
    fn read_record(group: &Group) -> Result<Self, FieldError>;
}

/// A type that can stand in a list field (`Vec<T>`): values of one variable, or groups.
pub trait ListItem: Sized {
    /// Writes every item of `items` as `name`.
    fn write_all(items: &[Self], group: &mut Group, name: &str);
    /// Reads every item called `name`.
    fn read_all(group: &Group, name: &str) -> Result<Vec<Self>, FieldError>;
}

impl FieldValue for String {
    fn write_field(&self, group: &mut Group, name: &str) {
        group.set_char(name, self.clone());
    }
    fn read_field(group: &Group, name: &str) -> Result<Self, FieldError> {
        group.get_char(name).map(str::to_owned)
    }
}

impl FieldValue for i32 {
    fn write_field(&self, group: &mut Group, name: &str) {
        group.set_int(name, *self);
    }
    fn read_field(group: &Group, name: &str) -> Result<Self, FieldError> {
        group.get_int(name)
    }
}

/// `yes` / `no` (reads also `true`/`false`, `1`/`0`, any case).
impl FieldValue for bool {
    fn write_field(&self, group: &mut Group, name: &str) {
        group.set_char(name, if *self { "yes" } else { "no" });
    }
    fn read_field(group: &Group, name: &str) -> Result<Self, FieldError> {
        let text = group.get_char(name)?;
        match text.to_ascii_lowercase().as_str() {
            "yes" | "true" | "1" => Ok(true),
            "no" | "false" | "0" => Ok(false),
            _ => Err(FieldError::invalid(name, format!("not yes/no: '{text}'"))),
        }
    }
}

/// A `bin` field.
impl FieldValue for Bytes {
    fn write_field(&self, group: &mut Group, name: &str) {
        group.set_bin(name, self.to_vec());
    }
    fn read_field(group: &Group, name: &str) -> Result<Self, FieldError> {
        group.get_bin(name).map(|b| Bytes::copy_from_slice(&b))
    }
}

/// A nested group kept as it is (`config {}`, `command {}`, `data {}`).
impl FieldValue for Group {
    fn write_field(&self, group: &mut Group, name: &str) {
        let mut g = self.clone();
        g.name = name.to_owned();
        group.add_group(g);
    }
    fn read_field(group: &Group, name: &str) -> Result<Self, FieldError> {
        group.get_group(name).cloned()
    }
    fn is_present(group: &Group, name: &str) -> bool {
        group.group(name).is_some()
    }
}

impl<T: FieldValue> FieldValue for Option<T> {
    fn write_field(&self, group: &mut Group, name: &str) {
        if let Some(v) = self {
            v.write_field(group, name);
        }
    }
    fn read_field(group: &Group, name: &str) -> Result<Self, FieldError> {
        if T::is_present(group, name) {
            T::read_field(group, name).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl<T: ListItem> FieldValue for Vec<T> {
    fn write_field(&self, group: &mut Group, name: &str) {
        T::write_all(self, group, name);
    }
    fn read_field(group: &Group, name: &str) -> Result<Self, FieldError> {
        T::read_all(group, name)
    }
}

impl ListItem for String {
    fn write_all(items: &[Self], group: &mut Group, name: &str) {
        group.set_values(name, items.iter().map(|s| Value::Char(s.clone())).collect());
    }
    fn read_all(group: &Group, name: &str) -> Result<Vec<Self>, FieldError> {
        group
            .get_chars(name)
            .map(|v| v.into_iter().map(str::to_owned).collect())
    }
}

impl<R: Record> ListItem for R {
    fn write_all(items: &[Self], group: &mut Group, name: &str) {
        for item in items {
            let mut g = Group::new(name);
            item.write_record(&mut g);
            group.add_group(g);
        }
    }
    fn read_all(group: &Group, name: &str) -> Result<Vec<Self>, FieldError> {
        group
            .groups(name)
            .enumerate()
            .map(|(i, g)| R::read_record(g).map_err(|e| e.within(&format!("{name}[{i}]"))))
            .collect()
    }
}

macro_rules! id_field {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn write_field(&self, group: &mut Group, name: &str) {
                group.set_char(name, self.to_string());
            }
            fn read_field(group: &Group, name: &str) -> Result<Self, FieldError> {
                let text = group.get_char(name)?;
                crate::ids::parse_object_id(text)
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
