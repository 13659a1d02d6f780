//! Document generators shared by the property tests (`roundtrip.rs`, `gwen.rs`).
//!
//! A generated document is a tree of groups (depth up to 4, up to 8 entries per group)
//! holding variables and groups in any order. What goes into it is chosen to be hostile to a
//! writer and a reader:
//!
//! - **Char values**: printable ASCII; the characters the format gives meaning to
//!   (`% " # , ; { } = : &` and blanks, leading and trailing); control characters (CR, LF,
//!   TAB, ...); non-ASCII text (any Unicode scalar but NUL); empty values; and, rarely,
//!   values of 1000 to 4000 characters.
//! - **Int values**: any `i32`, weighted towards 0, the extremes and small numbers.
//! - **Bin values**: 0 to 300 arbitrary bytes (an extended APDU's worth is not needed here).
//! - **Variable names**: the whole alphabet the grammar allows (`A-Z a-z 0-9 _ - .`),
//!   including the type words `char`, `int`, `bin` as names. Names are unique within a group,
//!   case-insensitively, since a repeated name appends when read.
//! - **Group names**: either names from the variable-name alphabet, or (in hostile mode) any
//!   non-empty string of Unicode scalars but NUL, so that `&XX` escaping of spaces, `&`, `#`,
//!   `{`, LF and non-ASCII bytes is exercised. Groups with the same name (any case) are
//!   common, because names are drawn from a small pool half of the time.
//! - **Variables**: one to four values of one type; in "anything" mode also values of mixed
//!   types and variables without values, which only the writer can be asked about.
//!
//! NUL is left out everywhere: libgwenhywfar keeps names and char values as C strings.
#![allow(dead_code)]

use chipcard_ipc::{Entry, Group, Value, Variable};
use proptest::prelude::*;

/// What the generator may produce.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Group names may be any non-empty string (else only `A-Z a-z 0-9 _ - .`).
    pub hostile_group_names: bool,
    /// Variables may have values of mixed types, or none at all.
    pub mixed_and_empty_vars: bool,
}

impl Shape {
    /// Documents that the grammar reads back exactly (but see `pretty_reads_back`).
    pub const READABLE: Shape = Shape {
        hostile_group_names: true,
        mixed_and_empty_vars: false,
    };
    /// Anything the model can hold, for the writer alone.
    pub const ANYTHING: Shape = Shape {
        hostile_group_names: true,
        mixed_and_empty_vars: true,
    };
}

/// A variable name from the full alphabet of the grammar.
pub fn var_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9_.-]{1,12}",
        1 => prop::sample::select(vec![
            "char", "int", "bin", "CHAR", "a", "A", "CardId", "x.y", "_", "-", ".", "9",
            "ReaderFlags",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A group name: from the variable-name alphabet, or (hostile) any non-empty string.
pub fn group_name(hostile: bool) -> BoxedStrategy<String> {
    let plain = prop_oneof![
        1 => "[A-Za-z0-9_.-]{1,10}",
        1 => prop::sample::select(vec!["reader", "Reader", "READER", "card", "data", "ipc", "char"])
            .prop_map(str::to_owned),
    ];
    if !hostile {
        return plain.boxed();
    }
    prop_oneof![
        2 => plain,
        1 => "[ -~]{1,10}",
        1 => "[^\u{0}]{1,6}",
        1 => prop::sample::select(vec![
            "a b", "a&b", "&20", "%", "%41", "a,b", "#x", "{", "}", "a\nb", "x\r", "ä", "😀",
            "*?", "a=b", "\t",
        ])
        .prop_map(str::to_owned),
    ]
    .boxed()
}

/// A hostile char value.
pub fn char_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,24}",
        2 => "[%\"#,;{}=:& \t\\\\a-z]{0,16}",
        2 => "[^\u{0}]{0,12}",
        1 => "[\u{1}-\u{1f}\u{7f}]{0,6}",
        1 => prop::sample::select(vec![
            "", " ", "  leading", "trailing  ", "%", "%%", "%4", "%zz", "\"", "\"\"", "a\"b",
            "#", "# c", ",", ";", "{", "}", "} #x", "a\nb", "\r\n", "ä", "€", "😀", "\\",
            "\\\"", "&20",
        ])
        .prop_map(str::to_owned),
        1 => "[ -~]{1000,4000}",
    ]
}

/// An int value, weighted towards edge cases.
pub fn int_value() -> impl Strategy<Value = i32> {
    prop_oneof![
        2 => any::<i32>(),
        1 => prop::sample::select(vec![0, 1, -1, i32::MIN, i32::MAX, 10, -10]),
        1 => -1000i32..1000,
    ]
}

/// Values of one type.
pub fn same_type_values() -> impl Strategy<Value = Vec<Value>> {
    prop_oneof![
        3 => prop::collection::vec(char_value().prop_map(Value::Char), 1..4),
        1 => prop::collection::vec(int_value().prop_map(Value::Int), 1..4),
        1 => prop::collection::vec(
            prop::collection::vec(any::<u8>(), 0..300).prop_map(Value::Bin),
            1..4
        ),
    ]
}

/// Any single value.
pub fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        char_value().prop_map(Value::Char),
        int_value().prop_map(Value::Int),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bin),
    ]
}

fn variable(shape: Shape) -> BoxedStrategy<Variable> {
    let values = if shape.mixed_and_empty_vars {
        prop_oneof![
            6 => same_type_values(),
            1 => prop::collection::vec(any_value(), 2..4),
            1 => Just(Vec::new()),
        ]
        .boxed()
    } else {
        same_type_values().boxed()
    };
    (var_name(), values)
        .prop_map(|(name, values)| Variable { name, values })
        .boxed()
}

/// Drops variables whose name (any case) came earlier in the same group.
fn unique_vars(mut g: Group) -> Group {
    let mut seen = std::collections::HashSet::new();
    g.entries.retain(|e| match e {
        Entry::Var(v) => seen.insert(v.name.to_ascii_lowercase()),
        Entry::Group(_) => true,
    });
    g
}

/// A document (a root group) of the given shape.
pub fn document(shape: Shape) -> impl Strategy<Value = Group> {
    let leaf = prop::collection::vec(variable(shape).prop_map(Entry::Var), 0..6);
    let name = group_name(shape.hostile_group_names);
    let entries = leaf.prop_recursive(4, 48, 8, move |inner| {
        prop::collection::vec(
            prop_oneof![
                2 => variable(shape).prop_map(Entry::Var),
                1 => (name.clone(), inner).prop_map(|(name, entries)| {
                    Entry::Group(unique_vars(Group { name, entries }))
                }),
            ],
            0..8,
        )
    });
    entries.prop_map(|entries| {
        unique_vars(Group {
            name: String::new(),
            entries,
        })
    })
}

/// Calls `f` on every group of the document, root included.
pub fn visit(g: &Group, f: &mut impl FnMut(&Group)) {
    f(g);
    for sub in g.all_groups() {
        visit(sub, f);
    }
}

/// True when some group (below the root) has a name for which `bad` holds.
pub fn any_group_name(doc: &Group, bad: impl Fn(&str) -> bool) -> bool {
    let mut found = false;
    for sub in doc.all_groups() {
        visit(sub, &mut |g| found |= bad(&g.name));
    }
    found
}

/// The pretty form reads back unless a group name holds a line feed (written raw in the
/// closing comment, as libgwenhywfar does).
pub fn pretty_reads_back(doc: &Group) -> bool {
    !any_group_name(doc, |n| n.contains('\n'))
}

/// The compact form as a string.
pub fn compact(doc: &Group) -> String {
    let mut out = Vec::new();
    chipcard_ipc::write_compact(doc, &mut out);
    String::from_utf8(out).expect("compact output is UTF-8")
}

/// The document without variables that have no values.
pub fn without_empty_vars(mut g: Group) -> Group {
    g.entries
        .retain(|e| !matches!(e, Entry::Var(v) if v.values.is_empty()));
    for e in &mut g.entries {
        if let Entry::Group(sub) = e {
            *sub = without_empty_vars(std::mem::take(sub));
        }
    }
    g
}

/// True when some variable has values of more than one type.
pub fn has_mixed_vars(doc: &Group) -> bool {
    let mut found = false;
    visit(doc, &mut |g| {
        found |= g.variables().any(|v| {
            v.values
                .windows(2)
                .any(|w| w[0].value_type() != w[1].value_type())
        })
    });
    found
}
