//! The group-format writers (PROTOCOL §1). PLACEHOLDER: being written.

use crate::model::Group;

/// The pretty form, byte-for-byte as libgwenhywfar 5 writes it.
pub fn write_pretty(doc: &Group) -> String {
    let _ = doc;
    todo!("writer")
}

/// The compact wire form, appended to `out`.
pub fn write_compact(doc: &Group, out: &mut Vec<u8>) {
    let _ = (doc, out);
    todo!("writer")
}
