//! A client's `ServiceOpen`, `ServiceCommand` and `ServiceClose`: checked against the
//! [`crate::services`] table, forwarded to the service with `clientId`, `appName` and
//! `userName` added (seed section 5), and answered in the seed's shapes (section 4).
//!
//! Each request does its table part at once, under the registry's lock (so a context and
//! its client come and go together), then continues in a task of its own: the service may
//! need starting, and its answer may take up to `commandTimeout`.
//!
//! When a request's `command {}` names a card (`char CardId`), the card must be one the
//! client may use (code 2 malformed, 3 unknown, 7 removed, 9 not allowed); the server adds
//! what it knows about the card as a `card {}` group to what it forwards (ATR, card type
//! and types, reader), so that a service needs no way of its own to ask for it.

use std::sync::Arc;
use std::time::Duration;

use chipcard_ipc::message::{
    ForwardedServiceClose, ForwardedServiceCommand, ForwardedServiceOpen, FromService, ServiceCard,
    ServiceClose, ServiceCloseResponse, ServiceCommand, ServiceCommandResponse, ServiceOpen,
    ServiceOpenResponse,
};
use chipcard_ipc::{CardId, ClientId, ContextId, ErrorCode, Group, Outcome, Outgoing, ServiceId};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn, Instrument};

use crate::child::CallError;
use crate::outbox::Reply;
use crate::registry::{CardRegistry, ClientIdentity, Failure};
use crate::server::Shared;
use crate::services::{Availability, ServiceLink};

/// What the client is told about the service in every answer.
#[derive(Debug, Clone, Default)]
struct About {
    id: Option<ServiceId>,
    name: Option<String>,
    flags: Vec<String>,
}

impl About {
    fn of(reg: &CardRegistry, id: ServiceId) -> About {
        let entry = reg.services().get(id);
        About {
            id: Some(id),
            name: entry.map(|s| s.config.name.clone()),
            flags: entry.map(|s| s.config.flags.words()).unwrap_or_default(),
        }
    }
}

/// Who is asking, as the service is told.
#[derive(Debug, Clone)]
struct Caller {
    client: ClientId,
    app_name: String,
    user_name: String,
}

/// `ServiceOpen`: a new context of the client with the service named by `serviceId` or
/// `serviceName` (exactly one).
pub fn open(shared: &Arc<Shared>, client: ClientId, m: ServiceOpen, reply: Reply) {
    let fail = |about: About, f: Failure| ServiceOpenResponse {
        outcome: Outcome::failed(f.code, f.text),
        service_id: about.id,
        service_name: about.name,
        service_flags: about.flags,
        ..Default::default()
    };
    let prepared = {
        let mut reg = shared.lock();
        let asked = About {
            id: m.service_id,
            name: m.service_name.clone(),
            flags: Vec::new(),
        };
        match reg.services().find(m.service_id, m.service_name.as_deref()) {
            Err(f) => Err((asked, f)),
            Ok(id) => {
                let about = About::of(&reg, id);
                prepare_open(&mut reg, client, id, m.command.as_ref())
                    .map(|p| (about.clone(), p))
                    .map_err(|f| (about, f))
            }
        }
    };
    let (about, p) = match prepared {
        Ok(p) => p,
        Err((about, f)) => {
            debug!(client = %client, error = %f.text, "ServiceOpen refused");
            return reply.send(fail(about, f));
        }
    };
    let shared = shared.clone();
    let service = p.service;
    let context = p.context;
    tokio::spawn(
        async move {
            let limit = shared.settings.driver_start_timeout;
            let result = async {
                let link = wait_for_link(&p.name, p.availability, &p.demand, p.watch, limit).await?;
                let caller = caller(&shared, client, p.identity).await;
                let msg = ForwardedServiceOpen {
                    service_id: service,
                    context_id: context,
                    client_id: client,
                    app_name: caller.app_name,
                    user_name: caller.user_name,
                    command: m.command,
                    card: p.card,
                };
                match call(&shared, &link, msg).await? {
                    FromService::ServiceOpenResponse(r) => Ok((link, r)),
                    other => Err(unexpected(&other)),
                }
            }
            .await;
            let response = match result {
                Ok((link, r)) if r.outcome.is_ok() => {
                    if shared.lock().services_mut().context_opened(context) {
                        info!(service = %service, context = %context, client = %client, "context opened");
                        ServiceOpenResponse {
                            outcome: Outcome::ok("Service open"),
                            service_id: about.id,
                            service_name: about.name,
                            context_id: Some(context),
                            service_flags: about.flags,
                            service: Some(r.service.unwrap_or_else(|| Group::new("service"))),
                        }
                    } else {
                        // Its client left, or the service stopped, while it was opening.
                        close_in_service(&shared, &link, service, context, client);
                        let f = Failure::new(ErrorCode::DriverError, format!("context {context} was lost while it opened"));
                        fail(about, f)
                    }
                }
                Ok((_, r)) => {
                    shared.lock().services_mut().forget_context(context);
                    ServiceOpenResponse {
                        outcome: r.outcome,
                        service_id: about.id,
                        service_name: about.name,
                        context_id: None,
                        service_flags: about.flags,
                        service: r.service,
                    }
                }
                Err(f) => {
                    shared.lock().services_mut().forget_context(context);
                    fail(about, f)
                }
            };
            reply.send(response);
        }
        .in_current_span(),
    );
}

/// What an open needs, taken under the lock.
struct PreparedOpen {
    service: ServiceId,
    name: String,
    context: ContextId,
    availability: Availability,
    demand: Arc<Notify>,
    watch: watch::Receiver<Availability>,
    card: Option<ServiceCard>,
    identity: ClientIdentity,
}

/// The most service contexts one client may hold open (or opening) at once.
pub const MAX_CONTEXTS_PER_CLIENT: usize = 64;

fn prepare_open(
    reg: &mut CardRegistry,
    client: ClientId,
    service: ServiceId,
    command: Option<&Group>,
) -> Result<PreparedOpen, Failure> {
    let card = card_for(reg, client, command)?;
    let identity = reg
        .client_identity(client)
        .ok_or_else(|| Failure::new(ErrorCode::Generic, "the client is gone"))?;
    let entry = reg
        .services()
        .get(service)
        .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no service {service}")))?;
    let name = entry.config.name.clone();
    let availability = entry.availability();
    if let Some(f) = availability.unavailable(&name) {
        return Err(f);
    }
    let demand = entry.demand.clone();
    let watch = entry.watch();
    if reg.services().contexts_of(client) >= MAX_CONTEXTS_PER_CLIENT {
        return Err(Failure::new(
            ErrorCode::Generic,
            format!(
                "too many open service contexts (at most {MAX_CONTEXTS_PER_CLIENT} per client)"
            ),
        ));
    }
    let context = reg.services_mut().open_context(service, client);
    Ok(PreparedOpen {
        service,
        name,
        context,
        availability,
        demand,
        watch,
        card,
        identity,
    })
}

/// `ServiceCommand` on one of the client's contexts.
pub fn command(shared: &Arc<Shared>, client: ClientId, m: ServiceCommand, reply: Reply) {
    let (service, context) = (m.service_id, m.context_id);
    let prepared = {
        let mut reg = shared.lock();
        let about = About::of(&reg, service);
        let checked = reg
            .services()
            .check_context(client, service, context)
            .and_then(|()| card_for(&reg, client, Some(&m.command)))
            .and_then(|card| Ok((card, up_link(&reg, service)?)))
            .and_then(|(card, link)| {
                let identity = reg
                    .client_identity(client)
                    .ok_or_else(|| Failure::new(ErrorCode::Generic, "the client is gone"))?;
                Ok((card, link, identity))
            });
        if checked.is_ok() {
            reg.services_mut().touch(service);
        }
        (about, checked)
    };
    let answer = move |about: About, result: Result<(Option<String>, Option<Group>), Failure>| {
        let (outcome, name, command) = match result {
            Ok((name, command)) => (Outcome::ok("Service command executed"), name, command),
            Err(f) => {
                let data = Group::new("command")
                    .with_int("code", f.code.number())
                    .with_char("text", f.text.clone());
                (
                    Outcome::failed(f.code, f.text),
                    Some("error".to_owned()),
                    Some(data),
                )
            }
        };
        ServiceCommandResponse {
            outcome,
            service_id: about.id,
            service_name: about.name,
            context_id: Some(context),
            service_flags: about.flags,
            name,
            command,
        }
    };
    let (about, (card, link, identity)) = match prepared {
        (about, Ok(p)) => (about, p),
        (about, Err(f)) => {
            debug!(client = %client, service = %service, context = %context, error = %f.text, "ServiceCommand refused");
            return reply.send(answer(about, Err(f)));
        }
    };
    let shared = shared.clone();
    tokio::spawn(
        async move {
            let caller = caller(&shared, client, identity).await;
            let msg = ForwardedServiceCommand {
                service_id: service,
                context_id: context,
                client_id: client,
                app_name: caller.app_name,
                user_name: caller.user_name,
                command: m.command,
                card,
            };
            let result = match call(&shared, &link, msg).await {
                Ok(FromService::ServiceCommandResult(r)) => match r.code.unwrap_or(0) {
                    0 => Ok((r.name, r.command)),
                    n => Err(Failure::new(
                        ErrorCode::from_number(n),
                        r.text
                            .unwrap_or_else(|| format!("the service failed ({n})")),
                    )),
                },
                Ok(other) => Err(unexpected(&other)),
                Err(f) => Err(f),
            };
            reply.send(answer(about, result));
        }
        .in_current_span(),
    );
}

/// `ServiceClose` of one of the client's contexts. The context is closed on the server's
/// side whatever the service answers.
pub fn close(shared: &Arc<Shared>, client: ClientId, m: ServiceClose, reply: Reply) {
    let (service, context) = (m.service_id, m.context_id);
    let (about, closed) = {
        let mut reg = shared.lock();
        let about = About::of(&reg, service);
        let closed = reg
            .services_mut()
            .close_context(client, service, context)
            .map(|open| {
                (
                    open,
                    up_link(&reg, service).ok(),
                    reg.client_identity(client),
                )
            });
        (about, closed)
    };
    let answer = move |about: About, outcome: Outcome, data: Option<Group>| ServiceCloseResponse {
        outcome,
        service_id: about.id,
        service_name: about.name,
        context_id: Some(context),
        service_flags: about.flags,
        service: data,
    };
    let (link, identity) = match closed {
        Err(f) => {
            debug!(client = %client, service = %service, context = %context, error = %f.text, "ServiceClose refused");
            return reply.send(answer(about, Outcome::failed(f.code, f.text), None));
        }
        Ok((true, Some(link), Some(identity))) => (link, identity),
        Ok(_) => {
            let text = "Service closed (the context was lost when its service stopped)";
            return reply.send(answer(about, Outcome::ok(text), None));
        }
    };
    info!(service = %service, context = %context, client = %client, "context closed");
    let shared = shared.clone();
    tokio::spawn(
        async move {
            let caller = caller(&shared, client, identity).await;
            let msg = ForwardedServiceClose {
                service_id: service,
                context_id: context,
                client_id: client,
                app_name: caller.app_name,
                user_name: caller.user_name,
                command: None,
            };
            let response = match call(&shared, &link, msg).await {
                Ok(FromService::ServiceCloseResponse(r)) => answer(about, r.outcome, r.service),
                Ok(other) => {
                    let f = unexpected(&other);
                    answer(about, Outcome::failed(f.code, f.text), None)
                }
                Err(f) => answer(about, Outcome::failed(f.code, f.text), None),
            };
            reply.send(response);
        }
        .in_current_span(),
    );
}

/// The client disconnected: its open contexts are closed in their services (their
/// answers are only logged). Call before the client leaves the registry.
pub fn client_gone(shared: &Arc<Shared>, client: ClientId) {
    let (orphans, identity) = {
        let mut reg = shared.lock();
        let identity = reg.client_identity(client);
        (reg.services_mut().remove_client(client), identity)
    };
    if shared.shutdown.is_cancelled() {
        return;
    }
    for orphan in orphans {
        info!(service = %orphan.service, context = %orphan.context, client = %client, "closing the context of a client that left");
        if let (Some(link), Some(identity)) = (orphan.link, identity.clone()) {
            let caller = Caller {
                client,
                app_name: identity.application,
                user_name: identity.user_name.unwrap_or_default(),
            };
            send_close(shared, link, orphan.service, orphan.context, caller);
        }
    }
}

/// Closes a context in its service without a client waiting for the answer.
fn close_in_service(
    shared: &Arc<Shared>,
    link: &ServiceLink,
    service: ServiceId,
    context: ContextId,
    client: ClientId,
) {
    let caller = Caller {
        client,
        app_name: String::new(),
        user_name: String::new(),
    };
    send_close(shared, link.clone(), service, context, caller);
}

fn send_close(
    shared: &Arc<Shared>,
    link: ServiceLink,
    service: ServiceId,
    context: ContextId,
    caller: Caller,
) {
    let shared = shared.clone();
    tokio::spawn(
        async move {
            let msg = ForwardedServiceClose {
                service_id: service,
                context_id: context,
                client_id: caller.client,
                app_name: caller.app_name,
                user_name: caller.user_name,
                command: None,
            };
            match call(&shared, &link, msg).await {
                Ok(FromService::ServiceCloseResponse(r)) if r.outcome.is_ok() => {
                    debug!(service = %service, context = %context, "context closed in the service");
                }
                Ok(other) => {
                    warn!(service = %service, context = %context, answer = other.cmd(), "closing a context failed in the service");
                }
                Err(f) => {
                    warn!(service = %service, context = %context, error = %f.text, "closing a context failed");
                }
            }
        }
        .in_current_span(),
    );
}

/// The card `command/CardId` names, as the service is told about it.
fn card_for(
    reg: &CardRegistry,
    client: ClientId,
    command: Option<&Group>,
) -> Result<Option<ServiceCard>, Failure> {
    let Some(command) = command else {
        return Ok(None);
    };
    let value = match command.opt_char("CardId") {
        Ok(None) => return Ok(None),
        Ok(Some(value)) => value,
        Err(e) => {
            return Err(Failure::new(
                ErrorCode::InvalidArgument,
                format!("data/command/{e}"),
            ))
        }
    };
    let id: CardId = value.parse().map_err(|_| {
        Failure::new(
            ErrorCode::InvalidArgument,
            format!("data/command/CardId: not a card id: '{value}'"),
        )
    })?;
    reg.service_card(id, client).map(Some)
}

/// The link of a running service, or why there is none.
fn up_link(reg: &CardRegistry, service: ServiceId) -> Result<ServiceLink, Failure> {
    let entry = reg
        .services()
        .get(service)
        .ok_or_else(|| Failure::new(ErrorCode::NotFound, format!("no service {service}")))?;
    match entry.availability() {
        Availability::Up(link) => Ok(link),
        other => Err(other.unavailable(&entry.config.name).unwrap_or_else(|| {
            Failure::new(
                ErrorCode::DriverError,
                format!("service '{}' is not running", entry.config.name),
            )
        })),
    }
}

/// Waits up to `limit` for the service to be up, asking for it to start when it is idle.
async fn wait_for_link(
    name: &str,
    now: Availability,
    demand: &Notify,
    mut watch: watch::Receiver<Availability>,
    limit: Duration,
) -> Result<ServiceLink, Failure> {
    match now {
        Availability::Up(link) => return Ok(link),
        Availability::Idle => demand.notify_one(),
        _ => {}
    }
    let waiting = async {
        loop {
            let state = watch.borrow_and_update().clone();
            match state {
                Availability::Up(link) => return Ok(link),
                Availability::Idle | Availability::Starting => {}
                other => {
                    return Err(other.unavailable(name).unwrap_or_else(|| {
                        Failure::new(ErrorCode::DriverError, "service not available")
                    }))
                }
            }
            if watch.changed().await.is_err() {
                return Err(Failure::new(
                    ErrorCode::DriverError,
                    format!("service '{name}' was removed"),
                ));
            }
        }
    };
    tokio::time::timeout(limit, waiting)
        .await
        .unwrap_or_else(|_| {
            Err(Failure::new(
                ErrorCode::Timeout,
                format!(
                    "service '{name}' did not start within {} ms",
                    limit.as_millis()
                ),
            ))
        })
}

/// Who the client is; the user name is looked up once (off the runtime's threads: it may
/// ask NSS) and then kept with the client. No credentials: empty; no passwd entry: the
/// uid in decimal.
async fn caller(shared: &Shared, client: ClientId, identity: ClientIdentity) -> Caller {
    let user_name = match (identity.user_name, identity.uid) {
        (Some(name), _) => name,
        (None, None) => String::new(),
        (None, Some(uid)) => {
            let looked_up = tokio::task::spawn_blocking(move || {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .await
            .ok()
            .flatten();
            let name = looked_up.unwrap_or_else(|| uid.to_string());
            shared.lock().set_user_name(client, name.clone());
            name
        }
    };
    Caller {
        client,
        app_name: identity.application,
        user_name,
    }
}

/// Sends a request to the service; an `Error` answer is a failure with its code.
async fn call(
    shared: &Shared,
    link: &ServiceLink,
    msg: impl Into<chipcard_ipc::message::ToService>,
) -> Result<FromService, Failure> {
    match link.call(msg, shared.settings.command_timeout).await {
        Ok(FromService::ErrorResponse(e)) => Err(Failure::new(e.error_code(), e.text)),
        Ok(answer) => Ok(answer),
        Err(CallError::Gone) => Err(Failure::new(
            ErrorCode::DriverError,
            "the service went away",
        )),
        Err(CallError::Timeout) => Err(Failure::new(
            ErrorCode::Timeout,
            "the service did not answer in time",
        )),
    }
}

fn unexpected(answer: &FromService) -> Failure {
    Failure::new(
        ErrorCode::DriverError,
        format!("the service answered with {}", answer.cmd()),
    )
}
