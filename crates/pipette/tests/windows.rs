//! Windows-only checks of the named-pipe backend (run under Wine by
//! `scripts/test-windows.sh`).
//!
//! Where the question is between processes, the test re-runs this executable as a child
//! role (see `support`) and talks to it by name. A test that this machine cannot run (Wine
//! lacks a call, Windows refuses a setting) is reported as ignored with a notice, never as
//! passed.

mod support;

#[cfg(not(windows))]
fn main() {
    support::main(&[], &[]);
}

#[cfg(windows)]
fn main() {
    win::main();
}

#[cfg(windows)]
mod win {
    use super::support;

    pub fn main() {
        let roles: &[support::Role] = &[
            ("serve", role_serve),
            ("late-echo", role_late_echo),
            ("race-bind", role_race_bind),
        ];
        let mut tests: Vec<support::Test> = vec![
            (
                "current_user_dacl_names_only_the_current_user",
                current_user_dacl_names_only_the_current_user,
            ),
            (
                "group_and_everyone_dacls_add_exactly_one_trustee",
                group_and_everyone_dacls_add_exactly_one_trustee,
            ),
            (
                "plain_names_are_pipes_and_explicit_pipe_paths_work",
                plain_names_are_pipes_and_explicit_pipe_paths_work,
            ),
            (
                "a_second_server_on_a_live_name_gets_addr_in_use_with_the_pid",
                a_second_server_on_a_live_name_gets_addr_in_use_with_the_pid,
            ),
            (
                "a_killed_server_leaves_nothing_behind",
                a_killed_server_leaves_nothing_behind,
            ),
            (
                "racing_servers_exactly_one_wins",
                racing_servers_exactly_one_wins,
            ),
            (
                "shutdown_unblocks_a_blocked_accept_promptly_and_frees_the_name",
                shutdown_unblocks_a_blocked_accept_promptly_and_frees_the_name,
            ),
            (
                "shutdown_unblocks_a_blocked_recv_and_the_client_sees_closed",
                shutdown_unblocks_a_blocked_recv_and_the_client_sees_closed,
            ),
            (
                "a_client_handle_unblocks_its_own_recv",
                a_client_handle_unblocks_its_own_recv,
            ),
            ("recv_and_accept_time_out", recv_and_accept_time_out),
            (
                "connect_to_a_missing_name_is_not_found_at_once",
                connect_to_a_missing_name_is_not_found_at_once,
            ),
            (
                "connect_timeout_waits_for_a_server_that_appears_later",
                connect_timeout_waits_for_a_server_that_appears_later,
            ),
            (
                "a_silent_client_does_not_stall_accept_for_others",
                a_silent_client_does_not_stall_accept_for_others,
            ),
            ("a_burst_of_clients_is_served", a_burst_of_clients_is_served),
            (
                "clients_connect_while_nobody_is_in_accept",
                clients_connect_while_nobody_is_in_accept,
            ),
            (
                "a_silent_client_is_dropped_after_the_handshake_timeout",
                a_silent_client_is_dropped_after_the_handshake_timeout,
            ),
            (
                "a_peer_that_does_not_speak_the_protocol_is_refused_at_once",
                a_peer_that_does_not_speak_the_protocol_is_refused_at_once,
            ),
            (
                "large_messages_cross_in_both_directions",
                large_messages_cross_in_both_directions,
            ),
            (
                "peer_pid_and_sid_are_reported_both_ways",
                peer_pid_and_sid_are_reported_both_ways,
            ),
            (
                "raw_message_pipes_keep_message_boundaries",
                raw_message_pipes_keep_message_boundaries,
            ),
            (
                "framed_mode_runs_unchanged_over_message_pipes",
                framed_mode_runs_unchanged_over_message_pipes,
            ),
            (
                "a_foreign_message_mode_peer_talks_to_a_raw_message_server",
                a_foreign_message_mode_peer_talks_to_a_raw_message_server,
            ),
            (
                "a_message_mode_client_cannot_open_a_byte_pipe",
                a_message_mode_client_cannot_open_a_byte_pipe,
            ),
            (
                "the_client_reads_the_servers_owner_and_group",
                the_client_reads_the_servers_owner_and_group,
            ),
            (
                "the_servers_readiness_event_follows_ready_connections",
                the_servers_readiness_event_follows_ready_connections,
            ),
        ];
        let mut ignored: Vec<support::Test> = Vec::new();
        // A role child runs only its role: no probing.
        let child = std::env::var_os("PIPETTE_TEST_ROLE").is_some();
        let listing: support::Test = (
            "endpoints_lists_live_plain_names",
            endpoints_lists_live_plain_names,
        );
        if !child && on_wine() {
            // Wine cannot list `\\.\pipe\` (FindFirstFileW fails with error 66,
            // ERROR_BAD_DEV_TYPE): the list is always empty there.
            eprintln!("NOTICE: endpoints_lists_live_plain_names ignored: Wine cannot list \\\\.\\pipe\\; it runs on Windows");
            ignored.push(listing);
        } else {
            tests.push(listing);
        }
        let squatting: support::Test = (
            "a_squatted_plain_name_is_reported_and_its_squatter_refused",
            a_squatted_plain_name_is_reported_and_its_squatter_refused,
        );
        match if child {
            Ok(())
        } else {
            squat::can_assign_another_owner()
        } {
            Ok(()) => tests.push(squatting),
            Err(e) => {
                // Windows refuses an owner the creator may not assign (ERROR_INVALID_OWNER, unless
                // it holds SeRestorePrivilege); there a real second user is needed.
                eprintln!("NOTICE: a_squatted_plain_name_is_reported_and_its_squatter_refused ignored: this account cannot create a pipe owned by another user (error {e}); run it as an administrator, or under Wine");
                ignored.push(squatting);
            }
        }
        support::main_with_ignored(&tests, &ignored, roles);
    }

    use std::io::{BufRead, BufReader};
    use std::process::{Child, ChildStdout, Stdio};
    use std::time::{Duration, Instant};

    use pipette::{Access, Client, ClientOptions, Error, Liveness, Server, ServerOptions, Trust};

    /// How long a blocked call may take to notice a shutdown (well under a second).
    const PROMPT: Duration = Duration::from_millis(900);

    fn unique(tag: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "win-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Whether we run under Wine (which differs from Windows in documented ways).
    fn on_wine() -> bool {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
        let ntdll: Vec<u16> = "ntdll.dll".encode_utf16().chain(Some(0)).collect();
        // SAFETY: NUL-terminated strings; ntdll is always loaded.
        unsafe {
            let m = GetModuleHandleW(ntdll.as_ptr());
            !m.is_null() && GetProcAddress(m, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }

    // ---------------------------------------------------------------------------------------
    // Child processes

    /// `serve NAME`: binds NAME, says "ready", serves echo until stdin closes.
    fn role_serve(args: Vec<String>) {
        let server = Server::bind(args[0].as_str()).unwrap();
        let stop = server.shutdown_handle();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            stop.shutdown();
        });
        println!("ready");
        for conn in server.incoming() {
            let mut conn = conn.unwrap();
            while let Ok(msg) = conn.recv() {
                conn.send(&msg).unwrap();
            }
        }
    }

    /// `late-echo NAME`: waits a little, then binds NAME and echoes one message.
    fn role_late_echo(args: Vec<String>) {
        std::thread::sleep(Duration::from_millis(300));
        let server = Server::bind(args[0].as_str()).unwrap();
        let mut conn = server.accept_timeout(Duration::from_secs(10)).unwrap();
        let msg = conn.recv().unwrap();
        conn.send(&msg).unwrap();
        let _ = conn.recv_timeout(Duration::from_secs(5));
    }

    /// `race-bind NAME`: binds NAME once stdin says "go"; prints "won" or "in-use", holds until
    /// stdin closes.
    fn role_race_bind(args: Vec<String>) {
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).unwrap();
        let server = match Server::bind(args[0].as_str()) {
            Ok(s) => {
                println!("won");
                Some(s)
            }
            Err(Error::AddrInUse { .. }) => {
                println!("in-use");
                None
            }
            Err(e) => panic!("{e}"),
        };
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        drop(server);
    }

    struct Peer {
        child: Child,
        out: BufReader<ChildStdout>,
    }

    impl Peer {
        fn spawn(role: &str, name: &str) -> Peer {
            let mut child = super::support::role_command(None, role, &[name])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            Peer { child, out }
        }

        /// Reads the child's stdout until a line ending in `word`.
        fn expect(&mut self, word: &str) {
            let mut line = String::new();
            loop {
                line.clear();
                assert!(
                    self.out.read_line(&mut line).unwrap() > 0,
                    "the child ended before saying {word:?}"
                );
                if line.trim_end().ends_with(word) {
                    return;
                }
            }
        }

        fn say(&mut self, line: &str) {
            use std::io::Write;
            let stdin = self.child.stdin.as_mut().unwrap();
            writeln!(stdin, "{line}").unwrap();
            stdin.flush().unwrap();
        }

        /// The last word of the next line.
        fn word(&mut self) -> String {
            let mut line = String::new();
            assert!(
                self.out.read_line(&mut line).unwrap() > 0,
                "the child ended"
            );
            line.split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned()
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }

        /// Closes the child's stdin and waits for it to succeed.
        fn finish(mut self) {
            drop(self.child.stdin.take());
            let status = self.child.wait().unwrap();
            assert!(status.success(), "child failed: {status}");
        }
    }

    // ---------------------------------------------------------------------------------------
    // The security descriptor

    mod sd {
        use windows_sys::Win32::Foundation::{
            CloseHandle, LocalFree, HANDLE, INVALID_HANDLE_VALUE,
        };
        use windows_sys::Win32::Security::Authorization::{
            ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW,
            GetSecurityInfo, SDDL_REVISION_1, SE_KERNEL_OBJECT,
        };
        use windows_sys::Win32::Security::{
            GetTokenInformation, TokenPrimaryGroup, TokenUser, DACL_SECURITY_INFORMATION,
            PSECURITY_DESCRIPTOR, PSID, TOKEN_PRIMARY_GROUP, TOKEN_QUERY, TOKEN_USER,
        };
        use windows_sys::Win32::Storage::FileSystem::{
            CreateFileW, FILE_GENERIC_READ, FILE_WRITE_DATA, OPEN_EXISTING, READ_CONTROL,
        };
        use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

        fn wide_to_string(p: *const u16) -> String {
            let mut len = 0;
            // SAFETY: `p` is NUL-terminated.
            while unsafe { *p.add(len) } != 0 {
                len += 1;
            }
            // SAFETY: `p` is valid for `len` reads.
            String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
        }

        fn sid_string(sid: PSID) -> String {
            let mut out = std::ptr::null_mut();
            // SAFETY: `sid` is valid; `out` receives a LocalAlloc'ed string.
            assert_ne!(unsafe { ConvertSidToStringSidW(sid, &mut out) }, 0);
            let s = wide_to_string(out);
            // SAFETY: allocated by the call above.
            unsafe { LocalFree(out.cast()) };
            s
        }

        fn token_info(token: HANDLE, class: i32) -> Vec<u64> {
            let mut needed = 0;
            // SAFETY: a size query.
            unsafe { GetTokenInformation(token, class, std::ptr::null_mut(), 0, &mut needed) };
            let mut buf = vec![0u64; (needed as usize).div_ceil(8)];
            // SAFETY: `buf` holds at least `needed` bytes.
            let ok = unsafe {
                GetTokenInformation(token, class, buf.as_mut_ptr().cast(), needed, &mut needed)
            };
            assert_ne!(ok, 0);
            buf
        }

        /// This process's user and primary group SIDs.
        pub fn me() -> (String, String) {
            let mut token: HANDLE = std::ptr::null_mut();
            // SAFETY: plain call; we close the token below.
            assert_ne!(
                unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) },
                0
            );
            let user = token_info(token, TokenUser);
            // SAFETY: the buffer holds a TOKEN_USER.
            let user = sid_string(unsafe { (*user.as_ptr().cast::<TOKEN_USER>()).User.Sid });
            let group = token_info(token, TokenPrimaryGroup);
            // SAFETY: the buffer holds a TOKEN_PRIMARY_GROUP.
            let group =
                sid_string(unsafe { (*group.as_ptr().cast::<TOKEN_PRIMARY_GROUP>()).PrimaryGroup });
            // SAFETY: our handle, closed once.
            unsafe { CloseHandle(token) };
            (user, group)
        }

        /// The DACL of the pipe at `path`, in SDDL, read through a client handle.
        pub fn dacl(path: &std::path::Path) -> String {
            use std::os::windows::ffi::OsStrExt;
            let w: Vec<u16> = path.as_os_str().encode_wide().chain(Some(0)).collect();
            // SAFETY: `w` is NUL-terminated.
            let h = unsafe {
                CreateFileW(
                    w.as_ptr(),
                    FILE_GENERIC_READ | FILE_WRITE_DATA | READ_CONTROL,
                    0,
                    std::ptr::null(),
                    OPEN_EXISTING,
                    0,
                    std::ptr::null_mut(),
                )
            };
            assert_ne!(h, INVALID_HANDLE_VALUE, "cannot open {}", path.display());
            let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
            // SAFETY: `h` is open with READ_CONTROL; `sd` receives a LocalAlloc'ed descriptor.
            let rc = unsafe {
                GetSecurityInfo(
                    h,
                    SE_KERNEL_OBJECT,
                    DACL_SECURITY_INFORMATION,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut sd,
                )
            };
            assert_eq!(rc, 0, "GetSecurityInfo failed");
            let mut text = std::ptr::null_mut();
            // SAFETY: `sd` is valid; `text` receives a LocalAlloc'ed string.
            let ok = unsafe {
                ConvertSecurityDescriptorToStringSecurityDescriptorW(
                    sd,
                    SDDL_REVISION_1,
                    DACL_SECURITY_INFORMATION,
                    &mut text,
                    std::ptr::null_mut(),
                )
            };
            assert_ne!(ok, 0);
            let s = wide_to_string(text);
            // SAFETY: both allocated by the calls above; the handle is ours.
            unsafe {
                LocalFree(text.cast());
                LocalFree(sd);
                CloseHandle(h);
            }
            s
        }

        /// The trustee SIDs of the ACEs of an SDDL DACL (`D:P(A;;FA;;;S-1-…)(…)`).
        pub fn trustees(sddl: &str) -> Vec<String> {
            sddl.split('(')
                .skip(1)
                .map(|ace| {
                    let ace = ace.trim_end_matches(')');
                    assert!(ace.starts_with("A;"), "not an allow ACE: {ace}");
                    ace.rsplit(';').next().unwrap().to_owned()
                })
                .collect()
        }
    }

    fn current_user_dacl_names_only_the_current_user() {
        let (user, _) = sd::me();
        let name = unique("dacl-user");
        let server = Server::bind(&name).unwrap();
        let dacl = sd::dacl(server.name().path());
        assert!(dacl.starts_with("D:P"), "not a protected DACL: {dacl}");
        assert_eq!(sd::trustees(&dacl), vec![user], "{dacl}");
    }

    fn group_and_everyone_dacls_add_exactly_one_trustee() {
        let (user, group) = sd::me();
        let name = unique("dacl-group");
        let server =
            pipette::Server::bind_with(&name, &ServerOptions::new().access(Access::Group)).unwrap();
        let dacl = sd::dacl(server.name().path());
        assert_eq!(sd::trustees(&dacl), vec![user.clone(), group], "{dacl}");
        drop(server);

        let name = unique("dacl-world");
        let server =
            pipette::Server::bind_with(&name, &ServerOptions::new().access(Access::Everyone))
                .unwrap();
        let dacl = sd::dacl(server.name().path());
        let t = sd::trustees(&dacl);
        assert_eq!(t.len(), 2, "{dacl}");
        assert_eq!(t[0], user);
        assert!(t[1] == "WD" || t[1] == "S-1-1-0", "{dacl}");
        // Others may read and write but not create instances (FILE_APPEND_DATA, 0x4).
        let mask = dacl.split('(').nth(2).unwrap().split(';').nth(2).unwrap();
        let mask = u32::from_str_radix(mask.trim_start_matches("0x"), 16).unwrap();
        assert_eq!(mask & 0x4, 0, "{dacl}");
    }

    // ---------------------------------------------------------------------------------------
    // Names

    fn plain_names_are_pipes_and_explicit_pipe_paths_work() {
        let name = unique("path");
        let server = Server::bind(&name).unwrap();
        // Per user: the user's SID is part of the pipe name.
        let (user, _) = sd::me();
        assert_eq!(
            server.name().path().to_str().unwrap(),
            format!(r"\\.\pipe\pipette-{user}-{name}")
        );
        let explicit = format!(r"\\.\pipe\pipette-test\{name}");
        let server2 = Server::bind(explicit.as_str()).unwrap();
        assert!(!server2.name().is_plain());
        let mut c = Client::connect(explicit.as_str()).unwrap();
        c.send(b"x").unwrap();
        assert_eq!(server2.accept().unwrap().recv().unwrap(), b"x");
        assert!(matches!(
            Server::bind(format!(r"\\.\pipe\{}", "x".repeat(300)).as_str()),
            Err(Error::InvalidName { .. })
        ));
        drop(server);
    }

    fn a_second_server_on_a_live_name_gets_addr_in_use_with_the_pid() {
        let name = unique("inuse");
        let mut peer = Peer::spawn("serve", &name);
        peer.expect("ready");
        match Server::bind(&name) {
            Err(Error::AddrInUse { pid, .. }) => {
                if let Some(pid) = pid {
                    assert_eq!(pid, peer.pid());
                }
            }
            other => panic!("expected AddrInUse, got {other:?}"),
        }
        assert!(matches!(
            pipette::probe(&name).unwrap(),
            Liveness::Live { .. }
        ));
        // The child still serves.
        let mut c = Client::connect(&name).unwrap();
        c.send(b"still there").unwrap();
        assert_eq!(
            c.recv_timeout(Duration::from_secs(5)).unwrap(),
            b"still there"
        );
        drop(c);
        peer.finish();
        // Once it is gone the name is free again, with nothing to recover.
        let t0 = Instant::now();
        while pipette::probe(&name).unwrap() != Liveness::Absent {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the name stayed live"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Server::bind(&name).unwrap();
    }

    fn a_killed_server_leaves_nothing_behind() {
        let name = unique("killed");
        let mut peer = Peer::spawn("serve", &name);
        peer.expect("ready");
        let mut c = Client::connect(&name).unwrap();
        c.send(b"before").unwrap();
        assert_eq!(c.recv_timeout(Duration::from_secs(5)).unwrap(), b"before");
        peer.child.kill().unwrap();
        peer.child.wait().unwrap();
        // The connected client sees the end; the name (pipe and claim) is gone with the process.
        let r = c.recv_timeout(Duration::from_secs(5));
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
        assert_eq!(pipette::probe(&name).unwrap(), Liveness::Absent);
        let server = Server::bind(&name).unwrap();
        let mut c = Client::connect(&name).unwrap();
        c.send(b"after").unwrap();
        assert_eq!(server.accept().unwrap().recv().unwrap(), b"after");
    }

    fn racing_servers_exactly_one_wins() {
        for round in 0..3 {
            let name = unique("race");
            let mut racers: Vec<_> = (0..5).map(|_| Peer::spawn("race-bind", &name)).collect();
            for r in &mut racers {
                r.say("go");
            }
            let mut results = Vec::new();
            for r in &mut racers {
                // Skip libtest's "running 1 test" and blank lines.
                let mut w = r.word();
                while w != "won" && w != "in-use" {
                    w = r.word();
                }
                results.push(w);
            }
            let winners = results.iter().filter(|w| *w == "won").count();
            assert_eq!(winners, 1, "round {round}: {results:?}");
            for r in racers {
                r.finish();
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Shutdown and timeouts

    fn shutdown_unblocks_a_blocked_accept_promptly_and_frees_the_name() {
        let name = unique("sd-accept");
        let server = Server::bind(&name).unwrap();
        let stop = server.shutdown_handle();
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            let r = server.accept();
            (r.map(|_| ()), t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        stop.shutdown();
        // The name is free as soon as shutdown() returns.
        assert_eq!(pipette::probe(&name).unwrap(), Liveness::Absent);
        let (r, _) = t.join().unwrap();
        assert!(t0.elapsed() < PROMPT, "took {:?}", t0.elapsed());
        assert!(matches!(r, Err(Error::Shutdown)), "{r:?}");
        Server::bind(&name).unwrap();
    }

    fn shutdown_unblocks_a_blocked_recv_and_the_client_sees_closed() {
        let name = unique("sd-recv");
        let server = Server::bind(&name).unwrap();
        let mut client = Client::connect(&name).unwrap();
        let mut conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
        let stop = server.shutdown_handle();
        let t = std::thread::spawn(move || conn.recv());
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        stop.shutdown();
        // shutdown() waits for the woken recv to let go of the pipe, which is quick.
        assert!(
            t0.elapsed() < Duration::from_millis(300),
            "{:?}",
            t0.elapsed()
        );
        let r = t.join().unwrap();
        assert!(t0.elapsed() < PROMPT, "took {:?}", t0.elapsed());
        assert!(matches!(r, Err(Error::Shutdown)), "{r:?}");
        // The server's end is closed: the client's recv ends at once.
        let r = client.recv_timeout(Duration::from_secs(5));
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    }

    fn a_client_handle_unblocks_its_own_recv() {
        let name = unique("sd-client");
        let server = Server::bind(&name).unwrap();
        let stop = pipette::Shutdown::new();
        let mut client =
            pipette::Client::connect_with(&name, &ClientOptions::new().shutdown(&stop)).unwrap();
        let _conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
        let t = std::thread::spawn(move || client.recv());
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        stop.shutdown();
        let r = t.join().unwrap();
        assert!(t0.elapsed() < PROMPT, "took {:?}", t0.elapsed());
        assert!(matches!(r, Err(Error::Shutdown)), "{r:?}");
    }

    fn recv_and_accept_time_out() {
        let name = unique("timeouts");
        let server = Server::bind(&name).unwrap();
        let t0 = Instant::now();
        assert!(matches!(
            server.accept_timeout(Duration::from_millis(100)),
            Err(Error::TimedOut {
                op: pipette::Operation::Accept,
                ..
            })
        ));
        assert!(t0.elapsed() >= Duration::from_millis(100));
        let mut client = Client::connect(&name).unwrap();
        let mut conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
        let t0 = Instant::now();
        assert!(matches!(
            conn.recv_timeout(Duration::from_millis(100)),
            Err(Error::TimedOut {
                op: pipette::Operation::Recv,
                ..
            })
        ));
        assert!(t0.elapsed() >= Duration::from_millis(100));
        // The connection still works after a timeout.
        client.send(b"after").unwrap();
        assert_eq!(conn.recv().unwrap(), b"after");
    }

    // ---------------------------------------------------------------------------------------
    // Connecting

    fn connect_to_a_missing_name_is_not_found_at_once() {
        let name = unique("missing");
        let t0 = Instant::now();
        assert!(matches!(
            Client::connect(&name),
            Err(Error::NotFound { .. })
        ));
        assert!(t0.elapsed() < Duration::from_millis(500));
        assert_eq!(pipette::probe(&name).unwrap(), Liveness::Absent);
    }

    fn connect_timeout_waits_for_a_server_that_appears_later() {
        let name = unique("late");
        let peer = Peer::spawn("late-echo", &name);
        let t0 = Instant::now();
        let mut c = Client::connect_timeout(&name, Duration::from_secs(10)).unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t0.elapsed()
        );
        c.send(b"hello late server").unwrap();
        assert_eq!(
            c.recv_timeout(Duration::from_secs(10)).unwrap(),
            b"hello late server"
        );
        drop(c);
        peer.finish();
    }

    fn a_silent_client_does_not_stall_accept_for_others() {
        let name = unique("silent");
        let server = pipette::Server::bind_with(
            &name,
            &ServerOptions::new().handshake_timeout(Duration::from_secs(30)),
        )
        .unwrap();
        // Raw mode on the client: connects and sends no hello at all.
        let _silent =
            pipette::Client::connect_with(&name, &ClientOptions::new().raw(true)).unwrap();
        let mut talker = Client::connect(&name).unwrap();
        talker.send(b"me first").unwrap();
        let t0 = Instant::now();
        let mut conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert_eq!(conn.recv().unwrap(), b"me first");
    }

    fn a_burst_of_clients_is_served() {
        let name = unique("burst");
        let server = Server::bind(&name).unwrap();
        let clients: Vec<_> = (0..12)
            .map(|i| {
                let name = name.clone();
                std::thread::spawn(move || {
                    let mut c = Client::connect_timeout(&name, Duration::from_secs(10)).unwrap();
                    c.send(format!("client {i}").as_bytes()).unwrap();
                    c.recv_timeout(Duration::from_secs(10)).unwrap()
                })
            })
            .collect();
        for _ in 0..12 {
            let mut conn = server.accept_timeout(Duration::from_secs(10)).unwrap();
            let msg = conn.recv().unwrap();
            conn.send(&msg).unwrap();
        }
        for (i, c) in clients.into_iter().enumerate() {
            assert_eq!(c.join().unwrap(), format!("client {i}").as_bytes());
        }
    }

    fn clients_connect_while_nobody_is_in_accept() {
        let name = unique("backlog");
        let server = Server::bind(&name).unwrap();
        // More clients than pipe instances waiting at bind time, all connected before any accept.
        let mut clients: Vec<_> = (0..10)
            .map(|i| {
                let mut c = Client::connect_timeout(&name, Duration::from_secs(5)).unwrap();
                c.send(format!("early {i}").as_bytes()).unwrap();
                c
            })
            .collect();
        let mut got: Vec<String> = (0..10)
            .map(|_| {
                let mut conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
                let msg = conn.recv_string().unwrap();
                conn.send_str(&msg).unwrap();
                msg
            })
            .collect();
        got.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("early {i}")).collect();
        want.sort();
        assert_eq!(got, want);
        for c in &mut clients {
            assert!(c
                .recv_timeout(Duration::from_secs(5))
                .unwrap()
                .starts_with(b"early"));
        }
    }

    fn a_silent_client_is_dropped_after_the_handshake_timeout() {
        let name = unique("hs-timeout");
        let server = pipette::Server::bind_with(
            &name,
            &ServerOptions::new().handshake_timeout(Duration::from_millis(200)),
        )
        .unwrap();
        let mut silent =
            pipette::Client::connect_with(&name, &ClientOptions::new().raw(true)).unwrap();
        let t0 = Instant::now();
        // Nobody is in accept: the pump still drops the silent peer, which then sees the end.
        let r = silent.recv_timeout(Duration::from_secs(5));
        assert!(matches!(r, Err(Error::Closed)), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        drop(server);
    }

    fn a_peer_that_does_not_speak_the_protocol_is_refused_at_once() {
        let name = unique("garbage");
        let server = Server::bind(&name).unwrap();
        let t =
            std::thread::spawn(move || server.accept_timeout(Duration::from_secs(2)).map(|_| ()));
        let mut raw =
            pipette::Client::connect_with(&name, &ClientOptions::new().raw(true)).unwrap();
        raw.send(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        // The refusal (a reply with a status) arrives, then the end of the connection.
        let mut got = Vec::new();
        loop {
            match raw.recv_timeout(Duration::from_secs(5)) {
                Ok(bytes) => got.extend(bytes),
                Err(Error::Closed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), pipette::frame::REPLY_LEN, "{got:?}");
        assert!(matches!(t.join().unwrap(), Err(Error::TimedOut { .. })));
    }

    fn endpoints_lists_live_plain_names() {
        let name = unique("listed");
        let _server = Server::bind(&name).unwrap();
        let list = pipette::endpoints().unwrap();
        let me = list
            .iter()
            .find(|e| e.name == name)
            .expect("our server is listed");
        assert!(matches!(me.liveness, Liveness::Live { .. }), "{me:?}");
    }

    fn large_messages_cross_in_both_directions() {
        let name = unique("large");
        let server = Server::bind(&name).unwrap();
        let mut client = Client::connect(&name).unwrap();
        let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let expect = big.clone();
        let t = std::thread::spawn(move || {
            let mut conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
            let got = conn.recv().unwrap();
            conn.send(&got).unwrap();
            got == expect
        });
        client.send(&big).unwrap();
        assert_eq!(client.recv_timeout(Duration::from_secs(20)).unwrap(), big);
        assert!(t.join().unwrap());
    }

    fn peer_pid_and_sid_are_reported_both_ways() {
        let name = unique("pid");
        let server = Server::bind(&name).unwrap();
        let client = Client::connect(&name).unwrap();
        let conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(conn.peer().unwrap().pid(), Some(std::process::id()));
        assert_eq!(client.peer().unwrap().pid(), Some(std::process::id()));
        let (user, _) = sd::me();
        assert_eq!(conn.peer().unwrap().sid(), Some(user.as_str()));
        assert_eq!(client.peer().unwrap().sid(), Some(user.as_str()));
    }

    // ---------------------------------------------------------------------------------------
    // Message pipes (`message_pipe`)

    /// Message sizes around and past the 64 KiB first read of a raw `recv` (which then meets
    /// `ERROR_MORE_DATA` and reads on) and the 64 KiB pipe buffer.
    fn message_sizes() -> Vec<Vec<u8>> {
        [
            1usize, 7, 100, 4096, 65_535, 65_536, 65_537, 200_000, 1_000_003, 3,
        ]
        .iter()
        .enumerate()
        .map(|(k, &n)| (0..n).map(|i| ((i * 7 + k) % 251) as u8).collect())
        .collect()
    }

    fn raw_message_pipes_keep_message_boundaries() {
        let name = unique("msg-raw");
        let server =
            pipette::Server::bind_with(&name, &ServerOptions::new().raw(true).message_pipe(true))
                .unwrap();
        let msgs = message_sizes();
        let expect = msgs.clone();
        let t = std::thread::spawn(move || {
            let mut conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
            // N sends → N recvs, each exactly one message, then everything back.
            let got: Vec<Vec<u8>> = (0..expect.len())
                .map(|_| conn.recv_timeout(Duration::from_secs(20)).unwrap())
                .collect();
            for (k, (g, e)) in got.iter().zip(&expect).enumerate() {
                assert_eq!(g.len(), e.len(), "message {k} arrived with another length");
                assert!(g == e, "message {k} arrived changed");
            }
            for m in &got {
                conn.send(m).unwrap();
            }
            let _ = conn.recv_timeout(Duration::from_secs(5));
        });
        let mut client = pipette::Client::connect_with(
            &name,
            &ClientOptions::new().raw(true).message_pipe(true),
        )
        .unwrap();
        for m in &msgs {
            client.send(m).unwrap();
        }
        for (k, m) in msgs.iter().enumerate() {
            let got = client.recv_timeout(Duration::from_secs(20)).unwrap();
            assert_eq!(got.len(), m.len(), "echo {k} arrived with another length");
            assert!(&got == m, "echo {k} arrived changed");
        }
        drop(client);
        t.join().unwrap();
    }

    fn framed_mode_runs_unchanged_over_message_pipes() {
        let name = unique("msg-framed");
        let server =
            pipette::Server::bind_with(&name, &ServerOptions::new().message_pipe(true)).unwrap();
        let msgs = message_sizes();
        let expect = msgs.clone();
        let t = std::thread::spawn(move || {
            let mut conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
            for e in &expect {
                let got = conn.recv_timeout(Duration::from_secs(20)).unwrap();
                assert!(&got == e, "a framed message arrived changed");
                conn.send(&got).unwrap();
            }
        });
        let mut client =
            pipette::Client::connect_with(&name, &ClientOptions::new().message_pipe(true)).unwrap();
        for m in &msgs {
            client.send(m).unwrap();
            assert!(&client.recv_timeout(Duration::from_secs(20)).unwrap() == m);
        }
        t.join().unwrap();
    }

    /// What a .NET `NamedPipeClientStream` with `PipeTransmissionMode.Message` does underneath:
    /// `CreateFileW`, `SetNamedPipeHandleState(PIPE_READMODE_MESSAGE)`, then one `WriteFile`
    /// per message and `ReadFile` until a read ends without `ERROR_MORE_DATA`.
    mod foreign {
        use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
        use std::path::Path;

        use windows_sys::Win32::Foundation::{
            GetLastError, ERROR_MORE_DATA, GENERIC_READ, GENERIC_WRITE, INVALID_HANDLE_VALUE,
        };
        use windows_sys::Win32::Storage::FileSystem::{
            CreateFileW, ReadFile, WriteFile, OPEN_EXISTING,
        };
        use windows_sys::Win32::System::Pipes::{SetNamedPipeHandleState, PIPE_READMODE_MESSAGE};

        pub struct MessageClient(OwnedHandle);

        impl MessageClient {
            pub fn open(path: &Path) -> MessageClient {
                let w: Vec<u16> = path
                    .as_os_str()
                    .to_string_lossy()
                    .encode_utf16()
                    .chain(Some(0))
                    .collect();
                // SAFETY: `w` is NUL-terminated and outlives the call; null security attributes
                // and template are allowed.
                let h = unsafe {
                    CreateFileW(
                        w.as_ptr(),
                        GENERIC_READ | GENERIC_WRITE,
                        0,
                        std::ptr::null(),
                        OPEN_EXISTING,
                        0,
                        std::ptr::null_mut(),
                    )
                };
                if h == INVALID_HANDLE_VALUE {
                    // SAFETY: no preconditions.
                    panic!("CreateFileW failed: {}", unsafe { GetLastError() });
                }
                // SAFETY: `h` is a fresh handle that nothing else owns.
                let handle = unsafe { OwnedHandle::from_raw_handle(h) };
                let mode = PIPE_READMODE_MESSAGE;
                // SAFETY: an open pipe handle; `mode` is valid for the call; null leaves the
                // other settings alone.
                let ok = unsafe {
                    SetNamedPipeHandleState(h, &mode, std::ptr::null(), std::ptr::null())
                };
                assert_ne!(ok, 0, "SetNamedPipeHandleState failed");
                MessageClient(handle)
            }

            pub fn write(&self, msg: &[u8]) {
                let mut n = 0u32;
                // SAFETY: a synchronous write of `msg`, which outlives the call.
                let ok = unsafe {
                    WriteFile(
                        self.0.as_raw_handle(),
                        msg.as_ptr(),
                        msg.len() as u32,
                        &mut n,
                        std::ptr::null_mut(),
                    )
                };
                assert_ne!(ok, 0, "WriteFile failed");
                assert_eq!(n as usize, msg.len());
            }

            /// One whole message, read in pieces of `piece` bytes. Also returns how many reads
            /// ended with `ERROR_MORE_DATA`.
            pub fn read(&self, piece: usize) -> (Vec<u8>, usize) {
                let mut msg = Vec::new();
                let mut more = 0;
                loop {
                    let mut buf = vec![0u8; piece];
                    let mut n = 0u32;
                    // SAFETY: a synchronous read into `buf`, valid for `piece` bytes.
                    let ok = unsafe {
                        ReadFile(
                            self.0.as_raw_handle(),
                            buf.as_mut_ptr(),
                            piece as u32,
                            &mut n,
                            std::ptr::null_mut(),
                        )
                    };
                    msg.extend_from_slice(&buf[..n as usize]);
                    if ok != 0 {
                        return (msg, more);
                    }
                    // SAFETY: no preconditions.
                    let err = unsafe { GetLastError() };
                    assert_eq!(err, ERROR_MORE_DATA, "ReadFile failed");
                    more += 1;
                }
            }
        }
    }

    fn a_foreign_message_mode_peer_talks_to_a_raw_message_server() {
        let name = unique("msg-foreign");
        let server =
            pipette::Server::bind_with(&name, &ServerOptions::new().raw(true).message_pipe(true))
                .unwrap();
        let path = server.name().path().to_owned();
        let msgs = message_sizes();
        let expect = msgs.clone();
        let t = std::thread::spawn(move || {
            let mut conn = server.accept_timeout(Duration::from_secs(5)).unwrap();
            for e in &expect {
                let got = conn.recv_timeout(Duration::from_secs(20)).unwrap();
                assert_eq!(
                    got.len(),
                    e.len(),
                    "a foreign message arrived with another length"
                );
                assert!(&got == e, "a foreign message arrived changed");
                conn.send(&got).unwrap();
            }
        });
        let peer = foreign::MessageClient::open(&path);
        let mut split = 0;
        for m in &msgs {
            peer.write(m);
            let (got, more) = peer.read(4096);
            split += more;
            assert_eq!(got.len(), m.len(), "an echo arrived with another length");
            assert!(&got == m, "an echo arrived changed");
        }
        // The peer's own small reads met ERROR_MORE_DATA: the echoes really were messages.
        assert!(split > 0);
        t.join().unwrap();
    }

    fn a_message_mode_client_cannot_open_a_byte_pipe() {
        let name = unique("msg-on-byte");
        let _server = pipette::Server::bind_with(&name, &ServerOptions::new().raw(true)).unwrap();
        let res = pipette::Client::connect_with(
            &name,
            &ClientOptions::new().raw(true).message_pipe(true),
        );
        match res {
            Err(Error::InvalidConfig(e)) => {
                assert!(e.contains("message mode"), "{e}");
            }
            other => panic!("expected a clear error, got {other:?}"),
        }
    }

    // ---------------------------------------------------------------------------------------
    // Squatters: another user's pipe at our name

    /// A pipe created the way a squatter would: at a pipette name, with a security descriptor
    /// of its own (`sddl`: the owner and group it claims, and a DACL letting anyone in).
    mod squat {
        use std::os::windows::io::{FromRawHandle, OwnedHandle};
        use std::path::Path;

        use windows_sys::Win32::Foundation::{GetLastError, LocalFree, INVALID_HANDLE_VALUE};
        use windows_sys::Win32::Security::Authorization::{
            ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
        };
        use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};
        use windows_sys::Win32::Storage::FileSystem::PIPE_ACCESS_DUPLEX;
        use windows_sys::Win32::System::Pipes::{
            CreateNamedPipeW, PIPE_READMODE_BYTE, PIPE_TYPE_BYTE, PIPE_UNLIMITED_INSTANCES,
            PIPE_WAIT,
        };

        /// `instances` listening instances of the pipe at `path`, or the Win32 error.
        /// Whether this account may create a pipe owned by another user (Wine lets anyone;
        /// Windows only a holder of SeRestorePrivilege): `Err` with the Win32 error if not.
        pub fn can_assign_another_owner() -> Result<(), u32> {
            let (_, group) = super::sd::me();
            let path = std::path::PathBuf::from(format!(
                r"\\.\pipe\pipette-owner-check-{}",
                std::process::id()
            ));
            pipe(&path, &format!("O:S-1-5-7G:{group}D:(A;;GA;;;WD)"), 1).map(drop)
        }

        pub fn pipe(path: &Path, sddl: &str, instances: usize) -> Result<Vec<OwnedHandle>, u32> {
            let text: Vec<u16> = sddl.encode_utf16().chain(Some(0)).collect();
            let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
            // SAFETY: `text` is NUL-terminated; `sd` receives a LocalAlloc'ed descriptor.
            let ok = unsafe {
                ConvertStringSecurityDescriptorToSecurityDescriptorW(
                    text.as_ptr(),
                    SDDL_REVISION_1,
                    &mut sd,
                    std::ptr::null_mut(),
                )
            };
            assert_ne!(ok, 0, "bad SDDL {sddl}");
            let attrs = SECURITY_ATTRIBUTES {
                nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
                lpSecurityDescriptor: sd,
                bInheritHandle: 0,
            };
            let w: Vec<u16> = path
                .to_string_lossy()
                .encode_utf16()
                .chain(Some(0))
                .collect();
            let mut out = Vec::new();
            let mut err = 0;
            for _ in 0..instances {
                // SAFETY: `w` is NUL-terminated; `attrs` and its descriptor outlive the call.
                let h = unsafe {
                    CreateNamedPipeW(
                        w.as_ptr(),
                        PIPE_ACCESS_DUPLEX,
                        PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT,
                        PIPE_UNLIMITED_INSTANCES,
                        4096,
                        4096,
                        0,
                        &attrs,
                    )
                };
                if h == INVALID_HANDLE_VALUE {
                    // SAFETY: no preconditions.
                    err = unsafe { GetLastError() };
                    break;
                }
                // SAFETY: a fresh handle that nothing else owns.
                out.push(unsafe { OwnedHandle::from_raw_handle(h) });
            }
            // SAFETY: allocated by the conversion above; freed once.
            unsafe { LocalFree(sd) };
            if out.is_empty() {
                Err(err)
            } else {
                Ok(out)
            }
        }
    }

    /// Wine has one user, so a real second user cannot squat here. A pipe whose owner is
    /// another SID is what a squatter's pipe looks like to a client (its owner is the squatter),
    /// and Wine lets a process set any owner: with it, the real server's bind names the holder,
    /// and clients refuse it unless they trust that user or its group.
    fn a_squatted_plain_name_is_reported_and_its_squatter_refused() {
        let (_, group) = sd::me();
        // Anonymous (S-1-5-7) owns the squatter's pipe; its group is ours, for Trust::Group.
        let other = "S-1-5-7";
        let name = unique("squat");
        let path = pipette::Name::new(&name).unwrap().path().to_owned();
        let sddl = format!("O:{other}G:{group}D:(A;;GA;;;WD)");
        let _squatter = squat::pipe(&path, &sddl, 8)
            .unwrap_or_else(|e| panic!("CreateNamedPipeW with owner {other}: error {e}"));
        // The real server: the name is taken, and by whom.
        match Server::bind(&name) {
            Err(Error::AddrInUse {
                other_user: Some(who),
                ..
            }) => assert!(who.contains(other), "{who}"),
            other => panic!("expected AddrInUse naming {other:?}'s holder, got {other:?}"),
        }
        // A client of the default policy refuses it before sending anything.
        match Client::connect(&name) {
            Err(Error::UntrustedServer { server, .. }) => {
                assert!(server.contains(other), "{server}")
            }
            r => panic!("expected UntrustedServer, got {r:?}"),
        }
        // Raw mode too.
        let raw = ClientOptions::new().raw(true);
        assert!(matches!(
            pipette::Client::connect_with(&name, &raw),
            Err(Error::UntrustedServer { .. })
        ));
        // Widened trust: by that user's SID, or by its group (which is ours).
        for trust in [Trust::User(other.to_owned()), Trust::Group, Trust::Everyone] {
            pipette::Client::connect_with(&name, &raw.clone().trust(trust)).unwrap();
        }
    }

    /// The client reads who serves a pipette pipe from the pipe's owner and group, which a
    /// pipette server sets to its user and primary group.
    fn the_client_reads_the_servers_owner_and_group() {
        let (user, _) = sd::me();
        let name = unique("owner");
        let server =
            pipette::Server::bind_with(&name, &ServerOptions::new().access(Access::Group)).unwrap();
        let client =
            pipette::Client::connect_with(&name, &ClientOptions::new().trust(Trust::Group))
                .unwrap();
        assert_eq!(client.peer().unwrap().sid(), Some(user.as_str()));
        drop(server);
    }

    /// The server's readiness event (for event loops) is signalled while a connection is ready to
    /// accept, and reset once it has been taken; `try_accept` never waits.
    fn the_servers_readiness_event_follows_ready_connections() {
        use std::os::windows::io::AsRawHandle;
        use windows_sys::Win32::Foundation::WAIT_OBJECT_0;
        use windows_sys::Win32::System::Threading::WaitForSingleObject;
        let name = unique("ready-event");
        let server = Server::bind(&name).unwrap();
        let h = server.as_raw_handle();
        // SAFETY: `h` is the server's event, valid while `server` lives.
        let signalled = |ms: u32| unsafe { WaitForSingleObject(h, ms) } == WAIT_OBJECT_0;
        assert!(!signalled(0));
        assert!(server.try_accept().unwrap().is_none());
        let mut client = Client::connect(&name).unwrap();
        client.send(b"hi").unwrap();
        assert!(signalled(5000), "a connection is ready");
        let mut conn = server.try_accept().unwrap().expect("ready");
        assert_eq!(conn.recv().unwrap(), b"hi");
        assert!(!signalled(0), "reset once taken");
        server.shutdown_handle().shutdown();
        assert!(signalled(5000), "signalled by the shutdown");
        assert!(matches!(server.try_accept(), Err(Error::Shutdown)));
    }
}
