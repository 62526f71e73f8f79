// A client of pipette's framed protocol, version 1, in one C# file (C# 7, no dependencies).
//
// Copy this file into your project. It was written from pipette's docs/PROTOCOL.md and is
// tested on every CI run against the pipette server (Rust), with Mono on Linux:
//   mcs -langversion:7 -out:app.exe PipetteClient.cs YourCode.cs && mono app.exe
// It uses only NamedPipeClientStream, so it also builds for .NET (Core) and .NET Framework.
//
//   using (var conn = Pipette.PipetteClient.Connect("my-app"))   // `pipette serve my-app`
//   {
//       conn.Send(Encoding.UTF8.GetBytes("hello"));   // one message: one Receive over there
//       byte[] reply = conn.Receive();                // the echo; null once the server ended
//       conn.CloseWrite();                            // nothing more from us (END header)
//   }
//
// What it does, by section of PROTOCOL.md:
// - §0: the server's user is checked before the hello with .NET's PipeOptions.CurrentUserOnly
//   (the default here): the server must run as this user. That is pipette's `user` trust
//   without its "or root/the system"; set CurrentUserOnly = false to trust any server.
// - §1-2: the hello is sent at once; the reply is read lazily (by the first Receive, a Send of
//   more than 4096 bytes, or CloseWrite), so a first request costs no round trip. A refusal
//   throws RefusedException with its Status.
// - §3: 8-byte headers; a message larger than the server accepts is refused before anything
//   is written (the connection stays usable); a header larger than we accept, or with unknown
//   flags, closes the connection without reading the payload.
// - §4: CloseWrite sends the END header (a pipe stream has no half-close, on any OS); Receive
//   returns null at the peer's end, whether it said so with END or a shutdown.
// - Timeouts: TimeoutMs bounds every read and write. A read that times out stays pending and
//   its bytes are used by the next Receive; a write that times out ends our direction.
// - §8: Names.PipeName maps a pipette name to what NamedPipeClientStream takes: on Unix the
//   socket path (long plain names get a hashed short file name), on Windows
//   pipette-<user SID>-<name>.
//
// Tested here: Mono 6.8 on Linux. Not tested here: .NET (Core), Windows, macOS.

using System;
using System.Collections.Generic;
using System.IO;
using System.IO.Pipes;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Tasks;

namespace Pipette
{
    /// <summary>Status codes of the server's reply (§2).</summary>
    public enum Status : byte
    {
        Accepted = 0,
        AccessDenied = 1,
        ShuttingDown = 2,
        UnsupportedVersion = 3,
        BadHello = 4,
    }

    /// <summary>Anything that goes wrong with a pipette connection.</summary>
    public class PipetteException : IOException
    {
        public PipetteException(string message, Exception inner = null) : base(message, inner) { }
    }

    /// <summary>No server listens on the name (within the connect timeout).</summary>
    public sealed class NotFoundException : PipetteException
    {
        public NotFoundException(string message, Exception inner) : base(message, inner) { }
    }

    /// <summary>The server runs as a user this client does not trust; it got nothing.</summary>
    public sealed class UntrustedServerException : PipetteException
    {
        public UntrustedServerException(string message, Exception inner) : base(message, inner) { }
    }

    /// <summary>The server refused the connection in its reply.</summary>
    public sealed class RefusedException : PipetteException
    {
        public readonly Status Status;
        public RefusedException(Status status) : base("pipette server refused the connection: " + status)
        {
            Status = status;
        }
    }

    /// <summary>The peer broke the protocol or does not speak it; the connection is closed.</summary>
    public sealed class ProtocolException : PipetteException
    {
        public ProtocolException(string message) : base(message) { }
    }

    /// <summary>A message larger than its receiver accepts. Sending: nothing was written and
    /// the connection is usable. Receiving: the connection was closed unread.</summary>
    public sealed class MessageTooLargeException : PipetteException
    {
        public readonly long Length, Limit;
        public readonly bool Receiving;
        public MessageTooLargeException(long length, long limit, bool receiving)
            : base("a message of " + length + " bytes is larger than " +
                   (receiving ? "we accept" : "the server accepts") + " (" + limit + " bytes)")
        {
            Length = length;
            Limit = limit;
            Receiving = receiving;
        }
    }

    /// <summary>The bytes of PROTOCOL.md §1-3.</summary>
    public static class Wire
    {
        public const ushort Version = 1;
        public const int MinMessageLimit = 4096;
        public const uint DefaultMaxMessageSize = 16 * 1024 * 1024;
        public const int HelloLength = 16, ReplyLength = 16, HeaderLength = 8;
        public const uint FlagEnd = 1;
        public static readonly byte[] HelloMagic = Encoding.ASCII.GetBytes("PIPETTE?");
        public static readonly byte[] ReplyMagic = Encoding.ASCII.GetBytes("PIPETTE!");

        public static byte[] Hello(uint maxLen, ushort version = Version)
        {
            var b = new byte[HelloLength];
            Array.Copy(HelloMagic, b, 8);
            PutU16(b, 8, version);
            PutU16(b, 10, 0);
            PutU32(b, 12, maxLen);
            return b;
        }

        public static byte[] Header(uint length, uint flags = 0)
        {
            var b = new byte[HeaderLength];
            PutU32(b, 0, length);
            PutU32(b, 4, flags);
            return b;
        }

        /// <summary>The END header: len 0, flags 1 (§4).</summary>
        public static byte[] EndHeader { get { return Header(0, FlagEnd); } }

        /// <summary>The server's limit from an accepting reply; throws RefusedException or
        /// ProtocolException otherwise.</summary>
        public static uint DecodeReply(byte[] r, ushort offered = Version)
        {
            if (!Same(r, 0, ReplyMagic))
                throw new ProtocolException(Same(r, 0, HelloMagic)
                    ? "the peer sent our hello back: an echo (a raw server?), not a pipette server"
                    : "not a pipette server (its first bytes are not PIPETTE!)");
            ushort version = U16(r, 8);
            byte status = r[10];
            uint maxLen = U32(r, 12);
            if (status > (byte)Status.BadHello)
                throw new ProtocolException("unknown reply status " + status);
            if (status != 0)
                throw new RefusedException((Status)status);
            if (version == 0 || version > offered)
                throw new ProtocolException("the server accepted with version " + version);
            if (maxLen < MinMessageLimit)
                throw new ProtocolException("the server's limit " + maxLen + " is below 4096");
            return maxLen;
        }

        internal static bool Same(byte[] b, int at, byte[] magic)
        {
            for (int i = 0; i < magic.Length; i++)
                if (b[at + i] != magic[i]) return false;
            return true;
        }

        internal static ushort U16(byte[] b, int at) { return (ushort)(b[at] | b[at + 1] << 8); }

        internal static uint U32(byte[] b, int at)
        {
            return (uint)(b[at] | b[at + 1] << 8 | b[at + 2] << 16 | b[at + 3] << 24);
        }

        static void PutU16(byte[] b, int at, ushort v) { b[at] = (byte)v; b[at + 1] = (byte)(v >> 8); }

        static void PutU32(byte[] b, int at, uint v)
        {
            for (int i = 0; i < 4; i++) b[at + i] = (byte)(v >> (8 * i));
        }
    }

    /// <summary>Where pipette puts a name (PROTOCOL.md §8).</summary>
    public static class Names
    {
        /// <summary>The longest socket path every Unix takes (sun_path of 104, less the NUL).</summary>
        public const int PortablePathMax = 103;

        public static bool IsWindows
        {
            get { return Environment.OSVersion.Platform == PlatformID.Win32NT; }
        }

        /// <summary>What NamedPipeClientStream takes as its pipe name for the pipette name
        /// `name`: on Unix the socket path (.NET uses an absolute path as it is), on Windows
        /// the pipe name without `\\.\pipe\`.</summary>
        public static string PipeName(string name)
        {
            if (IsWindows)
            {
                const string prefix = @"\\.\pipe\";
                if (name.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
                    return name.Substring(prefix.Length);
                CheckPlain(name);
                return "pipette-" + System.Security.Principal.WindowsIdentity.GetCurrent().User.Value
                    + "-" + name;
            }
            return EndpointPath(name, null);
        }

        /// <summary>The Unix socket path of `name`: an absolute path as it is; a plain name
        /// in `directory` (by default the per-user one): D/NAME.sock if at most 103 bytes,
        /// else D/+HASH.sock (FNV-1a 64 of the name, 16 hex digits), else refused.</summary>
        public static string EndpointPath(string name, string directory)
        {
            if (name.StartsWith("/")) return name;
            CheckPlain(name);
            string d = directory ?? Directory();
            string path = d + "/" + name + ".sock";
            if (Encoding.UTF8.GetByteCount(path) <= PortablePathMax) return path;
            path = d + "/+" + Fnv1a64(Encoding.ASCII.GetBytes(name)).ToString("x16") + ".sock";
            if (Encoding.UTF8.GetByteCount(path) <= PortablePathMax) return path;
            throw new ArgumentException("the endpoint directory " + d + " is too long for the name "
                + name + " (at most 80 bytes): set XDG_RUNTIME_DIR shorter or give an absolute path");
        }

        /// <summary>The per-user directory of plain names on Unix.</summary>
        public static string Directory()
        {
            string xdg = Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR");
            if (!string.IsNullOrEmpty(xdg) && xdg.StartsWith("/")) return xdg + "/pipette";
            string home = Environment.GetEnvironmentVariable("HOME");
            if (File.Exists("/System/Library/CoreServices/SystemVersion.plist")    // macOS
                && !string.IsNullOrEmpty(home) && home.StartsWith("/"))
                return home + "/Library/Caches/pipette";
            return "/tmp/pipette-" + geteuid();
        }

        public static ulong Fnv1a64(byte[] data)
        {
            ulong h = 0xcbf29ce484222325;
            foreach (byte b in data)
                h = unchecked((h ^ b) * 0x100000001b3);
            return h;
        }

        static void CheckPlain(string name)
        {
            string problem = null;
            if (name.Length < 1 || name.Length > 100) problem = "a plain name has 1 to 100 characters";
            else if (name == "." || name.Contains("..")) problem = "\".\" and \"..\" are not allowed";
            else
            {
                foreach (char c in name)
                    if (!(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
                          || c == '.' || c == '_' || c == '-'))
                        problem = "a plain name uses only A-Z a-z 0-9 . _ - (or give an absolute path)";
                string stem = name.Split('.')[0].ToUpperInvariant();
                if (stem == "CON" || stem == "PRN" || stem == "AUX" || stem == "NUL"
                    || stem == "CONIN$" || stem == "CONOUT$"
                    || (stem.Length == 4 && (stem.StartsWith("COM") || stem.StartsWith("LPT"))
                        && char.IsDigit(stem[3])))
                    problem = stem + " is a reserved Windows device name";
            }
            if (problem != null)
                throw new ArgumentException("invalid endpoint name \"" + name + "\": " + problem);
        }

        [DllImport("libc")]
        static extern uint geteuid();
    }

    /// <summary>How to connect.</summary>
    public sealed class ClientOptions
    {
        /// <summary>The largest message we accept (4096 to 4294967295).</summary>
        public uint MaxMessageSize = Wire.DefaultMaxMessageSize;
        /// <summary>Talk only to a server of this user (PipeOptions.CurrentUserOnly).</summary>
        public bool CurrentUserOnly = true;
        /// <summary>How long to wait for the server to appear, in ms (0: try once).</summary>
        public int ConnectTimeoutMs = 0;
        /// <summary>The limit of every read and write, in ms (-1: none).</summary>
        public int TimeoutMs = -1;
        /// <summary>The version offered (tests only: 1 is all there is).</summary>
        public ushort Version = Wire.Version;
    }

    /// <summary>One framed connection to a pipette server: whole messages both ways.</summary>
    public sealed class PipetteClient : IDisposable
    {
        readonly NamedPipeClientStream pipe;
        readonly ClientOptions options;
        readonly byte[] chunk = new byte[64 * 1024];
        readonly List<byte> buffer = new List<byte>();
        Task<int> pendingRead;
        Task pendingWrite;
        bool replyPending = true, ended, disposed;
        Exception recvBroken, sendBroken;

        /// <summary>The largest message the server accepts; 4096 until its reply is read.</summary>
        public uint PeerMaxMessageSize { get; private set; }

        /// <summary>Whether the server's reply is still unread (zero round trip).</summary>
        public bool ReplyPending { get { return replyPending; } }

        PipetteClient(NamedPipeClientStream pipe, ClientOptions options)
        {
            this.pipe = pipe;
            this.options = options;
            PeerMaxMessageSize = Wire.MinMessageLimit;
        }

        /// <summary>Connects to the server of `name` (a plain name or an explicit endpoint) and
        /// sends the hello; returns without waiting for the reply.</summary>
        public static PipetteClient Connect(string name, ClientOptions options = null)
        {
            options = options ?? new ClientOptions();
            if (options.MaxMessageSize < Wire.MinMessageLimit)
                throw new ArgumentException("MaxMessageSize must be at least 4096");
            var pipeOptions = PipeOptions.Asynchronous;
            if (options.CurrentUserOnly) pipeOptions |= PipeOptions.CurrentUserOnly;
            var pipe = new NamedPipeClientStream(".", Names.PipeName(name), PipeDirection.InOut, pipeOptions);
            try
            {
                pipe.Connect(options.ConnectTimeoutMs);
            }
            catch (TimeoutException e)
            {
                pipe.Dispose();
                throw new NotFoundException("no pipette server is listening on " + name, e);
            }
            catch (UnauthorizedAccessException e) when (options.CurrentUserOnly)
            {
                pipe.Dispose();
                throw new UntrustedServerException("the server of " + name +
                    " does not run as this user; nothing was sent to it", e);
            }
            catch
            {
                pipe.Dispose();
                throw;
            }
            var conn = new PipetteClient(pipe, options);
            try
            {
                conn.Write(Wire.Hello(options.MaxMessageSize, options.Version));
            }
            catch
            {
                conn.Dispose();
                throw;
            }
            return conn;
        }

        /// <summary>Sends `payload` as one message.</summary>
        public void Send(byte[] payload)
        {
            if (sendBroken != null) throw new PipetteException("cannot send: " + sendBroken.Message, sendBroken);
            if (payload.Length > Wire.MinMessageLimit) Settle();    // the real limit is in the reply
            if ((uint)payload.Length > PeerMaxMessageSize)
                throw new MessageTooLargeException(payload.Length, PeerMaxMessageSize, false);
            var frame = new byte[Wire.HeaderLength + payload.Length];
            Array.Copy(Wire.Header((uint)payload.Length), frame, Wire.HeaderLength);
            Array.Copy(payload, 0, frame, Wire.HeaderLength, payload.Length);
            try
            {
                Write(frame);
            }
            catch (IOException) when (replyPending && !(sendBroken is TimeoutException))
            {
                Settle();    // a refusal explains a broken pipe better (§3)
                throw;
            }
        }

        /// <summary>One whole message, or null once the server has ended its direction.</summary>
        public byte[] Receive()
        {
            if (recvBroken != null) throw new PipetteException("cannot receive: " + recvBroken.Message, recvBroken);
            Settle();
            while (true)
            {
                if (ended) return null;
                byte[] message = Take();
                if (message != null) return message;
                int n = Read();
                if (n == 0)
                {
                    if (buffer.Count == 0) { ended = true; return null; }
                    Fail(new ProtocolException("the stream ended inside a message"));
                }
            }
        }

        /// <summary>Ends our direction (the END header, §4); receiving goes on. Reads the
        /// reply first, so that a refusal is reported here.</summary>
        public void CloseWrite()
        {
            Settle();
            if (sendBroken != null) return;
            Write(Wire.EndHeader);
            sendBroken = new PipetteException("our direction is closed");
        }

        void Settle()
        {
            if (!replyPending) return;
            while (buffer.Count < Wire.ReplyLength)
            {
                if (Read() == 0)
                {
                    replyPending = false;
                    recvBroken = sendBroken = new ProtocolException(
                        "the server closed the connection before its reply: refused without a reason");
                    throw recvBroken;
                }
            }
            byte[] reply = buffer.GetRange(0, Wire.ReplyLength).ToArray();
            buffer.RemoveRange(0, Wire.ReplyLength);
            replyPending = false;
            try
            {
                PeerMaxMessageSize = Wire.DecodeReply(reply, options.Version);
            }
            catch (PipetteException e)
            {
                recvBroken = sendBroken = e;
                Close();
                throw;
            }
        }

        byte[] Take()
        {
            if (buffer.Count < Wire.HeaderLength) return null;
            byte[] h = buffer.GetRange(0, Wire.HeaderLength).ToArray();
            uint length = Wire.U32(h, 0), flags = Wire.U32(h, 4);
            if (flags == Wire.FlagEnd && length == 0)
            {
                buffer.RemoveRange(0, Wire.HeaderLength);
                ended = true;
                return null;
            }
            if (flags != 0) Fail(new ProtocolException("a header with flags " + flags));
            if (length > options.MaxMessageSize)
                Fail(new MessageTooLargeException(length, options.MaxMessageSize, true));
            if (buffer.Count < Wire.HeaderLength + (long)length) return null;
            byte[] message = buffer.GetRange(Wire.HeaderLength, (int)length).ToArray();
            buffer.RemoveRange(0, Wire.HeaderLength + (int)length);
            return message;
        }

        void Fail(PipetteException e)
        {
            recvBroken = sendBroken = e;
            Close();
            throw e;
        }

        /// <summary>Reads what has arrived into the buffer; 0 at the end of the stream. A read
        /// that times out stays pending for the next call.</summary>
        int Read()
        {
            if (pendingRead == null) pendingRead = pipe.ReadAsync(chunk, 0, chunk.Length);
            int n;
            try
            {
                if (!pendingRead.Wait(options.TimeoutMs))
                    throw new TimeoutException("no data within " + options.TimeoutMs + " ms");
                n = pendingRead.Result;
            }
            catch (AggregateException e)
            {
                pendingRead = null;
                if (e.InnerException is IOException) return 0;   // reset: the peer's end all the same
                throw e.InnerException;
            }
            pendingRead = null;
            for (int i = 0; i < n; i++) buffer.Add(chunk[i]);
            return n;
        }

        void Write(byte[] data)
        {
            Task write = pipe.WriteAsync(data, 0, data.Length);
            try
            {
                if (!write.Wait(options.TimeoutMs))
                {
                    // Part of the frame may be out: the framing cannot go on.
                    pendingWrite = write;
                    sendBroken = new TimeoutException("a write timed out");
                    throw new TimeoutException("write timed out after " + options.TimeoutMs
                        + " ms; the connection can no longer send");
                }
            }
            catch (AggregateException e)
            {
                throw e.InnerException;
            }
        }

        void Close()
        {
            if (disposed) return;
            disposed = true;
            pipe.Dispose();
            // Never leave I/O in flight on a disposed pipe (Mono may crash at exit otherwise).
            foreach (Task t in new Task[] { pendingRead, pendingWrite })
            {
                if (t == null) continue;
                try { t.Wait(5000); } catch (AggregateException) { }
            }
            pendingRead = null;
            pendingWrite = null;
        }

        /// <summary>Closes the connection at once (both directions).</summary>
        public void Dispose() { Close(); }
    }
}
