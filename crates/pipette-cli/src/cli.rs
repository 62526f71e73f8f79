//! The command line as clap sees it: commands, options, value parsers and help texts.
//!
//! Everything a person reads in `--help`, in the man page and in the shell completions comes
//! from here, so the three never disagree.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use pipette::{Access, Encoding, Trust};

/// The exit status table, shown at the end of `pipette --help` (and in the README).
macro_rules! exit_status {
    () => {
        "\
Exit status:
  0  success (also when the reader of the output goes away: `pipette listen x | head -1`)
  1  any other error: the peer closed early, a protocol error, a name in use, I/O
  2  usage: a bad option or value, an invalid name
  3  not found: no server is listening on the name (and no --wait)
  4  refused: the server turned this client away, this client refused the server
     (--trust), or permission denied
  5  timed out: --wait expired before a server appeared, or --timeout expired"
    };
}

const TOP_HELP: &str = concat!(
    "\
Examples:
  pipette serve my-app &                    echo server until SIGINT/SIGTERM
  pipette call my-app hello                 one request, prints the reply
  pipette listen my-log &                   prints every message it receives
  pipette send my-log one two @notes.txt    three messages, no reply expected
  pipette connect my-app                    stdin to the server, the server to stdout
  pipette serve my-app --exec ./answer.sh   a child process per connection
  pipette ls                                this user's endpoints
  pipette call --dotnet svc hi --encoding utf-16le
                                            a .NET NamedPipeServerStream(\"svc\")

",
    exit_status!()
);

const SERVE_HELP: &str = "\
Examples:
  pipette serve my-app                          echo every message back
  pipette serve my-app --exec 'sed -u s/^/>/'   a child per connection
  pipette serve my-app --exec 'while read -r l; do echo \"got $l\"; done'
  pipette serve --raw my-raw                    a byte echo, for socat or nc -U
  pipette serve --dotnet my-svc                 a byte echo where .NET's pipe my-svc is
  pipette serve --access group /tmp/shared.sock

With --exec, each connection gets its own child (`sh -c CMD`; `cmd /C CMD` on Windows), with
PIPETTE_NAME and PIPETTE_PEER_PID in its environment. Each message received is written to
its standard input followed by a newline (a NUL with --split nul), and each line (NUL-ended
chunk) of its standard output goes back as one message. When the client closes, the child's
standard input closes; when the child's output ends, the connection closes. Programs that
buffer their output when it is not a terminal need their unbuffered flag (sed -u, python -u).
With --raw, the child's standard input and output are the connection's bytes.";

const LISTEN_HELP: &str = "\
Examples:
  pipette listen my-log                     one line per message (escaped, see --output)
  pipette listen my-log -o json             JSON lines: {\"text\":...} or {\"base64\":...}
  pipette listen my-log -o raw > all.bin    the messages' bytes, back to back
  pipette listen --raw my-raw > out.bin     a raw byte stream, exactly as received
  pipette listen my-log | head -1           ends when head does (exit status 0)";

const SEND_HELP: &str = "\
Examples:
  pipette send my-log hello 'two words'     two messages
  pipette send my-log @photo.jpg            a file's bytes as one message
  pipette send my-log --file photo.jpg      the same
  tar c dir | pipette send my-log -         all of standard input as one message
  tail -f app.log | pipette send my-log - --split lines    one message per line
  pipette send my-log @@literal             the text \"@literal\"

Messages are sent in the order given. `send` reads nothing the server answers (an echo is
discarded), closes its side when done and waits for the server to close the connection
(pipette servers do as soon as they have read everything), at most --timeout.";

const CALL_HELP: &str = "\
Examples:
  pipette call my-app 'what time is it'     prints the reply as one line
  pipette call my-app @request.bin -o raw > reply.bin
  pipette call --wait 5 my-app hi           fine to start before the server
  pipette call --timeout 2 my-app hi        exit status 5 if no reply within 2 s
  pipette call --raw my-raw hi              raw: prints every byte until the peer closes
  pipette call --json my-svc '{\"op\":\"add\",\"args\":[1,2]}'
                                            a JSON request, its JSON reply on one line
  pipette call --dotnet svc hi --encoding utf-16le
                                            a C# NamedPipeServerStream(\"svc\") that reads
                                            and writes strings with Encoding.Unicode

`call` sends its message, closes its sending side and waits for one reply. A server that
closes without replying (such as `pipette listen`) ends it with an error; a server that keeps
the connection open without replying keeps it waiting, unless --timeout is given.";

const CONNECT_HELP: &str = "\
Examples:
  pipette connect my-app                    type lines: each is a message; replies print
  printf 'a\\0b\\0' | pipette connect my-app --split nul -o nul
  pipette connect --raw my-raw              a byte pump, like nc -U or socat

On end of standard input `connect` closes its sending side and goes on printing until the
server closes the connection; when the server closes first, it ends at once. On Windows a
raw connection has no half-close: end of input ends the connection.";

const LS_HELP: &str = "\
Examples:
  pipette ls                                NAME<TAB>live|stale<TAB>PATH per line
  pipette ls --json                         [{\"name\":...,\"state\":...,\"pid\":...,\"path\":...}]";

const CLEAN_HELP: &str = "\
Examples:
  pipette clean                             removes every stale endpoint of this user
  pipette clean my-app /tmp/x.sock          only these (a live one is left alone)";

/// Local IPC by name: Unix domain sockets and Windows named pipes without ports. Socat with
/// names.
#[derive(Parser, Debug)]
#[command(name = "pipette", version, after_help = TOP_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a name: echo every message back, or run a child per connection (--exec), until
    /// SIGINT or SIGTERM.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Serve a name and print every message received from any client; reply nothing.
    #[command(after_help = LISTEN_HELP)]
    Listen(ListenArgs),
    /// Send messages (arguments, files, standard input) to a server; print nothing.
    #[command(after_help = SEND_HELP)]
    Send(SendArgs),
    /// Send one message and print the one reply.
    #[command(after_help = CALL_HELP)]
    Call(CallArgs),
    /// Standard input to the server, the server to standard output (like nc -U).
    #[command(after_help = CONNECT_HELP)]
    Connect(ConnectArgs),
    /// List this user's endpoints: name, live or stale, path.
    #[command(after_help = LS_HELP)]
    Ls(LsArgs),
    /// Remove what dead servers left behind (stale endpoints).
    #[command(after_help = CLEAN_HELP)]
    Clean(CleanArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    #[command(
        after_help = "Examples:\n  pipette completions bash > /etc/bash_completion.d/pipette\n  pipette completions zsh > \"${fpath[1]}/_pipette\""
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of pipette or of one of its commands.
    #[command(
        after_help = "Examples:\n  pipette man | man -l -\n  pipette man serve > pipette-serve.1"
    )]
    Man {
        /// A command, for its own page (pipette-serve(1)).
        command: Option<String>,
    },
    /// Run a server and clients as separate processes, exchange messages, report timings.
    Demo(crate::demo::DemoArgs),
    /// One demo client (spawned by `pipette demo`).
    #[command(hide = true)]
    DemoClient(crate::demo::ClientArgs),
}

/// Options of a server command (serve, listen).
#[derive(Args, Debug, Clone)]
pub struct ServerOpts {
    /// Raw byte stream (no handshake, no framing), for foreign peers such as socat or nc -U.
    #[arg(long)]
    pub raw: bool,
    /// NAME is a .NET pipe name: serve where `new NamedPipeClientStream(".", NAME)` connects
    /// (Windows: \\.\pipe\NAME; Unix: $TMPDIR/CoreFxPipe_NAME, /tmp without TMPDIR).
    /// Implies --raw: .NET peers write their own bytes.
    #[arg(long)]
    pub dotnet: bool,
    /// Who may connect. `group` and `everyone` need an absolute path on Unix (a plain name
    /// lives in a private directory).
    #[arg(long, value_enum, value_name = "WHO", default_value_t = AccessArg::User)]
    pub access: AccessArg,
    /// Largest message accepted, in bytes (K, M, G: powers of 1024). At least 4096.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    pub max_size: usize,
}

/// Options of a client command (send, call, connect).
#[derive(Args, Debug, Clone)]
pub struct ClientOpts {
    /// Raw byte stream (no handshake, no framing), for servers that are not pipette.
    #[arg(long)]
    pub raw: bool,
    /// NAME is a .NET pipe name: connect where `new NamedPipeServerStream(NAME)` listens
    /// (Windows: \\.\pipe\NAME; Unix: $TMPDIR/CoreFxPipe_NAME, /tmp without TMPDIR).
    /// Implies --raw: .NET peers write their own bytes.
    #[arg(long)]
    pub dotnet: bool,
    /// Which servers to talk to: user (yours, or root's), group (also servers whose group is
    /// one of yours: the pairing of --access group), everyone, or user:NAME (also user NAME,
    /// a uid, or a SID on Windows). An untrusted server gets nothing, not even the handshake.
    #[arg(long, value_name = "POLICY", default_value = "user", value_parser = TrustParser)]
    pub trust: Trust,
    /// Largest message accepted from the server, in bytes (K, M, G: powers of 1024). At
    /// least 4096.
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    pub max_size: usize,
    /// Wait up to this long for the server to appear (seconds, or 500ms, 2m).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Give up when the exchange is not over this long after connecting (seconds, or 500ms,
    /// 2m): one deadline for sending, the reply and the server's close together.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

impl ServerOpts {
    /// Raw mode: `--raw`, or `--dotnet`, which implies it.
    pub fn raw_mode(&self) -> bool {
        self.raw || self.dotnet
    }
}

impl ClientOpts {
    /// Raw mode: `--raw`, or `--dotnet`, which implies it.
    pub fn raw_mode(&self) -> bool {
        self.raw || self.dotnet
    }
}

/// `pipette serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Endpoint: a plain name (my-app) or an absolute path (Unix: /run/app.sock; Windows:
    /// \\.\pipe\app).
    pub name: String,
    #[command(flatten)]
    pub server: ServerOpts,
    /// Run CMD for each connection (through the shell): messages to its standard input,
    /// its standard output back as messages. Without it, serve echoes.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// How --exec's child reads and writes messages: one per line, or NUL-terminated.
    #[arg(long, value_enum, default_value_t = ExecSplit::Lines, requires = "exec")]
    pub split: ExecSplit,
    /// Stop when standard input closes (used by `pipette demo` and the tests).
    #[arg(long, hide = true)]
    pub exit_on_stdin_close: bool,
}

/// `pipette listen`.
#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Endpoint: a plain name or an absolute path.
    pub name: String,
    #[command(flatten)]
    pub server: ServerOpts,
    #[command(flatten)]
    pub output: OutputOpt,
    #[command(flatten)]
    pub text: TextOpt,
    /// Stop when standard input closes (used by the tests).
    #[arg(long, hide = true)]
    pub exit_on_stdin_close: bool,
}

/// `pipette send`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// Endpoint: a plain name or an absolute path.
    pub name: String,
    /// The messages: text, @FILE for a file's bytes, - for standard input (@@text for text
    /// that starts with @).
    #[arg(value_name = "MESSAGE", required_unless_present = "files")]
    pub messages: Vec<OsString>,
    /// A file whose bytes are one message (like @FILE); may be repeated.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// How standard input (-) is cut into messages: none (all of it is one message), lines,
    /// or nul (NUL-terminated).
    #[arg(long, value_enum, default_value_t = Split::None)]
    pub split: Split,
    #[command(flatten)]
    pub client: ClientOpts,
    #[command(flatten)]
    pub text: TextOpt,
}

/// `pipette call`.
#[derive(Args, Debug)]
pub struct CallArgs {
    /// Endpoint: a plain name or an absolute path.
    pub name: String,
    /// The message: text, @FILE for a file's bytes, - for all of standard input.
    #[arg(value_name = "MESSAGE", required_unless_present = "file")]
    pub message: Option<OsString>,
    /// A file whose bytes are the message (like @FILE).
    #[arg(short = 'f', long, value_name = "PATH", conflicts_with = "message")]
    pub file: Option<PathBuf>,
    /// The message is a JSON value: checked, then sent compact (the bytes a Rust server's
    /// `recv_value_with(Codec::Json)` reads); the reply must be JSON too, and is printed
    /// compact on one line (as it is, without the escaping of --output lines), ready for jq.
    #[arg(long, conflicts_with_all = ["raw", "dotnet", "encoding"])]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientOpts,
    #[command(flatten)]
    pub output: OutputOpt,
    #[command(flatten)]
    pub text: TextOpt,
}

/// `pipette connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Endpoint: a plain name or an absolute path.
    pub name: String,
    /// How standard input is cut into messages: lines, nul (NUL-terminated), or none (all of
    /// it is one message). Not with --raw.
    #[arg(long, value_enum, default_value_t = Split::Lines)]
    pub split: Split,
    #[command(flatten)]
    pub client: ClientOpts,
    #[command(flatten)]
    pub output: OutputOpt,
    #[command(flatten)]
    pub text: TextOpt,
}

/// `pipette ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// One JSON array: name, state (live or stale), pid (when known), path.
    #[arg(long)]
    pub json: bool,
}

/// `pipette clean`.
#[derive(Args, Debug)]
pub struct CleanArgs {
    /// The endpoints to clean (default: every stale endpoint of this user).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// The one output option of the commands that print messages (listen, call, connect).
#[derive(Args, Debug, Clone, Copy)]
pub struct OutputOpt {
    /// How received messages are printed [default: lines; with --raw: raw, the only one].
    #[arg(short = 'o', long, value_enum, value_name = "FORMAT")]
    pub output: Option<Output>,
}

/// The text encoding on the wire (listen, send, call, connect).
#[derive(Args, Debug, Clone, Copy)]
pub struct TextOpt {
    /// The peer's text encoding: what you give as text (arguments, files, standard input,
    /// which must be UTF-8) is sent in it, and what is received is turned from it into UTF-8
    /// before it is printed (what is not valid text becomes U+FFFD). utf-16le is .NET's
    /// Encoding.Unicode. Without it, bytes go as they are.
    #[arg(long, value_enum, value_name = "ENCODING")]
    pub encoding: Option<EncodingArg>,
}

impl TextOpt {
    /// The encoding, if one was asked for.
    pub fn encoding(&self) -> Option<Encoding> {
        self.encoding.map(Into::into)
    }
}

/// `--encoding`, as a value enum so that help and completions list its values.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingArg {
    /// UTF-8 (checked: what is sent must be UTF-8 text).
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    /// UTF-16, little-endian, no byte order mark (.NET's Encoding.Unicode).
    #[value(name = "utf-16le", alias = "utf16le")]
    Utf16Le,
}

impl From<EncodingArg> for Encoding {
    fn from(e: EncodingArg) -> Encoding {
        match e {
            EncodingArg::Utf8 => Encoding::Utf8,
            EncodingArg::Utf16Le => Encoding::Utf16Le,
        }
    }
}

/// How received messages are printed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One message per line, escaped: \\ \n \r \t, \xHH for other control characters and for
    /// bytes that are not UTF-8, \u{HH} for C1 controls. Lossless, and safe on a terminal.
    Lines,
    /// The bytes as they are, nothing added between messages (byte-exact).
    Raw,
    /// One message per line in hexadecimal.
    Hex,
    /// One JSON object per line: {"text":...} for UTF-8, else {"base64":...}.
    Json,
    /// The bytes as they are, each message followed by a NUL byte.
    Nul,
}

/// How an input stream is cut into messages.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The whole stream is one message.
    None,
    /// One message per line (the newline, and a CR before it, are not part of it).
    Lines,
    /// One message per NUL-terminated chunk.
    Nul,
}

/// How an --exec child's messages are delimited.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecSplit {
    /// One message per line.
    Lines,
    /// One message per NUL-terminated chunk.
    Nul,
}

impl From<ExecSplit> for Split {
    fn from(s: ExecSplit) -> Split {
        match s {
            ExecSplit::Lines => Split::Lines,
            ExecSplit::Nul => Split::Nul,
        }
    }
}

/// `--access`, as a value enum so that help and completions list its values.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessArg {
    /// Only your own user (the default).
    User,
    /// Also users of the server's group.
    Group,
    /// Any local user.
    Everyone,
}

impl From<AccessArg> for Access {
    fn from(a: AccessArg) -> Access {
        match a {
            AccessArg::User => Access::CurrentUser,
            AccessArg::Group => Access::Group,
            AccessArg::Everyone => Access::Everyone,
        }
    }
}

/// Parses `--trust`, and lists its fixed values to help and completions.
#[derive(Clone, Debug)]
pub struct TrustParser;

impl TypedValueParser for TrustParser {
    type Value = Trust;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Trust, clap::Error> {
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(clap::error::ErrorKind::InvalidUtf8, "--trust: not UTF-8\n")
                .with_cmd(cmd)
        })?;
        text.parse::<Trust>().map_err(|e| {
            let flag = arg.map_or("--trust".to_owned(), |a| format!("--{}", a.get_id()));
            clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("invalid value {text:?} for {flag}: {e}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            [
                PossibleValue::new("user").help("your own user, or root (the default)"),
                PossibleValue::new("group").help("also servers whose group is one of yours"),
                PossibleValue::new("everyone").help("any server"),
                PossibleValue::new("user:NAME").help("also user NAME (or a uid, or a SID)"),
            ]
            .into_iter(),
        ))
    }
}

/// The longest `--wait` or `--timeout`: a year.
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Parses `--wait` and `--timeout`: seconds (`2`, `0.5`), or a number with a unit (`500ms`,
/// `2s`, `3m`, `1h`); finite, not negative, at most a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let usage = "expected a duration in seconds such as 2, 0.5 or 500ms, from 0 to a year";
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{usage}; {s:?} is not a number"))?;
    if !n.is_finite() {
        return Err(format!("{usage}; {s:?} is not finite"));
    }
    let secs = n * scale;
    if secs < 0.0 {
        return Err(format!("{usage}; {s:?} is negative"));
    }
    if secs > MAX_SECS {
        return Err(format!("{usage}; {s:?} is more than a year"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `--max-size`: bytes, or a number with K, M or G (powers of 1024, with an optional
/// `iB` or `B`), from the protocol minimum of 4096 to 4 GiB - 1.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let body = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (number, scale) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1u64 << 10),
        Some('m') => (&body[..body.len() - 1], 1 << 20),
        Some('g') => (&body[..body.len() - 1], 1 << 30),
        _ => (body, 1),
    };
    let min = u64::from(pipette::frame::MIN_MESSAGE_LIMIT);
    let max = u64::from(pipette::frame::MAX_MESSAGE_LIMIT);
    let usage = format!(
        "expected a size in bytes such as 65536, 64K or 16M, from {min} (the protocol minimum) to {max}"
    );
    let n: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{usage}; {s:?} is not a whole number"))?;
    let bytes = n
        .checked_mul(scale)
        .filter(|b| (min..=max).contains(b))
        .ok_or_else(|| format!("{usage}; {s:?} is out of range"))?;
    usize::try_from(bytes).map_err(|_| format!("{usage}; {s:?} is too large here"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["inf", "1e20", "NaN", "-1", "", "x", "2 weeks", "-0.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        for bad in ["4095", "0", "-1", "4G", "lots", "1.5M", ""] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
