"""A client (and a small server) of pipette's framed protocol, version 1, in plain Python.

Copy this one file into your project: it needs nothing but Python's standard library
(3.8 or later). It was written from docs/PROTOCOL.md alone, and is tested against the
pipette server and client (the Rust ones) on every CI run.

    import pipette_client as pc

    with pc.connect("my-app", wait=5.0) as conn:   # the server of `pipette serve my-app`
        conn.send(b"hello")                        # one message: one recv on the other side
        print(conn.recv(timeout=5.0))              # b'hello' from an echo server
        conn.close_write()                         # nothing more from us...
        assert conn.recv() is None                 # ...and the server ended its side too

What it does, section by section of PROTOCOL.md:

- Section 0: before sending a byte, it checks who runs the server (Linux: SO_PEERCRED;
  Windows: the pipe's owner) against `trust`; an untrusted server gets nothing.
- Sections 1-2: the 16-byte hello, sent at once; the 16-byte reply, read lazily (by the
  first recv, by a send of more than 4096 bytes, by close_write), so that a first request
  costs no round trip. Refusals raise Refused with the status.
- Section 3: 8-byte headers; both limits enforced (a message too large for the server is
  refused before anything is written; a header too large for us closes the connection
  without reading the payload); unknown flags are a protocol error.
- Section 4: close_write() ends our direction (shutdown on Unix, the END header on
  Windows); recv() returns None at the peer's end, whichever way it was said.
- Timeouts: every send and recv takes one (Unix); a recv that times out keeps what it has
  read of a message for the next call; a send that times out part-way ends our direction.
- Section 8: endpoint_path() maps a name to where pipette puts it, long plain names to a
  hashed short file name.

Windows support (named pipes, the SID in names, the owner check through ctypes, no
timeouts) follows the same document but cannot be run by pipette's CI (no CPython on
Windows there): treat it as untested.

Run `python3 pipette_client.py --help` for a small command line (call, serve).
"""

import errno
import os
import socket
import struct
import sys
import time

__all__ = [
    "connect", "Connection", "Server", "endpoint_path",
    "PipetteError", "NotFound", "Refused", "UntrustedServer", "ProtocolError",
    "MessageTooLarge", "BrokenConnection",
    "VERSION", "MIN_MESSAGE_LIMIT", "DEFAULT_MAX_MESSAGE_SIZE",
]

VERSION = 1
MIN_MESSAGE_LIMIT = 4096
MAX_MESSAGE_LIMIT = 0xFFFFFFFF
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
HELLO_MAGIC = b"PIPETTE?"
REPLY_MAGIC = b"PIPETTE!"
HELLO_LEN = REPLY_LEN = 16
HEADER_LEN = 8
FLAG_END = 1
DEFAULT_HANDSHAKE_TIMEOUT = 5.0

WINDOWS = sys.platform == "win32"

STATUS_ACCEPTED = 0
STATUS_ACCESS_DENIED = 1
STATUS_SHUTTING_DOWN = 2
STATUS_UNSUPPORTED_VERSION = 3
STATUS_BAD_HELLO = 4
STATUS_TEXT = {
    STATUS_ACCESS_DENIED: "access denied: the server's access policy does not admit this user",
    STATUS_SHUTTING_DOWN: "the server is shutting down",
    STATUS_UNSUPPORTED_VERSION: "the server speaks no protocol version this client offered",
    STATUS_BAD_HELLO: "the server did not understand the hello (is it in raw mode?)",
}


# ---------------------------------------------------------------------------------------
# Errors


class PipetteError(Exception):
    """Anything that goes wrong in this module."""


class NotFound(PipetteError, FileNotFoundError):
    """No server is listening on the name."""


class Refused(PipetteError, ConnectionRefusedError):
    """The server refused the connection in its reply; `status` says why (1 to 4)."""

    def __init__(self, status):
        self.status = status
        super().__init__(STATUS_TEXT.get(status, "status %d" % status))


class UntrustedServer(PipetteError, PermissionError):
    """The server runs as a user this client does not trust; nothing was sent to it."""


class ProtocolError(PipetteError):
    """The peer broke the protocol, or does not speak it. The connection is closed."""


class MessageTooLarge(PipetteError):
    """A message is larger than its receiver accepts. As a sender: nothing was written and
    the connection is usable. As a receiver: the connection was closed unread."""

    def __init__(self, length, limit, receiving):
        self.length = length
        self.limit = limit
        side = "we accept" if receiving else "the server accepts"
        super().__init__("a message of %d bytes is larger than %s (%d bytes)" % (length, side, limit))


class BrokenConnection(PipetteError):
    """An earlier failure (a send cut part-way, a protocol error) made this direction of the
    connection unusable."""


# ---------------------------------------------------------------------------------------
# The wire format (sections 1 to 3)


def encode_hello(max_len, version=VERSION):
    """The client hello: magic, version, flags 0, the largest message the client accepts."""
    return HELLO_MAGIC + struct.pack("<HHI", version, 0, max_len)


def decode_hello(b):
    """(version, max_len) of a 16-byte hello, or the refusal status it earns."""
    if b[:8] != HELLO_MAGIC:
        return STATUS_BAD_HELLO
    version, _flags, max_len = struct.unpack("<HHI", b[8:16])
    if max_len < MIN_MESSAGE_LIMIT:
        return STATUS_BAD_HELLO
    if version == 0:
        return STATUS_UNSUPPORTED_VERSION
    return (min(version, VERSION), max_len)


def encode_reply(status, max_len=0, version=VERSION):
    """A server reply: an acceptance (status 0) or a refusal (version and max_len 0)."""
    if status != STATUS_ACCEPTED:
        version, max_len = 0, 0
    return REPLY_MAGIC + struct.pack("<HBBI", version, status, 0, max_len)


def decode_reply(b, offered=VERSION):
    """The server's limit from a 16-byte accepting reply; raises Refused or ProtocolError."""
    if b[:8] != REPLY_MAGIC:
        if b[:8] == HELLO_MAGIC:
            raise ProtocolError("the peer sent our hello back: it is an echo, not a pipette "
                                "server (a raw server?)")
        raise ProtocolError("not a pipette server: its first bytes are %r" % b[:8])
    version, status, _reserved, max_len = struct.unpack("<HBBI", b[8:16])
    if status > STATUS_BAD_HELLO:
        raise ProtocolError("unknown reply status %d" % status)
    if status != STATUS_ACCEPTED:
        raise Refused(status)
    if version == 0 or version > offered:
        raise ProtocolError("the server accepted with version %d; we offered %d" % (version, offered))
    if max_len < MIN_MESSAGE_LIMIT:
        raise ProtocolError("the server announced a limit of %d bytes, below the minimum" % max_len)
    return max_len


def encode_header(length, flags=0):
    return struct.pack("<II", length, flags)


END_HEADER = encode_header(0, FLAG_END)


# ---------------------------------------------------------------------------------------
# Where names live (section 8)


PORTABLE_PATH_MAX = 103  # sun_path is 104 bytes on macOS and the BSDs, 108 on Linux


def fnv1a64(data):
    """FNV-1a, 64 bits: the hash of a long plain name's short file name (section 8)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def endpoint_dir():
    """The per-user directory of plain names on Unix (section 8)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isabs(base):
        return os.path.join(base, "pipette")
    if sys.platform == "darwin":
        home = os.environ.get("HOME")
        if home and os.path.isabs(home):
            return os.path.join(home, "Library", "Caches", "pipette")
    return "/tmp/pipette-%d" % os.geteuid()


def endpoint_path(name, directory=None):
    """Where the endpoint `name` lives (docs/PROTOCOL.md section 8, "Endpoints").

    - An explicit endpoint is used as given: an absolute path on Unix, a `\\.\pipe\...`
      path on Windows.
    - A plain name (1 to 100 characters from A-Z a-z 0-9 . _ -, not ".", no "..", not a
      Windows device name). Windows: `\\.\pipe\pipette-<user SID>-<name>`. Unix: in the
      per-user directory D (endpoint_dir(), or `directory`), `D/<name>.sock` if that path is
      at most 103 bytes; else `D/+<FNV-1a 64 of the name, 16 hex digits>.sock`; a name
      whose hashed path is longer than 103 bytes too is refused (ValueError).
    """
    if WINDOWS:
        if name[:9].lower() == "\\\\.\\pipe\\":
            return name
    elif name.startswith("/"):
        return name
    _check_plain(name)
    if WINDOWS:
        return "\\\\.\\pipe\\pipette-%s-%s" % (_windows.user_sid(), name)
    d = endpoint_dir() if directory is None else directory
    path = "%s/%s.sock" % (d, name)
    if len(path.encode()) <= PORTABLE_PATH_MAX:
        return path
    path = "%s/+%016x.sock" % (d, fnv1a64(name.encode()))
    if len(path.encode()) <= PORTABLE_PATH_MAX:
        return path
    raise ValueError("invalid endpoint name %r: the endpoint directory %s is too long for a "
                     "socket path (at most 80 bytes); set XDG_RUNTIME_DIR to a shorter "
                     "directory or give an absolute path" % (name, d))


_PLAIN = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}


def _check_plain(name):
    problem = None
    if not 1 <= len(name) <= 100:
        problem = "a plain name has 1 to 100 characters"
    elif set(name) - _PLAIN:
        problem = "a plain name uses only A-Z a-z 0-9 . _ - (or give an absolute path)"
    elif name == "." or ".." in name:
        problem = '"." and ".." are not allowed'
    else:
        stem = name.split(".")[0].upper()
        if stem in _DEVICES or (stem[:3] in ("COM", "LPT") and len(stem) == 4 and stem[3].isdigit()):
            problem = "%s is a reserved Windows device name" % stem
    if problem:
        raise ValueError("invalid endpoint name %r: %s" % (name, problem))


# ---------------------------------------------------------------------------------------
# Who is on the other end (section 0)


def _peer_credentials(sock):
    """(pid, uid, gid) of the peer of a connected Unix socket (Linux: SO_PEERCRED)."""
    if not hasattr(socket, "SO_PEERCRED"):
        raise UntrustedServer("cannot tell who runs the server on this system (no SO_PEERCRED); "
                              "connect with trust='everyone' if you trust whoever serves it")
    size = struct.calcsize("3i")
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size))


def _trusts_uid(trust, uid, gid):
    """Whether a server running as uid:gid passes `trust` (Unix)."""
    if trust == "everyone" or uid in (os.geteuid(), 0):
        return True
    if trust == "group":
        return gid == os.getegid() or gid in os.getgroups()
    if trust.startswith("user:"):
        who = trust[5:]
        if who.isdigit():
            return uid == int(who)
        import pwd
        try:
            return uid == pwd.getpwnam(who).pw_uid
        except KeyError:
            raise ValueError("trust=%r: no such user" % trust)
    if trust != "user":
        raise ValueError("trust must be 'user', 'group', 'user:NAME' or 'everyone', not %r" % trust)
    return False


# ---------------------------------------------------------------------------------------
# Connections


class Connection:
    """One framed connection: whole messages both ways. From connect() or Server.accept()."""

    def __init__(self, transport, max_message_size, peer_max_message_size, reply_pending, name):
        self._t = transport
        self.max_message_size = max_message_size
        #: The largest message the peer accepts; 4096 until a client has read the reply.
        self.peer_max_message_size = peer_max_message_size
        self._reply_pending = reply_pending
        self._buf = bytearray()
        self._ended = False          # the peer ended its direction
        self._recv_broken = None     # why receiving failed for good
        self._send_broken = None     # why sending failed for good
        self.name = name

    # -- the handshake reply, read lazily (section 3, "zero-round-trip first message")

    def _settle(self, timeout=None):
        """Reads the server's reply if it has not been read yet."""
        if not self._reply_pending:
            return
        while len(self._buf) < REPLY_LEN:
            chunk = self._t.read(timeout)
            if not chunk:
                self._reply_pending = False
                self._recv_broken = ProtocolError(
                    "the server closed the connection before its reply (%d of 16 bytes): "
                    "refused without a reason" % len(self._buf))
                raise self._recv_broken
            self._buf += chunk
        reply = bytes(self._buf[:REPLY_LEN])
        del self._buf[:REPLY_LEN]
        self._reply_pending = False
        try:
            self.peer_max_message_size = decode_reply(reply)
        except PipetteError as e:
            self._recv_broken = self._send_broken = e
            self._t.close()
            raise

    # -- sending

    def send(self, payload, timeout=None):
        """Sends `payload` (bytes) as one message. Raises MessageTooLarge before writing
        anything if the peer does not accept that much; TimeoutError if the peer does not
        make room in time (part-way, the sending direction is then closed)."""
        payload = bytes(payload)
        if self._send_broken is not None:
            raise BrokenConnection("cannot send after: %s" % self._send_broken)
        if len(payload) > MIN_MESSAGE_LIMIT:
            self._settle(timeout)     # the real limit is in the reply
        if len(payload) > self.peer_max_message_size:
            raise MessageTooLarge(len(payload), self.peer_max_message_size, receiving=False)
        self._write(encode_header(len(payload)) + payload, timeout)

    def close_write(self, timeout=None):
        """Ends our direction in an orderly way (section 4); receiving goes on. A client
        reads the reply first, so that a refusal is reported here."""
        self._settle(timeout)
        if self._send_broken is not None:
            return
        if self._t.half_close():
            self._send_broken = BrokenConnection("our direction is closed")
            return
        self._write(END_HEADER, timeout)      # Windows pipes: the END header
        self._send_broken = BrokenConnection("our direction is closed")

    def _write(self, data, timeout):
        try:
            sent = self._t.write_all(data, timeout)
        except (BrokenPipeError, ConnectionResetError):
            # A refusal may explain it: read the reply before reporting (section 3).
            self._settle(timeout)
            raise
        if sent < len(data):          # timed out part-way: the framing cannot go on
            self._send_broken = TimeoutError("a send timed out part-way")
            self._t.half_close()
            raise TimeoutError("send timed out after %d of %d bytes; the connection can no "
                               "longer send" % (sent, len(data)))

    # -- receiving

    def recv(self, timeout=None):
        """One whole message (bytes), or None once the peer has ended its direction.
        TimeoutError keeps what has arrived of a message for the next call."""
        if self._recv_broken is not None:
            raise BrokenConnection("cannot receive after: %s" % self._recv_broken)
        self._settle(timeout)
        while True:
            if self._ended:
                return None
            msg = self._take()
            if msg is not None:
                return msg
            if self._ended:               # _take found the END header
                return None
            chunk = self._t.read(timeout)
            if not chunk:
                if not self._buf:
                    self._ended = True
                    return None
                self._fail(ProtocolError("the stream ended inside a message (%d bytes of it "
                                         "arrived)" % len(self._buf)))
            self._buf += chunk

    def _take(self):
        """A message from the buffer, if a whole one is there."""
        if len(self._buf) < HEADER_LEN:
            return None
        length, flags = struct.unpack("<II", self._buf[:HEADER_LEN])
        if flags == FLAG_END and length == 0:
            del self._buf[:HEADER_LEN]
            self._ended = True
            return None
        if flags != 0:
            self._fail(ProtocolError("a header with flags 0x%x (length %d)" % (flags, length)))
        if length > self.max_message_size:
            self._fail(MessageTooLarge(length, self.max_message_size, receiving=True))
        if len(self._buf) < HEADER_LEN + length:
            return None
        msg = bytes(self._buf[HEADER_LEN:HEADER_LEN + length])
        del self._buf[:HEADER_LEN + length]
        return msg

    def _fail(self, error):
        self._recv_broken = self._send_broken = error
        self._t.close()
        raise error

    def close(self):
        """Closes the connection at once (both directions)."""
        self._t.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------
# Transports: a Unix socket, or a Windows pipe opened as a file


class _SocketTransport:
    def __init__(self, sock):
        self.sock = sock

    def read(self, timeout):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("recv timed out after %ss" % timeout)
        except ConnectionResetError:
            return b""        # the peer closed with our bytes unread: its end all the same

    def write_all(self, data, timeout):
        """Bytes written; fewer than len(data) when the timeout expired."""
        self.sock.settimeout(timeout)
        view, sent = memoryview(data), 0
        while sent < len(data):
            try:
                sent += self.sock.send(view[sent:])
            except socket.timeout:
                if sent == 0:
                    raise TimeoutError("send timed out after %ss; nothing was sent" % timeout)
                return sent
        return sent

    def half_close(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return True

    def close(self):
        self.sock.close()


class _PipeTransport:  # Windows; untested here (see the module's docstring)
    def __init__(self, f):
        self.f = f

    def read(self, timeout):
        if timeout is not None:
            raise NotImplementedError("timeouts on Windows pipes are not implemented here")
        try:
            return self.f.read(65536)
        except BrokenPipeError:
            return b""

    def write_all(self, data, timeout):
        if timeout is not None:
            raise NotImplementedError("timeouts on Windows pipes are not implemented here")
        view, sent = memoryview(data), 0
        while sent < len(data):
            sent += self.f.write(view[sent:])
        return sent

    def half_close(self):
        return False      # pipes have no half-close: the caller sends the END header

    def close(self):
        self.f.close()


# ---------------------------------------------------------------------------------------
# Connecting


def connect(name, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, trust="user", wait=None,
            timeout=None, version=VERSION):
    """Connects to the pipette server of `name` (a plain name or an explicit endpoint).

    - max_message_size: the largest message we accept (at least 4096).
    - trust: which servers to talk to, checked before the hello: "user" (our user or root /
      the system), "group", "user:NAME", "everyone" (section 0).
    - wait: seconds to wait for the server to appear (default: fail at once with NotFound).
    - timeout: for the handshake's writes.
    - version: the highest protocol version offered (only for tests: 1 is all there is).

    Returns at once after sending the hello; the reply is read by the first recv (or a send
    of more than 4096 bytes, or close_write), so a first request costs no round trip.
    """
    if not MIN_MESSAGE_LIMIT <= max_message_size <= MAX_MESSAGE_LIMIT:
        raise ValueError("max_message_size must be from 4096 to 4294967295")
    path = endpoint_path(name)
    deadline = None if wait is None else time.monotonic() + wait
    delay = 0.001
    while True:
        try:
            transport = _open_windows(path, trust) if WINDOWS else _open_unix(path, trust)
            break
        except (FileNotFoundError, ConnectionRefusedError, _Busy) as e:
            if deadline is None or time.monotonic() >= deadline:
                raise NotFound("no server is listening on %r (%s)" % (name, path)) from e
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
    try:
        transport.write_all(encode_hello(max_message_size, version), timeout)
    except BaseException:
        transport.close()
        raise
    return Connection(transport, max_message_size, MIN_MESSAGE_LIMIT, True, name)


class _Busy(Exception):
    """Every instance of the pipe is busy (Windows), or the socket's queue is full."""


def _open_unix(path, trust):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except BlockingIOError:
            raise _Busy()
        if trust != "everyone":
            pid, uid, gid = _peer_credentials(sock)
            if not _trusts_uid(trust, uid, gid):
                raise UntrustedServer(
                    "refusing to talk to the server at %s: it runs as uid %d (pid %d), and this "
                    "client trusts %r; nothing was sent to it" % (path, uid, pid, trust))
    except BaseException:
        sock.close()
        raise
    return _SocketTransport(sock)


def _open_windows(path, trust):  # untested here (see the module's docstring)
    try:
        f = open(path, "r+b", buffering=0)
    except OSError as e:
        if getattr(e, "winerror", None) == 231:    # ERROR_PIPE_BUSY
            raise _Busy()
        raise
    try:
        if trust != "everyone":
            owner = _windows.pipe_owner(f)
            if owner not in (_windows.user_sid(), "S-1-5-18", "S-1-5-32-544"):
                if not (trust.startswith("user:") and owner == trust[5:]):
                    raise UntrustedServer(
                        "refusing to talk to the server at %s: its pipe belongs to %s, and this "
                        "client trusts %r; nothing was sent to it" % (path, owner, trust))
    except BaseException:
        f.close()
        raise
    return _PipeTransport(f)


class _windows:  # untested here (see the module's docstring)
    _sid = None

    @staticmethod
    def _api():
        import ctypes
        from ctypes import wintypes
        advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.GetCurrentProcess.restype = wintypes.HANDLE
        kernel32.LocalFree.argtypes = [ctypes.c_void_p]
        kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
        advapi32.OpenProcessToken.argtypes = [wintypes.HANDLE, wintypes.DWORD,
                                              ctypes.POINTER(wintypes.HANDLE)]
        advapi32.GetTokenInformation.argtypes = [wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p,
                                                 wintypes.DWORD, ctypes.POINTER(wintypes.DWORD)]
        advapi32.ConvertSidToStringSidW.argtypes = [ctypes.c_void_p,
                                                    ctypes.POINTER(wintypes.LPWSTR)]
        advapi32.GetSecurityInfo.argtypes = [wintypes.HANDLE, ctypes.c_int, wintypes.DWORD,
                                             ctypes.POINTER(ctypes.c_void_p),
                                             ctypes.POINTER(ctypes.c_void_p),
                                             ctypes.c_void_p, ctypes.c_void_p,
                                             ctypes.POINTER(ctypes.c_void_p)]
        advapi32.GetSecurityInfo.restype = wintypes.DWORD
        return ctypes, wintypes, advapi32, kernel32

    @staticmethod
    def _sid_string(psid):
        ctypes, wintypes, advapi32, kernel32 = _windows._api()
        text = wintypes.LPWSTR()
        if not advapi32.ConvertSidToStringSidW(psid, ctypes.byref(text)):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            return text.value
        finally:
            kernel32.LocalFree(ctypes.cast(text, ctypes.c_void_p))

    @staticmethod
    def user_sid():
        """This process's user SID (TokenUser), as S-1-5-..."""
        if _windows._sid is None:
            ctypes, wintypes, advapi32, kernel32 = _windows._api()
            token = wintypes.HANDLE()
            if not advapi32.OpenProcessToken(kernel32.GetCurrentProcess(), 0x0008,
                                             ctypes.byref(token)):       # TOKEN_QUERY
                raise ctypes.WinError(ctypes.get_last_error())
            try:
                size = wintypes.DWORD()
                advapi32.GetTokenInformation(token, 1, None, 0, ctypes.byref(size))  # TokenUser
                buf = ctypes.create_string_buffer(size.value)
                if not advapi32.GetTokenInformation(token, 1, buf, size, ctypes.byref(size)):
                    raise ctypes.WinError(ctypes.get_last_error())
                # TOKEN_USER starts with SID_AND_ATTRIBUTES, which starts with the PSID.
                psid = ctypes.cast(buf, ctypes.POINTER(ctypes.c_void_p))[0]
                _windows._sid = _windows._sid_string(psid)
            finally:
                kernel32.CloseHandle(token)
        return _windows._sid

    @staticmethod
    def pipe_owner(f):
        """The owner SID of the pipe open as `f` (GetSecurityInfo on the client's handle)."""
        import msvcrt
        ctypes, wintypes, advapi32, kernel32 = _windows._api()
        owner, sd = ctypes.c_void_p(), ctypes.c_void_p()
        err = advapi32.GetSecurityInfo(msvcrt.get_osfhandle(f.fileno()), 6, 1,  # kernel object,
                                       ctypes.byref(owner), None, None, None,  # OWNER_SECURITY
                                       ctypes.byref(sd))
        if err:
            raise ctypes.WinError(err)
        try:
            return _windows._sid_string(owner)
        finally:
            kernel32.LocalFree(sd)


# ---------------------------------------------------------------------------------------
# A server (Unix), for Python programs that pipette clients talk to


class Server:
    """A pipette server on a Unix socket (Linux): binds `name`, admits peers of its own
    user (access="user", the default) or everyone ("everyone"), answers the handshake.

        with Server("my-app") as server:
            conn = server.accept()
            conn.send(conn.recv())

    Endpoints follow section 8: a plain name's directory is created 0700 and checked; the
    socket is 0600 ("user") or 0666 ("everyone"); a lock file beside it, held with flock
    while the server lives, tells a live server from a dead one's leftovers.
    """

    def __init__(self, name, max_message_size=DEFAULT_MAX_MESSAGE_SIZE, access="user",
                 handshake_timeout=DEFAULT_HANDSHAKE_TIMEOUT):
        if WINDOWS:
            raise NotImplementedError("this reference server is for Unix sockets")
        if access not in ("user", "everyone"):
            raise ValueError("access must be 'user' or 'everyone'")
        if not MIN_MESSAGE_LIMIT <= max_message_size <= MAX_MESSAGE_LIMIT:
            raise ValueError("max_message_size must be from 4096 to 4294967295")
        import fcntl
        self.name = name
        self.path = endpoint_path(name)
        self.max_message_size = max_message_size
        self.access = access
        self.handshake_timeout = handshake_timeout
        if not name.startswith("/"):
            _private_dir(os.path.dirname(self.path))
        self._lock = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise OSError(errno.EADDRINUSE, "%r is served by a live server" % name)
        # A hashed file name: the lock file names the plain name, for listings (section 8).
        os.ftruncate(self._lock, 0)
        if os.path.basename(self.path).startswith("+"):
            os.write(self._lock, name.encode())
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.exists(self.path):
                _remove_if_stale(self.path)
            old = os.umask(0o177 if access == "user" else 0o111)
            try:
                self._sock.bind(self.path)
            finally:
                os.umask(old)
            self._sock.listen(128)
            self._ino = os.stat(self.path).st_ino
        except BaseException:
            self._sock.close()
            os.close(self._lock)
            raise

    def accept(self, timeout=None):
        """The next admitted client's Connection. Refused peers get their refusal (status 1
        or 4, as section 2 says) and are never returned."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._sock.settimeout(left)
            try:
                sock, _ = self._sock.accept()
            except socket.timeout:
                raise TimeoutError("accept timed out")
            conn = self._admit(sock)
            if conn is not None:
                return conn

    def _admit(self, sock):
        try:
            pid, uid, gid = _peer_credentials(sock)
            hello = bytearray()
            sock.settimeout(self.handshake_timeout)
            while len(hello) < HELLO_LEN:
                chunk = sock.recv(HELLO_LEN - len(hello))
                if not chunk:
                    sock.close()
                    return None
                hello += chunk
                if hello[:8] != HELLO_MAGIC[:len(hello)]:    # not a hello: say so at once
                    break
            # Nothing is sent before the hello (or bytes that cannot be one); then the access
            # policy is judged first (section 2, status 1), from the OS, not the hello.
            if self.access == "user" and uid != os.geteuid():
                judged = STATUS_ACCESS_DENIED
            elif len(hello) == HELLO_LEN:
                judged = decode_hello(bytes(hello))
            else:
                judged = STATUS_BAD_HELLO
            if not isinstance(judged, tuple):
                sock.sendall(encode_reply(judged))
                sock.close()
                return None
            version, peer_limit = judged
            sock.sendall(encode_reply(STATUS_ACCEPTED, self.max_message_size, version))
            return Connection(_SocketTransport(sock), self.max_message_size, peer_limit, False,
                              self.name)
        except (OSError, socket.timeout):
            sock.close()
            return None

    def close(self):
        """Stops listening and removes the endpoint (only the socket this server made)."""
        if self._lock is None:
            return
        try:
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        except OSError:
            pass
        try:
            self._sock.shutdown(socket.SHUT_RDWR)     # wakes a thread blocked in accept
        except OSError:
            pass
        self._sock.close()
        try:
            os.unlink(self.path + ".lock")
        except OSError:
            pass
        os.close(self._lock)
        self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _private_dir(d):
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    import stat
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() \
            or st.st_mode & 0o077:
        raise PermissionError("the endpoint directory %s is not private to this user" % d)


def _remove_if_stale(path):
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)        # a dead server's socket: nobody answers
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "%s is served by a live process" % path)


# ---------------------------------------------------------------------------------------
# A small command line


def _main(argv):
    import argparse
    import threading
    p = argparse.ArgumentParser(prog="pipette_client.py",
                                description="pipette's framed protocol in plain Python")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("call", help="send one message, print the reply")
    c.add_argument("name")
    c.add_argument("message")
    c.add_argument("--wait", type=float)
    c.add_argument("--timeout", type=float)
    s = sub.add_parser("serve", help="an echo server; stops when standard input ends")
    s.add_argument("name")
    s.add_argument("--max-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE)
    s.add_argument("--access", default="user", choices=["user", "everyone"])
    a = p.parse_args(argv)
    if a.cmd == "call":
        with connect(a.name, wait=a.wait) as conn:
            conn.send(a.message.encode())
            reply = conn.recv(timeout=a.timeout)
            sys.stdout.buffer.write((reply or b"") + b"\n")
        return 0
    server = Server(a.name, max_message_size=a.max_size, access=a.access)

    def echo(conn):
        with conn:
            try:
                while True:
                    msg = conn.recv()
                    if msg is None:
                        conn.close_write()
                        return
                    conn.send(msg)
            except (PipetteError, OSError) as e:
                print("connection ended: %s" % e, file=sys.stderr)

    def stop_on_stdin_end():
        sys.stdin.read()
        server.close()
    threading.Thread(target=stop_on_stdin_end, daemon=True).start()
    print("ready %s" % server.path, flush=True)
    while True:
        try:
            conn = server.accept()
        except OSError:
            return 0     # closed
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
