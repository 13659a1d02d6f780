//! `chipcard-service-echo`: the end-to-end tests' service, written on `chipcard-service` as
//! docs/services.md shows. `Echo` answers with what chipcardd told the service about the
//! caller (client id, application, user) and the card it added, so that the tests can check
//! what a service is given. `Exit` makes the process exit at once with status 3, without an
//! answer (a crash in the middle of a command). Anything else is answered code 5.
#![forbid(unsafe_code)]

use chipcard_ipc::Group;
use chipcard_service::{Context, Reply, Request, Service, ServiceError};

struct Echo;

impl Service for Echo {
    fn start(&mut self, _config: &Group) -> Result<(), ServiceError> {
        Ok(())
    }

    fn command(&mut self, ctx: &Context, request: &Request) -> Result<Reply, ServiceError> {
        match request.name() {
            "Echo" => {
                let mut data = Group::new("command")
                    .with_char("ClientId", ctx.client_id.to_string())
                    .with_char("AppName", ctx.app_name.clone())
                    .with_char("UserName", ctx.user_name.clone());
                if let Some(card) = &request.card {
                    data = data
                        .with_char("CardId", card.card_id.to_string())
                        .with_char("ReaderName", card.reader_name.clone());
                }
                Ok(Reply::new("EchoResponse", data))
            }
            "Exit" => std::process::exit(3),
            other => Err(ServiceError::not_supported(format!("no command '{other}'"))),
        }
    }
}

fn main() -> std::process::ExitCode {
    chipcard_service::run(Echo)
}
