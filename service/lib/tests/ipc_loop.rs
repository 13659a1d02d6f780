//! The service side of the protocol over a socketpair, as chipcardd would drive it.

use chipcard_ipc::message::{
    ForwardedServiceClose, ForwardedServiceCommand, ForwardedServiceOpen, FromService, Ping,
    ServiceReadyResponse, ServiceStart, StopService,
};
use chipcard_ipc::{ClientId, ContextId, ErrorCode, Group, Outcome, ServiceId};
use chipcard_service::{serve, Context, Error, Exit, Reply, Request, Service, ServiceError};
use chipcard_testlab::link::Link;
use tokio::net::UnixStream;

/// Echoes `text`, counting commands per context; refuses to start with `fail="yes"`.
struct Echo {
    commands: u32,
}

impl Service for Echo {
    fn start(&mut self, config: &Group) -> Result<(), ServiceError> {
        match config.opt_char("fail") {
            Ok(Some("yes")) => Err(ServiceError::invalid("config/fail: told to fail")),
            _ => Ok(()),
        }
    }
    fn open(&mut self, context: &Context, _: &Request) -> Result<Group, ServiceError> {
        Ok(Group::new("service").with_char("greeting", format!("hello {}", context.user_name)))
    }
    fn command(&mut self, context: &Context, request: &Request) -> Result<Reply, ServiceError> {
        match request.name() {
            "Echo" => {
                self.commands += 1;
                let text = request.char_arg("text")?.unwrap_or_default();
                let data = Group::new("x")
                    .with_char("text", text)
                    .with_char("app", context.app_name.clone())
                    .with_int("count", i32::try_from(self.commands).unwrap_or(i32::MAX));
                Ok(Reply::new("EchoResponse", data))
            }
            other => Err(ServiceError::not_supported(format!("no command '{other}'"))),
        }
    }
}

fn start() -> (
    Link<FromService>,
    tokio::task::JoinHandle<Result<Exit, Error>>,
) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let task = tokio::spawn(serve(theirs, ServiceId(5), Echo { commands: 0 }));
    (Link::new(ours), task)
}

fn open(context: u32) -> ForwardedServiceOpen {
    ForwardedServiceOpen {
        service_id: ServiceId(5),
        context_id: ContextId(context),
        client_id: ClientId(1),
        app_name: "app".into(),
        user_name: "alice".into(),
        command: None,
        card: None,
    }
}

fn command(context: u32, name: &str) -> ForwardedServiceCommand {
    ForwardedServiceCommand {
        service_id: ServiceId(5),
        context_id: ContextId(context),
        client_id: ClientId(1),
        app_name: "app".into(),
        user_name: "alice".into(),
        command: Group::new("command")
            .with_char("name", name)
            .with_char("text", "hi"),
        card: None,
    }
}

#[tokio::test]
async fn a_whole_conversation() {
    let (mut s, task) = start();
    s.send(&ServiceStart {
        service_id: ServiceId(5),
        config: Group::new("config"),
    })
    .await;
    let (env, msg) = s.recv().await;
    assert_eq!(env.refid, None, "ServiceReady is not a response");
    match msg {
        FromService::ServiceReady(r) => {
            assert!(r.outcome.is_ok());
            assert_eq!(r.service_id, ServiceId(5));
        }
        other => panic!("{other:?}"),
    }
    s.send(&ServiceReadyResponse {
        outcome: Outcome::ok("registered"),
    })
    .await;
    // No context yet: code 3 without calling the service.
    match s.request(&command(7, "Echo")).await.1 {
        FromService::ErrorResponse(e) => assert_eq!(e.error_code(), ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
    match s.request(&open(7)).await.1 {
        FromService::ServiceOpenResponse(r) => {
            assert!(r.outcome.is_ok());
            assert_eq!(r.context_id, Some(ContextId(7)));
            let g = r.service.expect("service data");
            assert_eq!(g.get_char("greeting").ok(), Some("hello alice"));
        }
        other => panic!("{other:?}"),
    }
    match s.request(&command(7, "Echo")).await.1 {
        FromService::ServiceCommandResult(r) => {
            assert_eq!(r.code, None);
            assert_eq!(r.name.as_deref(), Some("EchoResponse"));
            let g = r.command.expect("data");
            assert_eq!(g.name, "command");
            assert_eq!(g.get_char("text").ok(), Some("hi"));
            assert_eq!(g.get_char("app").ok(), Some("app"));
            assert_eq!(g.get_int("count").ok(), Some(1));
        }
        other => panic!("{other:?}"),
    }
    match s.request(&command(7, "Explode")).await.1 {
        FromService::ErrorResponse(e) => {
            assert_eq!(e.error_code(), ErrorCode::NotSupported);
            assert_eq!(e.text, "no command 'Explode'");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        s.request(&Ping {}).await.1,
        FromService::PingResponse(_)
    ));
    let close = ForwardedServiceClose {
        service_id: ServiceId(5),
        context_id: ContextId(7),
        client_id: ClientId(1),
        app_name: "app".into(),
        user_name: "alice".into(),
        command: None,
    };
    match s.request(&close).await.1 {
        FromService::ServiceCloseResponse(r) => assert!(r.outcome.is_ok(), "{r:?}"),
        other => panic!("{other:?}"),
    }
    match s.request(&close).await.1 {
        FromService::ServiceCloseResponse(r) => {
            assert_eq!(r.outcome.error, Some(ErrorCode::NotFound));
        }
        other => panic!("{other:?}"),
    }
    match s.request(&command(7, "Echo")).await.1 {
        FromService::ErrorResponse(e) => assert_eq!(e.error_code(), ErrorCode::NotFound),
        other => panic!("{other:?}"),
    }
    s.send(&StopService {}).await;
    let exit = task.await.expect("joins").expect("clean exit");
    assert_eq!(exit, Exit::Stopped);
}

#[tokio::test]
async fn a_failed_start_is_reported_and_ends_the_service() {
    let (mut s, task) = start();
    // Requests before ServiceStart are refused with code 11.
    match s.request(&open(1)).await.1 {
        FromService::ErrorResponse(e) => assert_eq!(e.error_code(), ErrorCode::Protocol),
        other => panic!("{other:?}"),
    }
    s.send(&ServiceStart {
        service_id: ServiceId(5),
        config: Group::new("config").with_char("fail", "yes"),
    })
    .await;
    match s.recv().await.1 {
        FromService::ServiceReady(r) => {
            assert_eq!(r.outcome.error, Some(ErrorCode::InvalidArgument));
            assert_eq!(r.outcome.text, "config/fail: told to fail");
        }
        other => panic!("{other:?}"),
    }
    s.send(&ServiceReadyResponse {
        outcome: Outcome::failed(ErrorCode::Generic, "not started"),
    })
    .await;
    match task.await.expect("joins") {
        Err(Error::Start(e)) => assert_eq!(e.code, ErrorCode::InvalidArgument),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_server_going_away_ends_the_service() {
    let (s, task) = start();
    drop(s);
    assert_eq!(task.await.expect("joins").expect("clean"), Exit::ServerGone);
}
