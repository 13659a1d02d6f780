//! Where in a document's text a key is: for errors about values (a configuration key that
//! parses but is wrong) to carry a line and column, as syntax errors do.

use std::borrow::Cow;

use crate::parse::{parse_view, Limits};

/// The 1-based line and column (in characters) of `key` in the group-format `text`.
///
/// `key` is a path from the top, segments separated by `/`: a group or variable name, or
/// `name[i]` for the i-th (from 0) group of that name, as in `server/socketMode` or
/// `driver[1]/reader/name`. A segment without an index is the first group of that name; the
/// last segment may name a variable or a group. `None` when the text does not parse or the
/// path leads nowhere.
///
/// ```
/// use chipcard_ipc::locate::position;
/// let text = "server {\n  socketMode=\"abc\"\n}\ndriver {\n}\ndriver {\n  type=\"x\"\n}\n";
/// assert_eq!(position(text, "server/socketMode"), Some((2, 3)));
/// assert_eq!(position(text, "driver[1]/type"), Some((7, 3)));
/// assert_eq!(position(text, "driver[1]"), Some((6, 1)));
/// assert_eq!(position(text, "driver[2]"), None);
/// ```
pub fn position(text: &str, key: &str) -> Option<(usize, usize)> {
    let doc = parse_view(text, &Limits::default()).ok()?;
    let mut group = doc.root();
    let mut segments = key.split('/').peekable();
    while let Some(segment) = segments.next() {
        let (name, index) = split_index(segment)?;
        let last = segments.peek().is_none();
        if last && index.is_none() {
            if let Some(var) = group.var(name) {
                return offset_in(text, var.name());
            }
        }
        group = group.groups(name).nth(index.unwrap_or(0))?;
        if last {
            return match group.name() {
                Cow::Borrowed(name) => offset_in(text, name),
                Cow::Owned(_) => None,
            };
        }
    }
    None
}

/// `name[3]` → (`name`, Some(3)); `name` → (`name`, None).
fn split_index(segment: &str) -> Option<(&str, Option<usize>)> {
    match segment.strip_suffix(']').and_then(|s| s.split_once('[')) {
        Some((name, index)) => Some((name, Some(index.parse().ok()?))),
        None => Some((segment, None)),
    }
}

/// The line and column of `part`, a slice of `text`.
fn offset_in(text: &str, part: &str) -> Option<(usize, usize)> {
    let offset = (part.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (offset <= text.len()).then(|| crate::parse::position_of(text, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_where_they_stand() {
        let text = "# c\ncardDir=\"/x\"\nserver {\n  socket=\"/s\"\n  socketMode=\"abc\"\n}\n\
                    driver {\n  type=\"emul\"\n}\ndriver {\n  name=\"b\"\n  reader {\n    \
                    name=\"r\"\n    card {\n      slot=\"x\"\n    }\n  }\n}\n";
        assert_eq!(position(text, "cardDir"), Some((2, 1)));
        assert_eq!(position(text, "server/socketMode"), Some((5, 3)));
        assert_eq!(position(text, "driver[0]/type"), Some((8, 3)));
        assert_eq!(position(text, "driver[1]/reader/card/slot"), Some((15, 7)));
        assert_eq!(position(text, "driver[1]/reader[0]/name"), Some((13, 5)));
        assert_eq!(position(text, "driver[1]"), Some((10, 1)));
        // A missing key is reported at the group that should hold it.
        assert_eq!(position(text, "driver[1]/type"), None);
        assert_eq!(position(text, "driver[x]/type"), None);
        assert_eq!(position("not { valid", "not"), None);
    }
}
