//! Framed and raw mode against a real foreign peer, `socat`, and against each other.

mod support;

#[cfg(unix)]
fn main() {
    support::main_needing(
        &[
            (
                "framed_client_against_an_echoing_raw_peer",
                unix::framed_client_against_an_echoing_raw_peer,
            ),
            (
                "framed_client_against_a_chatty_raw_peer",
                unix::framed_client_against_a_chatty_raw_peer,
            ),
            (
                "raw_client_against_a_framed_server",
                unix::raw_client_against_a_framed_server,
            ),
            (
                "raw_server_with_a_socat_client",
                unix::raw_server_with_a_socat_client,
            ),
            (
                "raw_client_with_a_socat_server",
                unix::raw_client_with_a_socat_server,
            ),
        ],
        &[],
        || support::missing_tool("socat", "socat"),
    );
}

#[cfg(not(unix))]
fn main() {
    support::main(&[], &[]);
}

#[cfg(unix)]
mod unix {
    use std::io::Write;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use pipette::{Client, ClientOptions, Error, ServerOptions};

    use super::support::unique;

    /// A running socat, killed on drop.
    struct Socat(Child);

    impl Drop for Socat {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn socat(args: &[&str]) -> Command {
        let mut cmd = Command::new("socat");
        cmd.args(args);
        cmd
    }

    fn start(mut cmd: Command) -> Socat {
        match cmd.stdin(Stdio::null()).spawn() {
            Ok(c) => Socat(c),
            Err(e) => {
                panic!("cannot run socat ({e}): install it (apt-get install socat); .ci/run does")
            }
        }
    }

    fn path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("{}.sock", unique(tag)))
    }

    pub fn framed_client_against_an_echoing_raw_peer() {
        let p = path("socat-echo");
        let _peer = start(socat(&[
            &format!("UNIX-LISTEN:{},fork", p.display()),
            "EXEC:cat",
        ]));
        // The echo sends our hello back: its magic is not a reply's.
        let mut c = Client::connect_timeout(p.to_str().unwrap(), Duration::from_secs(10)).unwrap();
        c.send(b"hi").unwrap();
        let err = c.recv_timeout(Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, Error::Protocol { message: _, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("did not answer like a pipette server") && msg.contains("raw mode"),
            "{msg}"
        );
        let _ = std::fs::remove_file(&p);
    }

    pub fn framed_client_against_a_chatty_raw_peer() {
        let p = path("socat-chatty");
        let _peer = start(socat(&[
            &format!("UNIX-LISTEN:{},fork", p.display()),
            "SYSTEM:echo HTTP/1.1 400 Bad Request; sleep 5",
        ]));
        let mut c = Client::connect_timeout(p.to_str().unwrap(), Duration::from_secs(10)).unwrap();
        let err = c.recv_timeout(Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, Error::Protocol { message: _, .. }), "{err:?}");
        assert!(
            super::support::full(&err).contains("HTTP/1."),
            "names what arrived: {err}"
        );
        let _ = std::fs::remove_file(&p);
    }

    pub fn raw_client_against_a_framed_server() {
        let name = unique("framed-srv");
        let server = pipette::Server::bind_with(name.as_str(), &ServerOptions::new()).unwrap();
        let sock = server.name().path().to_owned();
        // socat sends a line of text where a hello belongs and prints what comes back.
        let out = std::thread::spawn(move || {
            let mut child = socat(&["-t", "2", "-", &format!("UNIX-CONNECT:{}", sock.display())])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("run socat (apt-get install socat)");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"hello, anyone?\n")
                .unwrap();
            child.wait_with_output().unwrap()
        });
        // Meanwhile a well-behaved client is served; the foreign peer never reaches accept.
        let mut good = Client::connect(name.as_str()).unwrap();
        good.send(b"me").unwrap();
        let mut conn = server.accept_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(conn.recv().unwrap(), b"me");
        // Keep accepting (as a server loop would) while the foreign peer talks: it is turned
        // away inside accept and never returned.
        assert!(matches!(
            server.accept_timeout(Duration::from_millis(2500)),
            Err(Error::TimedOut { .. })
        ));
        let out = out.join().unwrap();
        // The foreign peer got a refusal: the reply magic and status 4 (hello not understood).
        assert_eq!(out.stdout.len(), 16, "{:?}", out.stdout);
        assert_eq!(&out.stdout[..8], b"PIPETTE!");
        assert_eq!(out.stdout[10], 4);
    }

    pub fn raw_server_with_a_socat_client() {
        let name = unique("raw-srv");
        let server =
            pipette::Server::bind_with(name.as_str(), &ServerOptions::new().raw(true)).unwrap();
        let sock = server.name().path().to_owned();
        let echo = std::thread::spawn(move || {
            let mut conn = server.accept().unwrap();
            assert!(conn.is_raw());
            loop {
                match conn.recv() {
                    Ok(bytes) => conn.send(&bytes).unwrap(),
                    Err(Error::Closed) => break,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let mut child = socat(&["-t", "2", "-", &format!("UNIX-CONNECT:{}", sock.display())])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run socat (apt-get install socat)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"plain bytes\nand more\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.stdout, b"plain bytes\nand more\n");
        echo.join().unwrap();
    }

    pub fn raw_client_with_a_socat_server() {
        let p = path("socat-raw");
        let _peer = start(socat(&[
            &format!("UNIX-LISTEN:{},fork", p.display()),
            "EXEC:cat",
        ]));
        let mut c = pipette::Client::connect_with(
            p.to_str().unwrap(),
            &ClientOptions::new().raw(true).wait(Duration::from_secs(10)),
        )
        .unwrap();
        c.send(b"ping over raw").unwrap();
        let mut got = Vec::new();
        while got.len() < 13 {
            got.extend(c.recv_timeout(Duration::from_secs(5)).unwrap());
        }
        assert_eq!(got, b"ping over raw");
        let _ = std::fs::remove_file(&p);
    }
}
