//! The command line every driver accepts: [`chipcard_child::ChildArgs`] with `--driver-id`.

use chipcard_ipc::DriverId;

/// `chipcard-driver-TYPE --ipc-fd N --driver-id 0x0000000N [--log-level FILTER]`.
pub type Args = chipcard_child::ChildArgs<DriverId>;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn parses_the_server_command_line() {
        let args = Args::try_parse_from(["d", "--ipc-fd", "0", "--driver-id", "0x00000007"])
            .expect("valid");
        assert_eq!((args.ipc_fd, args.id), (0, DriverId(7)));
        assert!(Args::try_parse_from(["d", "--ipc-fd", "0", "--driver-id", "x"]).is_err());
        assert!(Args::try_parse_from(["d", "--driver-id", "0x1"]).is_err());
    }
}
