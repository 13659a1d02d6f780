//! Services (PROTOCOL §6): open a context with a service, send it commands, close it.

use chipcard_ipc::message::{ServiceClose, ServiceCommand, ServiceOpen, ToClient};
use chipcard_ipc::{ContextId, Group, Outgoing, ServiceId};

use crate::client::Client;
use crate::error::{Error, Result};

/// Which service to open: by the id the server gave it, or by its configured name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRef {
    /// By id.
    Id(ServiceId),
    /// By name, e.g. `cardinfo`.
    Name(String),
}

impl ServiceRef {
    /// A service id (`0x...`, hex) or else a name.
    pub fn parse(s: &str) -> ServiceRef {
        if s.starts_with("0x") || s.starts_with("0X") {
            if let Ok(id) = s.parse::<ServiceId>() {
                return ServiceRef::Id(id);
            }
        }
        ServiceRef::Name(s.to_owned())
    }
}

/// An open context: what `ServiceOpen` answered.
///
/// A context belongs to the connection that opened it: the server closes it when the
/// connection closes. [`Client::service_close`] closes it before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContext {
    /// The service's id.
    pub service_id: ServiceId,
    /// The service's name.
    pub service_name: String,
    /// The context.
    pub context_id: ContextId,
    /// The service's flags (`autoload`, `silent`).
    pub service_flags: Vec<String>,
    /// What the service sent with its answer (`service {}`).
    pub data: Group,
}

/// A command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceReply {
    /// The response's name (`name`).
    pub name: String,
    /// The response data (`command {}`).
    pub data: Group,
}

impl Client {
    /// Opens a context with a service; `command` is service specific data (none: empty).
    pub async fn service_open(
        &self,
        service: &ServiceRef,
        command: Option<Group>,
    ) -> Result<ServiceContext> {
        let (service_id, service_name) = match service {
            ServiceRef::Id(id) => (Some(*id), None),
            ServiceRef::Name(name) => (None, Some(name.clone())),
        };
        let msg = ServiceOpen {
            service_id,
            service_name,
            command: command.map(|g| renamed(g, "command")),
        };
        let r = match self.request(msg).await? {
            ToClient::ServiceOpenResponse(r) => r,
            other => return Err(unexpected("ServiceOpen", &other)),
        };
        Ok(ServiceContext {
            service_id: r
                .service_id
                .ok_or_else(|| Error::protocol("ServiceOpenResponse without serviceId"))?,
            service_name: r.service_name.unwrap_or_default(),
            context_id: r
                .context_id
                .ok_or_else(|| Error::protocol("ServiceOpenResponse without contextId"))?,
            service_flags: r.service_flags,
            data: r.service.unwrap_or_else(|| Group::new("service")),
        })
    }

    /// Sends the command `name` with `args` (the other fields of `command {}`) to an open
    /// context. A failure the service reports is [`Error::Server`] with its code and text.
    pub async fn service_command(
        &self,
        context: &ServiceContext,
        name: &str,
        args: Group,
    ) -> Result<ServiceReply> {
        let mut command = renamed(args, "command");
        command.set_char("name", name);
        let msg = ServiceCommand {
            service_id: context.service_id,
            context_id: context.context_id,
            command,
        };
        match self.request(msg).await? {
            ToClient::ServiceCommandResponse(r) => Ok(ServiceReply {
                name: r.name.unwrap_or_default(),
                data: r.command.unwrap_or_else(|| Group::new("command")),
            }),
            other => Err(unexpected("ServiceCommand", &other)),
        }
    }

    /// Closes a context; what the service sent with its answer (`service {}`).
    pub async fn service_close(&self, context: &ServiceContext) -> Result<Group> {
        let msg = ServiceClose {
            service_id: context.service_id,
            context_id: context.context_id,
        };
        match self.request(msg).await? {
            ToClient::ServiceCloseResponse(r) => {
                Ok(r.service.unwrap_or_else(|| Group::new("service")))
            }
            other => Err(unexpected("ServiceClose", &other)),
        }
    }
}

fn renamed(mut g: Group, name: &str) -> Group {
    g.name = name.to_owned();
    g
}

fn unexpected(request: &str, answer: &ToClient) -> Error {
    Error::protocol(format!("{request} was answered with {}", answer.cmd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_refs_parse_ids_and_names() {
        assert_eq!(
            ServiceRef::parse("0x00000002"),
            ServiceRef::Id(ServiceId(2))
        );
        assert_eq!(
            ServiceRef::parse("cardinfo"),
            ServiceRef::Name("cardinfo".into())
        );
        assert_eq!(ServiceRef::parse("0xzz"), ServiceRef::Name("0xzz".into()));
    }
}
