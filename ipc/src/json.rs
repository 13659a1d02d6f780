//! A faithful JSON view of a document (feature `json`).
//!
//! Every group, the root included, is an object
//!
//! ```json
//! {"type": "group", "name": "data", "entries": [ ... ]}
//! ```
//!
//! with its entries in order (groups of the same name stay separate entries). Every variable
//! is an object
//!
//! ```json
//! {"type": "var", "name": "ReaderFlags", "values": ["DISPLAY", "KEYPAD"]}
//! ```
//!
//! whose values keep their types: a char value is a JSON string, an int value a JSON number,
//! and a bin value an object `{"bin": "00FF10"}` with upper-case hex. Names keep their case.
//! The root's name is `""`. [`from_json`] reads this shape back, so the view loses nothing.

use serde_json::{json, Map, Value as Json};

use crate::model::{Entry, Group, Value, Variable};

/// The JSON view of `doc` (see the module documentation for the shape).
///
/// ```
/// use chipcard_ipc::{json::to_json, Group};
/// use serde_json::json;
/// let doc = Group::root().with_group(Group::new("data").with_int("Slot", 1).with_bin("ATR", vec![0x3b]));
/// assert_eq!(
///     to_json(&doc),
///     json!({"type": "group", "name": "", "entries": [
///         {"type": "group", "name": "data", "entries": [
///             {"type": "var", "name": "Slot", "values": [1]},
///             {"type": "var", "name": "ATR", "values": [{"bin": "3B"}]},
///         ]},
///     ]})
/// );
/// ```
pub fn to_json(doc: &Group) -> Json {
    let entries: Vec<Json> = doc
        .entries
        .iter()
        .map(|e| match e {
            Entry::Group(g) => to_json(g),
            Entry::Var(v) => var_to_json(v),
        })
        .collect();
    json!({"type": "group", "name": doc.name, "entries": entries})
}

fn var_to_json(v: &Variable) -> Json {
    let values: Vec<Json> = v
        .values
        .iter()
        .map(|value| match value {
            Value::Char(s) => Json::String(s.clone()),
            Value::Int(i) => Json::from(*i),
            Value::Bin(b) => json!({"bin": hex::encode_upper(b)}),
        })
        .collect();
    json!({"type": "var", "name": v.name, "values": values})
}

/// A JSON value that is not the shape [`to_json`] writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct JsonError {
    /// Where in the JSON, e.g. `entries[2].values[0]`.
    pub path: String,
    /// What is wrong there.
    pub reason: String,
}

fn err(path: &str, reason: impl Into<String>) -> JsonError {
    JsonError {
        path: if path.is_empty() {
            "(root)".to_owned()
        } else {
            path.to_owned()
        },
        reason: reason.into(),
    }
}

/// Reads the JSON view back into a document: the inverse of [`to_json`].
pub fn from_json(json: &Json) -> Result<Group, JsonError> {
    group_from_json(json, "")
}

fn object<'a>(json: &'a Json, path: &str) -> Result<&'a Map<String, Json>, JsonError> {
    json.as_object()
        .ok_or_else(|| err(path, "expected an object"))
}

fn string_field<'a>(
    obj: &'a Map<String, Json>,
    key: &str,
    path: &str,
) -> Result<&'a str, JsonError> {
    obj.get(key)
        .and_then(Json::as_str)
        .ok_or_else(|| err(path, format!("expected a string field '{key}'")))
}

fn array_field<'a>(
    obj: &'a Map<String, Json>,
    key: &str,
    path: &str,
) -> Result<&'a [Json], JsonError> {
    obj.get(key)
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| err(path, format!("expected an array field '{key}'")))
}

fn group_from_json(json: &Json, path: &str) -> Result<Group, JsonError> {
    let obj = object(json, path)?;
    if string_field(obj, "type", path)? != "group" {
        return Err(err(path, "expected \"type\": \"group\""));
    }
    let mut group = Group::new(string_field(obj, "name", path)?);
    for (k, entry) in array_field(obj, "entries", path)?.iter().enumerate() {
        let at = format!(
            "{path}{}entries[{k}]",
            if path.is_empty() { "" } else { "." }
        );
        let e = object(entry, &at)?;
        match string_field(e, "type", &at)? {
            "group" => group
                .entries
                .push(Entry::Group(group_from_json(entry, &at)?)),
            "var" => group.entries.push(Entry::Var(var_from_json(e, &at)?)),
            other => return Err(err(&at, format!("unknown entry type '{other}'"))),
        }
    }
    Ok(group)
}

fn var_from_json(obj: &Map<String, Json>, path: &str) -> Result<Variable, JsonError> {
    let name = string_field(obj, "name", path)?.to_owned();
    let mut values = Vec::new();
    for (k, v) in array_field(obj, "values", path)?.iter().enumerate() {
        let at = format!("{path}.values[{k}]");
        values.push(match v {
            Json::String(s) => Value::Char(s.clone()),
            Json::Number(n) => Value::Int(
                n.as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(|| err(&at, "expected a 32-bit integer"))?,
            ),
            Json::Object(o) => {
                let hex = o
                    .get("bin")
                    .and_then(Json::as_str)
                    .ok_or_else(|| err(&at, "expected {\"bin\": \"<hex>\"}"))?;
                Value::Bin(hex::decode(hex).map_err(|_| err(&at, "expected hex digits"))?)
            }
            _ => return Err(err(&at, "expected a string, a number or {\"bin\": ...}")),
        });
    }
    Ok(Variable { name, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_inverse() {
        let mut data = Group::new("data");
        data.set_chars("ReaderFlags", &["DISPLAY", "KEYPAD"]);
        data.set_values(
            "m",
            vec![Value::Int(-1), Value::Char("5".into()), Value::Bin(vec![])],
        );
        let doc = Group::root()
            .with_group(data)
            .with_group(Group::new("r"))
            .with_group(Group::new("R").with_char("x", "é\"\n"));
        let j = to_json(&doc);
        assert_eq!(
            j["entries"][0]["entries"][0],
            json!({"type": "var", "name": "ReaderFlags", "values": ["DISPLAY", "KEYPAD"]})
        );
        assert_eq!(
            j["entries"][0]["entries"][1]["values"],
            json!([-1, "5", {"bin": ""}])
        );
        assert_eq!(j["entries"][2]["name"], json!("R"));
        assert_eq!(from_json(&j), Ok(doc));
    }

    #[test]
    fn errors_name_the_place() {
        let j = json!({"type": "group", "name": "", "entries": [
            {"type": "var", "name": "x", "values": [1.5]}
        ]});
        let e = from_json(&j).expect_err("1.5 is not an int");
        assert_eq!(
            e.to_string(),
            "entries[0].values[0]: expected a 32-bit integer"
        );
        let e = from_json(&json!([])).expect_err("not an object");
        assert_eq!(e.to_string(), "(root): expected an object");
    }
}
