//! Client limits end to end: `maxClients`, `maxRequestsPerClient` (back-pressure),
//! `clientIdleTimeout` (half frames, clients that never read).

use std::time::{Duration, Instant};

use bytes::BytesMut;
use chipcard_ipc::message::{ClientReady, ListReaders, TakeCard, ToClient};
use chipcard_ipc::{Envelope, EnvelopeCodec, ErrorCode};
use chipcard_tests::procs::vm_rss_kib;
use chipcard_tests::{RawClient, Server, TIMEOUT};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Encoder;

fn config(server_keys: &str) -> String {
    format!(
        r#"
server {{
  socket="{{socket}}"
  {server_keys}
}}
driver {{
  type="emul"
  name="emul"
  controlSocket="{{control}}"
  reader {{
    name="Emul Reader 0"
    slots="1"
    card {{
      slot="0"
      atr="3B8880010000000000000000"
    }}
  }}
}}
"#
    )
}

#[tokio::test]
async fn connections_over_max_clients_are_refused() {
    // The harness's own readiness probe is one connection; it has closed by now.
    let server = Server::start(&config(r#"maxClients="2""#));
    // Let the server see the probe's connection end.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut a = RawClient::ready(&server.socket).await;
    let mut b = RawClient::ready(&server.socket).await;
    let mut c = RawClient::connect(&server.socket).await;
    let (env, msg) = c.next_message().await;
    assert_eq!(env.refid, None);
    match msg {
        ToClient::ErrorResponse(e) => {
            assert_eq!(e.error_code(), ErrorCode::Generic);
            assert_eq!(e.text, "too many clients");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(c.is_closed_by_server().await);
    // The two served clients work; when one leaves, a new one gets in.
    a.first_card().await;
    drop(b);
    let deadline = Instant::now() + TIMEOUT;
    let _d = loop {
        let mut d = RawClient::connect(&server.socket).await;
        let id = d
            .send(&ClientReady {
                application: "limits".into(),
                chipcard_version: chipcard_ipc::PROTOCOL_VERSION.into(),
                system: "Linux".into(),
                gwen_version: None,
            })
            .await;
        let (env, msg) = d.next_message().await;
        if env.refid == Some(id) {
            assert!(matches!(msg, ToClient::ClientReadyResponse(_)));
            break d;
        }
        assert!(Instant::now() < deadline, "the freed slot was not reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    b = RawClient::connect(&server.socket).await;
    assert!(matches!(
        b.next_message().await.1,
        ToClient::ErrorResponse(_)
    ));
}

#[tokio::test]
async fn requests_over_the_per_client_limit_wait() {
    let server = Server::start(&config(r#"maxRequestsPerClient="2""#));
    let mut holder = RawClient::ready(&server.socket).await;
    let card = holder.first_card().await;
    match holder
        .request(&TakeCard {
            card_id: card,
            timeout: Some(1000),
        })
        .await
    {
        ToClient::TakeCardResponse(r) => assert_eq!(r.outcome.error, None),
        other => panic!("unexpected {other:?}"),
    }
    let mut waiter = RawClient::ready(&server.socket).await;
    let take = TakeCard {
        card_id: card,
        timeout: Some(700),
    };
    let t1 = waiter.send(&take).await;
    let t2 = waiter.send(&take).await;
    let list = waiter.send(&ListReaders {}).await;
    let sent = Instant::now();
    // Meanwhile other clients are served at once.
    let mut other = RawClient::ready(&server.socket).await;
    let started = Instant::now();
    let _ = other.first_card().await;
    assert!(started.elapsed() < Duration::from_millis(500));
    // The ListReaders was not read until one of the two takes ended.
    let mut order = Vec::new();
    while order.len() < 3 {
        let (env, msg) = waiter.next_message().await;
        if let Some(refid) = env.refid {
            if refid != list {
                match msg {
                    ToClient::TakeCardResponse(r) => {
                        assert_eq!(r.outcome.error, Some(ErrorCode::Busy))
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if refid == list {
                assert!(
                    sent.elapsed() >= Duration::from_millis(600),
                    "ListReaders answered while two takes were waiting"
                );
            }
            order.push(refid);
        }
    }
    assert_ne!(
        order[0], list,
        "answers in order {order:?} ({t1}, {t2}, {list})"
    );
}

#[tokio::test]
async fn half_frames_time_out_but_idle_clients_stay() {
    let server = Server::start(&config(r#"clientIdleTimeout="300""#));
    let mut idle = RawClient::ready(&server.socket).await;
    let mut half = RawClient::ready(&server.socket).await;
    half.send_raw(b"POST /chipcard HTTP/1.1\r\nContent-Length: 100\r\n\r\nipc {\n")
        .await;
    let started = Instant::now();
    assert!(half.is_closed_by_server().await);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    // A half header line counts as well.
    let mut header = RawClient::ready(&server.socket).await;
    header.send_raw(b"POST /chip").await;
    assert!(header.is_closed_by_server().await);
    // A client idle between frames is fine.
    tokio::time::sleep(Duration::from_millis(800)).await;
    idle.first_card().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_and_memory_stays_bounded() {
    let server = Server::start(&config(r#"clientIdleTimeout="1000""#));
    let mut other = RawClient::ready(&server.socket).await;
    other.first_card().await;
    let before = vm_rss_kib(server.pid());

    // Many ListReaders, never reading an answer.
    let mut codec = EnvelopeCodec::new();
    let mut bytes = BytesMut::new();
    let hello = ClientReady {
        application: "flood".into(),
        chipcard_version: chipcard_ipc::PROTOCOL_VERSION.into(),
        system: "Linux".into(),
        gwen_version: None,
    };
    codec
        .encode(Envelope::new(1, None, &hello), &mut bytes)
        .expect("encode");
    for id in 2..20_000u32 {
        codec
            .encode(Envelope::new(id, None, &ListReaders {}), &mut bytes)
            .expect("encode");
    }
    let mut flood = tokio::net::UnixStream::connect(&server.socket)
        .await
        .expect("connect");
    let writer = tokio::spawn(async move {
        // Fails (broken pipe) once the server drops the connection; may block before.
        let r = flood.write_all(&bytes).await;
        (r, flood)
    });

    // Others are served meanwhile.
    for _ in 0..5 {
        let started = Instant::now();
        other.first_card().await;
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The flooder is disconnected: its writes fail.
    let (result, _stream) = tokio::time::timeout(TIMEOUT, writer)
        .await
        .expect("the server disconnected the flooding client")
        .expect("writer task");
    assert!(result.is_err(), "all 20000 requests were read");
    let after = vm_rss_kib(server.pid());
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    other.first_card().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_contexts_per_client_are_limited() {
    use chipcard_ipc::message::{ServiceClose, ServiceOpen};
    use chipcard_tests::configs::{atr_list_fixture, EMUL_WITH_SERVICES};
    let config = EMUL_WITH_SERVICES
        .replace("{list}", &atr_list_fixture().display().to_string())
        .replace("{idle}", "60000");
    let server = Server::start(&config);
    let mut client = RawClient::ready(&server.socket).await;
    let open = ServiceOpen {
        service_id: None,
        service_name: Some("cardinfo".into()),
        command: None,
    };
    let mut opened = Vec::new();
    // 64 (the limit, `MAX_CONTEXTS_PER_CLIENT`) open; the next is refused with code 1.
    let refused = loop {
        match client.request(&open).await {
            ToClient::ServiceOpenResponse(r) if r.outcome.is_ok() => {
                opened.push((r.service_id.expect("id"), r.context_id.expect("context")));
                assert!(opened.len() <= 64, "more than 64 contexts opened");
            }
            ToClient::ServiceOpenResponse(r) => break r,
            other => panic!("ServiceOpen answered {other:?}"),
        }
    };
    assert_eq!(opened.len(), 64);
    assert_eq!(
        refused.outcome.error,
        Some(ErrorCode::Generic),
        "{:?}",
        refused.outcome
    );
    assert!(
        refused.outcome.text.contains("too many"),
        "{}",
        refused.outcome.text
    );
    // Another client is not affected, and closing one makes room again.
    let mut other = RawClient::ready(&server.socket).await;
    assert!(matches!(
        other.request(&open).await,
        ToClient::ServiceOpenResponse(r) if r.outcome.is_ok()
    ));
    let (service_id, context_id) = opened[0];
    assert!(matches!(
        client.request(&ServiceClose { service_id, context_id }).await,
        ToClient::ServiceCloseResponse(r) if r.outcome.is_ok()
    ));
    assert!(matches!(
        client.request(&open).await,
        ToClient::ServiceOpenResponse(r) if r.outcome.is_ok()
    ));
}
