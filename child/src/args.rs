//! The command line chipcardd gives every driver and service:
//! `--ipc-fd N --KIND-id 0x0000000N [--log-level FILTER]`, KIND being `driver` or `service`.

use std::os::fd::RawFd;

use chipcard_ipc::{DriverId, ServiceId};
use clap::error::ErrorKind;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches, Parser};

use crate::parse_object_id_arg;

/// The id chipcardd gives a child on its command line, and the kind of child it names.
pub trait ChildId: Clone + std::fmt::Debug + std::fmt::Display + Send + Sync + 'static {
    /// The kind of child: `driver` or `service`.
    const KIND: &'static str;
    /// The flag that carries the id: `driver-id` or `service-id`.
    const ID_FLAG: &'static str;

    /// Parses the id as given on the command line (`0x00000007`, `7`).
    fn parse_arg(s: &str) -> Result<Self, String>;
}

impl ChildId for DriverId {
    const KIND: &'static str = "driver";
    const ID_FLAG: &'static str = "driver-id";

    fn parse_arg(s: &str) -> Result<Self, String> {
        parse_object_id_arg(s)
    }
}

impl ChildId for ServiceId {
    const KIND: &'static str = "service";
    const ID_FLAG: &'static str = "service-id";

    fn parse_arg(s: &str) -> Result<Self, String> {
        parse_object_id_arg(s)
    }
}

/// `chipcard-KIND-TYPE --ipc-fd N --KIND-id 0x0000000N [--log-level FILTER]`, parsed with
/// clap ([`Parser`]); `Id` says the kind.
#[derive(Debug, Clone)]
pub struct ChildArgs<Id> {
    /// The descriptor of the socket to the server (chipcardd passes 0, standard input).
    pub ipc_fd: RawFd,
    /// The id the server gave this child (`--driver-id`, `--service-id`).
    pub id: Id,
    /// A tracing filter such as `debug` or `chipcard_driver=trace`; overrides RUST_LOG.
    pub log_level: Option<String>,
}

impl<Id: ChildId> CommandFactory for ChildArgs<Id> {
    fn command() -> Command {
        let kind = Id::KIND;
        Command::new("chipcard-child")
            .about(format!(
                "A chipcard {kind}; chipcardd starts it, people do not."
            ))
            .arg(
                Arg::new("ipc_fd")
                    .long("ipc-fd")
                    .value_name("N")
                    .required(true)
                    .value_parser(clap::value_parser!(RawFd))
                    .help("The descriptor of the socket to the server (chipcardd passes 0, standard input)"),
            )
            .arg(
                Arg::new("id")
                    .long(Id::ID_FLAG)
                    .value_name("ID")
                    .required(true)
                    .value_parser(Id::parse_arg)
                    .help(format!("The id the server gave this {kind}, e.g. 0x00000001")),
            )
            .arg(
                Arg::new("log_level")
                    .long("log-level")
                    .value_name("FILTER")
                    .help(format!(
                        "A tracing filter such as `debug` or `chipcard_{kind}=trace`; overrides RUST_LOG"
                    )),
            )
    }

    fn command_for_update() -> Command {
        Self::command()
    }
}

impl<Id: ChildId> FromArgMatches for ChildArgs<Id> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let missing = |flag: &str| {
            clap::Error::raw(
                ErrorKind::MissingRequiredArgument,
                format!("--{flag} is required\n"),
            )
        };
        Ok(ChildArgs {
            ipc_fd: *matches
                .get_one::<RawFd>("ipc_fd")
                .ok_or_else(|| missing("ipc-fd"))?,
            id: matches
                .get_one::<Id>("id")
                .cloned()
                .ok_or_else(|| missing(Id::ID_FLAG))?,
            log_level: matches.get_one::<String>("log_level").cloned(),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl<Id: ChildId> Parser for ChildArgs<Id> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_flag_follows_the_kind() {
        let args = ChildArgs::<ServiceId>::try_parse_from([
            "s",
            "--ipc-fd",
            "3",
            "--service-id",
            "7",
            "--log-level",
            "debug",
        ])
        .expect("valid");
        assert_eq!((args.ipc_fd, args.id), (3, ServiceId(7)));
        assert_eq!(args.log_level.as_deref(), Some("debug"));
        assert!(
            ChildArgs::<ServiceId>::try_parse_from(["s", "--ipc-fd", "0", "--driver-id", "7"])
                .is_err()
        );
        ChildArgs::<DriverId>::command().debug_assert();
    }
}
