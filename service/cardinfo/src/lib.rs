//! The cardinfo service: what a card's answer to reset says.
//!
//! A client opens the service (`ServiceOpen serviceName="cardinfo"`) and sends
//! `ServiceCommand` with `command { name="Describe"; CardId="0x..." }` (or a bare
//! `bin ATR="3B..."` instead of the CardId). For a card id the server adds what it knows
//! about the card (ATR, card types, reader) to the forwarded command, after checking that
//! the client may use the card. The answer (`name="DescribeResponse"`) holds:
//!
//! - the card as the server knows it (`CardId`, `CardType`, `CardTypes` — the card types
//!   chipcard matched from its card definitions — `ReaderName`),
//! - `atr {}`: the ATR decoded ([`atr::Atr`]: TS, T0, interface bytes with their meaning,
//!   protocols, historical bytes, TCK check, problems),
//! - `descriptions {}`: the matching entries of pcsc-tools' ATR list ([`list::AtrList`]),
//!   or `status="not installed"` when the list file does not exist.
//!
//! docs/services.md shows a whole exchange.
#![forbid(unsafe_code)]

pub mod atr;
pub mod list;

use std::path::{Path, PathBuf};

use chipcard_ipc::message::ServiceCard;
use chipcard_ipc::Group;
use chipcard_service::{Context, Reply, Request, Service, ServiceError};
use tracing::{debug, info, warn};

use crate::atr::{Atr, Tck};
use crate::list::AtrList;

/// Where pcsc-tools installs its ATR list; the `atrList` key of the service's group
/// overrides it.
pub const DEFAULT_ATR_LIST: &str = "/usr/share/pcsc/smartcard_list.txt";

/// How the ATR list was found when the service started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListState {
    /// Not read yet (before `start`).
    NotLoaded,
    /// Read and parsed.
    Loaded(AtrList),
    /// The file does not exist.
    NotInstalled,
    /// The file exists but cannot be read.
    Unreadable(String),
}

/// The cardinfo service.
#[derive(Debug, Clone)]
pub struct CardInfo {
    list_path: PathBuf,
    list: ListState,
}

impl Default for CardInfo {
    fn default() -> Self {
        CardInfo {
            list_path: PathBuf::from(DEFAULT_ATR_LIST),
            list: ListState::NotLoaded,
        }
    }
}

impl CardInfo {
    /// A service reading the ATR list at `path` (for tests; the configuration's `atrList`
    /// does the same for the process).
    pub fn with_list(path: &Path) -> CardInfo {
        let mut service = CardInfo {
            list_path: path.to_owned(),
            list: ListState::NotLoaded,
        };
        service.load();
        service
    }

    fn load(&mut self) {
        self.list = match std::fs::read(&self.list_path) {
            Ok(bytes) => {
                let list = AtrList::parse(&String::from_utf8_lossy(&bytes));
                info!(path = %self.list_path.display(), entries = list.entries.len(),
                      skipped = list.skipped.len(), "ATR list read");
                for skipped in list.skipped.iter().take(5) {
                    debug!(path = %self.list_path.display(), "ATR list: {skipped}");
                }
                ListState::Loaded(list)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                info!(path = %self.list_path.display(), "ATR list not installed");
                ListState::NotInstalled
            }
            Err(e) => {
                warn!(path = %self.list_path.display(), error = %e, "ATR list unreadable");
                ListState::Unreadable(e.to_string())
            }
        };
    }

    /// The `Describe` answer for `atr` (and the card the server described, if any).
    pub fn describe(&self, atr: &[u8], card: Option<&ServiceCard>) -> Group {
        let mut out = Group::new("command");
        if let Some(card) = card {
            out.set_char("CardId", card.card_id.to_string());
            out.set_char("CardType", card.card_type.as_str());
            out.set_chars("CardTypes", &card.card_types);
            out.set_char("ReaderName", card.reader_name.clone());
        }
        out.set_bin("ATR", atr.to_vec());
        out.add_group(atr_group(&Atr::decode(atr)));
        out.add_group(self.descriptions(atr));
        out
    }

    fn list_status(&self) -> Group {
        let mut g = Group::new("service");
        g.set_char("list", self.list_path.display().to_string());
        match &self.list {
            ListState::Loaded(list) => {
                g.set_char("listStatus", "ok");
                g.set_int("listEntries", clamp_i32(list.entries.len()));
            }
            ListState::NotInstalled | ListState::NotLoaded => {
                g.set_char("listStatus", "not installed");
            }
            ListState::Unreadable(e) => {
                g.set_char("listStatus", format!("unreadable: {e}"));
            }
        }
        g
    }

    fn descriptions(&self, atr: &[u8]) -> Group {
        let mut g = Group::new("descriptions");
        g.set_char("list", self.list_path.display().to_string());
        match &self.list {
            ListState::Loaded(list) => {
                g.set_char("status", "ok");
                for entry in list.lookup(atr) {
                    let mut e = Group::new("entry");
                    e.set_char("pattern", entry.pattern.clone());
                    e.set_chars("text", &entry.descriptions);
                    g.add_group(e);
                }
            }
            ListState::NotInstalled | ListState::NotLoaded => {
                g.set_char("status", "not installed");
                g.set_char(
                    "text",
                    format!(
                        "the ATR list {} is not installed (Debian: apt-get install pcsc-tools)",
                        self.list_path.display()
                    ),
                );
            }
            ListState::Unreadable(e) => {
                g.set_char("status", "unreadable");
                g.set_char("text", format!("{}: {e}", self.list_path.display()));
            }
        }
        g
    }
}

fn clamp_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The `atr {}` group of an answer.
pub fn atr_group(atr: &Atr) -> Group {
    let mut g = Group::new("atr");
    if let Some(ts) = atr.ts {
        g.set_char("TS", format!("{ts:02X}"));
    }
    if let Some(convention) = atr.convention {
        g.set_char("convention", convention.as_str());
    }
    if let Some(t0) = atr.t0 {
        g.set_char("T0", format!("{t0:02X}"));
        g.set_int("historicalLength", clamp_i32(atr.historical_len));
    }
    for byte in &atr.interface {
        let mut b = Group::new("interface");
        b.set_char("name", byte.name.clone());
        b.set_char("value", format!("{:02X}", byte.value));
        b.set_char("meaning", byte.meaning.clone());
        g.add_group(b);
    }
    g.set_chars("protocols", &atr.protocol_names());
    g.set_bin("historical", atr.historical.clone());
    g.set_char("historicalText", atr.historical_text());
    let meaning = atr.historical_meaning();
    if !meaning.is_empty() {
        g.set_chars("historicalMeaning", &meaning);
    }
    match atr.tck {
        Tck::Correct(b) | Tck::Wrong { found: b, .. } => {
            g.set_char("TCK", format!("{b:02X}"));
        }
        Tck::NotNeeded | Tck::Missing => {}
    }
    g.set_char("TCKStatus", atr.tck.describe());
    g.set_char("valid", if atr.is_valid() { "yes" } else { "no" });
    if !atr.problems.is_empty() {
        g.set_chars("problems", &atr.problems);
    }
    g
}

impl Service for CardInfo {
    fn start(&mut self, config: &Group) -> Result<(), ServiceError> {
        let path = config
            .opt_char("atrList")
            .map_err(|e| ServiceError::invalid(format!("config/{e}")))?;
        if let Some(path) = path.filter(|p| !p.is_empty()) {
            self.list_path = PathBuf::from(path);
        }
        self.load();
        Ok(())
    }

    fn open(&mut self, _: &Context, _: &Request) -> Result<Group, ServiceError> {
        Ok(self.list_status())
    }

    fn command(&mut self, _: &Context, request: &Request) -> Result<Reply, ServiceError> {
        match request.name() {
            name if name.eq_ignore_ascii_case("Describe") => {
                let atr = match (&request.card, request.bin_arg("ATR")?) {
                    (Some(card), _) => card.atr.to_vec(),
                    (None, Some(atr)) => atr,
                    (None, None) => {
                        return Err(ServiceError::invalid(
                            "command/CardId or command/ATR: one is needed",
                        ))
                    }
                };
                Ok(Reply::new(
                    "DescribeResponse",
                    self.describe(&atr, request.card.as_ref()),
                ))
            }
            "" => Err(ServiceError::invalid("command/name: missing")),
            other => Err(ServiceError::not_supported(format!(
                "cardinfo has no command '{other}' (it has Describe)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chipcard_ipc::message::CardType;
    use chipcard_ipc::{CardId, ClientId, ContextId, ErrorCode, ReaderId, ServiceId};

    fn context() -> Context {
        Context {
            service_id: ServiceId(1),
            context_id: ContextId(1),
            client_id: ClientId(1),
            app_name: "test".into(),
            user_name: "user".into(),
        }
    }

    fn list_file(text: &str) -> (tempfile_dir::Dir, PathBuf) {
        let dir = tempfile_dir::Dir::new();
        let path = dir.path().join("smartcard_list.txt");
        std::fs::write(&path, text).expect("write list");
        (dir, path)
    }

    /// A tiny temporary directory without extra dependencies.
    mod tempfile_dir {
        use std::path::{Path, PathBuf};
        use std::sync::atomic::{AtomicUsize, Ordering};

        pub struct Dir(PathBuf);
        static N: AtomicUsize = AtomicUsize::new(0);

        impl Dir {
            pub fn new() -> Dir {
                let n = N.fetch_add(1, Ordering::SeqCst);
                let path =
                    std::env::temp_dir().join(format!("cardinfo-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&path).expect("temp dir");
                Dir(path)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn describe_by_card_uses_the_server_data_and_the_list() {
        let (_dir, path) = list_file("3B 02 14 5.\n\tSchlumberger Multiflex 3k\n");
        let mut service = CardInfo::with_list(&path);
        let card = ServiceCard {
            card_id: CardId(3),
            atr: vec![0x3B, 0x02, 0x14, 0x50].into(),
            card_type: CardType::Processor,
            card_types: vec!["processorcard".into(), "card".into()],
            reader_id: ReaderId(1),
            reader_name: "R".into(),
            driver_type: "emul".into(),
            slot: 0,
        };
        let request = Request {
            command: Group::new("command").with_char("name", "Describe"),
            card: Some(card),
        };
        let reply = service.command(&context(), &request).expect("described");
        assert_eq!(reply.name, "DescribeResponse");
        let d = reply.data;
        assert_eq!(d.get_char("CardId").ok(), Some("0x00000003"));
        assert_eq!(
            d.get_chars("CardTypes").ok(),
            Some(vec!["processorcard", "card"])
        );
        let atr = d.get_group("atr").expect("atr group");
        assert_eq!(atr.get_char("TS").ok(), Some("3B"));
        assert_eq!(atr.get_chars("protocols").ok(), Some(vec!["T=0"]));
        assert_eq!(atr.get_char("valid").ok(), Some("yes"));
        let desc = d.get_group("descriptions").expect("descriptions");
        assert_eq!(desc.get_char("status").ok(), Some("ok"));
        let entry = desc.get_group("entry").expect("an entry");
        assert_eq!(entry.get_char("pattern").ok(), Some("3B 02 14 5."));
        assert_eq!(
            entry.get_chars("text").ok(),
            Some(vec!["Schlumberger Multiflex 3k"])
        );
    }

    #[test]
    fn a_missing_list_says_not_installed() {
        let dir = tempfile_dir::Dir::new();
        let mut service = CardInfo::default();
        let config = Group::new("config")
            .with_char("atrList", dir.path().join("nope.txt").display().to_string());
        service.start(&config).expect("starts without the list");
        let open = service.open(&context(), &Request::default()).expect("open");
        assert_eq!(open.get_char("listStatus").ok(), Some("not installed"));
        let request = Request::new(
            Group::new("command")
                .with_char("name", "describe")
                .with_bin("ATR", vec![0x3B, 0x00]),
        );
        let reply = service.command(&context(), &request).expect("described");
        let desc = reply.data.get_group("descriptions").expect("group");
        assert_eq!(desc.get_char("status").ok(), Some("not installed"));
        assert!(desc
            .get_char("text")
            .is_ok_and(|t| t.contains("is not installed")));
        assert!(reply.data.var("CardId").is_none());
    }

    #[test]
    fn bad_commands_get_codes() {
        let service = &mut CardInfo::default();
        let no_atr = Request::new(Group::new("command").with_char("name", "Describe"));
        let e = service.command(&context(), &no_atr).expect_err("no ATR");
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        let bad_hex = Request::new(
            Group::new("command")
                .with_char("name", "Describe")
                .with_char("ATR", "3G"),
        );
        assert_eq!(
            service.command(&context(), &bad_hex).map_err(|e| e.code),
            Err(ErrorCode::InvalidArgument)
        );
        let unknown = Request::new(Group::new("command").with_char("name", "Explode"));
        assert_eq!(
            service.command(&context(), &unknown).map_err(|e| e.code),
            Err(ErrorCode::NotSupported)
        );
    }
}
