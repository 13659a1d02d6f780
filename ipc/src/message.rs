//! Typed messages (PROTOCOL §4–6) and the sets each side receives.
//!
//! Every message is a struct with the seed's field names; [`Message`] converts it to and from
//! the `data {}` group. The sets ([`FromClient`], [`ToClient`], [`ToDriver`], [`FromDriver`],
//! [`ToService`], [`FromService`]) decode a command name and its data into the right type, so
//! the server, drivers and clients match on types, never on strings.

use bytes::Bytes;

use crate::envelope::ErrorCode;
use crate::error::{Error, FieldError};
use crate::field::{FieldSource, FieldValue, Record};
use crate::ids::{CardId, ClientId, ContextId, DriverId, ReaderId, ServiceId};
use crate::model::Group;
use crate::sink::{CompactSink, FieldSink};

/// A message type: its command name and its mapping to the `data {}` group.
pub trait Message: Sized {
    /// The command name on the wire.
    const CMD: &'static str;
    /// Writes the fields into `data`: a [`Group`], or the compact text of a frame body
    /// ([`CompactSink`]).
    fn write_data<S: FieldSink>(&self, data: &mut S);
    /// Reads the fields from `data`: a [`Group`] or a [`GroupView`](crate::view::GroupView).
    fn read_data<G: FieldSource>(data: &G) -> Result<Self, FieldError>;
}

/// Anything that can be sent: a message or a set holding one.
pub trait Outgoing {
    /// The command name.
    fn cmd(&self) -> &'static str;
    /// The `data {}` group.
    fn to_data(&self) -> Group;
    /// Appends the entries of the `data {}` group in the compact form: what
    /// [`write_compact`](crate::write_compact) writes inside the group of [`Outgoing::to_data`].
    /// Messages write it straight from their fields; this default goes through `to_data`.
    fn encode_data(&self, out: &mut Vec<u8>) {
        crate::write::write_compact_entries(&self.to_data(), out);
    }
}

impl<M: Message> Outgoing for M {
    fn cmd(&self) -> &'static str {
        M::CMD
    }
    fn to_data(&self) -> Group {
        let mut g = Group::new("data");
        self.write_data(&mut g);
        g
    }
    fn encode_data(&self, out: &mut Vec<u8>) {
        self.write_data(&mut CompactSink(out));
    }
}

/// The result a response reports in its own `code`/`text` fields.
///
/// On the wire it takes one of three shapes (see [`OutcomeStyle`]); a failure also carries
/// `int ErrorCode` with the number of PROTOCOL §3.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// `None` on success, else what went wrong.
    pub error: Option<ErrorCode>,
    /// A descriptive text.
    pub text: String,
}

impl Outcome {
    /// Success with a text.
    pub fn ok(text: impl Into<String>) -> Self {
        Outcome {
            error: None,
            text: text.into(),
        }
    }

    /// Failure with a code and a text.
    pub fn failed(code: ErrorCode, text: impl Into<String>) -> Self {
        Outcome {
            error: Some(code),
            text: text.into(),
        }
    }

    /// True on success.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    fn write<S: FieldSink>(&self, g: &mut S, style: OutcomeStyle, code: &str, text: &str) {
        match style {
            OutcomeStyle::Int => {
                g.put_int(code, self.error.map_or(0, ErrorCode::number));
            }
            OutcomeStyle::Word | OutcomeStyle::WordOrRemoved => {
                let word = match self.error {
                    None => "OK",
                    Some(ErrorCode::CardRemoved) if style == OutcomeStyle::WordOrRemoved => {
                        "REMOVED"
                    }
                    Some(_) => "ERROR",
                };
                g.put_char(code, word);
            }
        }
        g.put_char(text, &self.text);
        if let Some(e) = self.error {
            g.put_int("ErrorCode", e.number());
        }
    }

    fn read<G: FieldSource>(
        g: &G,
        style: OutcomeStyle,
        code: &str,
        text: &str,
    ) -> Result<Self, FieldError> {
        let text = g.opt_char(text)?.unwrap_or_default().into_owned();
        let explicit = g.opt_int("ErrorCode")?.map(ErrorCode::from_number);
        let error = match style {
            OutcomeStyle::Int => match g.get_int(code)? {
                0 => None,
                n => Some(explicit.unwrap_or(ErrorCode::from_number(n))),
            },
            OutcomeStyle::Word | OutcomeStyle::WordOrRemoved => {
                let word = g.get_char(code)?;
                if word.eq_ignore_ascii_case("OK") {
                    None
                } else if word.eq_ignore_ascii_case("REMOVED") {
                    Some(ErrorCode::CardRemoved)
                } else if word.eq_ignore_ascii_case("ERROR") {
                    Some(explicit.unwrap_or(ErrorCode::Generic))
                } else {
                    return Err(FieldError::invalid(
                        code,
                        format!("expected OK or ERROR, got '{word}'"),
                    ));
                }
            }
        };
        Ok(Outcome { error, text })
    }
}

/// How a response writes its [`Outcome`], as the seed shows for that response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeStyle {
    /// `char code="OK"` or `"ERROR"`.
    Word,
    /// `char code="OK"`, `"REMOVED"` (card removed) or `"ERROR"`.
    WordOrRemoved,
    /// `int code="0"` or the error number.
    Int,
}

/// Defines a message struct and its [`Message`] impl from its fields.
macro_rules! message {
    (
        $(#[$doc:meta])*
        $name:ident = $cmd:literal
        $(, outcome: $style:ident($code:literal, $text:literal))?
        { $( $(#[$fdoc:meta])* $field:ident : $ty:ty = $wire:literal ),* $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $( #[doc = concat!("The result (`", $code, "`, `", $text, "`).")] pub outcome: Outcome, )?
            $( $(#[$fdoc])* pub $field: $ty, )*
        }

        impl Message for $name {
            const CMD: &'static str = $cmd;
            #[allow(unused_variables)]
            fn write_data<S: FieldSink>(&self, data: &mut S) {
                $( self.outcome.write(data, OutcomeStyle::$style, $code, $text); )?
                $( FieldValue::write_field(&self.$field, data, $wire); )*
            }
            #[allow(unused_variables)]
            fn read_data<G: FieldSource>(data: &G) -> Result<Self, FieldError> {
                Ok($name {
                    $( outcome: Outcome::read(data, OutcomeStyle::$style, $code, $text)?, )?
                    $( $field: FieldValue::read_field(data, $wire)?, )*
                })
            }
        }
    };
}

/// Defines a record (a typed nested group) from its fields.
macro_rules! record {
    (
        $(#[$doc:meta])*
        $name:ident { $( $(#[$fdoc:meta])* $field:ident : $ty:ty = $wire:literal ),* $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fdoc])* pub $field: $ty, )*
        }

        impl Record for $name {
            fn write_record<S: FieldSink>(&self, data: &mut S) {
                $( FieldValue::write_field(&self.$field, data, $wire); )*
            }
            fn read_record<G: FieldSource>(data: &G) -> Result<Self, FieldError> {
                Ok($name { $( $field: FieldValue::read_field(data, $wire)?, )* })
            }
        }

        impl FieldValue for $name {
            fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
                group.put_group(name, |g| self.write_record(g));
            }
            fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
                Self::read_record(&group.get_group(name)?).map_err(|e| e.within(name))
            }
            fn is_present<G: FieldSource>(group: &G, name: &str) -> bool {
                group.group(name).is_some()
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// Shared value types

/// What kind of card: `PROCESSOR`, `MEMORY` or `UNKNOWN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CardType {
    /// A processor (smart) card.
    Processor,
    /// A memory card.
    Memory,
    /// Not known.
    #[default]
    Unknown,
}

impl CardType {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CardType::Processor => "PROCESSOR",
            CardType::Memory => "MEMORY",
            CardType::Unknown => "UNKNOWN",
        }
    }

    /// The type for a word (any case); unknown words are [`CardType::Unknown`].
    pub fn from_word(s: &str) -> CardType {
        if s.eq_ignore_ascii_case("PROCESSOR") {
            CardType::Processor
        } else if s.eq_ignore_ascii_case("MEMORY") {
            CardType::Memory
        } else {
            CardType::Unknown
        }
    }
}

impl FieldValue for CardType {
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
        group.put_char(name, self.as_str());
    }
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
        group.get_char(name).map(|word| CardType::from_word(&word))
    }
}

/// A reader's state: `up`, `down` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReaderStatus {
    /// Working.
    #[default]
    Up,
    /// Not available (its driver is down or restarting).
    Down,
    /// Failed; see the reader's error notification for why.
    Error,
}

impl ReaderStatus {
    /// The word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ReaderStatus::Up => "up",
            ReaderStatus::Down => "down",
            ReaderStatus::Error => "error",
        }
    }
}

impl FieldValue for ReaderStatus {
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
        group.put_char(name, self.as_str());
    }
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
        let word = group.get_char(name)?;
        [ReaderStatus::Up, ReaderStatus::Down, ReaderStatus::Error]
            .into_iter()
            .find(|s| word.eq_ignore_ascii_case(s.as_str()))
            .ok_or_else(|| {
                FieldError::invalid(name, format!("expected up, down or error, got '{word}'"))
            })
    }
}

// ---------------------------------------------------------------------------------------
// Client and server (PROTOCOL §4)

message! {
    /// The first message of a client.
    ClientReady = "ClientReady" {
        /// The application's name and version.
        application: String = "Application",
        /// The chipcard version the client was built for.
        chipcard_version: String = "ChipcardVersion",
        /// The client's operating system.
        system: String = "System",
        /// The Gwenhywfar version (libchipcard clients send it).
        gwen_version: Option<String> = "GwenVersion",
    }
}

message! {
    /// The answer to [`ClientReady`].
    ClientReadyResponse = "ClientReadyResponse" {
        /// The server's version.
        chipcard_version: String = "ChipcardVersion",
        /// The server's operating system.
        system: String = "System",
        /// The id the server gave this client.
        client_id: ClientId = "ClientId",
    }
}

message! {
    /// Chooses the notifications the client receives: `ntype:ncode` patterns, `*` for any.
    SetNotify = "SetNotify" {
        /// Patterns such as `card:inserted` or `reader:*`.
        flags: Vec<String> = "flag",
    }
}

message! {
    /// The answer to [`SetNotify`].
    SetNotifyResponse = "SetNotifyResponse", outcome: Word("code", "text") {}
}

message! {
    /// Starts [`CardAvailable`] pushes for cards in readers whose flags match.
    StartWait = "StartWait" {
        /// The reader flags wanted (within `mask`).
        flags: Vec<String> = "flags",
        /// The reader flags that are compared.
        mask: Vec<String> = "mask",
    }
}

message! {
    /// The answer to [`StartWait`].
    StartWaitResponse = "StartWaitResponse", outcome: Word("code", "text") {}
}

message! {
    /// Stops [`CardAvailable`] pushes.
    StopWait = "StopWait" {}
}

message! {
    /// The answer to [`StopWait`].
    StopWaitResponse = "StopWaitResponse", outcome: Word("code", "text") {}
}

message! {
    /// Asks for every reader and the cards in it.
    ListReaders = "ListReaders" {}
}

record! {
    /// A card in a [`ReaderInfo`].
    CardInfo {
        /// The card.
        card_id: CardId = "CardId",
        /// Its answer to reset.
        atr: Bytes = "ATR",
        /// Processor or memory card.
        card_type: CardType = "CardType",
        /// The card-type names whose ATR patterns match, with what they extend.
        card_types: Vec<String> = "CardTypes",
        /// The slot it sits in.
        slot: i32 = "Slot",
        /// Whether a client has taken it.
        taken: bool = "Taken",
    }
}

record! {
    /// A reader in a [`ListReadersResponse`].
    ReaderInfo {
        /// The reader.
        reader_id: ReaderId = "ReaderId",
        /// Its name.
        reader_name: String = "ReaderName",
        /// Its type (driver specific).
        reader_type: String = "ReaderType",
        /// The driver serving it.
        driver_id: DriverId = "DriverId",
        /// The driver's type (`emul`, `pcsc`, `ctapi`).
        driver_type: String = "DriverType",
        /// Its flags (`KEYPAD`, `DISPLAY`, ...).
        reader_flags: Vec<String> = "ReaderFlags",
        /// Up, down or error.
        status: ReaderStatus = "Status",
        /// How many slots it has.
        slots: i32 = "Slots",
        /// The cards present.
        cards: Vec<CardInfo> = "card",
    }
}

message! {
    /// The answer to [`ListReaders`].
    ListReadersResponse = "ListReadersResponse" {
        /// One entry per reader.
        readers: Vec<ReaderInfo> = "reader",
    }
}

message! {
    /// Asks for exclusive use of a card, waiting up to `timeout` ms if another client has it.
    TakeCard = "TakeCard" {
        /// The card.
        card_id: CardId = "CardId",
        /// How long to wait in ms (default 10000).
        timeout: Option<i32> = "Timeout",
    }
}

message! {
    /// The answer to [`TakeCard`].
    TakeCardResponse = "TakeCardResponse", outcome: Word("Code", "Text") {
        /// The card.
        card_id: CardId = "CardId",
    }
}

message! {
    /// Gives a taken card back; the server resets it before anyone else gets it.
    ReleaseCard = "ReleaseCard" {
        /// The card.
        card_id: CardId = "CardId",
    }
}

message! {
    /// The answer to [`ReleaseCard`].
    ReleaseCardResponse = "ReleaseCardResponse", outcome: Word("code", "text") {}
}

message! {
    /// Sends a command APDU to a taken card.
    CommandCard = "CommandCard" {
        /// The card.
        card_id: CardId = "CardId",
        /// The command APDU.
        data: Bytes = "data",
        /// `card` (default) or `reader`: where the APDU goes.
        target: Option<String> = "target",
    }
}

message! {
    /// The answer to [`CommandCard`].
    CommandCardResponse = "CommandCardResponse", outcome: Int("code", "text") {
        /// The response APDU with SW1 SW2 (absent on failure).
        data: Option<Bytes> = "data",
    }
}

message! {
    /// Asks whether a card is still present.
    CardCheck = "CardCheck" {
        /// The card.
        card_id: CardId = "CardId",
    }
}

message! {
    /// The answer to [`CardCheck`]: `OK`, or `REMOVED` (card removed).
    CardCheckResponse = "CardCheckResponse", outcome: WordOrRemoved("code", "text") {}
}

message! {
    /// Resets a taken card.
    CardReset = "CardReset" {
        /// The card.
        card_id: CardId = "CardId",
    }
}

message! {
    /// The answer to [`CardReset`].
    CardResetResponse = "CardResetResponse", outcome: Word("code", "text") {
        /// The answer to reset after the reset.
        atr: Option<Bytes> = "ATR",
    }
}

message! {
    /// Asks for a variable of the driver serving a card.
    GetDriverVar = "GetDriverVar" {
        /// The card.
        card_id: CardId = "CardId",
        /// The variable's name.
        var_name: String = "varName",
    }
}

message! {
    /// The answer to [`GetDriverVar`].
    GetDriverVarResponse = "GetDriverVarResponse" {
        /// The variable's name.
        var_name: String = "varName",
        /// Its value.
        var_value: String = "varValue",
    }
}

message! {
    /// Opens a context of a service, named by id or by name (exactly one).
    ServiceOpen = "ServiceOpen" {
        /// The service's id.
        service_id: Option<ServiceId> = "serviceId",
        /// The service's name.
        service_name: Option<String> = "serviceName",
        /// Service specific data.
        command: Option<Group> = "command",
    }
}

message! {
    /// The answer to [`ServiceOpen`] (and what a service answers the server).
    ServiceOpenResponse = "ServiceOpenResponse", outcome: Int("code", "text") {
        /// The service's id.
        service_id: Option<ServiceId> = "serviceId",
        /// The service's name.
        service_name: Option<String> = "serviceName",
        /// The new context.
        context_id: Option<ContextId> = "contextId",
        /// `client`, `autoload`, `silent`.
        service_flags: Vec<String> = "serviceFlags",
        /// Data the service sent.
        service: Option<Group> = "service",
    }
}

message! {
    /// Closes a service context.
    ServiceClose = "ServiceClose" {
        /// The service's id.
        service_id: ServiceId = "serviceId",
        /// The context.
        context_id: ContextId = "contextId",
    }
}

message! {
    /// The answer to [`ServiceClose`] (and what a service answers the server).
    ServiceCloseResponse = "ServiceCloseResponse", outcome: Int("code", "text") {
        /// The service's id.
        service_id: Option<ServiceId> = "serviceId",
        /// The service's name.
        service_name: Option<String> = "serviceName",
        /// The context.
        context_id: Option<ContextId> = "contextId",
        /// `client`, `autoload`, `silent`.
        service_flags: Vec<String> = "serviceFlags",
        /// Data the service sent.
        service: Option<Group> = "service",
    }
}

message! {
    /// Sends a command to an open service context.
    ServiceCommand = "ServiceCommand" {
        /// The service's id.
        service_id: ServiceId = "serviceId",
        /// The context.
        context_id: ContextId = "contextId",
        /// The command: `char name` and its data.
        command: Group = "command",
    }
}

message! {
    /// The answer to [`ServiceCommand`] (and what a service answers the server).
    ServiceCommandResponse = "ServiceCommandResponse", outcome: Int("code", "text") {
        /// The service's id.
        service_id: Option<ServiceId> = "serviceId",
        /// The service's name.
        service_name: Option<String> = "serviceName",
        /// The context.
        context_id: Option<ContextId> = "contextId",
        /// `client`, `autoload`, `silent`.
        service_flags: Vec<String> = "serviceFlags",
        /// The response's name (`error` for a service-level error).
        name: Option<String> = "name",
        /// The response data.
        command: Option<Group> = "command",
    }
}

message! {
    /// A failed request (PROTOCOL §3): any request may be answered with it.
    ErrorResponse = "Error" {
        /// The error code (PROTOCOL §3 table).
        code: i32 = "code",
        /// What went wrong.
        text: String = "text",
    }
}

impl ErrorResponse {
    /// An error reply with a code and a text.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        ErrorResponse {
            code: code.number(),
            text: text.into(),
        }
    }

    /// The code as an [`ErrorCode`].
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::from_number(self.code)
    }
}

message! {
    /// Pushed between `StartWait` and `StopWait` for every available card that matches.
    CardAvailable = "CardAvailable" {
        /// The card.
        card_id: CardId = "CardId",
        /// Processor or memory card.
        card_type: CardType = "CardType",
        /// The card-type names whose ATR patterns match.
        card_types: Vec<String> = "CardTypes",
        /// The reader's flags.
        reader_flags: Vec<String> = "ReaderFlags",
        /// The answer to reset.
        atr: Bytes = "ATR",
        /// The reader.
        reader_id: ReaderId = "ReaderId",
        /// The reader's name.
        reader_name: String = "ReaderName",
        /// The reader's driver type.
        driver_type: String = "DriverType",
    }
}

message! {
    /// Pushed for the kinds of event a client asked for with [`SetNotify`].
    Notification = "Notification" {
        /// The receiving client.
        client_id: ClientId = "clientId",
        /// `driver`, `reader`, `card`, `client` or `service`.
        ntype: String = "ntype",
        /// What happened (`up`, `inserted`, ...).
        ncode: String = "ncode",
        /// Details.
        data: Group = "data",
    }
}

// ---------------------------------------------------------------------------------------
// Server and driver (PROTOCOL §5)

message! {
    /// The first message to a driver: its id and its configuration group.
    DriverStart = "DriverStart" {
        /// The driver's id.
        driver_id: DriverId = "DriverId",
        /// The driver's group from the configuration.
        config: Group = "config",
    }
}

record! {
    /// A reader as a driver describes it.
    DriverReader {
        /// The driver's own id for the reader.
        reader_id: ReaderId = "ReaderId",
        /// The reader's name.
        name: String = "Name",
        /// `KEYPAD`, `DISPLAY`, ...
        reader_flags: Vec<String> = "ReaderFlags",
        /// The reader's type (driver specific).
        reader_type: Option<String> = "ReaderType",
        /// How many slots it has (default 1).
        slots: Option<i32> = "Slots",
        /// The port (driver specific).
        port: Option<String> = "Port",
        /// A short description.
        short_descr: Option<String> = "ShortDescr",
    }
}

/// The `Readers { Reader {} ... }` group of [`DriverReady`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReaderList(pub Vec<DriverReader>);

impl FieldValue for ReaderList {
    fn write_field<S: FieldSink>(&self, group: &mut S, name: &str) {
        group.put_group(name, |readers| {
            FieldValue::write_field(&self.0, readers, "Reader");
        });
    }
    fn read_field<G: FieldSource>(group: &G, name: &str) -> Result<Self, FieldError> {
        match group.group(name) {
            None => Ok(ReaderList::default()),
            Some(g) => Vec::<DriverReader>::read_field(&g, "Reader")
                .map(ReaderList)
                .map_err(|e| e.within(name)),
        }
    }
}

message! {
    /// A driver's answer to [`DriverStart`], with its readers.
    DriverReady = "DriverReady", outcome: Word("Code", "Text") {
        /// The driver's id.
        driver_id: DriverId = "DriverId",
        /// The readers.
        readers: ReaderList = "Readers",
    }
}

message! {
    /// The server's answer to [`DriverReady`].
    DriverReadyResponse = "DriverReadyResponse", outcome: Word("Code", "Text") {}
}

message! {
    /// A card was inserted (driver event).
    CardInserted = "CardInserted" {
        /// The driver's own reader id.
        reader_id: ReaderId = "ReaderId",
        /// The slot.
        slot: i32 = "Slot",
        /// The answer to reset.
        atr: Bytes = "ATR",
        /// Processor or memory card.
        card_type: CardType = "CardType",
    }
}

message! {
    /// A card was removed (driver event).
    CardRemoved = "CardRemoved" {
        /// The driver's own reader id.
        reader_id: ReaderId = "ReaderId",
        /// The slot.
        slot: i32 = "Slot",
    }
}

message! {
    /// A reader appeared (driver event).
    ReaderAdd = "ReaderAdd" {
        /// The reader.
        reader: DriverReader = "Reader",
    }
}

message! {
    /// A reader vanished (driver event).
    ReaderDel = "ReaderDel" {
        /// The driver's own reader id.
        reader_id: ReaderId = "ReaderId",
    }
}

message! {
    /// A reader failed (driver event).
    ReaderError = "ReaderError" {
        /// The driver's own reader id.
        reader_id: ReaderId = "ReaderId",
        /// What went wrong.
        text: String = "Text",
    }
}

message! {
    /// An APDU for the card in a reader's slot.
    CardCommand = "CardCommand" {
        /// The driver's own reader id.
        reader_id: ReaderId = "ReaderId",
        /// The slot.
        slot: i32 = "Slot",
        /// The command APDU.
        data: Bytes = "data",
        /// `card` (default) or `reader`.
        target: Option<String> = "target",
    }
}

message! {
    /// The answer to [`CardCommand`].
    CardCommandResponse = "CardCommandResponse", outcome: Int("code", "text") {
        /// The response APDU (absent on failure).
        data: Option<Bytes> = "data",
    }
}

message! {
    /// Resets the card in a reader's slot.
    ResetCard = "ResetCard" {
        /// The driver's own reader id.
        reader_id: ReaderId = "ReaderId",
        /// The slot.
        slot: i32 = "Slot",
    }
}

message! {
    /// The answer to [`ResetCard`].
    ResetCardResponse = "ResetCardResponse", outcome: Int("code", "text") {
        /// The new answer to reset (absent on failure).
        atr: Option<Bytes> = "ATR",
    }
}

message! {
    /// A liveness check.
    Ping = "Ping" {}
}

message! {
    /// The answer to [`Ping`].
    PingResponse = "PingResponse" {}
}

message! {
    /// Tells a driver to stop; it exits.
    StopDriver = "StopDriver" {}
}

// ---------------------------------------------------------------------------------------
// Server and service (PROTOCOL §6)

message! {
    /// The first message to a service: its id and its configuration group.
    ServiceStart = "ServiceStart" {
        /// The service's id.
        service_id: ServiceId = "ServiceId",
        /// The service's group from the configuration.
        config: Group = "config",
    }
}

message! {
    /// A service's answer to [`ServiceStart`].
    ServiceReady = "ServiceReady", outcome: Word("Code", "Text") {
        /// The service's id.
        service_id: ServiceId = "ServiceId",
    }
}

message! {
    /// The server's answer to [`ServiceReady`].
    ServiceReadyResponse = "ServiceReadyResponse", outcome: Word("Code", "Text") {}
}

record! {
    /// The card a forwarded service request names (`command/CardId`), as the server knows
    /// it; only added for a card the client may use.
    ServiceCard {
        /// The card.
        card_id: CardId = "CardId",
        /// Its answer to reset.
        atr: Bytes = "ATR",
        /// Processor or memory card.
        card_type: CardType = "CardType",
        /// The card-type names whose ATR patterns match, with what they extend.
        card_types: Vec<String> = "CardTypes",
        /// The reader holding it.
        reader_id: ReaderId = "ReaderId",
        /// The reader's name.
        reader_name: String = "ReaderName",
        /// The reader's driver type.
        driver_type: String = "DriverType",
        /// The slot it sits in.
        slot: i32 = "Slot",
    }
}

message! {
    /// A client's [`ServiceOpen`] as the server forwards it (seed 5.1).
    ForwardedServiceOpen = "ServiceOpen" {
        /// The service's id.
        service_id: ServiceId = "serviceId",
        /// The new context (the server assigns context ids, PROTOCOL §3).
        context_id: ContextId = "contextId",
        /// The client.
        client_id: ClientId = "clientId",
        /// The client's application name.
        app_name: String = "appName",
        /// The client's user name (from its peer credentials).
        user_name: String = "userName",
        /// Service specific data.
        command: Option<Group> = "command",
        /// The card `command/CardId` names, if any.
        card: Option<ServiceCard> = "card",
    }
}

message! {
    /// A client's [`ServiceClose`] as the server forwards it (seed 5.2).
    ForwardedServiceClose = "ServiceClose" {
        /// The service's id.
        service_id: ServiceId = "serviceId",
        /// The context.
        context_id: ContextId = "contextId",
        /// The client.
        client_id: ClientId = "clientId",
        /// The client's application name.
        app_name: String = "appName",
        /// The client's user name.
        user_name: String = "userName",
        /// Service specific data.
        command: Option<Group> = "command",
    }
}

message! {
    /// A client's [`ServiceCommand`] as the server forwards it (seed 5.3).
    ForwardedServiceCommand = "ServiceCommand" {
        /// The service's id.
        service_id: ServiceId = "serviceId",
        /// The context.
        context_id: ContextId = "contextId",
        /// The client.
        client_id: ClientId = "clientId",
        /// The client's application name.
        app_name: String = "appName",
        /// The client's user name.
        user_name: String = "userName",
        /// The command: `char name` and its data.
        command: Group = "command",
        /// The card `command/CardId` names, if any.
        card: Option<ServiceCard> = "card",
    }
}

message! {
    /// A service's answer to a forwarded [`ServiceCommand`] (seed 5.3.2.2): the response
    /// data and, optionally, its name. A service reports a failure with `Error` (seed
    /// 5.3.2.1), or with a non-zero `code` here.
    ServiceCommandResult = "ServiceCommandResponse" {
        /// Non-zero: the command failed (absent or `0`: it worked).
        code: Option<i32> = "code",
        /// A descriptive text.
        text: Option<String> = "text",
        /// The response's name.
        name: Option<String> = "name",
        /// The response data.
        command: Option<Group> = "command",
    }
}

message! {
    /// Tells a service to stop; it exits.
    StopService = "StopService" {}
}

// ---------------------------------------------------------------------------------------
// Message sets

/// A set of messages one side receives ([`FromClient`], [`ToClient`], ...), decoded by command
/// name; what [`Received`](crate::envelope::Received) reads.
pub trait MessageSet: Outgoing + Sized {
    /// Decodes the message `cmd` from its `data {}` group; see [`FromClient::decode`].
    fn decode_data<G: FieldSource>(cmd: &str, data: &G) -> Result<Self, Error>;
}

/// Defines an enum over message types with decoding by command name.
macro_rules! message_set {
    ($(#[$doc:meta])* $name:ident { $($variant:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum $name {
            $( $variant($variant), )*
        }

        impl $name {
            /// Decodes the message `cmd` from its `data {}` group (a [`Group`] or a
            /// [`GroupView`](crate::view::GroupView)).
            /// An unknown command is [`Error::UnknownCommand`]; a bad field is [`Error::Field`].
            pub fn decode<G: FieldSource>(cmd: &str, data: &G) -> Result<Self, Error> {
                $(
                    if cmd.eq_ignore_ascii_case(<$variant as Message>::CMD) {
                        return <$variant as Message>::read_data(data)
                            .map($name::$variant)
                            .map_err(|e| Error::Field(e.within("data")));
                    }
                )*
                Err(Error::UnknownCommand(cmd.to_owned()))
            }
        }

        impl MessageSet for $name {
            fn decode_data<G: FieldSource>(cmd: &str, data: &G) -> Result<Self, Error> {
                $name::decode(cmd, data)
            }
        }

        impl Outgoing for $name {
            fn cmd(&self) -> &'static str {
                match self { $( $name::$variant(_) => <$variant as Message>::CMD, )* }
            }
            fn to_data(&self) -> Group {
                match self { $( $name::$variant(m) => m.to_data(), )* }
            }
            fn encode_data(&self, out: &mut Vec<u8>) {
                match self { $( $name::$variant(m) => m.encode_data(out), )* }
            }
        }

        #[cfg(test)]
        impl $name {
            /// Every message of the set, its fields at their defaults.
            fn every_default() -> Vec<$name> {
                vec![$( $name::$variant(<$variant>::default()), )*]
            }
        }

        $(
            impl From<$variant> for $name {
                fn from(m: $variant) -> Self { $name::$variant(m) }
            }
        )*
    };
}

message_set! {
    /// What a client sends the server.
    FromClient {
        ClientReady, SetNotify, StartWait, StopWait, ListReaders, TakeCard, ReleaseCard,
        CommandCard, CardCheck, CardReset, GetDriverVar, ServiceOpen, ServiceClose,
        ServiceCommand,
    }
}

message_set! {
    /// What the server sends a client: responses, errors and pushes.
    ToClient {
        ClientReadyResponse, SetNotifyResponse, StartWaitResponse, StopWaitResponse,
        ListReadersResponse, TakeCardResponse, ReleaseCardResponse, CommandCardResponse,
        CardCheckResponse, CardResetResponse, GetDriverVarResponse, ServiceOpenResponse,
        ServiceCloseResponse, ServiceCommandResponse, ErrorResponse, CardAvailable,
        Notification,
    }
}

message_set! {
    /// What the server sends a driver.
    ToDriver { DriverStart, DriverReadyResponse, CardCommand, ResetCard, Ping, StopDriver }
}

message_set! {
    /// What a driver sends the server: its ready message, events and responses.
    FromDriver {
        DriverReady, CardInserted, CardRemoved, ReaderAdd, ReaderDel, ReaderError,
        CardCommandResponse, ResetCardResponse, PingResponse, ErrorResponse,
    }
}

message_set! {
    /// What the server sends a service.
    ToService {
        ServiceStart, ServiceReadyResponse, ForwardedServiceOpen, ForwardedServiceClose,
        ForwardedServiceCommand, Ping, StopService,
    }
}

message_set! {
    /// What a service sends the server.
    FromService {
        ServiceReady, ServiceOpenResponse, ServiceCloseResponse, ServiceCommandResult,
        PingResponse, ErrorResponse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<M: Message + Outgoing + PartialEq + std::fmt::Debug>(m: M) {
        let back = M::read_data(&m.to_data()).expect("reads back");
        assert_eq!(back, m);
        assert_same_text(&m);
    }

    /// The body written straight from the fields is the body written from the document.
    fn assert_same_text(m: &(impl Outgoing + ?Sized)) {
        let mut direct = Vec::new();
        let message = crate::Addressed {
            id: 7,
            refid: Some(3),
            message: m,
        };
        message.encode_into(&mut direct);
        let env = crate::Envelope::new(7, Some(3), m);
        let mut want = Vec::new();
        crate::write_compact(&env.to_document(), &mut want);
        assert_eq!(
            String::from_utf8_lossy(&direct),
            String::from_utf8_lossy(&want),
            "{}",
            m.cmd()
        );
    }

    #[test]
    fn every_message_writes_the_same_text_as_its_document() {
        FromClient::every_default()
            .iter()
            .for_each(assert_same_text);
        ToClient::every_default().iter().for_each(assert_same_text);
        ToDriver::every_default().iter().for_each(assert_same_text);
        FromDriver::every_default()
            .iter()
            .for_each(assert_same_text);
        ToService::every_default().iter().for_each(assert_same_text);
        FromService::every_default()
            .iter()
            .for_each(assert_same_text);
    }

    mod same_text {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof!["\\PC{0,12}", "[ -~]{0,12}", Just(String::new())]
        }

        fn bytes() -> impl Strategy<Value = Bytes> {
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
        }

        fn outcome() -> impl Strategy<Value = Outcome> {
            (prop::option::of(0..ErrorCode::ALL.len()), text()).prop_map(|(code, text)| Outcome {
                error: code.map(|c| ErrorCode::ALL[c]),
                text,
            })
        }

        fn group() -> impl Strategy<Value = Group> {
            (text(), text(), any::<i32>(), bytes(), text()).prop_map(|(name, c, i, b, sub)| {
                Group::new(name)
                    .with_char("c", c)
                    .with_int("i", i)
                    .with_bin("b", b.to_vec())
                    .with_group(Group::new(sub).with_char("x", "y"))
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn typed_messages_write_the_same_text_as_their_documents(
                (s, t, u) in (text(), text(), text()),
                (b, i, id) in (bytes(), any::<i32>(), any::<u32>()),
                words in prop::collection::vec(text(), 0..3),
                (outcome, config, flag) in (outcome(), group(), any::<bool>()),
            ) {
                let card = CardInfo {
                    card_id: CardId(id),
                    atr: b.clone(),
                    card_type: CardType::from_word(&s),
                    card_types: words.clone(),
                    slot: i,
                    taken: flag,
                };
                let reader = ReaderInfo {
                    reader_id: ReaderId(id),
                    reader_name: s.clone(),
                    reader_type: t.clone(),
                    driver_id: DriverId(id),
                    driver_type: u.clone(),
                    reader_flags: words.clone(),
                    status: ReaderStatus::Error,
                    slots: i,
                    cards: vec![card.clone(), CardInfo::default()],
                };
                let messages: Vec<Box<dyn Outgoing>> = vec![
                    Box::new(CommandCard { card_id: CardId(id), data: b.clone(), target: Some(s.clone()) }),
                    Box::new(CommandCardResponse { outcome: outcome.clone(), data: Some(b.clone()) }),
                    Box::new(CardCommand { reader_id: ReaderId(id), slot: i, data: b.clone(), target: None }),
                    Box::new(CardCommandResponse { outcome: outcome.clone(), data: Some(b.clone()) }),
                    Box::new(TakeCardResponse { outcome: outcome.clone(), card_id: CardId(id) }),
                    Box::new(CardCheckResponse { outcome: outcome.clone() }),
                    Box::new(ErrorResponse::new(ErrorCode::from_number(i), t.clone())),
                    Box::new(ListReadersResponse { readers: vec![reader.clone(), reader] }),
                    Box::new(SetNotify { flags: words.clone() }),
                    Box::new(DriverStart { driver_id: DriverId(id), config: config.clone() }),
                    Box::new(DriverReady {
                        outcome: outcome.clone(),
                        driver_id: DriverId(id),
                        readers: ReaderList(vec![DriverReader {
                            name: s.clone(),
                            reader_flags: words.clone(),
                            slots: Some(i),
                            ..Default::default()
                        }]),
                    }),
                    Box::new(ServiceOpenResponse {
                        outcome: outcome.clone(),
                        service_name: Some(u.clone()),
                        ..Default::default()
                    }),
                    Box::new(ForwardedServiceCommand {
                        app_name: s,
                        user_name: t,
                        command: config,
                        ..Default::default()
                    }),
                    Box::new(FromClient::ClientReady(ClientReady { application: u, ..Default::default() })),
                ];
                for m in &messages {
                    assert_same_text(&**m);
                }
            }
        }
    }

    #[test]
    fn messages_round_trip() {
        round_trip(TakeCard {
            card_id: CardId(42),
            timeout: Some(500),
        });
        round_trip(TakeCardResponse {
            outcome: Outcome::failed(ErrorCode::Busy, "taken"),
            card_id: CardId(1),
        });
        round_trip(CardCheckResponse {
            outcome: Outcome::failed(ErrorCode::CardRemoved, "gone"),
        });
        round_trip(CommandCardResponse {
            outcome: Outcome::ok("ok"),
            data: Some(Bytes::from_static(&[0x90, 0x00])),
        });
        round_trip(ListReadersResponse {
            readers: vec![ReaderInfo {
                reader_id: ReaderId(1),
                reader_name: "emul 0".into(),
                reader_type: "emul".into(),
                driver_id: DriverId(1),
                driver_type: "emul".into(),
                reader_flags: vec!["KEYPAD".into(), "DISPLAY".into()],
                status: ReaderStatus::Up,
                slots: 1,
                cards: vec![CardInfo {
                    card_id: CardId(3),
                    atr: Bytes::from_static(&[0x3b, 0x00]),
                    card_type: CardType::Processor,
                    card_types: vec!["processorcard".into()],
                    slot: 0,
                    taken: true,
                }],
            }],
        });
        round_trip(DriverReady {
            outcome: Outcome::ok("Driver ready"),
            driver_id: DriverId(9),
            readers: ReaderList(vec![DriverReader {
                reader_id: ReaderId(0),
                name: "reader1".into(),
                reader_flags: vec!["DISPLAY".into(), "KEYPAD".into()],
                slots: Some(1),
                ..Default::default()
            }]),
        });
    }

    #[test]
    fn service_messages_round_trip_and_read_the_seed_shapes() {
        let card = ServiceCard {
            card_id: CardId(3),
            atr: Bytes::from_static(&[0x3b, 0x02, 0x14, 0x50]),
            card_type: CardType::Processor,
            card_types: vec!["ddv0".into(), "ProcessorCard".into()],
            reader_id: ReaderId(1),
            reader_name: "R".into(),
            driver_type: "emul".into(),
            slot: 0,
        };
        round_trip(ForwardedServiceOpen {
            service_id: ServiceId(1),
            context_id: ContextId(2),
            client_id: ClientId(3),
            app_name: "app".into(),
            user_name: "alice".into(),
            command: Some(Group::new("command").with_char("CardId", "0x00000003")),
            card: Some(card.clone()),
        });
        round_trip(ForwardedServiceCommand {
            service_id: ServiceId(1),
            context_id: ContextId(2),
            client_id: ClientId(3),
            app_name: "app".into(),
            user_name: String::new(),
            command: Group::new("command").with_char("name", "Describe"),
            card: Some(card),
        });
        // Seed 5.3.2.2: a service's answer with only `command {}`.
        let seed = Group::new("data").with_group(Group::new("command").with_int("x", 1));
        match FromService::decode("ServiceCommandResponse", &seed) {
            Ok(FromService::ServiceCommandResult(r)) => {
                assert_eq!(r.code, None);
                assert_eq!(r.command.and_then(|c| c.get_int("x").ok()), Some(1));
            }
            other => panic!("{other:?}"),
        }
        // Seed 4.1.2 (the client's answer) keeps the int code.
        let open = ServiceOpenResponse {
            outcome: Outcome::failed(ErrorCode::NotFound, "no service"),
            service_name: Some("x".into()),
            ..Default::default()
        }
        .to_data();
        assert_eq!(open.get_int("code").ok(), Some(3));
        assert_eq!(open.get_int("ErrorCode").ok(), Some(3));
    }

    #[test]
    fn outcome_shapes_follow_the_seed() {
        let ok = TakeCardResponse {
            outcome: Outcome::ok("Command ok"),
            card_id: CardId(0x1234_5678),
        }
        .to_data();
        assert_eq!(ok.get_char("Code").ok(), Some("OK"));
        assert!(ok.var("ErrorCode").is_none());

        let failed = CommandCardResponse {
            outcome: Outcome::failed(ErrorCode::NotOwner, "not yours"),
            data: None,
        }
        .to_data();
        assert_eq!(failed.get_int("code").ok(), Some(4));
        assert_eq!(failed.get_int("ErrorCode").ok(), Some(4));

        let busy = TakeCardResponse {
            outcome: Outcome::failed(ErrorCode::Busy, "taken"),
            card_id: CardId(1),
        }
        .to_data();
        assert_eq!(busy.get_char("Code").ok(), Some("ERROR"));
        assert_eq!(busy.get_int("ErrorCode").ok(), Some(10));
    }

    #[test]
    fn sets_decode_by_command_and_report_fields() {
        let data = Group::new("data").with_char("CardId", "0x0000002a");
        assert_eq!(
            FromClient::decode("takecard", &data).ok(),
            Some(FromClient::TakeCard(TakeCard {
                card_id: CardId(42),
                timeout: None
            }))
        );
        let e = FromClient::decode("CommandCard", &data).expect_err("no data field");
        assert_eq!(e.to_string(), "data/data: missing");
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        let e = FromClient::decode("Explode", &data).expect_err("unknown");
        assert_eq!(e.code(), ErrorCode::NotSupported);
    }
}
