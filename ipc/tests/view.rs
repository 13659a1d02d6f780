//! The view ([`parse_view`]) against the document model ([`parse`]), typed messages read
//! through it ([`Received`]) against the envelope and the document model, and encoding an
//! envelope by reference against writing its document.
//!
//! The generator is described in `common/mod.rs`.

mod common;

use bytes::Bytes;
use chipcard_ipc::message::{
    CardAvailable, CardInfo, CardType, ClientReady, CommandCard, DriverReader, DriverReady,
    DriverStart, FromClient, FromDriver, ListReadersResponse, Notification, Outcome, ReaderInfo,
    ReaderList, ReaderStatus, SetNotify, TakeCard, TakeCardResponse, ToClient, ToDriver,
};
use chipcard_ipc::parse::{parse_view, parse_view_bytes, parse_with};
use chipcard_ipc::view::{EntryView, GroupView};
use chipcard_ipc::{
    parse, parse_bytes, write_compact, write_pretty, CardId, ClientId, DriverId, Entry, Envelope,
    ErrorCode, Group, Limits, ReaderId, Received, Value,
};
use common::{compact, document, Shape};
use proptest::prelude::*;

/// The view of `text` in the document model, or its error: what `parse` gives.
fn via_view(text: &str, limits: &Limits) -> Result<Group, chipcard_ipc::ParseError> {
    parse_view(text, limits).map(|v| v.to_group())
}

/// Every getter of `view` gives what the same getter of `model` gives, for every name that
/// is there (in another case too) and one that is not; and so for every nested group.
fn same_answers(model: &Group, view: GroupView<'_, '_>) -> Result<(), TestCaseError> {
    prop_assert_eq!(&*view.name(), model.name.as_str());
    let mut names: Vec<String> = model.variables().map(|v| v.name.clone()).collect();
    names.extend(names.clone().iter().map(|n| n.to_ascii_uppercase()));
    names.push("NoSuchName".to_owned());
    for name in &names {
        let err = |e: chipcard_ipc::FieldError| e.to_string();
        prop_assert_eq!(
            model.get_char(name).map(str::to_owned).map_err(err),
            view.get_char(name).map(|s| s.into_owned()).map_err(err),
            "get_char {}",
            name
        );
        prop_assert_eq!(
            model
                .get_chars(name)
                .map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>())
                .map_err(err),
            view.get_chars(name)
                .map(|v| v.into_iter().map(|s| s.into_owned()).collect::<Vec<_>>())
                .map_err(err),
            "get_chars {}",
            name
        );
        prop_assert_eq!(
            model.get_int(name).map_err(err),
            view.get_int(name).map_err(err),
            "get_int {}",
            name
        );
        prop_assert_eq!(
            model.get_bin(name).map(|b| b.into_owned()).map_err(err),
            view.get_bin(name).map_err(err),
            "get_bin {}",
            name
        );
        prop_assert_eq!(model.var(name).is_some(), view.var(name).is_some());
    }
    // In another order, after the hint has moved: still the same.
    for name in names.iter().rev() {
        prop_assert_eq!(
            model.get_int(name).map_err(|e| e.to_string()),
            view.get_int(name).map_err(|e| e.to_string())
        );
    }
    let groups: Vec<_> = view.all_groups().collect();
    prop_assert_eq!(groups.len(), model.all_groups().count());
    for (m, v) in model.all_groups().zip(groups) {
        prop_assert_eq!(
            model.group(&m.name).map(|g| g.to_owned()),
            view.group(&m.name).map(|g| g.to_group())
        );
        same_answers(m, v)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn view_reads_what_the_model_reads(doc in document(Shape::ANYTHING)) {
        for text in [compact(&doc), write_pretty(&doc)] {
            let model = parse(&text);
            prop_assert_eq!(via_view(&text, &Limits::default()), model.clone(), "text:\n{}", text);
            if let Ok(model) = model {
                let view = parse_view(&text, &Limits::default()).expect("parses");
                same_answers(&model, view.root())?;
            }
        }
    }

    #[test]
    fn view_reads_repeated_names_as_the_model(
        doc in document(Shape::READABLE),
        repeats in prop::collection::vec((0usize..8, 0usize..3), 1..6),
    ) {
        // Repeat some variable lines of the compact text further down their group (by
        // writing the lines again before each `}`), so that values append.
        let text = compact(&doc);
        let lines: Vec<&str> = text.lines().collect();
        let var_lines: Vec<usize> = (0..lines.len())
            .filter(|&k| lines[k].starts_with("char ") || lines[k].starts_with("int ")
                || lines[k].starts_with("bin "))
            .collect();
        let mut out = text.clone();
        if !var_lines.is_empty() {
            let mut copied: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
            for (pick, times) in &repeats {
                let line = lines[var_lines[pick % var_lines.len()]];
                for _ in 0..*times {
                    copied.push(line.to_owned());
                }
            }
            out = copied.join("\n") + "\n";
        }
        let model = parse(&out);
        prop_assert_eq!(via_view(&out, &Limits::default()), model.clone());
        if let Ok(model) = model {
            let view = parse_view(&out, &Limits::default()).expect("parses");
            same_answers(&model, view.root())?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn view_fails_as_the_model_on_strings(text in "\\PC{0,200}") {
        prop_assert_eq!(via_view(&text, &Limits::default()), parse(&text));
    }

    #[test]
    fn view_fails_as_the_model_on_grammar_soup(
        lines in prop::collection::vec(
            prop::collection::vec(
                prop::sample::select(vec![
                    "char", "int", "bin", " ", "\t", "\r", "=", ":", "\"", ",", ";", "#", "{",
                    "}", "%", "%4", "%41", "%ff", "&", "&20", "&zz", "a", "B9", "-", ".", "_",
                    "12", "-3", "0a", "ä", "\u{1}", "/", "\"x\"", "\"0a\"", "x=\"1\"",
                ]),
                0..12,
            ),
            0..12,
        )
    ) {
        let text: String = lines.iter().map(|l| l.concat() + "\n").collect();
        prop_assert_eq!(via_view(&text, &Limits::default()), parse(&text));
    }

    #[test]
    fn view_fails_as_the_model_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let limits = Limits::default();
        prop_assert_eq!(
            parse_view_bytes(&bytes, &limits).map(|v| v.to_group()),
            parse_bytes(&bytes, &limits)
        );
    }

    #[test]
    fn view_keeps_the_limits(text in "[a-z={}\" \n]{0,200}") {
        let limits = Limits { max_depth: 2, max_line: 16, max_document: 120 };
        prop_assert_eq!(via_view(&text, &limits), parse_with(&text, &limits));
    }
}

#[test]
fn view_entries_keep_their_order_and_names() {
    let text = "a&20b {\n  x=\"1\"\n  c {\n  }\n  X=\"2\"\n  y=%41\n}\n";
    let doc = parse_view(text, &Limits::default()).expect("parses");
    let g = doc.root().group("A B").expect("decoded name, any case");
    assert_eq!(g.name(), "a b");
    let entries: Vec<String> = g
        .entries()
        .map(|e| match e {
            EntryView::Var(v) => format!("{}={:?}", v.name(), v.values().collect::<Vec<_>>()),
            EntryView::Group(g) => format!("{} {{}}", g.name()),
        })
        .collect();
    assert_eq!(
        entries,
        [
            "x=[Char(\"1\"), Char(\"2\")]".to_owned(),
            "c {}".to_owned(),
            "y=[Char(\"A\")]".to_owned()
        ]
    );
    assert_eq!(g.var("x").map(|v| v.len()), Some(2));
    assert!(doc.root().group("missing").is_none());
    assert_eq!(doc.to_group(), parse(text).expect("parses"));
}

// ----- typed messages -----

fn sample_envelopes() -> Vec<Envelope> {
    let reader = ReaderInfo {
        reader_id: ReaderId(1),
        reader_name: "reader [1] (ä)".into(),
        reader_type: "emul".into(),
        driver_id: DriverId(1),
        driver_type: "emul".into(),
        reader_flags: vec!["KEYPAD".into(), "DISPLAY".into()],
        status: ReaderStatus::Down,
        slots: 2,
        cards: vec![CardInfo {
            card_id: CardId(3),
            atr: Bytes::from_static(&[0x3b, 0x00]),
            card_type: CardType::Memory,
            card_types: vec!["processorcard".into()],
            slot: 1,
            taken: true,
        }],
    };
    vec![
        Envelope::new(
            1,
            None,
            &CommandCard {
                card_id: CardId(0x2a),
                data: Bytes::from_static(&[0, 0xa4, 4, 0]),
                target: Some("reader".into()),
            },
        ),
        Envelope::new(
            2,
            None,
            &TakeCard {
                card_id: CardId(7),
                timeout: Some(-5),
            },
        ),
        Envelope::new(
            3,
            Some(2),
            &TakeCardResponse {
                outcome: Outcome::failed(ErrorCode::Busy, "taken by \"x\""),
                card_id: CardId(7),
            },
        ),
        Envelope::new(
            4,
            None,
            &ClientReady {
                application: "app 1.0".into(),
                chipcard_version: "1".into(),
                system: "Linux".into(),
                gwen_version: None,
            },
        ),
        Envelope::new(
            5,
            None,
            &SetNotify {
                flags: vec!["card:*".into(), "reader:up".into(), String::new()],
            },
        ),
        Envelope::new(
            6,
            Some(5),
            &ListReadersResponse {
                readers: vec![
                    reader.clone(),
                    ReaderInfo {
                        cards: Vec::new(),
                        ..reader
                    },
                ],
            },
        ),
        Envelope::new(
            7,
            None,
            &CardAvailable {
                card_id: CardId(1),
                card_type: CardType::Processor,
                card_types: vec!["DDV1".into()],
                reader_flags: Vec::new(),
                atr: Bytes::new(),
                reader_id: ReaderId(2),
                reader_name: "r".into(),
                driver_type: "pcsc".into(),
            },
        ),
        Envelope::new(
            8,
            None,
            &Notification {
                client_id: ClientId(4),
                ntype: "card".into(),
                ncode: "inserted".into(),
                data: Group::new("data")
                    .with_char("CardId", "0x00000001")
                    .with_group(Group::new("in&ner").with_bin("b", vec![1, 2])),
            },
        ),
        Envelope::new(
            9,
            None,
            &DriverReady {
                outcome: Outcome::ok("ready"),
                driver_id: DriverId(9),
                readers: ReaderList(vec![DriverReader {
                    reader_id: ReaderId(0),
                    name: "reader1".into(),
                    reader_flags: vec!["DISPLAY".into()],
                    slots: Some(1),
                    ..Default::default()
                }]),
            },
        ),
        Envelope::new(
            10,
            None,
            &DriverStart {
                driver_id: DriverId(9),
                config: Group::new("config")
                    .with_int("n", 3)
                    .with_char("name", "x y"),
            },
        ),
    ]
}

/// `Received::<M>` of `body`, and the envelope path, as comparable text.
fn both_ways(body: &[u8]) -> (String, String) {
    fn via_envelope<M: std::fmt::Debug>(
        body: &[u8],
        decode: impl Fn(&str, &Group) -> Result<M, chipcard_ipc::Error>,
    ) -> String {
        match Envelope::decode(body).and_then(|e| Ok((e.id, e.refid, decode(&e.cmd, &e.data)?))) {
            Ok((id, refid, m)) => format!("{id} {refid:?} {m:?}"),
            Err(e) => format!("error {e}"),
        }
    }
    fn received<M: chipcard_ipc::message::MessageSet + std::fmt::Debug>(body: &[u8]) -> String {
        match Received::<M>::decode(body) {
            Ok(r) => format!("{} {:?} {:?}", r.id, r.refid, r.message),
            Err(e) => format!("error {e}"),
        }
    }
    let a = [
        received::<FromClient>(body),
        received::<ToClient>(body),
        received::<ToDriver>(body),
        received::<FromDriver>(body),
    ]
    .join("\n");
    let b = [
        via_envelope(body, FromClient::decode::<Group>),
        via_envelope(body, ToClient::decode::<Group>),
        via_envelope(body, ToDriver::decode::<Group>),
        via_envelope(body, FromDriver::decode::<Group>),
    ]
    .join("\n");
    (a, b)
}

#[test]
fn received_reads_the_samples_as_the_envelope_path() {
    for env in sample_envelopes() {
        let body = env.encode();
        let (a, b) = both_ways(&body);
        assert_eq!(a, b, "{env:?}");
        assert!(a.lines().any(|l| !l.starts_with("error")), "{a}");
        // The pretty form too.
        let (a, b) = both_ways(write_pretty(&env.to_document()).as_bytes());
        assert_eq!(a, b, "{env:?}");
    }
}

/// Field-shaped data: the names the messages above use, with values of any type, and nested
/// `reader`/`card`/`Readers`/`Reader` groups; so that fields go missing, have the wrong type
/// or bad values, and repeat.
fn field_data() -> impl Strategy<Value = Group> {
    let names = prop::sample::select(vec![
        "CardId",
        "cardid",
        "ATR",
        "CardType",
        "CardTypes",
        "ReaderFlags",
        "ReaderId",
        "ReaderName",
        "DriverType",
        "DriverId",
        "ReaderType",
        "Status",
        "Slots",
        "Slot",
        "Taken",
        "data",
        "code",
        "Code",
        "text",
        "Text",
        "ErrorCode",
        "Timeout",
        "flag",
        "Application",
        "ChipcardVersion",
        "System",
        "GwenVersion",
        "clientId",
        "ntype",
        "ncode",
        "Name",
        "target",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "0x0000002a",
            "2a",
            "0X2A",
            " 7 ",
            "x",
            "",
            "yes",
            "No",
            "up",
            "ERROR",
            "OK",
            "REMOVED",
            "3b00",
            "3B0",
            "PROCESSOR",
            "-1",
            "99999999999",
            "%41",
            "a b",
        ])
        .prop_map(|s| Value::Char(s.to_owned())),
        any::<i32>().prop_map(Value::Int),
        prop::collection::vec(any::<u8>(), 0..4).prop_map(Value::Bin),
    ];
    let var = (names, prop::collection::vec(value, 1..3));
    let leaf = prop::collection::vec(var, 0..12).prop_map(|vars| {
        let mut g = Group::new("x");
        for (name, values) in vars {
            for v in values {
                g.append_value(name, v);
            }
        }
        g
    });
    leaf.prop_recursive(2, 24, 4, |inner| {
        (
            inner.clone(),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "reader", "card", "Readers", "Reader", "config", "data", "command",
                    ]),
                    inner,
                ),
                0..4,
            ),
        )
            .prop_map(|(mut g, subs)| {
                for (name, mut sub) in subs {
                    sub.name = name.to_owned();
                    g.entries.push(Entry::Group(sub));
                }
                g
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn received_reads_what_the_envelope_path_reads(
        id in prop::sample::select(vec!["1", " 2 ", "x", "", "4294967295", "4294967296"]),
        refid in prop::option::of(prop::sample::select(vec!["3", "-1"])),
        cmd in prop::sample::select(vec![
            "CommandCard", "takecard", "TakeCardResponse", "ClientReady", "SetNotify",
            "ListReadersResponse", "CardAvailable", "Notification", "DriverReady",
            "DriverStart", "Error", "Nope", "",
        ]),
        data in field_data(),
        with_data in any::<bool>(),
    ) {
        let mut ipc = Group::new("ipc").with_char("id", id).with_char("cmd", cmd);
        if let Some(refid) = refid {
            ipc.set_char("refid", refid);
        }
        let mut doc = Group::root().with_group(ipc);
        if with_data {
            let mut data = data;
            data.name = "data".to_owned();
            doc.entries.push(Entry::Group(data));
        }
        let mut body = Vec::new();
        write_compact(&doc, &mut body);
        let (a, b) = both_ways(&body);
        prop_assert_eq!(a, b, "body:\n{}", String::from_utf8_lossy(&body));
    }

    #[test]
    fn encoding_by_reference_writes_the_document(
        id in any::<u32>(),
        refid in prop::option::of(any::<u32>()),
        cmd in "\\PC{0,12}",
        data in document(Shape::ANYTHING),
    ) {
        let env = Envelope { id, refid, cmd, data };
        let mut want = Vec::new();
        write_compact(&env.to_document(), &mut want);
        prop_assert_eq!(env.encode().to_vec(), want);
    }
}
