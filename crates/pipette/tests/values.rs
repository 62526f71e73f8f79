//! Typed messages (feature `serde`) between processes: nested types round trip, a message that
//! does not decode costs only itself, limits and encoding errors send nothing, JSON from
//! another language, and the async `Stream` + `Sink` of values.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use pipette::{Client, Codec, Error, Server, ServerOptions};
use serde::{Deserialize, Serialize};
use support::{spawn, tell, unique};

fn main() {
    support::main(
        &[
            (
                "nested_values_round_trip_between_processes",
                nested_values_round_trip_between_processes,
            ),
            (
                "an_undecodable_message_costs_only_itself",
                an_undecodable_message_costs_only_itself,
            ),
            (
                "an_oversized_value_is_refused_before_sending",
                an_oversized_value_is_refused_before_sending,
            ),
            (
                "an_encoding_error_sends_nothing",
                an_encoding_error_sends_nothing,
            ),
            (
                "json_from_another_language_both_ways",
                json_from_another_language_both_ways,
            ),
            #[cfg(feature = "tokio")]
            (
                "async_stream_and_sink_of_values",
                async_stream_and_sink_of_values,
            ),
            #[cfg(feature = "tokio")]
            (
                "async_methods_and_a_blocking_server",
                async_methods_and_a_blocking_server,
            ),
        ],
        &[
            ("typed-server", role_typed_server),
            #[cfg(feature = "tokio")]
            ("async-typed-server", role_async_typed_server),
        ],
    );
}

// ---- the types both processes share ----

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Value {
    Nothing,
    Int(i64),
    Text(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Pair(Box<(Value, Value)>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Request {
    Put {
        key: String,
        value: Value,
    },
    Batch(Vec<Request>),
    Numbers(Vec<u32>),
    Tags(HashMap<String, Option<u16>>),
    /// Ask the server for a message that is not a `Response`, then a good one.
    SendGarbage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Response {
    Echo(Request),
    /// The server could not decode what it received: the error's type name and text.
    Undecodable {
        type_name: String,
        error: String,
    },
}

/// What a peer in another language sends, as JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    name: String,
    args: Vec<String>,
    retries: u8,
    options: HashMap<String, bool>,
}

/// The reply, as JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Accepted {
    name: String,
    argc: usize,
    first: Option<String>,
}

fn nested() -> Request {
    let mut map = BTreeMap::new();
    map.insert("empty".to_owned(), Value::Nothing);
    map.insert("n".to_owned(), Value::Int(-42));
    map.insert(
        "list".to_owned(),
        Value::List(vec![
            Value::Text("é ü 🦀".to_owned()),
            Value::Pair(Box::new((Value::Int(i64::MIN), Value::Int(i64::MAX)))),
        ]),
    );
    let mut tags = HashMap::new();
    tags.insert("a".to_owned(), Some(1));
    tags.insert("b".to_owned(), None);
    Request::Batch(vec![
        Request::Put {
            key: "k".to_owned(),
            value: Value::Map(map),
        },
        Request::Tags(tags),
        Request::Batch(vec![]),
    ])
}

// ---- roles ----

/// `typed-server NAME MAX_SIZE postcard|json`: a blocking server, a thread per connection.
/// Postcard: answers each `Request` with `Response::Echo` (and `SendGarbage` with bytes that
/// are no `Response`, then the echo), and a message that is no `Request` with
/// `Response::Undecodable`, then goes on. JSON: answers each `Job` with an `Accepted`.
fn role_typed_server(args: Vec<String>) {
    let opts = ServerOptions::new().max_message_size(args[1].parse().unwrap());
    let json = args[2] == "json";
    let server = Server::bind_with(args[0].as_str(), &opts).expect("bind");
    support::stop_on_stdin_close(server.shutdown_handle());
    tell("ready");
    for conn in server.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || loop {
            if json {
                let job: Job = match conn.recv_value_with(Codec::Json) {
                    Ok(job) => job,
                    Err(_) => return,
                };
                let reply = Accepted {
                    argc: job.args.len(),
                    first: job.args.first().cloned(),
                    name: job.name,
                };
                conn.send_value_with(&reply, Codec::Json).unwrap();
                continue;
            }
            let reply = match conn.recv_value::<Request>() {
                Ok(Request::SendGarbage) => {
                    // Variant 7 of a two-variant enum: whole, but not a `Response`.
                    conn.send(&[7, 1, 2, 3]).unwrap();
                    Response::Echo(Request::SendGarbage)
                }
                Ok(req) => Response::Echo(req),
                Err(Error::Decode { type_name, source }) => Response::Undecodable {
                    type_name: type_name.to_owned(),
                    error: source.to_string(),
                },
                Err(_) => return,
            };
            if conn.send_value(&reply).is_err() {
                return;
            }
        });
    }
}

/// `async-typed-server NAME`: the postcard half of `typed-server` on tokio, through the
/// `Stream` + `Sink` of values.
#[cfg(feature = "tokio")]
fn role_async_typed_server(args: Vec<String>) {
    use futures::{SinkExt, StreamExt};
    support::runtime().block_on(async move {
        let server = pipette::tokio::Server::bind(args[0].as_str()).expect("bind");
        support::stop_on_stdin_close(server.shutdown_handle());
        tell("ready");
        while let Ok(conn) = server.accept().await {
            tokio::spawn(async move {
                let mut values = conn.into_values::<Request, Response>();
                while let Some(item) = values.next().await {
                    let reply = match item {
                        Ok(Request::SendGarbage) => {
                            values.get_mut().send(&[7, 1, 2, 3]).await.unwrap();
                            Response::Echo(Request::SendGarbage)
                        }
                        Ok(req) => Response::Echo(req),
                        Err(Error::Decode { type_name, source }) => Response::Undecodable {
                            type_name: type_name.to_owned(),
                            error: source.to_string(),
                        },
                        Err(_) => return,
                    };
                    if values.send(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn typed_server(name: &str, max: usize, codec: &str) -> support::Child {
    let mut child = spawn("typed-server", &[name, &max.to_string(), codec]);
    child.expect("ready");
    child
}

fn connect(name: &str) -> pipette::Connection {
    let mut c = Client::connect_timeout(name, Duration::from_secs(10)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10)));
    c
}

// ---- tests ----

fn nested_values_round_trip_between_processes() {
    let name = unique("val-rt");
    let _server = typed_server(&name, 1 << 20, "postcard");
    let mut c = connect(&name);
    // Nested enums, maps, boxes, and a vector large enough for the large-message path.
    let numbers: Vec<u32> = (0..100_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    for req in [nested(), Request::Numbers(numbers), Request::Batch(vec![])] {
        c.send_value(&req).unwrap();
        assert_eq!(c.recv_value::<Response>().unwrap(), Response::Echo(req));
    }
    // The halves, from two threads.
    let (mut tx, mut rx) = c.split();
    let sender = std::thread::spawn(move || {
        for i in 0..500u32 {
            tx.send_value(&Request::Numbers(vec![i; (i % 40) as usize]))
                .unwrap();
        }
    });
    for i in 0..500u32 {
        let want = Response::Echo(Request::Numbers(vec![i; (i % 40) as usize]));
        assert_eq!(rx.recv_value::<Response>().unwrap(), want, "value {i}");
    }
    sender.join().unwrap();
}

fn an_undecodable_message_costs_only_itself() {
    let name = unique("val-bad");
    let _server = typed_server(&name, 1 << 20, "postcard");
    let mut c = connect(&name);

    // The server's side: bytes that are no `Request` (an enum index far out of range), then a
    // good value on the same connection.
    c.send(&[0xff, 0xff, 0x03]).unwrap();
    match c.recv_value::<Response>().unwrap() {
        Response::Undecodable { type_name, error } => {
            assert!(type_name.ends_with("Request"), "type named: {type_name}");
            support::note(format!("server saw: {type_name}: {error}"));
        }
        other => panic!("expected Undecodable, got {other:?}"),
    }
    // Trailing bytes after a whole value are refused too.
    let mut extra = Codec::Postcard.encode(&Request::Batch(vec![])).unwrap();
    extra.push(0);
    c.send(&extra).unwrap();
    assert!(matches!(
        c.recv_value::<Response>().unwrap(),
        Response::Undecodable { .. }
    ));
    c.send_value(&nested()).unwrap();
    assert_eq!(
        c.recv_value::<Response>().unwrap(),
        Response::Echo(nested())
    );

    // The client's side: the server sends bytes that are no `Response`, then a good one.
    c.send_value(&Request::SendGarbage).unwrap();
    let err = c.recv_value::<Response>().unwrap_err();
    match &err {
        Error::Decode { type_name, .. } => assert!(type_name.ends_with("values::Response")),
        other => panic!("expected Decode, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("Response"), "{text}");
    assert_eq!(err.io_kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(
        c.recv_value::<Response>().unwrap(),
        Response::Echo(Request::SendGarbage)
    );
    // And JSON where postcard is expected is a decode error as well, not a hang or a panic.
    c.send(br#"{"Numbers":[1,2,3]}"#).unwrap();
    assert!(matches!(
        c.recv_value::<Response>().unwrap(),
        Response::Undecodable { .. }
    ));
    c.send_value(&Request::Numbers(vec![1, 2, 3])).unwrap();
    assert_eq!(
        c.recv_value::<Response>().unwrap(),
        Response::Echo(Request::Numbers(vec![1, 2, 3]))
    );
}

fn an_oversized_value_is_refused_before_sending() {
    const MAX: usize = 16 * 1024;
    let name = unique("val-big");
    let _server = typed_server(&name, MAX, "postcard");
    let mut c = connect(&name);
    // 6000 numbers of 4 bytes each once encoded: over 16 KiB.
    let big = Request::Numbers((0..6000).map(|i| 1 << 24 | i).collect());
    match c.send_value(&big) {
        Err(Error::MessageTooLarge { len, max }) => {
            assert_eq!(max, MAX as u64);
            assert!(len > MAX as u64);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    // Nothing was sent: the next value is the next message the server sees.
    let small = Request::Numbers(vec![1, 2, 3]);
    c.send_value(&small).unwrap();
    assert_eq!(c.recv_value::<Response>().unwrap(), Response::Echo(small));
}

/// A value whose `Serialize` fails.
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this type refuses to be serialized",
        ))
    }
}

fn an_encoding_error_sends_nothing() {
    let name = unique("val-enc");
    let _server = typed_server(&name, 1 << 20, "postcard");
    let mut c = connect(&name);
    for err in [
        c.send_value(&Unserializable).unwrap_err(),
        // JSON has no map keys but strings.
        c.send_value_with(&HashMap::from([((1u8, 2u8), 3u8)]), Codec::Json)
            .unwrap_err(),
    ] {
        match &err {
            Error::Encode { type_name, source } => {
                support::note(format!("{type_name}: {source}"));
                assert!(
                    type_name.contains("Unserializable") || type_name.contains("HashMap"),
                    "{type_name}"
                );
            }
            other => panic!("expected Encode, got {other:?}"),
        }
    }
    let req = Request::Numbers(vec![9]);
    c.send_value(&req).unwrap();
    assert_eq!(c.recv_value::<Response>().unwrap(), Response::Echo(req));
}

/// Runs `python3 -c script` with `input` on stdin; `None` when there is no python3.
fn python(script: &str, input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 failed");
    Some(out.stdout)
}

/// The JSON a peer in another language sends arrives as a plain message and is read as a
/// Rust value; the Rust server's JSON reply is read by that language's JSON parser.
fn json_from_another_language_both_ways() {
    let name = unique("val-json");
    let _server = typed_server(&name, 1 << 20, "json");
    let mut c = connect(&name);
    let dumps = r#"import json, sys
sys.stdout.write(json.dumps({"name": "build", "args": ["--release", "é"], "retries": 3, "options": {"verbose": True}}))"#;
    let request = python(dumps, b"").unwrap_or_else(|| {
        support::note("no python3: sending the bytes it would have written");
        br#"{"name": "build", "args": ["--release", "\u00e9"], "retries": 3, "options": {"verbose": true}}"#.to_vec()
    });
    c.send(&request).unwrap();
    let reply = c.recv().unwrap();
    let loads = r#"import json, sys
r = json.load(sys.stdin)
assert r == {"name": "build", "argc": 2, "first": "--release"}, r
sys.stdout.write("ok")"#;
    match python(loads, &reply) {
        Some(out) => assert_eq!(out, b"ok"),
        None => {
            let r: Accepted = Codec::Json.decode(&reply).unwrap();
            assert_eq!((r.name.as_str(), r.argc), ("build", 2));
        }
    }
    // The same through the typed API on this side, and a JSON message of the wrong shape.
    let job = Job {
        name: "test".to_owned(),
        args: vec![],
        retries: 0,
        options: HashMap::new(),
    };
    c.send_value_with(&job, Codec::Json).unwrap();
    let r: Accepted = c.recv_value_with(Codec::Json).unwrap();
    assert_eq!((r.name.as_str(), r.argc, r.first), ("test", 0, None));
    c.send(br#"{"name": "x"}"#).unwrap(); // no args: the server's decode fails, it closes
    assert!(matches!(c.recv(), Err(Error::Closed)));
}

#[cfg(feature = "tokio")]
fn async_stream_and_sink_of_values() {
    use futures::{SinkExt, StreamExt};
    let name = unique("val-async");
    let mut server = spawn("async-typed-server", &[&name]);
    server.expect("ready");
    support::runtime().block_on(async {
        let conn = pipette::tokio::Client::connect_timeout(name.as_str(), Duration::from_secs(10))
            .await
            .unwrap();
        let mut values = conn.into_values::<Response, Request>();
        let numbers: Vec<u32> = (0..50_000).collect();
        for req in [nested(), Request::Numbers(numbers)] {
            values.send(req.clone()).await.unwrap();
            assert_eq!(values.next().await.unwrap().unwrap(), Response::Echo(req));
        }
        // A message that is no `Request` reaches the server's stream as an error, and the
        // stream goes on; one that is no `Response` reaches ours the same way.
        values.get_mut().send(&[0xff, 0xff, 0x03]).await.unwrap();
        match values.next().await.unwrap().unwrap() {
            Response::Undecodable { type_name, .. } => assert!(type_name.ends_with("Request")),
            other => panic!("expected Undecodable, got {other:?}"),
        }
        values.send(Request::SendGarbage).await.unwrap();
        match values.next().await.unwrap() {
            Err(Error::Decode { type_name, .. }) => assert!(type_name.ends_with("Response")),
            other => panic!("expected a Decode error, got {other:?}"),
        }
        assert_eq!(
            values.next().await.unwrap().unwrap(),
            Response::Echo(Request::SendGarbage)
        );
        // Many in flight: the sink queues, the stream drains.
        let (tx, rx) = values.into_inner().split();
        let mut sink = tx.into_values::<Request>();
        let mut stream = rx.into_values_with::<Response>(Codec::Postcard);
        let sender = tokio::spawn(async move {
            for i in 0..1000u32 {
                sink.feed(Request::Numbers(vec![i])).await.unwrap();
            }
            sink.close().await.unwrap();
        });
        for i in 0..1000u32 {
            let got = stream.next().await.unwrap().unwrap();
            assert_eq!(got, Response::Echo(Request::Numbers(vec![i])));
        }
        sender.await.unwrap();
        assert!(
            stream.next().await.is_none(),
            "the stream ends when the server closes"
        );
    });
}

#[cfg(feature = "tokio")]
fn async_methods_and_a_blocking_server() {
    let name = unique("val-async-b");
    let _server = typed_server(&name, 16 * 1024, "postcard");
    support::runtime().block_on(async {
        let mut c = pipette::tokio::Client::connect_timeout(name.as_str(), Duration::from_secs(10))
            .await
            .unwrap();
        c.send_value(&nested()).await.unwrap();
        let r: Response = c.recv_value_timeout(Duration::from_secs(10)).await.unwrap();
        assert_eq!(r, Response::Echo(nested()));
        // Oversized, then an encoding error: nothing sent either time.
        let big = Request::Numbers((0..6000).map(|i| 1 << 24 | i).collect());
        assert!(matches!(
            c.send_value(&big).await,
            Err(Error::MessageTooLarge { .. })
        ));
        assert!(matches!(
            c.send_value(&Unserializable).await,
            Err(Error::Encode { .. })
        ));
        c.feed_value(&Request::SendGarbage).unwrap();
        c.flush().await.unwrap();
        assert!(matches!(
            c.recv_value::<Response>().await,
            Err(Error::Decode { .. })
        ));
        assert_eq!(
            c.recv_value::<Response>().await.unwrap(),
            Response::Echo(Request::SendGarbage)
        );
    });
}
