//! `message_pipe` on Unix: accepted, documented as having no effect (sockets have no
//! message boundaries). The Windows behaviour is checked in `windows.rs`.
#![cfg(unix)]

use std::time::Duration;

use pipette::{ClientOptions, ServerOptions};

fn unique(tag: &str) -> String {
    format!("t-{tag}-{}", std::process::id())
}

#[test]
fn message_pipe_is_accepted_and_changes_nothing_on_unix() {
    for raw in [true, false] {
        let name = unique(if raw { "msgpipe-raw" } else { "msgpipe-framed" });
        let server =
            pipette::Server::bind_with(&name, &ServerOptions::new().raw(raw).message_pipe(true))
                .unwrap();
        // Either side may set it or not: nothing changes on the wire.
        for client_message_pipe in [true, false] {
            let mut client = pipette::Client::connect_with(
                &name,
                &ClientOptions::new()
                    .raw(raw)
                    .message_pipe(client_message_pipe),
            )
            .unwrap();
            let mut conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
            client.send(b"hello").unwrap();
            assert_eq!(conn.recv_timeout(Duration::from_secs(5)).unwrap(), b"hello");
            conn.send(b"world").unwrap();
            assert_eq!(
                client.recv_timeout(Duration::from_secs(5)).unwrap(),
                b"world"
            );
        }
    }
}
