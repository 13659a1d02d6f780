//! Services through chipcardd: real `chipcardd`, `chipcard-driver-emul` and
//! `chipcard-service-cardinfo` processes over real sockets.

use std::time::{Duration, Instant};

use chipcard_ipc::message::{
    Notification, ServiceClose, ServiceCloseResponse, ServiceCommand, ServiceCommandResponse,
    ServiceOpen, ServiceOpenResponse, SetNotify, ToClient,
};
use chipcard_ipc::{CardId, ContextId, ErrorCode, Group, ServiceId};
use chipcard_tests::configs::{atr_list_fixture, EGK_ATR, EMUL_WITH_SERVICES, TEST_ATR};
use chipcard_tests::procs::children_of;
use chipcard_tests::{RawClient, Server, TIMEOUT};

fn start(idle_ms: u32) -> Server {
    let config = EMUL_WITH_SERVICES
        .replace("{list}", &atr_list_fixture().display().to_string())
        .replace("{idle}", &idle_ms.to_string());
    Server::start(&config)
}

async fn open(client: &mut RawClient, name: &str) -> ServiceOpenResponse {
    let msg = ServiceOpen {
        service_id: None,
        service_name: Some(name.into()),
        command: None,
    };
    match client.request(&msg).await {
        ToClient::ServiceOpenResponse(r) => r,
        other => panic!("ServiceOpen answered {other:?}"),
    }
}

async fn open_ok(
    client: &mut RawClient,
    name: &str,
) -> (ServiceId, ContextId, ServiceOpenResponse) {
    let r = open(client, name).await;
    assert!(r.outcome.is_ok(), "open {name}: {:?}", r.outcome);
    let service = r.service_id.expect("serviceId");
    let context = r.context_id.expect("contextId");
    (service, context, r)
}

async fn command(
    client: &mut RawClient,
    service: ServiceId,
    context: ContextId,
    command: Group,
) -> ServiceCommandResponse {
    let msg = ServiceCommand {
        service_id: service,
        context_id: context,
        command,
    };
    match client.request(&msg).await {
        ToClient::ServiceCommandResponse(r) => r,
        other => panic!("ServiceCommand answered {other:?}"),
    }
}

async fn close(
    client: &mut RawClient,
    service: ServiceId,
    context: ContextId,
) -> ServiceCloseResponse {
    let msg = ServiceClose {
        service_id: service,
        context_id: context,
    };
    match client.request(&msg).await {
        ToClient::ServiceCloseResponse(r) => r,
        other => panic!("ServiceClose answered {other:?}"),
    }
}

fn describe(card: CardId) -> Group {
    Group::new("command")
        .with_char("name", "Describe")
        .with_char("CardId", card.to_string())
}

/// The first card in the reader called `reader`, with its card types (waiting for one to
/// be inserted).
async fn card_in(client: &mut RawClient, reader: &str) -> (CardId, Vec<String>) {
    let card = client.wait_for_card(reader).await;
    let listed = client.reader(reader).await.expect("the reader is listed");
    let types = listed
        .cards
        .iter()
        .find(|c| c.card_id == card)
        .map(|c| c.card_types.clone())
        .expect("the card is still listed");
    (card, types)
}

/// The next notification (skipping other pushes), within `limit`.
async fn next_notification(client: &mut RawClient, limit: Duration) -> Option<Notification> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(env) = tokio::time::timeout(left, client.next_envelope()).await else {
            return None;
        };
        let env = env.expect("connection open");
        if let Ok(ToClient::Notification(n)) = ToClient::decode(&env.cmd, &env.data) {
            return Some(n);
        }
    }
}

/// Asks for every `service:*` notification.
async fn subscribe_to_services(client: &mut RawClient) {
    match client
        .request(&SetNotify {
            flags: vec!["service:*".into()],
        })
        .await
    {
        ToClient::SetNotifyResponse(r) => assert!(r.outcome.is_ok(), "{:?}", r.outcome),
        other => panic!("SetNotify answered {other:?}"),
    }
}

/// SIGKILL to `pid`.
fn kill(pid: u32) {
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
}

/// The pid of the running service process `name` that chipcardd started.
fn service_pid(server: &Server, name: &str) -> Option<u32> {
    children_of(server.pid())
        .into_iter()
        .find(|c| !c.is_zombie() && c.cmdline.iter().any(|a| a.contains(name)))
        .map(|c| c.pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_command_close_through_chipcardd() {
    let server = start(60_000);
    let mut client = RawClient::ready(&server.socket).await;
    let (card, card_types) = card_in(&mut client, "Emul Reader 0").await;

    let (service, context, r) = open_ok(&mut client, "cardinfo").await;
    assert_eq!(r.service_name.as_deref(), Some("cardinfo"));
    assert!(r.service_flags.is_empty(), "{:?}", r.service_flags);
    let data = r.service.expect("service group");
    assert_eq!(data.get_char("listStatus").ok(), Some("ok"));
    assert_eq!(data.get_int("listEntries").ok(), Some(3), "{data:?}");

    let r = command(&mut client, service, context, describe(card)).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(r.outcome.text, "Service command executed");
    assert_eq!(r.name.as_deref(), Some("DescribeResponse"));
    assert_eq!(r.context_id, Some(context));
    let d = r.command.expect("command group");
    assert_eq!(d.get_char("CardId").ok(), Some(card.to_string().as_str()));
    assert_eq!(
        d.get_bin("ATR").ok().map(|b| b.to_vec()),
        Some(hex(TEST_ATR))
    );
    assert_eq!(
        d.get_chars("CardTypes").ok(),
        Some(card_types.iter().map(String::as_str).collect())
    );
    assert_eq!(d.get_char("ReaderName").ok(), Some("Emul Reader 0"));
    let atr = d.get_group("atr").expect("atr");
    assert_eq!(atr.get_char("TS").ok(), Some("3B"));
    assert_eq!(atr.get_chars("protocols").ok(), Some(vec!["T=0", "T=1"]));
    // The emulator's ATR announces T=1 but has no TCK.
    assert_eq!(atr.get_char("valid").ok(), Some("no"));
    assert!(atr
        .get_char("TCKStatus")
        .is_ok_and(|t| t.starts_with("missing")));
    let desc = d.get_group("descriptions").expect("descriptions");
    assert_eq!(desc.get_char("status").ok(), Some("ok"));
    let texts: Vec<&str> = desc
        .groups("entry")
        .flat_map(|e| e.get_chars("text").unwrap_or_default())
        .collect();
    assert_eq!(texts, ["chipcard emulated test card"]);

    // A card with a clean T=1 ATR, inserted now; and a bare ATR without a card.
    assert_eq!(
        server.control(&format!("insert Emul Reader 1 0 {EGK_ATR}")),
        "ok"
    );
    let (egk, _) = card_in(&mut client, "Emul Reader 1").await;
    let r = command(&mut client, service, context, describe(egk)).await;
    let d = r.command.expect("command group");
    let atr = d.get_group("atr").expect("atr");
    assert_eq!(atr.get_chars("protocols").ok(), Some(vec!["T=1"]));
    assert_eq!(atr.get_char("TCK").ok(), Some("C8"));
    assert_eq!(atr.get_char("valid").ok(), Some("yes"));
    let texts: Vec<&str> = d
        .get_group("descriptions")
        .expect("descriptions")
        .groups("entry")
        .flat_map(|e| e.get_chars("text").unwrap_or_default())
        .collect();
    assert_eq!(
        texts,
        [
            "German health card (eGK), any",
            "German health card (eGK), this one",
            "http://example.invalid/egk"
        ]
    );
    let bare = Group::new("command")
        .with_char("name", "Describe")
        .with_bin("ATR", vec![0x3B, 0x02, 0x14, 0x50]);
    let r = command(&mut client, service, context, bare).await;
    let d = r.command.expect("command group");
    assert!(d.var("CardId").is_none());
    assert_eq!(
        d.get_group("atr").and_then(|a| a.get_char("valid")).ok(),
        Some("yes")
    );

    let r = close(&mut client, service, context).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(r.outcome.text, "Service closed");
    let r = command(&mut client, service, context, describe(card)).await;
    assert_eq!(
        r.outcome.error,
        Some(ErrorCode::NotFound),
        "closed: {:?}",
        r.outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_not_installed_is_said_clearly() {
    let server = start(60_000);
    let mut client = RawClient::ready(&server.socket).await;
    let (card, _) = card_in(&mut client, "Emul Reader 0").await;
    let (service, context, r) = open_ok(&mut client, "cardinfo-nolist").await;
    assert_eq!(
        r.service
            .expect("service group")
            .get_char("listStatus")
            .ok(),
        Some("not installed")
    );
    let r = command(&mut client, service, context, describe(card)).await;
    let desc = r
        .command
        .expect("command")
        .get_group("descriptions")
        .cloned()
        .expect("group");
    assert_eq!(desc.get_char("status").ok(), Some("not installed"));
    assert!(
        desc.get_char("text")
            .is_ok_and(|t| t.contains("is not installed")),
        "{desc:?}"
    );
    assert!(desc.group("entry").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_have_separate_contexts() {
    let server = start(60_000);
    let mut alice = RawClient::ready(&server.socket).await;
    let mut bob = RawClient::ready(&server.socket).await;
    let (card, _) = card_in(&mut alice, "Emul Reader 0").await;
    let (service, a, _) = open_ok(&mut alice, "cardinfo").await;
    let (service_b, b, _) = open_ok(&mut bob, "cardinfo").await;
    assert_eq!(service, service_b);
    assert_ne!(a, b);
    // Bob cannot use or close Alice's context: for him it does not exist.
    let r = command(&mut bob, service, a, describe(card)).await;
    assert_eq!(r.outcome.error, Some(ErrorCode::NotFound));
    assert_eq!(r.name.as_deref(), Some("error"));
    let error = r.command.expect("error data");
    assert_eq!(error.get_int("code").ok(), Some(3));
    let r = close(&mut bob, service, a).await;
    assert_eq!(r.outcome.error, Some(ErrorCode::NotFound));
    // Both contexts work; closing Bob's leaves Alice's open.
    assert!(command(&mut alice, service, a, describe(card))
        .await
        .outcome
        .is_ok());
    assert!(command(&mut bob, service, b, describe(card))
        .await
        .outcome
        .is_ok());
    assert!(close(&mut bob, service, b).await.outcome.is_ok());
    assert!(command(&mut alice, service, a, describe(card))
        .await
        .outcome
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_closes_its_contexts() {
    // cardinfo stops after 300 ms without contexts: it can only stop once the server has
    // closed the context of the client that left.
    let server = start(300);
    let mut watcher = RawClient::ready(&server.socket).await;
    subscribe_to_services(&mut watcher).await;
    let mut alice = RawClient::ready(&server.socket).await;
    let (service, _context, _) = open_ok(&mut alice, "cardinfo").await;
    let up = next_notification(&mut watcher, TIMEOUT)
        .await
        .expect("service:up");
    assert_eq!((up.ntype.as_str(), up.ncode.as_str()), ("service", "up"));
    assert_eq!(up.data.get_char("serviceName").ok(), Some("cardinfo"));
    assert_eq!(
        up.data.get_char("serviceId").ok(),
        Some(service.to_string().as_str())
    );
    assert!(service_pid(&server, "chipcard-service-cardinfo").is_some());
    // While Alice keeps her context open the service stays.
    assert!(next_notification(&mut watcher, Duration::from_millis(1200))
        .await
        .is_none());
    drop(alice);
    let down = next_notification(&mut watcher, TIMEOUT)
        .await
        .expect("service:down");
    assert_eq!(
        (down.ntype.as_str(), down.ncode.as_str()),
        ("service", "down")
    );
    assert_eq!(
        down.data.get_char("info").ok(),
        Some("stopped after idleTimeout")
    );
    // Opened again, it starts again.
    let (_, _, r) = open_ok(&mut watcher, "cardinfo").await;
    assert_eq!(
        r.service.expect("group").get_char("listStatus").ok(),
        Some("ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_service_is_restarted_and_its_contexts_get_an_error() {
    let mut server = start(60_000);
    let mut client = RawClient::ready(&server.socket).await;
    subscribe_to_services(&mut client).await;
    let (card, _) = card_in(&mut client, "Emul Reader 0").await;
    let (service, context, r) = open_ok(&mut client, "cardinfo-auto").await;
    assert_eq!(r.service_flags, ["autoload"]);
    let pid = service_pid(&server, "cardinfo-auto")
        .or_else(|| service_pid(&server, "chipcard-service-cardinfo"))
        .expect("the autoload service runs");
    kill(pid);
    let down = next_notification(&mut client, TIMEOUT)
        .await
        .expect("service:down");
    assert_eq!(
        (down.ntype.as_str(), down.ncode.as_str()),
        ("service", "down")
    );
    let info = down.data.get_char("info").unwrap_or_default();
    assert!(
        info.contains("exited") || info.contains("closed its connection"),
        "{down:?}"
    );
    // The context died with the process.
    let r = command(&mut client, service, context, describe(card)).await;
    assert_eq!(
        r.outcome.error,
        Some(ErrorCode::DriverError),
        "{:?}",
        r.outcome
    );
    assert!(r.outcome.text.contains("lost"), "{}", r.outcome.text);
    // Restarted after restartBackoff; a new context works.
    let up = next_notification(&mut client, TIMEOUT)
        .await
        .expect("service:up");
    assert_eq!((up.ntype.as_str(), up.ncode.as_str()), ("service", "up"));
    let new_pid = service_pid(&server, "chipcard-service-cardinfo").expect("restarted");
    assert_ne!(new_pid, pid);
    let (_, fresh, _) = open_ok(&mut client, "cardinfo-auto").await;
    assert!(fresh > context);
    assert!(command(&mut client, service, fresh, describe(card))
        .await
        .outcome
        .is_ok());
    // Closing the lost context succeeds; the server kept serving throughout.
    assert!(close(&mut client, service, context).await.outcome.is_ok());
    assert!(server.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_codes() {
    let server = start(60_000);
    let mut client = RawClient::ready(&server.socket).await;
    let (card, _) = card_in(&mut client, "Emul Reader 0").await;
    let (service, context, _) = open_ok(&mut client, "cardinfo").await;

    let open_with = |id: Option<ServiceId>, name: Option<&str>| ServiceOpen {
        service_id: id,
        service_name: name.map(str::to_owned),
        command: None,
    };
    let cases = [
        (
            open_with(Some(service), Some("cardinfo")),
            ErrorCode::InvalidArgument,
        ),
        (open_with(None, None), ErrorCode::InvalidArgument),
        (
            open_with(None, Some("no-such-service")),
            ErrorCode::NotFound,
        ),
        (open_with(Some(ServiceId(0x77)), None), ErrorCode::NotFound),
    ];
    for (msg, code) in cases {
        let ToClient::ServiceOpenResponse(r) = client.request(&msg).await else {
            panic!("not a ServiceOpenResponse");
        };
        assert_eq!(r.outcome.error, Some(code), "{msg:?}: {:?}", r.outcome);
        assert!(r.context_id.is_none());
    }
    // The wire shape: int code and the same number in ErrorCode.
    let id = client
        .send_cmd(
            "ServiceOpen",
            Group::new("data").with_char("serviceName", "nope"),
        )
        .await;
    let env = loop {
        let env = client.next_envelope().await.expect("answer");
        if env.refid == Some(id) {
            break env;
        }
    };
    assert_eq!(env.cmd, "ServiceOpenResponse");
    assert_eq!(env.data.get_int("code").ok(), Some(3));
    assert_eq!(env.data.get_int("ErrorCode").ok(), Some(3));

    // Commands: unknown context, another service's id, bad and unknown cards.
    let cmd = |c: ContextId, s: ServiceId, g: Group| ServiceCommand {
        service_id: s,
        context_id: c,
        command: g,
    };
    let cases = [
        (
            cmd(ContextId(0x999), service, describe(card)),
            ErrorCode::NotFound,
        ),
        (
            cmd(context, ServiceId(0x77), describe(card)),
            ErrorCode::NotFound,
        ),
        (
            cmd(
                context,
                service,
                Group::new("command")
                    .with_char("name", "Describe")
                    .with_char("CardId", "zz"),
            ),
            ErrorCode::InvalidArgument,
        ),
        (
            cmd(context, service, describe(CardId(0x4242))),
            ErrorCode::NotFound,
        ),
        (
            cmd(
                context,
                service,
                Group::new("command").with_char("name", "Describe"),
            ),
            ErrorCode::InvalidArgument,
        ),
        (
            cmd(
                context,
                service,
                Group::new("command").with_char("name", "Explode"),
            ),
            ErrorCode::NotSupported,
        ),
    ];
    for (msg, code) in cases {
        let ToClient::ServiceCommandResponse(r) = client.request(&msg).await else {
            panic!("not a ServiceCommandResponse");
        };
        assert_eq!(r.outcome.error, Some(code), "{msg:?}: {:?}", r.outcome);
        assert_eq!(r.name.as_deref(), Some("error"));
        let data = r.command.expect("error data");
        assert_eq!(data.get_int("code").ok(), Some(code.number()));
    }
    // A removed card: 7.
    assert_eq!(
        server.control(&format!("insert Emul Reader 1 0 {EGK_ATR}")),
        "ok"
    );
    let (egk, _) = card_in(&mut client, "Emul Reader 1").await;
    assert_eq!(server.control("remove Emul Reader 1 0"), "ok");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = command(&mut client, service, context, describe(egk)).await;
        if r.outcome.error == Some(ErrorCode::CardRemoved) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "card never removed: {:?}",
            r.outcome
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Malformed requests are answered with Error: a ServiceCommand without command {},
    // a ServiceOpen with a bad serviceId.
    let id = client
        .send_cmd(
            "ServiceCommand",
            Group::new("data")
                .with_char("serviceId", service.to_string())
                .with_char("contextId", context.to_string()),
        )
        .await;
    let ToClient::ErrorResponse(e) = client.response_to(id).await else {
        panic!("not an Error");
    };
    assert_eq!(e.error_code(), ErrorCode::InvalidArgument);
    let id = client
        .send_cmd(
            "ServiceOpen",
            Group::new("data").with_char("serviceId", "zz"),
        )
        .await;
    let ToClient::ErrorResponse(e) = client.response_to(id).await else {
        panic!("not an Error");
    };
    assert_eq!(e.error_code(), ErrorCode::InvalidArgument);
    // The context still works after all that.
    assert!(command(&mut client, service, context, describe(card))
        .await
        .outcome
        .is_ok());
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Runs `chipcard-tool --socket SOCKET ARGS...` with `input` on standard input.
fn tool(server: &Server, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(chipcard_tests::bin("chipcard-tool"))
        .arg("--socket")
        .arg(&server.socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chipcard-tool");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("chipcard-tool ran")
}

#[test]
fn the_tool_describes_cards_and_runs_service_sessions() {
    let server = start(60_000);
    let out = tool(&server, &["info"], "");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("\nATR         3B 88 80 01 00 00 00 00 00 00 00 00\n"),
        "{text}"
    );
    assert!(
        text.contains("\nTD1         80  protocol T=0; TD2 follow\n"),
        "{text}"
    );
    assert!(text.contains("\nprotocols   T=0, T=1\n"), "{text}");
    assert!(
        text.contains("\npcsc-tools  chipcard emulated test card\n"),
        "{text}"
    );
    assert!(
        text.starts_with("card        0x00000001 in Emul Reader 0\n"),
        "{text}"
    );

    let out = tool(
        &server,
        &["info", "--service", "cardinfo-nolist", "--json"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"card_id\": \"0x00000001\""), "{text}");
    assert!(text.contains("not installed"), "{text}");

    let steps = "command Describe ATR:bin=3B021450\nclose\n";
    let out = tool(&server, &["--json", "service", "open", "cardinfo"], steps);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("\"step\":\"open\""), "{}", lines[0]);
    assert!(
        lines[1].contains("\"name\":\"DescribeResponse\""),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("\"step\":\"close\""), "{}", lines[2]);

    let out = tool(&server, &["service", "command", "cardinfo", "Explode"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not supported (5)"), "{err}");
    let out = tool(&server, &["service", "close", "nope"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found (3)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_services() {
    let server = start(60_000);
    let mut client = RawClient::ready(&server.socket).await;
    let (_, context, _) = open_ok(&mut client, "cardinfo").await;
    // The new file: cardinfo-nolist goes, cardinfo-new comes, cardinfo stays as it was.
    let config = std::fs::read_to_string(server.dir.path().join("chipcardd.conf")).expect("read");
    let start_of_nolist = config.rfind("service {").expect("the last service group");
    let mut new_config = config[..start_of_nolist].to_owned();
    new_config.push_str("service {\n  type=\"cardinfo\"\n  name=\"cardinfo-new\"\n}\n");
    std::fs::write(server.dir.path().join("chipcardd.conf"), new_config).expect("write");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(hup.success());
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = open(&mut client, "cardinfo-new").await;
        if r.outcome.is_ok() {
            break;
        }
        assert_eq!(
            r.outcome.error,
            Some(ErrorCode::NotFound),
            "{:?}",
            r.outcome
        );
        assert!(Instant::now() < deadline, "cardinfo-new never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = open(&mut client, "cardinfo-nolist").await;
    assert_eq!(
        r.outcome.error,
        Some(ErrorCode::NotFound),
        "{:?}",
        r.outcome
    );
    // The unchanged service kept running with its context.
    let bare = Group::new("command")
        .with_char("name", "Describe")
        .with_bin("ATR", vec![0x3B, 0x00]);
    let (cardinfo, _, _) = open_ok(&mut client, "cardinfo").await;
    assert!(command(&mut client, cardinfo, context, bare)
        .await
        .outcome
        .is_ok());
}

/// Echo services (`chipcard-service-echo`, a test program of this crate) next to the
/// emulated reader: one started on demand, two autoloaded, one of them `silent`.
fn start_with_echo() -> Server {
    let config = EMUL_WITH_SERVICES
        .replace("{list}", &atr_list_fixture().display().to_string())
        .replace("{idle}", "60000")
        + r#"
service {
  type="echo"
  name="echo"
}
service {
  type="echo"
  name="echo-loud"
  flags="autoload"
}
service {
  type="echo"
  name="echo-silent"
  flags="autoload"
  flags="silent"
}
"#;
    Server::start(&config)
}

/// The pid of the running process of service `id`.
fn pid_of_service(server: &Server, id: ServiceId) -> Option<u32> {
    let id = id.to_string();
    children_of(server.pid())
        .into_iter()
        .find(|c| !c.is_zombie() && c.cmdline.contains(&id))
        .map(|c| c.pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_told_who_calls_and_which_card() {
    let server = start_with_echo();
    let (mut client, ready) = RawClient::ready_with_response(&server.socket).await;
    let (card, _) = card_in(&mut client, "Emul Reader 0").await;
    let (service, context, _) = open_ok(&mut client, "echo").await;
    let echo = Group::new("command")
        .with_char("name", "Echo")
        .with_char("CardId", card.to_string());
    let r = command(&mut client, service, context, echo).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
    assert_eq!(r.name.as_deref(), Some("EchoResponse"));
    let d = r.command.expect("command group");
    assert_eq!(
        d.get_char("ClientId").ok(),
        Some(ready.client_id.to_string().as_str())
    );
    assert_eq!(d.get_char("AppName").ok(), Some("chipcard-tests"));
    // The user name comes from the socket's peer credentials: this test's own user.
    let me = nix_user_name();
    assert_eq!(d.get_char("UserName").ok(), Some(me.as_str()));
    assert_eq!(d.get_char("CardId").ok(), Some(card.to_string().as_str()));
    assert_eq!(d.get_char("ReaderName").ok(), Some("Emul Reader 0"));
    // An unknown command of the service's own is its answer, code 5, the context kept.
    let r = command(
        &mut client,
        service,
        context,
        Group::new("command").with_char("name", "Nope"),
    )
    .await;
    assert_eq!(
        r.outcome.error,
        Some(ErrorCode::NotSupported),
        "{:?}",
        r.outcome
    );
    assert!(close(&mut client, service, context).await.outcome.is_ok());
}

/// This process's user name, as chipcardd looks it up (the uid in decimal without a
/// passwd entry).
fn nix_user_name() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("run id -un");
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !name.is_empty() {
        return name;
    }
    let out = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_service_sends_no_notifications() {
    let server = start_with_echo();
    let mut client = RawClient::ready(&server.socket).await;
    subscribe_to_services(&mut client).await;
    let (loud, loud_ctx, r) = open_ok(&mut client, "echo-loud").await;
    assert_eq!(r.service_flags, ["autoload"]);
    let (silent, silent_ctx, r) = open_ok(&mut client, "echo-silent").await;
    assert_eq!(r.service_flags, ["autoload", "silent"]);
    for id in [silent, loud] {
        let pid = pid_of_service(&server, id).expect("the autoload service runs");
        kill(pid);
    }
    // The loud one goes down and comes back; every notification names it, none the silent one.
    let mut seen = Vec::new();
    while let Some(n) = next_notification(&mut client, Duration::from_secs(2)).await {
        assert_eq!(n.ntype, "service", "{n:?}");
        seen.push((
            n.ncode.clone(),
            n.data
                .get_char("serviceName")
                .unwrap_or_default()
                .to_owned(),
        ));
        if seen.len() == 2 {
            break;
        }
    }
    let loud_name = "echo-loud".to_owned();
    assert_eq!(
        seen,
        [
            ("down".to_owned(), loud_name.clone()),
            ("up".to_owned(), loud_name)
        ]
    );
    assert!(
        next_notification(&mut client, Duration::from_millis(500))
            .await
            .is_none(),
        "a notification after the loud service's restart"
    );
    // Both were restarted all the same: their old contexts are lost, new ones work.
    for (name, id, old) in [
        ("echo-loud", loud, loud_ctx),
        ("echo-silent", silent, silent_ctx),
    ] {
        let echo = Group::new("command").with_char("name", "Echo");
        let r = command(&mut client, id, old, echo.clone()).await;
        assert_eq!(
            r.outcome.error,
            Some(ErrorCode::DriverError),
            "{name}: {:?}",
            r.outcome
        );
        let (_, fresh, _) = open_ok(&mut client, name).await;
        assert!(
            command(&mut client, id, fresh, echo).await.outcome.is_ok(),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_service_that_crashes_mid_command_answers_8_and_starts_again_at_the_next_open()
{
    let mut server = start_with_echo();
    let mut client = RawClient::ready(&server.socket).await;
    let (service, context, r) = open_ok(&mut client, "echo").await;
    assert!(r.service_flags.is_empty(), "{:?}", r.service_flags);
    let pid = pid_of_service(&server, service).expect("the service runs");

    // The command in flight when the process dies: code 8.
    let exit = Group::new("command").with_char("name", "Exit");
    let r = command(&mut client, service, context, exit).await;
    assert_eq!(
        r.outcome.error,
        Some(ErrorCode::DriverError),
        "{:?}",
        r.outcome
    );
    // The context is lost with the process.
    let echo = Group::new("command").with_char("name", "Echo");
    let r = command(&mut client, service, context, echo.clone()).await;
    assert_eq!(r.outcome.error, Some(ErrorCode::DriverError));
    assert!(r.outcome.text.contains("lost"), "{}", r.outcome.text);

    // Not autoloaded: the next open starts it again, a new process that answers.
    let (_, fresh, _) = open_ok(&mut client, "echo").await;
    let new_pid = pid_of_service(&server, service).expect("started again");
    assert_ne!(new_pid, pid);
    // The crashed process was reaped.
    let deadline = Instant::now() + TIMEOUT;
    while children_of(server.pid()).iter().any(|c| c.pid == pid) {
        assert!(
            Instant::now() < deadline,
            "the crashed service was not reaped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(command(&mut client, service, fresh, echo)
        .await
        .outcome
        .is_ok());
    assert!(server.is_running());
}
