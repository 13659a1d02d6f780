//! Bad input of every kind gets its error code, and the server and other clients keep working.

use chipcard_ipc::message::{ClientReady, CommandCard, ListReaders, TakeCard, ToClient};
use chipcard_ipc::{CardId, ErrorCode, Group};
use chipcard_tests::configs::EMUL_TWO_READERS;
use chipcard_tests::{RawClient, Server};

fn error_code(reply: &ToClient) -> ErrorCode {
    match reply {
        ToClient::ErrorResponse(e) => e.error_code(),
        other => panic!("expected Error, got {other:?}"),
    }
}

/// A second client that must keep being served while the first misbehaves.
async fn still_served(server: &Server, bystander: &mut RawClient) {
    let reply = bystander.request(&ListReaders {}).await;
    match reply {
        ToClient::ListReadersResponse(r) => assert_eq!(r.readers.len(), 2),
        other => panic!("bystander got {other:?}"),
    }
    let _ = server;
}

#[tokio::test]
async fn commands_before_client_ready_get_code_12() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::connect(&server.socket).await;
    let reply = client.request(&ListReaders {}).await;
    assert_eq!(error_code(&reply), ErrorCode::NotReady);
    // The connection stays usable: ClientReady now works.
    let reply = client
        .request(&ClientReady {
            application: "late".into(),
            chipcard_version: "1".into(),
            system: "Linux".into(),
            gwen_version: None,
        })
        .await;
    assert!(
        matches!(reply, ToClient::ClientReadyResponse(_)),
        "{reply:?}"
    );
}

#[tokio::test]
async fn unknown_command_gets_code_5() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;
    let id = client.send_cmd("SelfDestruct", Group::new("data")).await;
    assert_eq!(
        error_code(&client.response_to(id).await),
        ErrorCode::NotSupported
    );
    still_served(&server, &mut client).await;
}

#[tokio::test]
async fn missing_and_mistyped_fields_get_code_2_naming_the_field() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;

    let id = client.send_cmd("TakeCard", Group::new("data")).await;
    let reply = client.response_to(id).await;
    match &reply {
        ToClient::ErrorResponse(e) => {
            assert_eq!(e.error_code(), ErrorCode::InvalidArgument);
            assert!(
                e.text.contains("CardId"),
                "text names the field: {}",
                e.text
            );
        }
        other => panic!("expected Error, got {other:?}"),
    }

    let id = client
        .send_cmd(
            "TakeCard",
            Group::new("data").with_char("CardId", "card-one"),
        )
        .await;
    assert_eq!(
        error_code(&client.response_to(id).await),
        ErrorCode::InvalidArgument
    );

    let id = client
        .send_cmd(
            "TakeCard",
            Group::new("data")
                .with_char("CardId", "0x00000001")
                .with_char("Timeout", "soon"),
        )
        .await;
    assert_eq!(
        error_code(&client.response_to(id).await),
        ErrorCode::InvalidArgument
    );
    still_served(&server, &mut client).await;
}

#[tokio::test]
async fn unknown_card_gets_code_3_and_foreign_card_code_4() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;
    let reply = client
        .request(&CommandCard {
            card_id: CardId(0x7fff_ffff),
            data: bytes::Bytes::from_static(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00]),
            target: None,
        })
        .await;
    match reply {
        ToClient::CommandCardResponse(r) => assert_eq!(r.outcome.error, Some(ErrorCode::NotFound)),
        ToClient::ErrorResponse(e) => assert_eq!(e.error_code(), ErrorCode::NotFound),
        other => panic!("unexpected {other:?}"),
    }

    let card = client.first_card().await;
    let reply = client
        .request(&CommandCard {
            card_id: card,
            data: bytes::Bytes::from_static(&[0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00]),
            target: None,
        })
        .await;
    match reply {
        ToClient::CommandCardResponse(r) => assert_eq!(r.outcome.error, Some(ErrorCode::NotOwner)),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn ids_must_increase() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;
    client.send_with_id(100, &ListReaders {}).await;
    let (env, _) = client.next_message().await;
    assert_eq!(env.refid, Some(100));
    client.send_with_id(100, &ListReaders {}).await;
    let (_, reply) = client.next_message().await;
    assert_eq!(error_code(&reply), ErrorCode::Protocol);
}

#[tokio::test]
async fn unparseable_body_gets_code_11_and_connection_stays() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;
    client
        .send_body(b"ipc {\n  char id=\"50\"\n  cmd=\"ListReaders\"\n")
        .await; // unclosed
    let (env, reply) = client.next_message().await;
    assert_eq!(env.refid, None);
    assert_eq!(error_code(&reply), ErrorCode::Protocol);
    client.send_body(b"not { group format").await;
    let (_, reply) = client.next_message().await;
    assert_eq!(error_code(&reply), ErrorCode::Protocol);
    let mut bystander = RawClient::ready(&server.socket).await;
    still_served(&server, &mut bystander).await;
    // The misbehaving client itself is still served too.
    let reply = client.request(&ListReaders {}).await;
    assert!(
        matches!(reply, ToClient::ListReadersResponse(_)),
        "{reply:?}"
    );
}

#[tokio::test]
async fn garbage_and_oversized_frames_get_code_11_and_close_only_that_connection() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut bystander = RawClient::ready(&server.socket).await;
    let cases: [&[u8]; 4] = [
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        b"\x00\x01\x02garbage without any newline at all",
        b"POST /chipcard HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
        b"POST /chipcard HTTP/1.1\r\nContent-Length: 300000\r\n\r\nabc",
    ];
    for case in cases {
        let mut client = RawClient::connect(&server.socket).await;
        client.send_raw(case).await;
        if case.ends_with(b"newline at all") {
            // A header with no end: the server closes once it is over the header limit.
            client.send_raw(&[b'x'; 5000]).await;
        }
        let case = String::from_utf8_lossy(case);
        let read = client
            .read_until_closed()
            .await
            .unwrap_or_else(|| panic!("not closed after {case:?}"));
        match read.as_slice() {
            [ToClient::ErrorResponse(e)] => {
                assert_eq!(e.error_code(), ErrorCode::Protocol, "after {case:?}: {e:?}")
            }
            other => panic!("after {case:?} the server sent {other:?}, not one Error"),
        }
        still_served(&server, &mut bystander).await;
    }
}

#[tokio::test]
async fn truncated_frame_then_disconnect_leaves_server_up() {
    let mut server = Server::start(EMUL_TWO_READERS);
    {
        let mut client = RawClient::connect(&server.socket).await;
        client
            .send_raw(b"POST /chipcard HTTP/1.1\r\nContent-Length: 100\r\n\r\nipc {")
            .await;
    }
    let mut bystander = RawClient::ready(&server.socket).await;
    still_served(&server, &mut bystander).await;
    assert!(server.is_running());
}

#[tokio::test]
async fn a_truncated_frame_gets_code_11_when_the_client_stops_sending() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut bystander = RawClient::ready(&server.socket).await;
    let mut client = RawClient::ready(&server.socket).await;
    client
        .send_raw(b"POST /chipcard HTTP/1.1\r\nContent-Length: 100\r\n\r\nipc {")
        .await;
    client.shutdown_send().await;
    let read = client.read_until_closed().await.expect("closed");
    match read.as_slice() {
        [ToClient::ErrorResponse(e)] => assert_eq!(e.error_code(), ErrorCode::Protocol),
        other => panic!("after a truncated frame the server sent {other:?}, not one Error"),
    }
    still_served(&server, &mut bystander).await;
}

#[tokio::test]
async fn take_card_on_unknown_card_is_not_found() {
    let server = Server::start(EMUL_TWO_READERS);
    let mut client = RawClient::ready(&server.socket).await;
    let reply = client
        .request(&TakeCard {
            card_id: CardId(0x0fff_0000),
            timeout: Some(100),
        })
        .await;
    match reply {
        ToClient::TakeCardResponse(r) => assert_eq!(r.outcome.error, Some(ErrorCode::NotFound)),
        other => panic!("unexpected {other:?}"),
    }
}
