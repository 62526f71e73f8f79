//! Endpoints: names, files and modes, crash recovery, and never taking a live server's name.

mod support;

use pipette::{Client, Error, Liveness, Server};
use support::{spawn, tell, unique};

fn main() {
    support::main(
        &[
            (
                "a_killed_servers_name_is_recovered",
                a_killed_servers_name_is_recovered,
            ),
            (
                "a_live_server_is_never_hijacked",
                a_live_server_is_never_hijacked,
            ),
            (
                "racing_servers_for_a_stale_name_exactly_one_wins",
                racing_servers_for_a_stale_name_exactly_one_wins,
            ),
            (
                "bad_names_are_refused_before_any_system_call",
                bad_names_are_refused_before_any_system_call,
            ),
            #[cfg(unix)]
            (
                "socket_and_directory_modes",
                unix::socket_and_directory_modes,
            ),
            #[cfg(unix)]
            (
                "group_and_everyone_modes_on_explicit_paths",
                unix::group_and_everyone_modes_on_explicit_paths,
            ),
            #[cfg(unix)]
            (
                "a_plain_name_cannot_be_shared_with_other_users",
                unix::a_plain_name_cannot_be_shared_with_other_users,
            ),
            #[cfg(unix)]
            (
                "directory_traps_are_refused",
                unix::directory_traps_are_refused,
            ),
            #[cfg(unix)]
            (
                "a_file_that_is_not_a_socket_is_never_removed",
                unix::a_file_that_is_not_a_socket_is_never_removed,
            ),
            #[cfg(unix)]
            (
                "a_foreign_live_socket_is_not_removed",
                unix::a_foreign_live_socket_is_not_removed,
            ),
            #[cfg(unix)]
            (
                "explicit_endpoints_are_listed_and_a_dead_ones_leftovers_removed",
                unix::explicit_endpoints_are_listed_and_a_dead_ones_leftovers_removed,
            ),
        ],
        &[
            ("echo", support::role_echo),
            ("race-bind", role_race_bind),
            ("bind-report", role_bind_report),
        ],
    );
}

/// `race-bind NAME`: waits for `go` on stdin, tries to bind, prints `won` or `in-use`, then
/// holds on until stdin closes.
fn role_race_bind(args: Vec<String>) {
    assert_eq!(support::read_stdin_line().as_deref(), Some("go"));
    let result = Server::bind(args[0].as_str());
    match &result {
        Ok(_) => tell("won"),
        Err(Error::AddrInUse { .. }) => tell("in-use"),
        Err(e) => tell(&format!("error: {e}")),
    }
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
}

/// `bind-report NAME`: binds (under whatever environment the test set) and prints `ok` or
/// the error.
fn role_bind_report(args: Vec<String>) {
    match Server::bind(args[0].as_str()) {
        Ok(_) => tell("ok"),
        Err(e) => tell(&format!("error: {e}")),
    }
}

fn a_killed_servers_name_is_recovered() {
    let name = unique("crash");
    let mut old = spawn("echo", &[&name]);
    old.expect("ready");
    old.kill(); // SIGKILL: no chance to clean up
    #[cfg(unix)]
    assert_eq!(pipette::probe(name.as_str()).unwrap(), Liveness::Stale);
    let server = Server::bind(name.as_str()).unwrap();
    let mut c = Client::connect(name.as_str()).unwrap();
    c.send(b"new owner").unwrap();
    assert_eq!(server.accept().unwrap().recv().unwrap(), b"new owner");
}

fn a_live_server_is_never_hijacked() {
    let name = unique("live");
    let mut owner = spawn("echo", &[&name]);
    owner.expect("ready");
    match Server::bind(name.as_str()) {
        Err(e @ Error::AddrInUse { .. }) => {
            let Error::AddrInUse { pid, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*pid, Some(owner.id()));
            assert!(
                e.to_string().contains(&format!("pid {}", owner.id())),
                "{e}"
            );
        }
        other => panic!("expected AddrInUse, got {other:?}"),
    }
    // The owner still serves.
    let mut c = Client::connect(name.as_str()).unwrap();
    c.send(b"still yours").unwrap();
    assert_eq!(c.recv().unwrap(), b"still yours");
}

fn racing_servers_for_a_stale_name_exactly_one_wins() {
    for round in 0..5 {
        let name = unique("race");
        let mut crashed = spawn("echo", &[&name]);
        crashed.expect("ready");
        crashed.kill();
        let mut racers: Vec<_> = (0..6).map(|_| spawn("race-bind", &[&name])).collect();
        for r in &mut racers {
            r.say("go");
        }
        let results: Vec<String> = racers.iter_mut().map(|r| r.line()).collect();
        let winners = results.iter().filter(|r| *r == "won").count();
        let losers = results.iter().filter(|r| *r == "in-use").count();
        assert_eq!((winners, losers), (1, 5), "round {round}: {results:?}");
        // The winner really serves the name.
        assert!(matches!(
            pipette::probe(name.as_str()).unwrap(),
            Liveness::Live { .. }
        ));
    }
}

fn bad_names_are_refused_before_any_system_call() {
    let long_path = format!("/tmp/{}.sock", "p".repeat(120));
    for bad in [
        "",
        "a/b",
        "../x",
        "x\0y",
        "con",
        "sp ace",
        &"n".repeat(101),
        &long_path,
    ] {
        for result in [
            Server::bind(bad).map(|_| ()),
            Client::connect(bad).map(|_| ()),
        ] {
            match result {
                Err(Error::InvalidName { name, reason }) => {
                    assert_eq!(name, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?}: expected InvalidName, got {other:?}"),
            }
        }
    }
}

#[cfg(unix)]
mod unix {
    use super::support::spawn_with;
    use super::*;
    use pipette::{Access, ServerOptions};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    fn mode(p: &std::path::Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o777
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn socket_and_directory_modes() {
        let name = unique("modes");
        let server = Server::bind(name.as_str()).unwrap();
        let path = server.name().path().to_owned();
        assert_eq!(mode(&path), 0o600, "socket");
        assert_eq!(mode(path.parent().unwrap()), 0o700, "directory");
        let me = std::fs::metadata(&path).unwrap().uid();
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().uid(), me);
    }

    pub fn group_and_everyone_modes_on_explicit_paths() {
        let dir = scratch("access");
        for (access, want) in [
            (Access::CurrentUser, 0o600),
            (Access::Group, 0o660),
            (Access::Everyone, 0o666),
        ] {
            let path = dir.join(format!("{}.sock", access.as_str()));
            let server = pipette::Server::bind_with(
                path.to_str().unwrap(),
                &ServerOptions::new().access(access),
            )
            .unwrap();
            assert_eq!(mode(&path), want, "{access:?}");
            let mut c = Client::connect(path.to_str().unwrap()).unwrap();
            c.send(b"hi").unwrap();
            assert_eq!(server.accept().unwrap().recv().unwrap(), b"hi");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    pub fn a_plain_name_cannot_be_shared_with_other_users() {
        let err = pipette::Server::bind_with(
            unique("shared").as_str(),
            &ServerOptions::new().access(Access::Everyone),
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
        assert!(err.to_string().contains("absolute path"), "{err}");
    }

    fn bind_with_runtime_dir(runtime: &std::path::Path) -> String {
        let name = unique("trap");
        let mut child = spawn_with(
            "bind-report",
            &[&name],
            &[("XDG_RUNTIME_DIR", runtime.to_str().unwrap())],
        );
        child.line()
    }

    pub fn directory_traps_are_refused() {
        // A per-user directory with a mode wider than 0700.
        let runtime = scratch("wide");
        std::fs::create_dir(runtime.join("pipette")).unwrap();
        std::fs::set_permissions(
            runtime.join("pipette"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let r = bind_with_runtime_dir(&runtime);
        assert!(
            r.starts_with("error: permission denied") && r.contains("wider than 0700"),
            "{r}"
        );
        assert!(
            r.contains(runtime.join("pipette").to_str().unwrap()),
            "names the path: {r}"
        );

        // A symlink planted where the per-user directory should be.
        let runtime2 = scratch("link");
        let elsewhere = scratch("elsewhere");
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, runtime2.join("pipette")).unwrap();
        let r = bind_with_runtime_dir(&runtime2);
        assert!(r.contains("symbolic link"), "{r}");
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing was created through the link"
        );

        // A healthy runtime directory works, and gets a 0700 per-user directory.
        let runtime3 = scratch("good");
        assert_eq!(bind_with_runtime_dir(&runtime3), "ok");
        assert_eq!(mode(&runtime3.join("pipette")), 0o700);

        // A missing runtime directory: a clear error, not a panic.
        let r = bind_with_runtime_dir(&runtime3.join("missing"));
        assert!(
            r.contains("does not exist") || r.contains("XDG_RUNTIME_DIR"),
            "{r}"
        );

        for d in [runtime, runtime2, elsewhere, runtime3] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    pub fn a_file_that_is_not_a_socket_is_never_removed() {
        let dir = scratch("notsock");
        let path = dir.join("data.sock");
        std::fs::write(&path, b"precious").unwrap();
        let err = Server::bind(path.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        std::fs::remove_dir_all(dir).unwrap();
    }

    pub fn a_foreign_live_socket_is_not_removed() {
        // A plain std listener (not pipette, so no lock file) owns the path.
        let dir = scratch("foreign");
        let path = dir.join("other.sock");
        let _foreign = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = Server::bind(path.to_str().unwrap()).unwrap_err();
        assert!(matches!(err, Error::AddrInUse { .. }), "{err:?}");
        assert!(path.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The endpoints this user serves at absolute paths are listed too (a per-user registry),
    /// and `remove_stale` cleans up after a server that was killed, but never touches a live
    /// one.
    pub fn explicit_endpoints_are_listed_and_a_dead_ones_leftovers_removed() {
        let dir = scratch("listed");
        let path = dir.join("app.sock");
        let p = path.to_str().unwrap().to_owned();
        let state = |p: &str| {
            pipette::endpoints()
                .unwrap()
                .into_iter()
                .find(|e| e.name == p)
                .map(|e| e.liveness)
        };
        let mut server = spawn("echo", &[&p]);
        server.expect("ready");
        assert!(matches!(state(&p), Some(pipette::Liveness::Live { .. })));
        assert!(matches!(
            pipette::remove_stale(p.as_str()),
            Err(Error::AddrInUse { .. })
        ));
        server.kill();
        assert_eq!(state(&p), Some(pipette::Liveness::Stale));
        assert!(pipette::remove_stale(p.as_str()).unwrap());
        assert!(!path.exists(), "the dead server's socket is gone");
        assert!(!dir.join("app.sock.lock").exists(), "and its lock file");
        assert_eq!(state(&p), None, "and its listing");
        assert!(!pipette::remove_stale(p.as_str()).unwrap(), "nothing left");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
