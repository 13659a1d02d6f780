//! What the benchmarks measure, shared by `group_format.rs` (criterion),
//! `group_format_min.rs` (minimum of many batches) and chipcard-bench's part a
//! (`bench/src/formats.rs` includes this file, so keep it free of paths relative to this
//! crate): a `CommandCard` with a 255-byte APDU, a
//! `CardAvailable` push, a `ListReadersResponse` with 16 readers (half of them holding a card),
//! each a whole envelope built with the typed messages and `Envelope::to_document()`, and the
//! three in a row ("mix"); and the same content as serde structs for serde_json (bin fields as
//! hex strings, decoded to bytes, as the group format does).
//!
//! Reading: the group format reads each envelope's frame body into its typed message
//! (`Received<FromClient>` / `Received<ToClient>`), serde_json reads the JSON text into the
//! serde structs: typed on both sides. The typed messages check and convert more than the
//! serde structs do (ids to numbers, card types and reader status to enums, `Taken` to a bool).
#![allow(dead_code)]

use std::hint::black_box;

use bytes::Bytes;
use chipcard_ipc::message::{
    CardAvailable, CardInfo, CardType, CommandCard, FromClient, ListReadersResponse, MessageSet,
    ReaderInfo, ReaderStatus, ToClient,
};
use chipcard_ipc::{write_compact, CardId, DriverId, Envelope, Group, ReaderId, Received};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

// ----- the content, as typed messages -----

pub fn command_card() -> Envelope {
    let mut apdu = vec![0x00, 0xD6, 0x00, 0x00, 0xFA];
    apdu.extend((0..250u32).map(|i| (i * 7 + 3) as u8));
    Envelope::new(
        42,
        None,
        &CommandCard {
            card_id: CardId(0x2a),
            data: Bytes::from(apdu),
            target: None,
        },
    )
}

pub fn card_available() -> Envelope {
    Envelope::new(
        43,
        None,
        &CardAvailable {
            card_id: CardId(0x2a),
            card_type: CardType::Processor,
            card_types: vec!["DDV1".into(), "processorcard".into()],
            reader_flags: vec!["DISPLAY".into(), "KEYPAD".into()],
            atr: Bytes::from_static(&[
                0x3B, 0xFF, 0x18, 0x00, 0xFF, 0x81, 0x31, 0xFE, 0x45, 0x65, 0x63, 0x11, 0x05, 0x40,
                0x02, 0x50, 0x00, 0x10, 0x55, 0x10, 0x03, 0x03, 0x05, 0x00, 0x43,
            ]),
            reader_id: ReaderId(3),
            reader_name: "Towitoko Chip Drive Micro".into(),
            driver_type: "ctapi".into(),
        },
    )
}

pub fn list_readers() -> Envelope {
    let readers = (0..16u32)
        .map(|n| ReaderInfo {
            reader_id: ReaderId(n + 1),
            reader_name: format!("Virtual reader {n}"),
            reader_type: "emul".into(),
            driver_id: DriverId(n / 4 + 1),
            driver_type: "emul".into(),
            reader_flags: vec!["KEYPAD".into(), "DISPLAY".into()],
            status: ReaderStatus::Up,
            slots: 1,
            cards: if n % 2 == 0 {
                vec![CardInfo {
                    card_id: CardId(0x100 + n),
                    atr: Bytes::from_static(&[0x3B, 0x67, 0x00, 0x00, 0x2D, 0x20, 0x36, 0x00]),
                    card_type: CardType::Processor,
                    card_types: vec!["processorcard".into(), "DDV0".into()],
                    slot: 0,
                    taken: n % 4 == 0,
                }]
            } else {
                Vec::new()
            },
        })
        .collect();
    Envelope::new(7, Some(6), &ListReadersResponse { readers })
}

// ----- the same content as serde structs -----

fn hex_ser<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode_upper(b))
}

fn hex_de<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = <&str>::deserialize(d)?;
    hex::decode(s).map_err(serde::de::Error::custom)
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct JIpc {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    refid: Option<String>,
    cmd: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct JEnvelope<T> {
    ipc: JIpc,
    data: T,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[serde(rename_all = "PascalCase")]
struct JCommandCard {
    card_id: String,
    #[serde(
        rename = "data",
        serialize_with = "hex_ser",
        deserialize_with = "hex_de"
    )]
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[serde(rename_all = "PascalCase")]
struct JCardAvailable {
    card_id: String,
    card_type: String,
    card_types: Vec<String>,
    reader_flags: Vec<String>,
    #[serde(
        rename = "ATR",
        serialize_with = "hex_ser",
        deserialize_with = "hex_de"
    )]
    atr: Vec<u8>,
    reader_id: String,
    reader_name: String,
    driver_type: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[serde(rename_all = "PascalCase")]
struct JCard {
    card_id: String,
    #[serde(
        rename = "ATR",
        serialize_with = "hex_ser",
        deserialize_with = "hex_de"
    )]
    atr: Vec<u8>,
    card_type: String,
    card_types: Vec<String>,
    slot: i32,
    taken: String,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
#[serde(rename_all = "PascalCase")]
struct JReader {
    reader_id: String,
    reader_name: String,
    reader_type: String,
    driver_id: String,
    driver_type: String,
    reader_flags: Vec<String>,
    status: String,
    slots: i32,
    #[serde(rename = "card")]
    cards: Vec<JCard>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct JListReaders {
    reader: Vec<JReader>,
}

fn jipc(e: &Envelope) -> JIpc {
    JIpc {
        id: e.id.to_string(),
        refid: e.refid.map(|r| r.to_string()),
        cmd: e.cmd.clone(),
    }
}

fn j_command_card() -> JEnvelope<JCommandCard> {
    let e = command_card();
    let data = e.data.get_bin("data").expect("data").into_owned();
    JEnvelope {
        ipc: jipc(&e),
        data: JCommandCard {
            card_id: CardId(0x2a).to_string(),
            data,
        },
    }
}

fn j_card_available() -> JEnvelope<JCardAvailable> {
    let e = card_available();
    let d = &e.data;
    let s = |n: &str| d.get_char(n).expect(n).to_owned();
    let v = |n: &str| {
        d.get_chars(n)
            .expect(n)
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    JEnvelope {
        ipc: jipc(&e),
        data: JCardAvailable {
            card_id: s("CardId"),
            card_type: s("CardType"),
            card_types: v("CardTypes"),
            reader_flags: v("ReaderFlags"),
            atr: d.get_bin("ATR").expect("ATR").into_owned(),
            reader_id: s("ReaderId"),
            reader_name: s("ReaderName"),
            driver_type: s("DriverType"),
        },
    }
}

fn j_list_readers() -> JEnvelope<JListReaders> {
    let e = list_readers();
    let reader = e
        .data
        .groups("reader")
        .map(|r| {
            let s = |n: &str| r.get_char(n).expect(n).to_owned();
            JReader {
                reader_id: s("ReaderId"),
                reader_name: s("ReaderName"),
                reader_type: s("ReaderType"),
                driver_id: s("DriverId"),
                driver_type: s("DriverType"),
                reader_flags: r
                    .get_chars("ReaderFlags")
                    .expect("flags")
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
                status: s("Status"),
                slots: r.get_int("Slots").expect("Slots"),
                cards: r
                    .groups("card")
                    .map(|c| JCard {
                        card_id: c.get_char("CardId").expect("CardId").to_owned(),
                        atr: c.get_bin("ATR").expect("ATR").into_owned(),
                        card_type: c.get_char("CardType").expect("CardType").to_owned(),
                        card_types: c
                            .get_chars("CardTypes")
                            .expect("CardTypes")
                            .into_iter()
                            .map(str::to_owned)
                            .collect(),
                        slot: c.get_int("Slot").expect("Slot"),
                        taken: c.get_char("Taken").expect("Taken").to_owned(),
                    })
                    .collect(),
            }
        })
        .collect();
    JEnvelope {
        ipc: jipc(&e),
        data: JListReaders { reader },
    }
}

// ----- the cases -----

/// Reads frame bodies into typed messages.
pub type TypedRead = dyn Fn(&[Vec<u8>]);

/// One case: the document, its texts, and the serde side.
pub struct Case {
    pub name: &'static str,
    pub docs: Vec<Group>,
    /// All envelopes as one text (a document of one `ipc {}` and `data {}` after another).
    pub compact: String,
    /// Each envelope's frame body (its compact text).
    pub bodies: Vec<Vec<u8>>,
    /// Reads the bodies into typed messages (`Received<FromClient>` or `Received<ToClient>`):
    /// the counterpart of `json_read`.
    pub typed_read: Box<TypedRead>,
    pub json: String,
    pub json_write: Box<dyn Fn() -> Vec<u8>>,
    pub json_read: Box<dyn Fn(&str)>,
}

pub fn compact_text(docs: &[Group]) -> String {
    let mut out = Vec::new();
    for d in docs {
        write_compact(d, &mut out);
    }
    String::from_utf8(out).expect("UTF-8")
}

/// Reads one body as a message of the set `M`.
fn typed<M: MessageSet>(body: &[u8]) -> Received<M> {
    Received::<M>::decode(body).expect("typed message")
}

fn case<T, M>(name: &'static str, envelopes: Vec<Envelope>, json: Vec<JEnvelope<T>>) -> Case
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug + 'static,
    M: MessageSet + PartialEq + std::fmt::Debug + 'static,
{
    let docs: Vec<Group> = envelopes.iter().map(Envelope::to_document).collect();
    let compact = compact_text(&docs);
    let bodies: Vec<Vec<u8>> = envelopes.iter().map(|e| e.encode().to_vec()).collect();
    // Check what is read before timing it: the messages the envelopes were built from.
    for (e, body) in envelopes.iter().zip(&bodies) {
        let got = typed::<M>(body);
        assert_eq!((got.id, got.refid), (e.id, e.refid));
        assert_eq!(
            Ok(got.message),
            M::decode_data(&e.cmd, &e.data).map_err(|e| e.to_string())
        );
    }
    let json_text = serde_json::to_string(&json).expect("serialize");
    let back: Vec<JEnvelope<T>> = serde_json::from_str(&json_text).expect("deserialize");
    assert_eq!(back, json);
    Case {
        name,
        docs,
        compact,
        bodies,
        typed_read: Box::new(|bodies| {
            for body in bodies {
                black_box(typed::<M>(body));
            }
        }),
        json: json_text,
        json_write: Box::new(move || serde_json::to_vec(&json).expect("serialize")),
        json_read: Box::new(|text| {
            let v: Vec<JEnvelope<T>> = serde_json::from_str(text).expect("deserialize");
            black_box(v);
        }),
    }
}

/// The mix: all three messages in one text (group format: three documents one after the
/// other is one document; JSON: an array of three differently shaped envelopes).
fn mix_case() -> Case {
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Mix(
        JEnvelope<JCommandCard>,
        JEnvelope<JCardAvailable>,
        JEnvelope<JListReaders>,
    );
    let envelopes = [command_card(), card_available(), list_readers()];
    let docs: Vec<Group> = envelopes.iter().map(Envelope::to_document).collect();
    let compact = compact_text(&docs);
    let bodies = envelopes.iter().map(|e| e.encode().to_vec()).collect();
    let json = Mix(j_command_card(), j_card_available(), j_list_readers());
    let json_text = serde_json::to_string(&json).expect("serialize");
    Case {
        name: "mix",
        docs,
        compact,
        bodies,
        typed_read: Box::new(|bodies| {
            black_box(typed::<FromClient>(&bodies[0]));
            black_box(typed::<ToClient>(&bodies[1]));
            black_box(typed::<ToClient>(&bodies[2]));
        }),
        json: json_text,
        json_write: Box::new(move || serde_json::to_vec(&json).expect("serialize")),
        json_read: Box::new(|text| {
            let v: Mix = serde_json::from_str(text).expect("deserialize");
            black_box(v);
        }),
    }
}

pub fn cases() -> Vec<Case> {
    vec![
        case::<_, FromClient>("command_card", vec![command_card()], vec![j_command_card()]),
        case::<_, ToClient>(
            "card_available",
            vec![card_available()],
            vec![j_card_available()],
        ),
        case::<_, ToClient>(
            "list_readers_16",
            vec![list_readers()],
            vec![j_list_readers()],
        ),
        mix_case(),
    ]
}
