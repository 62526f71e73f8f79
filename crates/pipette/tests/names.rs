//! Names that work everywhere (issue #13): every valid plain name binds and connects for
//! runtime directories up to 72 bytes (`XDG_RUNTIME_DIR`), through a short hashed file name
//! when the full one would not fit a socket address; listings still show the name; beyond
//! that, a clear error names the directory; and the name-to-path rule is the one
//! docs/PROTOCOL.md §8 gives, test vectors included.
//!
//! Each scenario runs its server and clients in child processes with `XDG_RUNTIME_DIR` set
//! (the variable is read when a name is resolved, so it is never changed in this process).

mod support;

#[cfg(unix)]
use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::time::Duration;

#[cfg(unix)]
use support::{role_echo, spawn_with, tell};

fn main() {
    support::main(
        &[
            #[cfg(unix)]
            (
                "the_protocol_test_vectors_hold",
                the_protocol_test_vectors_hold,
            ),
            #[cfg(unix)]
            (
                "the_longest_name_binds_in_a_long_runtime_directory",
                the_longest_name_binds_in_a_long_runtime_directory,
            ),
            #[cfg(unix)]
            (
                "a_too_long_runtime_directory_is_refused_naming_it",
                a_too_long_runtime_directory_is_refused_naming_it,
            ),
            #[cfg(unix)]
            (
                "a_dead_servers_hashed_name_is_listed_and_recovered",
                a_dead_servers_hashed_name_is_listed_and_recovered,
            ),
        ],
        &[
            #[cfg(unix)]
            ("echo", role_echo),
            #[cfg(unix)]
            ("resolve", role_resolve),
            #[cfg(unix)]
            ("client", role_client),
            #[cfg(unix)]
            ("list", role_list),
            #[cfg(unix)]
            ("bind", role_bind),
        ],
    );
}

/// `resolve NAME...`: prints where each name lives (`path <path>`), or why it cannot
/// (`refused <reason>`), one line each.
#[cfg(unix)]
fn role_resolve(names: Vec<String>) {
    for n in names {
        match pipette::Name::new(&n) {
            Ok(name) => tell(&format!("path {}", name.path().display())),
            Err(pipette::Error::InvalidName { reason, .. }) => tell(&format!("refused {reason}")),
            Err(e) => tell(&format!("error {e}")),
        }
    }
}

/// `client NAME`: one verified echo round trip, then `ok`.
#[cfg(unix)]
fn role_client(args: Vec<String>) {
    let mut c = pipette::Client::connect_timeout(args[0].as_str(), Duration::from_secs(10))
        .expect("connect");
    c.send(b"over a long path").expect("send");
    assert_eq!(c.recv().expect("recv"), b"over a long path");
    tell("ok");
}

/// `list`: this user's endpoints, one line each: `<liveness> <name> <path>`.
#[cfg(unix)]
fn role_list(_: Vec<String>) {
    for e in pipette::endpoints().expect("endpoints") {
        let liveness = match e.liveness {
            pipette::Liveness::Live { .. } => "live",
            pipette::Liveness::Stale => "stale",
            _ => "other",
        };
        tell(&format!("{liveness} {} {}", e.name, e.path.display()));
    }
    tell("end");
}

/// `bind NAME`: binds, prints `bound <path>` (and serves until stdin closes) or `failed <error>`.
#[cfg(unix)]
fn role_bind(args: Vec<String>) {
    match pipette::Server::bind(args[0].as_str()) {
        Ok(server) => {
            tell(&format!("bound {}", server.name().path().display()));
            let _ = support::read_stdin_line();
        }
        Err(e) => tell(&format!("failed {e}")),
    }
}

/// A fresh directory whose path is exactly `len` bytes, removed when dropped.
#[cfg(unix)]
struct RuntimeDir(PathBuf);

#[cfg(unix)]
impl RuntimeDir {
    fn new(len: usize) -> RuntimeDir {
        use std::os::unix::fs::DirBuilderExt;
        let stem = format!("/tmp/pn-{}-{}-", std::process::id(), support::unique("d"));
        assert!(stem.len() < len, "{stem} is already {} bytes", stem.len());
        let path = PathBuf::from(format!("{stem}{}", "d".repeat(len - stem.len())));
        assert_eq!(path.as_os_str().len(), len);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .unwrap();
        RuntimeDir(path)
    }

    fn env(&self) -> [(&str, &str); 1] {
        [("XDG_RUNTIME_DIR", self.0.to_str().unwrap())]
    }
}

#[cfg(unix)]
impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The longest valid plain name (100 characters, all kinds of allowed characters).
#[cfg(unix)]
fn longest_name(tag: &str) -> String {
    let mut name = format!("{tag}-{}-", std::process::id());
    while name.len() < pipette::MAX_PLAIN_LEN {
        name.push_str("Az09._-");
    }
    name.truncate(pipette::MAX_PLAIN_LEN);
    name
}

#[cfg(unix)]
fn the_protocol_test_vectors_hold() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md"),
    )
    .unwrap();
    let section = doc
        .split_once("Test vectors (")
        .expect("the test vectors in PROTOCOL.md §8")
        .1;
    // Rows: | `XDG_RUNTIME_DIR` | `name` | `path` (bytes) | or "refused: ..." in the last cell.
    let mut rows = Vec::new();
    for line in section.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        if line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let [xdg, name, path] = cells[..] else {
            panic!("bad row {line}");
        };
        if !name.starts_with('`') {
            continue; // the header and the separator
        }
        let strip = |s: &str| s.split('`').nth(1).unwrap().to_owned();
        let expected = if path.starts_with('`') {
            let p = strip(path);
            // The byte count given beside the path is right.
            assert!(path.ends_with(&format!("({})", p.len())), "{line}");
            Some(p)
        } else {
            assert!(path.starts_with("refused"), "{line}");
            None
        };
        rows.push((strip(xdg), strip(name), expected));
    }
    assert!(rows.len() >= 8, "only {} vectors found", rows.len());
    let mut dirs: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    dirs.dedup();
    for xdg in dirs {
        let here: Vec<_> = rows.iter().filter(|r| r.0 == xdg).collect();
        let names: Vec<&str> = here.iter().map(|r| r.1.as_str()).collect();
        let mut child = spawn_with("resolve", &names, &[("XDG_RUNTIME_DIR", &xdg)]);
        for (_, name, expected) in here {
            let got = child.line();
            match expected {
                Some(p) => assert_eq!(got, format!("path {p}"), "{name} in {xdg}"),
                None => {
                    assert!(got.starts_with("refused "), "{name} in {xdg}: {got}");
                    assert!(got.contains(&format!("{xdg}/pipette")), "{got}");
                }
            }
        }
    }
}

#[cfg(unix)]
fn the_longest_name_binds_in_a_long_runtime_directory() {
    // 60 bytes (a long macOS $TMPDIR and more) and 72, the longest that takes every name.
    for len in [60, 72] {
        let dir = RuntimeDir::new(len);
        let name = longest_name("long");
        let env = dir.env();
        let mut server = spawn_with("bind", &[&name], &env);
        let bound = server.line();
        let path = bound
            .strip_prefix("bound ")
            .unwrap_or_else(|| panic!("{bound}"));
        support::note(format!("{len}-byte runtime directory: {path}"));
        assert!(path.len() <= 103, "{path} is {} bytes", path.len());
        assert!(path.starts_with(&format!("{}/pipette/+", dir.0.display())));
        assert!(Path::new(path).exists());

        // Another process finds it by the same name, and talks to it.
        drop(server);
        let mut server = spawn_with("echo", &[&name], &env);
        server.expect("ready");
        let mut client = spawn_with("client", &[&name], &env);
        client.expect("ok");

        // Listings show the name, not the hashed file name.
        let mut list = spawn_with("list", &[], &env);
        let line = list.line();
        assert!(line.starts_with(&format!("live {name} ")), "{line}");
        assert_eq!(list.line(), "end");

        // A graceful end removes the socket and the lock file.
        drop(server);
        support::wait_until(Duration::from_secs(10), "files removed", || {
            std::fs::read_dir(dir.0.join("pipette")).unwrap().count() == 0
        });
    }
}

#[cfg(unix)]
fn a_too_long_runtime_directory_is_refused_naming_it() {
    let dir = RuntimeDir::new(73);
    let name = longest_name("over");
    let mut server = spawn_with("bind", &[&name], &dir.env());
    let failed = server.line();
    support::note(&failed);
    assert!(failed.starts_with("failed "), "{failed}");
    assert!(
        failed.contains(&format!("{}/pipette", dir.0.display())),
        "{failed}"
    );
    assert!(failed.contains("XDG_RUNTIME_DIR"), "{failed}");
    // A short name still fits there, unhashed.
    let mut server = spawn_with("bind", &["short"], &dir.env());
    let bound = server.line();
    assert_eq!(
        bound,
        format!("bound {}/pipette/short.sock", dir.0.display())
    );
}

#[cfg(unix)]
fn a_dead_servers_hashed_name_is_listed_and_recovered() {
    let dir = RuntimeDir::new(64);
    let name = longest_name("dead");
    let env = dir.env();
    let mut server = spawn_with("bind", &[&name], &env);
    let bound = server.line();
    assert!(bound.starts_with("bound "), "{bound}");
    server.kill();

    let mut list = spawn_with("list", &[], &env);
    let line = list.line();
    assert!(line.starts_with(&format!("stale {name} ")), "{line}");
    assert_eq!(list.line(), "end");

    // A new server takes the name over, and is listed live.
    let mut server = spawn_with("echo", &[&name], &env);
    server.expect("ready");
    let mut client = spawn_with("client", &[&name], &env);
    client.expect("ok");
    let mut list = spawn_with("list", &[], &env);
    assert!(list.line().starts_with(&format!("live {name} ")));
}
