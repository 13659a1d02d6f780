//! Request handling: what the server does with each client message, and what it answers.
//!
//! [`handle_request`] runs in the client's reader loop with a reserved answer slot
//! ([`Reply`]), on the request as read straight from its frame.
//! Requests that only look at or change the registry are answered at once, under the
//! registry's lock. Requests that wait — for a card another client holds, or for a driver —
//! do their registry part at once (so queues keep arrival order) and then continue in a
//! task of their own, so one slow request never holds up the client's other requests.
//!
//! Failures are answered in the response's own `code`/`text` where it has them (SetNotify,
//! StartWait, StopWait, TakeCard, ReleaseCard, CommandCard, CardCheck, CardReset, and the
//! Service* requests, which [`crate::service_requests`] handles), else with `Error`.

use std::sync::Arc;
use std::time::Duration;

use chipcard_ipc::message::{
    CardCheckResponse, CardCommand, CardReset, CardResetResponse, ClientReady, ClientReadyResponse,
    CommandCard, CommandCardResponse, ErrorResponse, FromClient, FromDriver, GetDriverVarResponse,
    ReleaseCardResponse, ResetCard, SetNotifyResponse, StartWaitResponse, StopWaitResponse,
    TakeCard, TakeCardResponse,
};
use chipcard_ipc::{CardId, ClientId, ErrorCode, Incoming, Message, Outcome, Outgoing};
use tracing::{debug, info, Instrument};

use crate::driver::CallError;
use crate::lock::Take;
use crate::notify::NotifyPatterns;
use crate::outbox::Reply;
use crate::registry::{CardTarget, Failure};
use crate::server::Shared;
use crate::wait::WaitFilter;

/// How long `TakeCard` waits when the request gives no `Timeout` (ms).
pub const DEFAULT_TAKE_TIMEOUT_MS: i32 = 10_000;

/// The server's `System`.
const SYSTEM: &str = "Linux";

/// Handles one request from `client`; the answer goes into `reply`, now or later.
pub fn handle_request(
    shared: &Arc<Shared>,
    client: ClientId,
    request: Incoming<FromClient>,
    reply: Reply,
) {
    if !request.cmd.eq_ignore_ascii_case(ClientReady::CMD) && !shared.lock().is_ready(client) {
        reply.send(ErrorResponse::new(
            ErrorCode::NotReady,
            format!("'{}' before ClientReady", request.cmd),
        ));
        return;
    }
    let msg = match request.message {
        Ok(msg) => msg,
        Err(e) => {
            debug!(cmd = %request.cmd, error = %e, "request refused");
            reply.send(ErrorResponse::new(e.code(), e.to_string()));
            return;
        }
    };
    debug!(cmd = msg.cmd(), id = request.id, "request");
    if let Some(card) = card_of(&msg) {
        if let Err(f) = shared.lock().check_access(card, client) {
            info!(cmd = msg.cmd(), card = %card, "permission denied");
            reply.send(ErrorResponse::new(f.code, f.text));
            return;
        }
    }
    match msg {
        FromClient::ClientReady(m) => {
            shared.lock().client_ready(client, &m.application);
            reply.send(ClientReadyResponse {
                chipcard_version: env!("CARGO_PKG_VERSION").to_owned(),
                system: SYSTEM.to_owned(),
                client_id: client,
            });
        }
        FromClient::SetNotify(m) => {
            let outcome = match NotifyPatterns::parse(&m.flags) {
                Ok(patterns) => {
                    shared.lock().set_notify(client, patterns);
                    Outcome::ok("ok")
                }
                Err(why) => {
                    Outcome::failed(ErrorCode::InvalidArgument, format!("data/flag: {why}"))
                }
            };
            reply.send(SetNotifyResponse { outcome });
        }
        FromClient::StartWait(m) => {
            let mut reg = shared.lock();
            // The answer first, then the cards present now, in one go under the lock.
            reply.send(StartWaitResponse {
                outcome: Outcome::ok("ok"),
            });
            reg.start_wait(client, WaitFilter::new(&m.flags, &m.mask));
        }
        FromClient::StopWait(_) => {
            shared.lock().stop_wait(client);
            reply.send(StopWaitResponse {
                outcome: Outcome::ok("ok"),
            });
        }
        FromClient::ListReaders(_) => {
            let list = shared.lock().list_readers(client);
            reply.send(list);
        }
        FromClient::CardCheck(m) => {
            let outcome = match shared.lock().check_card(m.card_id) {
                Ok(()) => Outcome::ok("card present"),
                Err(f) => failed(f),
            };
            reply.send(CardCheckResponse { outcome });
        }
        FromClient::GetDriverVar(m) => match shared.lock().driver_var(m.card_id, &m.var_name) {
            Ok(value) => reply.send(GetDriverVarResponse {
                var_name: m.var_name,
                var_value: value,
            }),
            Err(f) => reply.send(ErrorResponse::new(f.code, f.text)),
        },
        FromClient::TakeCard(m) => take_card(shared, client, m, reply),
        FromClient::ReleaseCard(m) => {
            let card_id = m.card_id;
            match shared.lock().release(card_id, client) {
                Err(f) => reply.send(ReleaseCardResponse { outcome: failed(f) }),
                Ok(target) => {
                    let shared = shared.clone();
                    tokio::spawn(
                        async move {
                            let outcome = match reset_and_hand_on(shared, target).await {
                                Ok(()) => Outcome::ok("card released"),
                                Err(why) => Outcome::ok(format!(
                                    "card released; its reset failed ({why}), so it was removed"
                                )),
                            };
                            info!(card = %card_id, "card released");
                            reply.send(ReleaseCardResponse { outcome });
                        }
                        .in_current_span(),
                    );
                }
            }
        }
        FromClient::CommandCard(m) => command_card(shared, client, m, reply),
        FromClient::CardReset(m) => card_reset(shared, client, m, reply),
        FromClient::ServiceOpen(m) => crate::service_requests::open(shared, client, m, reply),
        FromClient::ServiceCommand(m) => crate::service_requests::command(shared, client, m, reply),
        FromClient::ServiceClose(m) => crate::service_requests::close(shared, client, m, reply),
    }
}

/// The card a request names, if any: requests on a card the client may not use are
/// answered `Error` code 9 before anything else happens.
fn card_of(msg: &FromClient) -> Option<chipcard_ipc::CardId> {
    match msg {
        FromClient::CardCheck(m) => Some(m.card_id),
        FromClient::GetDriverVar(m) => Some(m.card_id),
        FromClient::TakeCard(m) => Some(m.card_id),
        FromClient::ReleaseCard(m) => Some(m.card_id),
        FromClient::CommandCard(m) => Some(m.card_id),
        FromClient::CardReset(m) => Some(m.card_id),
        _ => None,
    }
}

fn failed(f: Failure) -> Outcome {
    Outcome::failed(f.code, f.text)
}

fn take_card(shared: &Arc<Shared>, client: ClientId, m: TakeCard, reply: Reply) {
    let card_id = m.card_id;
    let answer = move |reply: Reply, result: Result<(), Failure>| {
        let outcome = match result {
            Ok(()) => {
                info!(card = %card_id, "card taken");
                Outcome::ok("Command ok")
            }
            Err(f) => failed(f),
        };
        reply.send(TakeCardResponse { outcome, card_id });
    };
    let timeout_ms = m.timeout.unwrap_or(DEFAULT_TAKE_TIMEOUT_MS);
    if timeout_ms < 0 {
        let f = Failure::new(
            ErrorCode::InvalidArgument,
            "data/Timeout: must not be negative",
        );
        return answer(reply, Err(f));
    }
    let started = shared.lock().take(card_id, client, timeout_ms > 0);
    match started {
        Err(f) => answer(reply, Err(f)),
        Ok(Take::Granted) => answer(reply, Ok(())),
        Ok(Take::Busy) => answer(reply, Err(busy(card_id))),
        Ok(Take::Queued(waiting)) => {
            debug!(card = %card_id, timeout_ms, "waiting for the card");
            let shared = shared.clone();
            let limit = Duration::from_millis(u64::from(timeout_ms.unsigned_abs()));
            tokio::spawn(
                async move {
                    let result = waiting
                        .wait(limit, |ticket| {
                            shared.lock().take_timed_out(card_id, client, ticket)
                        })
                        .await;
                    let result = result.map_err(|code| match code {
                        ErrorCode::Busy => busy(card_id),
                        ErrorCode::CardRemoved => {
                            Failure::new(code, format!("card {card_id} was removed"))
                        }
                        other => Failure::new(other, format!("card {card_id} is not available")),
                    });
                    answer(reply, result);
                }
                .in_current_span(),
            );
        }
    }
}

fn busy(card_id: CardId) -> Failure {
    Failure::new(
        ErrorCode::Busy,
        format!("card {card_id} is taken by another client"),
    )
}

/// Why a driver request failed, as a failure for the client; a card that is gone by now
/// is reported as removed whatever the driver said.
fn driver_failure(shared: &Shared, card_id: CardId, f: Failure) -> Failure {
    match shared.lock().check_card(card_id) {
        Err(gone) if gone.code == ErrorCode::CardRemoved => gone,
        _ => f,
    }
}

fn call_failure(e: CallError) -> Failure {
    match e {
        CallError::Gone => Failure::new(ErrorCode::DriverError, "the driver went away"),
        CallError::Timeout => Failure::new(ErrorCode::Timeout, "the driver did not answer in time"),
    }
}

fn unexpected(answer: &FromDriver) -> Failure {
    match answer {
        FromDriver::ErrorResponse(e) => Failure::new(e.error_code(), e.text.clone()),
        other => Failure::new(
            ErrorCode::DriverError,
            format!("the driver answered with {}", other.cmd()),
        ),
    }
}

/// `CommandCard`: the APDU goes to the card's driver; the driver's connection task
/// answers the client when the response comes (no task of its own per APDU).
fn command_card(shared: &Arc<Shared>, client: ClientId, m: CommandCard, reply: Reply) {
    let card_id = m.card_id;
    let target = match shared.lock().owned_target(card_id, client) {
        Ok(t) => t,
        Err(f) => {
            return reply.send(CommandCardResponse {
                outcome: failed(f),
                data: None,
            })
        }
    };
    let request = CardCommand {
        reader_id: target.reader,
        slot: target.slot,
        data: m.data,
        target: m.target,
    };
    let limit = shared.settings.command_timeout;
    let shared = shared.clone();
    let answer = move |result: Result<FromDriver, CallError>| {
        let result = match result {
            Ok(FromDriver::CardCommandResponse(r)) if r.outcome.is_ok() => Ok(r.data),
            Ok(FromDriver::CardCommandResponse(r)) => Err(Failure::new(
                r.outcome.error.unwrap_or(ErrorCode::DriverError),
                r.outcome.text,
            )),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => Err(call_failure(e)),
        };
        let response = match result {
            Ok(data) => CommandCardResponse {
                outcome: Outcome::ok("ok"),
                data,
            },
            Err(f) => CommandCardResponse {
                outcome: failed(driver_failure(&shared, card_id, f)),
                data: None,
            },
        };
        reply.send(response);
    };
    target.link.send(request, limit, Box::new(answer));
}

fn card_reset(shared: &Arc<Shared>, client: ClientId, m: CardReset, reply: Reply) {
    let card_id = m.card_id;
    let target = match shared.lock().owned_target(card_id, client) {
        Ok(t) => t,
        Err(f) => {
            return reply.send(CardResetResponse {
                outcome: failed(f),
                atr: None,
            })
        }
    };
    let shared = shared.clone();
    tokio::spawn(
        async move {
            let response = match reset(&shared, &target).await {
                Ok(atr) => {
                    if let Some(atr) = &atr {
                        shared.lock().set_atr(card_id, atr.clone());
                    }
                    CardResetResponse {
                        outcome: Outcome::ok("ok"),
                        atr,
                    }
                }
                Err(f) => CardResetResponse {
                    outcome: failed(driver_failure(&shared, card_id, f)),
                    atr: None,
                },
            };
            reply.send(response);
        }
        .in_current_span(),
    );
}

/// Resets a card through its driver; the new ATR when the driver gives one.
async fn reset(shared: &Shared, target: &CardTarget) -> Result<Option<bytes::Bytes>, Failure> {
    let request = ResetCard {
        reader_id: target.reader,
        slot: target.slot,
    };
    match target
        .link
        .call(request, shared.settings.command_timeout)
        .await
    {
        Ok(FromDriver::ResetCardResponse(r)) if r.outcome.is_ok() => Ok(r.atr),
        Ok(FromDriver::ResetCardResponse(r)) => Err(Failure::new(
            r.outcome.error.unwrap_or(ErrorCode::DriverError),
            r.outcome.text,
        )),
        Ok(other) => Err(unexpected(&other)),
        Err(e) => Err(call_failure(e)),
    }
}

/// Resets a released card (by `ReleaseCard` or its holder's disconnect) and then hands it
/// to the next waiter. When the reset fails the card is removed: nobody may get a card
/// whose state is unknown.
pub async fn reset_and_hand_on(shared: Arc<Shared>, target: CardTarget) -> Result<(), String> {
    match reset(&shared, &target).await {
        Ok(atr) => {
            shared.lock().reset_done(target.card_id, atr);
            Ok(())
        }
        Err(f) => {
            shared.lock().reset_failed(target.card_id, &f.text);
            Err(f.text)
        }
    }
}
