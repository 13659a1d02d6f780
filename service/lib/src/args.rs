//! The command line every service accepts: [`chipcard_child::ChildArgs`] with `--service-id`.

use chipcard_ipc::ServiceId;

/// `chipcard-service-TYPE --ipc-fd N --service-id 0x0000000N [--log-level FILTER]`.
pub type Args = chipcard_child::ChildArgs<ServiceId>;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn parses_the_server_command_line() {
        let args = Args::try_parse_from(["s", "--ipc-fd", "0", "--service-id", "0x00000007"])
            .expect("valid");
        assert_eq!((args.ipc_fd, args.id), (0, ServiceId(7)));
        assert!(Args::try_parse_from(["s", "--ipc-fd", "0", "--service-id", "x"]).is_err());
        assert!(Args::try_parse_from(["s", "--service-id", "0x1"]).is_err());
    }
}
