//! The command line every service accepts.

use std::os::fd::RawFd;

use chipcard_ipc::ServiceId;
use clap::Parser;

/// `chipcard-service-TYPE --ipc-fd N --service-id 0x0000000N [--log-level FILTER]`.
#[derive(Debug, Clone, Parser)]
#[command(about = "A chipcard service; chipcardd starts it, people do not.", long_about = None)]
pub struct Args {
    /// The descriptor of the socket to the server (chipcardd passes 0, standard input).
    #[arg(long, value_name = "N")]
    pub ipc_fd: RawFd,

    /// The id the server gave this service, e.g. 0x00000001.
    #[arg(long, value_name = "ID", value_parser = chipcard_child::parse_object_id_arg::<ServiceId>)]
    pub service_id: ServiceId,

    /// A tracing filter such as `debug` or `chipcard_service=trace`; overrides RUST_LOG.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_command_line() {
        let args = Args::try_parse_from(["s", "--ipc-fd", "0", "--service-id", "0x00000007"])
            .expect("valid");
        assert_eq!((args.ipc_fd, args.service_id), (0, ServiceId(7)));
        assert!(Args::try_parse_from(["s", "--ipc-fd", "0", "--service-id", "x"]).is_err());
        assert!(Args::try_parse_from(["s", "--service-id", "0x1"]).is_err());
    }
}
