// Checks of clients/dotnet/PipetteClient.cs against real pipette servers (Rust, started by
// tests/clients.rs). Prints "ok CHECK" or "FAIL CHECK: why" for each; exits 1 on a failure.
//
//   mono ClientChecks.exe server BIG_PATH SMALL_PATH PLAIN_NAME PLAIN_PATH
//       BIG/SMALL: echo servers (limits 16 MiB and 4096, 1 s handshake timeout) that answer
//       "sleep MS" with "slept" after MS ms and "big N" with N bytes 'x'; PLAIN_NAME: the same
//       on a short plain name, whose socket the server put at PLAIN_PATH.
//   mono ClientChecks.exe other PATH
//       PATH: a server of another user, with the `user` access policy.

using System;
using System.IO;
using System.IO.Pipes;
using System.Linq;
using System.Text;
using Pipette;

static class ClientChecks
{
    static int failures;
    static readonly Encoding Ascii = Encoding.ASCII;

    static void Check(string name, Action body)
    {
        try
        {
            body();
            Console.WriteLine("ok " + name);
        }
        catch (Exception e)
        {
            failures++;
            Console.WriteLine("FAIL " + name + ": " + e.ToString().Replace('\n', ' '));
        }
    }

    static void Is(bool cond, string what)
    {
        if (!cond) throw new Exception("expected: " + what);
    }

    static void Eq(string got, string want)
    {
        if (got != want) throw new Exception("got \"" + got + "\", want \"" + want + "\"");
    }

    static T Throws<T>(Action body) where T : Exception
    {
        try
        {
            body();
        }
        catch (T e)
        {
            return e;
        }
        throw new Exception("expected " + typeof(T).Name);
    }

    static string Hex(byte[] b) { return BitConverter.ToString(b).Replace("-", "").ToLowerInvariant(); }

    static ClientOptions Opts(int timeoutMs = 10000)
    {
        return new ClientOptions { ConnectTimeoutMs = 10000, TimeoutMs = timeoutMs };
    }

    static string Text(byte[] b) { return b == null ? "<end>" : Ascii.GetString(b); }

    /// Raw bytes to a server; everything it sends until it closes.
    static byte[] Raw(string path, byte[] data)
    {
        using (var pipe = new NamedPipeClientStream(".", path, PipeDirection.InOut))
        {
            pipe.Connect(10000);
            pipe.Write(data, 0, data.Length);
            var got = new MemoryStream();
            var buf = new byte[4096];
            while (true)
            {
                var read = pipe.ReadAsync(buf, 0, buf.Length);
                Is(read.Wait(10000), "the server answers or closes within 10 s");
                if (read.Result == 0) break;
                got.Write(buf, 0, read.Result);
            }
            return got.ToArray();
        }
    }

    static int Main(string[] args)
    {
        if (args[0] == "server") Server(args[1], args[2], args[3], args[4]);
        else if (args[0] == "other") Other(args[1]);
        else throw new ArgumentException("mode: server or other");
        return failures == 0 ? 0 : 1;
    }

    static void Server(string big, string small, string plainName, string plainPath)
    {
        Check("wire-bytes", () =>
        {
            Eq(Hex(Wire.Hello(16 * 1024 * 1024)), "50495045545445" + "3f" + "0100" + "0000" + "00000001");
            Eq(Hex(Wire.EndHeader), "0000000001000000");
            var refusal = Ascii.GetBytes("PIPETTE!").Concat(new byte[] { 0, 0, 4, 0, 0, 0, 0, 0 }).ToArray();
            Is(Throws<RefusedException>(() => Wire.DecodeReply(refusal)).Status == Status.BadHello, "status 4");
            Throws<ProtocolException>(() => Wire.DecodeReply(Wire.Hello(4096)));   // an echo
        });
        Check("names", () =>
        {
            Eq(Names.Fnv1a64(new byte[0]).ToString("x16"), "cbf29ce484222325");
            Eq(Names.Fnv1a64(Ascii.GetBytes("a")).ToString("x16"), "af63dc4c8601ec8c");
            Eq(Names.Fnv1a64(Ascii.GetBytes("foobar")).ToString("x16"), "85944171f73967e8");
            string d = "/run/user/1000/pipette";
            Eq(Names.EndpointPath("my-app", d), d + "/my-app.sock");
            string at103 = "com.example.desktop-application.background-sync-service.control-channel.v21";
            Eq(Names.EndpointPath(at103, d), d + "/" + at103 + ".sock");
            Eq(Names.EndpointPath("com.example.desktop-application.background-sync-service.control-channel.v2.1", d),
               d + "/+647bec71b50a6cb1.sock");
            Eq(Names.EndpointPath(new string('x', 100), d), d + "/+052c9e7cec411035.sock");
            string d72 = "/tmp/" + new string('d', 72) + "/pipette";
            Eq(Names.EndpointPath("tool", d72), d72 + "/tool.sock");
            Throws<ArgumentException>(() => Names.EndpointPath(new string('x', 100), d72));
            Throws<ArgumentException>(() => Names.EndpointPath("a/b", d));
            Eq(Names.EndpointPath(big, null), big);
        });
        Check("echo", () =>
        {
            using (var c = PipetteClient.Connect(big, Opts()))
            {
                c.Send(Ascii.GetBytes("hi"));
                Is(c.ReplyPending, "the first message went before the reply");
                Eq(Text(c.Receive()), "hi");
                Is(c.PeerMaxMessageSize == 16 * 1024 * 1024, "the server's limit");
                c.Send(new byte[0]);
                Is(c.Receive().Length == 0, "an empty message");
                byte[] utf16 = Encoding.Unicode.GetBytes("n\u00e9 \u2713");
                c.Send(utf16);
                Eq(Encoding.Unicode.GetString(c.Receive()), "n\u00e9 \u2713");
                c.CloseWrite();
                Is(c.Receive() == null, "the server ended its side");
                Throws<PipetteException>(() => c.Send(Ascii.GetBytes("after the end")));
            }
        });
        Check("plain-name", () =>
        {
            Eq(Names.PipeName(plainName), plainPath);
            using (var c = PipetteClient.Connect(plainName, Opts()))
            {
                c.Send(Ascii.GetBytes("by name"));
                Eq(Text(c.Receive()), "by name");
            }
        });
        Check("zero-round-trip", () =>
        {
            using (var c = PipetteClient.Connect(big, Opts()))
            {
                var first = Enumerable.Range(0, 4096).Select(i => (byte)i).ToArray();
                c.Send(first);
                Is(c.ReplyPending, "4096 bytes go without the reply");
                var large = Enumerable.Range(0, 3 << 20).Select(i => (byte)(i * 7)).ToArray();
                c.Send(large);
                Is(!c.ReplyPending, "a larger message reads the reply first");
                Is(c.Receive().SequenceEqual(first), "the first echo");
                Is(c.Receive().SequenceEqual(large), "the large echo");
            }
        });
        Check("server-limit", () =>
        {
            using (var c = PipetteClient.Connect(small, Opts()))
            {
                c.Send(new byte[4096]);
                Is(c.Receive().Length == 4096, "4096 bytes echoed");
                Is(c.PeerMaxMessageSize == 4096, "the server's limit");
                var e = Throws<MessageTooLargeException>(() => c.Send(new byte[4097]));
                Is(!e.Receiving && e.Limit == 4096, "refused as a sender");
                c.Send(Ascii.GetBytes("still usable"));
                Eq(Text(c.Receive()), "still usable");
            }
        });
        Check("own-limit", () =>
        {
            var o = Opts();
            o.MaxMessageSize = 4096;
            using (var c = PipetteClient.Connect(big, o))
            {
                c.Send(Ascii.GetBytes("big 4096"));
                Is(c.Receive().Length == 4096, "4096 bytes accepted");
                // The Rust server will not send more than we announced: its send fails and
                // it ends the connection instead.
                c.Send(Ascii.GetBytes("big 4097"));
                Is(c.Receive() == null, "the end instead of 4097 bytes");
            }
            // A peer that ignores our limit: a C# server that speaks just enough protocol.
            string path = Path.Combine(Path.GetTempPath(),
                "pipette-checks-" + System.Diagnostics.Process.GetCurrentProcess().Id + ".sock");
            using (var server = new NamedPipeServerStream(path, PipeDirection.InOut, 1,
                       PipeTransmissionMode.Byte, PipeOptions.Asynchronous))
            {
                var accepted = server.WaitForConnectionAsync();
                using (var c = PipetteClient.Connect(path, o))
                {
                    Is(accepted.Wait(10000), "the client connected");
                    var hello = new byte[16];
                    for (int n = 0; n < 16; )
                    {
                        var r = server.ReadAsync(hello, n, 16 - n);
                        Is(r.Wait(10000) && r.Result > 0, "the hello arrives");
                        n += r.Result;
                    }
                    Eq(Hex(hello), Hex(Wire.Hello(4096)));
                    var reply = Ascii.GetBytes("PIPETTE!").Concat(new byte[] { 1, 0, 0, 0, 0, 0x10, 0, 0 });
                    var lie = reply.Concat(Wire.Header(4097)).Concat(new byte[100]).ToArray();
                    server.Write(lie, 0, lie.Length);
                    server.Flush();
                    var e = Throws<MessageTooLargeException>(() => c.Receive());
                    Is(e.Receiving && e.Length == 4097 && e.Limit == 4096, "refused as a receiver");
                    Throws<PipetteException>(() => c.Receive());
                }
            }
        });
        Check("version-0", () =>
        {
            var o = Opts();
            o.Version = 0;
            using (var c = PipetteClient.Connect(big, o))
                Is(Throws<RefusedException>(() => c.Receive()).Status == Status.UnsupportedVersion, "status 3");
        });
        Check("bad-hello", () =>
        {
            var refusal = "5049504554544521" + "0000" + "04" + "00" + "00000000";
            var low = Wire.Hello(4096);
            low[12] = 0xff; low[13] = 0x0f;   // max_len 4095
            Eq(Hex(Raw(big, low)), refusal);
            Eq(Hex(Raw(big, Ascii.GetBytes("GET /"))), refusal);   // refused at once
        });
        Check("handshake-timeout", () => Eq(Hex(Raw(big, Ascii.GetBytes("PIPE"))), ""));
        Check("timeout", () =>
        {
            var o = Opts(100);
            using (var c = PipetteClient.Connect(big, o))
            {
                c.Send(Ascii.GetBytes("sleep 600"));
                Throws<TimeoutException>(() => c.Receive());
                o.TimeoutMs = 10000;
                Eq(Text(c.Receive()), "slept");
                c.Send(Ascii.GetBytes("again"));
                Eq(Text(c.Receive()), "again");
            }
        });
        Check("end-header", () =>
        {
            using (var c = PipetteClient.Connect(big, Opts()))
            {
                c.Send(Ascii.GetBytes("before the end"));
                c.CloseWrite();   // the END header: the Rust server reads it as an orderly close
                Eq(Text(c.Receive()), "before the end");
                Is(c.Receive() == null, "the server ended its side after our END");
            }
        });
        Check("not-found", () =>
        {
            Throws<NotFoundException>(() => PipetteClient.Connect(big + ".missing"));
        });
    }

    static void Other(string path)
    {
        Check("untrusted", () =>
        {
            Throws<UntrustedServerException>(() => PipetteClient.Connect(path, Opts()));
        });
        Check("access-denied", () =>
        {
            var o = Opts();
            o.CurrentUserOnly = false;
            using (var c = PipetteClient.Connect(path, o))
            {
                // The refusal comes with the reply, or explains a send the server cut short.
                var e = Throws<RefusedException>(() => { c.Send(Ascii.GetBytes("hi")); c.Receive(); });
                Is(e.Status == Status.AccessDenied, "status 1");
            }
        });
    }
}
