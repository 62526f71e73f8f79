"""Tests of pipette_client.py: the wire bytes and the name rule on their own, then the client
against a real pipette server (the Rust one, a process of its own).

The Rust test suite runs this file with the servers it starts (crates/pipette/tests/clients.rs):

    cargo test -p pipette-ipc --test clients

By hand, give it servers yourself (each must be a framed pipette echo server that answers
"sleep MS" with "slept" after MS ms and "big N" with N bytes; see clients.rs, role `serve`):

    PIPETTE_TEST_SERVER=/abs/path.sock        an echo server, default limits, 1 s handshake timeout
    PIPETTE_TEST_SMALL_SERVER=/abs/small.sock the same with a 4096-byte limit
    PIPETTE_TEST_PLAIN_NAME=NAME              the same on a short plain name
    PIPETTE_TEST_PLAIN_PATH=/its/socket/path  where the Rust server put that name
    PIPETTE_TEST_OTHER_SERVER=/abs/other.sock + PIPETTE_TEST_OTHER_UID=UID
                                              (AccessDenied only) a server of another user

Without them the tests that need a server are skipped, unless PIPETTE_TEST_REQUIRE=1, which
makes them fail (the Rust suite sets it: a skipped test never passes there).
"""

import os
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipette_client as pc  # noqa: E402

T = 10.0  # a hang limit, never a speed check


def server_env(var):
    value = os.environ.get(var)
    if not value:
        if os.environ.get("PIPETTE_TEST_REQUIRE") == "1":
            raise AssertionError("PIPETTE_TEST_REQUIRE=1 and %s is not set" % var)
        raise unittest.SkipTest("%s is not set (see the module's docstring)" % var)
    return value


class WireAndNames(unittest.TestCase):
    """What needs no server: bytes as PROTOCOL.md spells them, the name-to-path rule."""

    def test_hello_reply_and_end_bytes_are_those_of_the_worked_example(self):
        self.assertEqual(pc.encode_hello(16 * 1024 * 1024).hex(),
                         "50495045545445 3f 0100 0000 00000001".replace(" ", ""))
        self.assertEqual(pc.encode_reply(pc.STATUS_ACCEPTED, 16 * 1024 * 1024).hex(),
                         "5049504554544521" "0100" "00" "00" "00000001")
        self.assertEqual(pc.encode_reply(pc.STATUS_ACCESS_DENIED, 123).hex(),
                         "5049504554544521" "0000" "01" "00" "00000000")
        self.assertEqual(pc.END_HEADER, bytes([0, 0, 0, 0, 1, 0, 0, 0]))
        self.assertEqual(pc.encode_header(2) + b"hi", bytes.fromhex("020000000000000068 69".replace(" ", "")))

    def test_replies_are_judged_as_the_document_says(self):
        with self.assertRaises(pc.Refused) as e:
            pc.decode_reply(pc.encode_reply(pc.STATUS_BAD_HELLO))
        self.assertEqual(e.exception.status, 4)
        with self.assertRaises(pc.ProtocolError):   # our own hello, echoed
            pc.decode_reply(pc.encode_hello(4096))
        with self.assertRaises(pc.ProtocolError):   # unknown status
            pc.decode_reply(pc.REPLY_MAGIC + struct.pack("<HBBI", 0, 5, 0, 0))
        with self.assertRaises(pc.ProtocolError):   # accepted with version 0
            pc.decode_reply(pc.REPLY_MAGIC + struct.pack("<HBBI", 0, 0, 0, 4096))
        with self.assertRaises(pc.ProtocolError):   # accepted with a limit below 4096
            pc.decode_reply(pc.REPLY_MAGIC + struct.pack("<HBBI", 1, 0, 0, 4095))
        self.assertEqual(pc.decode_reply(pc.encode_reply(0, 4096)), 4096)

    def test_fnv1a64_published_vectors(self):
        self.assertEqual("%016x" % pc.fnv1a64(b""), "cbf29ce484222325")
        self.assertEqual("%016x" % pc.fnv1a64(b"a"), "af63dc4c8601ec8c")
        self.assertEqual("%016x" % pc.fnv1a64(b"foobar"), "85944171f73967e8")

    @unittest.skipIf(pc.WINDOWS, "Unix paths")
    def test_name_to_path_vectors_of_protocol_md(self):
        x100 = "x" * 100
        d71 = "/tmp/" + "d" * 67    # 72 bytes: the longest directory of a hashed path
        d72 = "/tmp/" + "d" * 68    # 73 bytes
        macos_t = "/var/folders/zz/zyxvpxvq6csfxvn_n0000000000000/T"
        rows = [
            ("/run/user/1000", "my-app", "/run/user/1000/pipette/my-app.sock"),
            ("/run/user/1000",
             "com.example.desktop-application.background-sync-service.control-channel.v21",
             "/run/user/1000/pipette/com.example.desktop-application.background-sync-service"
             ".control-channel.v21.sock"),
            ("/run/user/1000",
             "com.example.desktop-application.background-sync-service.control-channel.v2.1",
             "/run/user/1000/pipette/+647bec71b50a6cb1.sock"),
            ("/run/user/1000", x100, "/run/user/1000/pipette/+052c9e7cec411035.sock"),
            (macos_t, "org.example.editor.language-server",
             macos_t + "/pipette/org.example.editor.language-server.sock"),
            (macos_t, "org.example.editor.language-server.workspace-7f3a9c2e",
             macos_t + "/pipette/+3f8f2022f7ae42f2.sock"),
            (d71, x100, d71 + "/pipette/+052c9e7cec411035.sock"),
            (d72, "tool", d72 + "/pipette/tool.sock"),
            (d72, x100, None),
        ]
        saved = os.environ.get("XDG_RUNTIME_DIR")
        try:
            for xdg, name, path in rows:
                os.environ["XDG_RUNTIME_DIR"] = xdg
                if path is None:
                    with self.assertRaises(ValueError) as e:
                        pc.endpoint_path(name)
                    self.assertIn(xdg, str(e.exception))
                else:
                    self.assertEqual(pc.endpoint_path(name), path, (xdg, name))
                    self.assertLessEqual(len(path.encode()), 103)
            # Absolute paths are used as given, never hashed.
            long_abs = "/tmp/" + "a" * 90 + ".sock"
            self.assertEqual(pc.endpoint_path(long_abs), long_abs)
            # Without XDG_RUNTIME_DIR (Linux): /tmp/pipette-<euid>.
            del os.environ["XDG_RUNTIME_DIR"]
            if sys.platform.startswith("linux"):
                self.assertEqual(pc.endpoint_path("my-app"),
                                 "/tmp/pipette-%d/my-app.sock" % os.geteuid())
        finally:
            if saved is None:
                os.environ.pop("XDG_RUNTIME_DIR", None)
            else:
                os.environ["XDG_RUNTIME_DIR"] = saved

    @unittest.skipIf(pc.WINDOWS, "socketpair stands in for a Unix peer")
    def test_a_header_above_our_limit_closes_without_reading_the_payload(self):
        ours, theirs = socket.socketpair()
        conn = pc.Connection(pc._SocketTransport(ours), 4096, 4096, False, "pair")
        theirs.sendall(pc.encode_header(4096) + b"a" * 4096 + pc.encode_header(4097) + b"b" * 100)
        self.assertEqual(conn.recv(timeout=T), b"a" * 4096)
        with self.assertRaises(pc.MessageTooLarge) as e:
            conn.recv(timeout=T)
        self.assertEqual((e.exception.length, e.exception.limit), (4097, 4096))
        with self.assertRaises(pc.BrokenConnection):
            conn.recv(timeout=T)
        self.assertEqual(theirs.recv(1), b"", "the connection is closed")
        theirs.close()

    def test_invalid_plain_names_are_refused(self):
        for bad in ["", "a/b", "..", "x..y", ".", "COM1", "nul.txt", "sp ace", "x" * 101]:
            with self.assertRaises(ValueError, msg=bad):
                pc.endpoint_path(bad)

    @unittest.skipIf(pc.WINDOWS, "socketpair stands in for a Unix peer")
    def test_the_end_header_ends_the_peers_direction_and_bad_flags_break_it(self):
        ours, theirs = socket.socketpair()
        conn = pc.Connection(pc._SocketTransport(ours), 4096, 4096, False, "pair")
        theirs.sendall(pc.encode_header(3) + b"abc" + pc.END_HEADER)
        self.assertEqual(conn.recv(timeout=T), b"abc")
        self.assertIsNone(conn.recv(timeout=T))
        self.assertIsNone(conn.recv(timeout=T))
        conn.close()
        theirs.close()
        ours, theirs = socket.socketpair()
        conn = pc.Connection(pc._SocketTransport(ours), 4096, 4096, False, "pair")
        theirs.sendall(pc.encode_header(0, 2))
        with self.assertRaises(pc.ProtocolError):
            conn.recv(timeout=T)
        with self.assertRaises(pc.BrokenConnection):
            conn.recv(timeout=T)
        theirs.close()


class AgainstRust(unittest.TestCase):
    """The client against a Rust pipette server in another process."""

    def setUp(self):
        self.path = server_env("PIPETTE_TEST_SERVER")

    def connect(self, **kw):
        return pc.connect(self.path, wait=T, timeout=T, **kw)

    def test_echo_empty_message_and_orderly_close(self):
        with self.connect() as conn:
            conn.send(b"hi")                       # right behind the hello
            self.assertEqual(conn.recv(timeout=T), b"hi")
            self.assertEqual(conn.peer_max_message_size, 16 * 1024 * 1024)
            conn.send(b"")
            self.assertEqual(conn.recv(timeout=T), b"")
            conn.send("né ✓".encode("utf-16-le"))
            self.assertEqual(conn.recv(timeout=T).decode("utf-16-le"), "né ✓")
            conn.close_write()
            self.assertIsNone(conn.recv(timeout=T))   # the server ended its side too
            with self.assertRaises(pc.BrokenConnection):
                conn.send(b"after the end")

    def test_a_plain_name_is_where_the_rust_server_put_it(self):
        name = server_env("PIPETTE_TEST_PLAIN_NAME")
        self.assertEqual(pc.endpoint_path(name), server_env("PIPETTE_TEST_PLAIN_PATH"))
        with pc.connect(name, wait=T) as conn:
            conn.send(b"by name")
            self.assertEqual(conn.recv(timeout=T), b"by name")

    def test_zero_round_trip_first_message_then_large_ones(self):
        with self.connect() as conn:
            first = bytes(range(256)) * 16           # 4096 bytes: allowed before the reply
            conn.send(first)
            self.assertTrue(conn._reply_pending, "a 4096-byte send must not wait for the reply")
            big = os.urandom(3 * 1024 * 1024 + 7)   # larger: reads the reply first
            conn.send(big)
            self.assertFalse(conn._reply_pending)
            self.assertEqual(conn.recv(timeout=T), first)
            self.assertEqual(conn.recv(timeout=T), big)

    def test_the_servers_limit_is_checked_before_writing(self):
        small = server_env("PIPETTE_TEST_SMALL_SERVER")
        with pc.connect(small, wait=T) as conn:
            conn.send(b"a" * 4096)
            self.assertEqual(conn.recv(timeout=T), b"a" * 4096)
            self.assertEqual(conn.peer_max_message_size, 4096)
            with self.assertRaises(pc.MessageTooLarge):
                conn.send(b"a" * 4097)
            conn.send(b"still usable")
            self.assertEqual(conn.recv(timeout=T), b"still usable")

    def test_the_rust_server_never_sends_more_than_we_accept(self):
        with self.connect(max_message_size=4096) as conn:
            conn.send(b"big 4096")
            self.assertEqual(conn.recv(timeout=T), b"x" * 4096)
            conn.send(b"big 4097")      # its send fails, and it ends the connection instead
            self.assertIsNone(conn.recv(timeout=T))

    def test_version_0_is_refused_with_status_3(self):
        with self.connect(version=0) as conn:
            with self.assertRaises(pc.Refused) as e:
                conn.recv(timeout=T)
            self.assertEqual(e.exception.status, pc.STATUS_UNSUPPORTED_VERSION)

    def raw(self, data):
        """Sends `data` on a plain socket; returns all the server sends until it closes."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(T)
        s.connect(self.path)
        s.sendall(data)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        s.close()
        return got

    def test_bad_hellos_are_refused_with_status_4(self):
        # A limit below 4096.
        reply = self.raw(pc.HELLO_MAGIC + struct.pack("<HHI", 1, 0, 4095))
        self.assertEqual(reply, pc.encode_reply(pc.STATUS_BAD_HELLO))
        # Not a hello at all: refused at the first wrong byte, without waiting for 16.
        reply = self.raw(b"GET /")
        self.assertEqual(reply, pc.encode_reply(pc.STATUS_BAD_HELLO))
        with self.assertRaises(pc.Refused) as e:
            pc.decode_reply(reply)
        self.assertEqual(e.exception.status, 4)

    def test_a_silent_peer_is_dropped_after_the_handshake_timeout(self):
        start = time.monotonic()
        self.assertEqual(self.raw(b"PIPE"), b"", "no reply to a peer that never finished its hello")
        self.assertLess(time.monotonic() - start, T)

    def test_receive_timeouts_keep_the_connection(self):
        with self.connect() as conn:
            conn.send(b"sleep 600")
            with self.assertRaises(TimeoutError):
                conn.recv(timeout=0.05)
            self.assertEqual(conn.recv(timeout=T), b"slept")
            conn.send(b"again")
            self.assertEqual(conn.recv(timeout=T), b"again")

    def test_the_end_header_is_an_orderly_close_for_the_rust_server(self):
        # What a Windows peer sends instead of shutdown(SHUT_WR): every receiver knows it.
        with self.connect() as conn:
            conn.send(b"before the end")
            conn._t.half_close = lambda: False       # pretend to be a pipe: send END
            conn.close_write()
            self.assertEqual(conn.recv(timeout=T), b"before the end")
            self.assertIsNone(conn.recv(timeout=T))

    def test_a_missing_server_is_not_found_after_waiting(self):
        missing = self.path + ".missing"
        with self.assertRaises(pc.NotFound):
            pc.connect(missing)
        start = time.monotonic()
        with self.assertRaises(pc.NotFound):
            pc.connect(missing, wait=0.3)
        self.assertGreaterEqual(time.monotonic() - start, 0.3)


class AccessDenied(unittest.TestCase):
    """A server of another user: untrusted by default; trusted, it refuses us (status 1)."""

    def setUp(self):
        self.path = server_env("PIPETTE_TEST_OTHER_SERVER")
        self.uid = int(server_env("PIPETTE_TEST_OTHER_UID"))

    def test_untrusted_by_default_and_refused_with_status_1_when_trusted(self):
        with self.assertRaises(pc.UntrustedServer) as e:
            pc.connect(self.path, wait=T)
        self.assertIn("uid %d" % self.uid, str(e.exception))
        with pc.connect(self.path, wait=T, trust="user:%d" % self.uid) as conn:
            # Zero round trip: the send goes before the refusal is known (or finds the
            # connection closed, and then reads the refusal to explain it).
            with self.assertRaises(pc.Refused) as e:
                conn.send(b"hi")
                conn.recv(timeout=T)
            self.assertEqual(e.exception.status, pc.STATUS_ACCESS_DENIED)
        with pc.connect(self.path, wait=T, trust="everyone") as conn:
            with self.assertRaises(pc.Refused):
                conn.close_write(timeout=T)


if __name__ == "__main__":
    unittest.main()
