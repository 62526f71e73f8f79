// The scenario pipette began as: a C# named-pipe server and client that exchange strings.
//
// Each side writes a string as its UTF-16LE bytes (.NET's UnicodeEncoding) in one write,
// with no length prefix, and reads with one read of up to BufferSize bytes: one write is one
// message on a message-mode pipe and, on a byte stream (every pipe on Unix), as long as it
// fits one read. A string longer than the buffer is refused by the writer ("too large
// message"). Reads and writes take a timeout. The server waits for clients with an
// asynchronous wait that an exit event cancels.
//
// C# 7 (what Mono 6.8's mcs takes): `mcs -langversion:7 -out:OriginalPipes.exe OriginalPipes.cs`
//
//   mono OriginalPipes.exe server NAME [--timeout MS] [--current-user-only]
//       Serves NAME until standard input ends or says "exit" (the exit event). Prints one
//       line per event: listening, connected, request TEXT, refused REASON, timeout,
//       client left, hanging up, broken REASON, stopped. Requests: "bye" (hang up without
//       answering), "sleep MS" (answer "slept" after MS ms), "big N" (answer N characters:
//       refused when too large, then "error: too large message ..." is sent instead),
//       anything else is answered "echo: " + the request.
//   mono OriginalPipes.exe client NAME [--timeout MS] [--current-user-only] MESSAGE...
//       Connects, sends each MESSAGE and prints "reply TEXT" (or "closed", "timeout",
//       "refused REASON"). "#N" sends N characters 'y'; "!TEXT" sends TEXT and exits at
//       once, without reading the answer (a client stopping mid-exchange).
//
// Text on standard output is ASCII: other characters are written as \uXXXX (UTF-16 units).

using System;
using System.IO;
using System.IO.Pipes;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace PipetteInterop
{
    /// <summary>One string per write, one read per string, with timeouts.</summary>
    public sealed class Messenger
    {
        public const int BufferSize = 4096;
        static readonly UnicodeEncoding Utf16 = new UnicodeEncoding();
        readonly PipeStream pipe;
        readonly int timeoutMs;
        Task pending;

        public Messenger(PipeStream pipe, int timeoutMs)
        {
            this.pipe = pipe;
            this.timeoutMs = timeoutMs;
        }

        /// <summary>Writes `text` as one message; refuses one larger than the buffer.</summary>
        public void Write(string text)
        {
            byte[] bytes = Utf16.GetBytes(text);
            if (bytes.Length > BufferSize)
                throw new InvalidOperationException(
                    "too large message: " + bytes.Length + " bytes, more than " + BufferSize);
            Wait(pipe.WriteAsync(bytes, 0, bytes.Length), "write");
            pipe.Flush();
        }

        /// <summary>Reads one message; null when the peer has closed.</summary>
        public string Read()
        {
            byte[] buffer = new byte[BufferSize];
            Task<int> read = pipe.ReadAsync(buffer, 0, buffer.Length);
            Wait(read, "read");
            int n = read.Result;
            return n == 0 ? null : Utf16.GetString(buffer, 0, n);
        }

        /// <summary>After the pipe is disposed: waits for an operation a timeout left
        /// pending to end, so that the process never exits with I/O in flight.</summary>
        public void Settle()
        {
            if (pending == null) return;
            try { pending.Wait(5000); } catch (AggregateException) { }
            pending = null;
        }

        void Wait(Task task, string what)
        {
            bool done;
            try
            {
                done = task.Wait(timeoutMs);
            }
            catch (AggregateException e)
            {
                throw new IOException(what + " failed: " + e.InnerException.Message, e.InnerException);
            }
            if (!done)
            {
                // The operation stays pending until the pipe is disposed (see Settle).
                pending = task;
                throw new TimeoutException(what + " timed out after " + timeoutMs + " ms");
            }
        }
    }

    public static class Program
    {
        static void Say(string line)
        {
            Console.Out.WriteLine(line);
            Console.Out.Flush();
        }

        /// <summary>ASCII for standard output: other UTF-16 units as \uXXXX.</summary>
        static string Escape(string s)
        {
            var b = new StringBuilder();
            foreach (char c in s)
            {
                if (c >= 0x20 && c < 0x7f && c != '\\')
                    b.Append(c);
                else
                    b.Append("\\u").Append(((int)c).ToString("X4"));
            }
            return b.ToString();
        }

        public static int Main(string[] args)
        {
            if (args.Length < 2)
            {
                Console.Error.WriteLine("usage: server NAME [--timeout MS] [--current-user-only] | client NAME [options] MESSAGE...");
                return 2;
            }
            int timeoutMs = 5000;
            var options = PipeOptions.Asynchronous;
            var rest = new System.Collections.Generic.List<string>();
            for (int i = 2; i < args.Length; i++)
            {
                if (args[i] == "--timeout") timeoutMs = int.Parse(args[++i]);
                else if (args[i] == "--current-user-only") options |= PipeOptions.CurrentUserOnly;
                else rest.Add(args[i]);
            }
            try
            {
                if (args[0] == "server") return Serve(args[1], timeoutMs, options);
                if (args[0] == "client") return Client(args[1], timeoutMs, options, rest);
            }
            catch (Exception e)
            {
                Say("failed " + e.GetType().Name + ": " + Escape(e.Message));
                return 1;
            }
            Console.Error.WriteLine("unknown mode " + args[0]);
            return 2;
        }

        static NamedPipeServerStream Listen(string name, PipeOptions options)
        {
            return new NamedPipeServerStream(name, PipeDirection.InOut,
                NamedPipeServerStream.MaxAllowedServerInstances, PipeTransmissionMode.Byte, options);
        }

        static int Serve(string name, int timeoutMs, PipeOptions options)
        {
            // The exit event: standard input ends, or says "exit".
            var exit = new ManualResetEvent(false);
            var stdin = new Thread(() =>
            {
                string line;
                while ((line = Console.In.ReadLine()) != null && line != "exit") { }
                exit.Set();
            });
            stdin.IsBackground = true;
            stdin.Start();
            var exitTask = Task.Factory.StartNew(() => exit.WaitOne(), TaskCreationOptions.LongRunning);

            // The next instance is created before the current one is disposed, so that the
            // endpoint never disappears between clients.
            NamedPipeServerStream next = Listen(name, options);
            Say("listening");
            while (true)
            {
                NamedPipeServerStream pipe = next;
                var cancel = new CancellationTokenSource();
                Task connected = pipe.WaitForConnectionAsync(cancel.Token);
                if (Task.WaitAny(connected, exitTask) == 1)
                {
                    // Cancel the wait; Mono (like .NET on Unix) ignores the token once the
                    // wait has begun, so disposing the pipe is what ends it.
                    cancel.Cancel();
                    pipe.Dispose();
                    try { connected.Wait(1000); } catch (AggregateException) { }
                    Say("stopped");
                    return 0;
                }
                next = Listen(name, options);
                try
                {
                    connected.Wait();
                }
                catch (AggregateException e)
                {
                    // A client refused by CurrentUserOnly ends up here.
                    Say("refused " + Escape(e.InnerException.Message));
                    pipe.Dispose();
                    continue;
                }
                Say("connected");
                var m = new Messenger(pipe, timeoutMs);
                Converse(m);
                pipe.Dispose();
                m.Settle();
            }
        }

        static void Converse(Messenger m)
        {
            while (true)
            {
                string request;
                try
                {
                    request = m.Read();
                }
                catch (TimeoutException)
                {
                    Say("timeout");
                    return;
                }
                catch (IOException e)
                {
                    Say("broken " + Escape(e.Message));
                    return;
                }
                if (request == null)
                {
                    Say("client left");
                    return;
                }
                Say("request " + Escape(request));
                string reply;
                if (request == "bye")
                {
                    Say("hanging up");
                    return;
                }
                else if (request.StartsWith("sleep "))
                {
                    Thread.Sleep(int.Parse(request.Substring(6)));
                    reply = "slept";
                }
                else if (request.StartsWith("big "))
                    reply = new string('x', int.Parse(request.Substring(4)));
                else
                    reply = "echo: " + request;
                try
                {
                    try
                    {
                        m.Write(reply);
                    }
                    catch (InvalidOperationException e)
                    {
                        Say("refused " + Escape(e.Message));
                        m.Write("error: " + e.Message);
                    }
                }
                catch (TimeoutException)
                {
                    Say("timeout");
                    return;
                }
                catch (IOException e)
                {
                    Say("broken " + Escape(e.Message));
                    return;
                }
            }
        }

        static int Client(string name, int timeoutMs, PipeOptions options, System.Collections.Generic.List<string> messages)
        {
            Messenger m;
            using (var pipe = new NamedPipeClientStream(".", name, PipeDirection.InOut, options))
            {
                pipe.Connect(timeoutMs);
                Say("connected");
                m = new Messenger(pipe, timeoutMs);
                foreach (string arg in messages)
                {
                    string text = arg;
                    bool quit = false;
                    if (arg.StartsWith("#"))
                        text = new string('y', int.Parse(arg.Substring(1)));
                    else if (arg.StartsWith("!"))
                    {
                        text = arg.Substring(1);
                        quit = true;
                    }
                    try
                    {
                        m.Write(text);
                    }
                    catch (InvalidOperationException e)
                    {
                        Say("refused " + Escape(e.Message));
                        continue;
                    }
                    if (quit)
                    {
                        Say("quitting");
                        Environment.Exit(0);
                    }
                    try
                    {
                        string reply = m.Read();
                        if (reply == null)
                        {
                            Say("closed");
                            break;
                        }
                        Say("reply " + Escape(reply));
                    }
                    catch (TimeoutException)
                    {
                        Say("timeout");
                        break;
                    }
                }
            }
            m.Settle();
            Say("done");
            return 0;
        }
    }
}
