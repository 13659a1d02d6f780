//! The command line every driver accepts.

use std::os::fd::RawFd;

use chipcard_ipc::DriverId;
use clap::Parser;

/// `chipcard-driver-TYPE --ipc-fd N --driver-id 0x0000000N [--log-level FILTER]`.
#[derive(Debug, Clone, Parser)]
#[command(about = "A chipcard driver; chipcardd starts it, people do not.", long_about = None)]
pub struct Args {
    /// The descriptor of the socket to the server (chipcardd passes 0, standard input).
    #[arg(long, value_name = "N")]
    pub ipc_fd: RawFd,

    /// The id the server gave this driver, e.g. 0x00000001.
    #[arg(long, value_name = "ID", value_parser = chipcard_child::parse_object_id_arg::<DriverId>)]
    pub driver_id: DriverId,

    /// A tracing filter such as `debug` or `chipcard_driver=trace`; overrides RUST_LOG.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_command_line() {
        let args = Args::try_parse_from(["d", "--ipc-fd", "0", "--driver-id", "0x00000007"])
            .expect("valid");
        assert_eq!((args.ipc_fd, args.driver_id), (0, DriverId(7)));
        assert!(Args::try_parse_from(["d", "--ipc-fd", "0", "--driver-id", "x"]).is_err());
        assert!(Args::try_parse_from(["d", "--driver-id", "0x1"]).is_err());
    }
}
