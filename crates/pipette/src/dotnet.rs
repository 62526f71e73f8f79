//! .NET's names for named pipes: where `new NamedPipeServerStream("x")` listens on each
//! operating system, so that pipette meets a .NET peer by the name the .NET code uses.
//!
//! The rules follow dotnet/runtime's source (see docs/INTEROP.md for the citations):
//!
//! - Windows: the pipe `\\.\pipe\<name>` (`NamedPipeServerStream.Windows.cs`:
//!   `Path.GetFullPath(@"\\.\pipe\" + pipeName)`).
//! - Unix: a Unix domain socket at `Path.GetTempPath() + "CoreFxPipe_" + name`
//!   (`PipeStream.Unix.cs`, `GetPipePath`), where `GetTempPath()` is `$TMPDIR` with a
//!   trailing `/` added when it lacks one, or `/tmp/` when `TMPDIR` is unset or empty
//!   (`Path.Unix.cs`). A name that is an absolute path is used as it is.

use crate::error::{Error, Result};
use crate::name::Name;

/// The prefix .NET puts before a pipe name on Unix (`PipeStream.Unix.cs`, `s_pipePrefix`).
#[cfg(unix)]
const UNIX_PREFIX: &str = "CoreFxPipe_";

impl Name {
    /// The endpoint that .NET uses for the named pipe `pipe_name`: what
    /// `new NamedPipeServerStream(pipe_name)` listens on and
    /// `new NamedPipeClientStream(".", pipe_name)` connects to, on this operating system.
    ///
    /// - **Windows**: the pipe `\\.\pipe\<pipe_name>`.
    /// - **Unix** (.NET implements named pipes as Unix domain sockets there):
    ///   `<temp dir>/CoreFxPipe_<pipe_name>`, where the temp dir is `$TMPDIR` or, when
    ///   `TMPDIR` is unset or empty, `/tmp` (.NET's `Path.GetTempPath()`). Both sides must
    ///   therefore see the same `TMPDIR`. A `pipe_name` that is an absolute path is used as
    ///   it is, as .NET does.
    ///
    /// The result is an explicit endpoint (not a per-user plain name):
    /// [`as_str`](Name::as_str) and [`path`](Name::path) are the pipe path or socket path.
    /// Only the name is .NET's: the mode is chosen separately, and a .NET peer that writes
    /// its own bytes needs [`ServerOptions::raw`](crate::ServerOptions::raw) /
    /// [`ClientOptions::raw`](crate::ClientOptions::raw) (and, for a
    /// `PipeTransmissionMode.Message` peer on Windows, `message_pipe`). Both sides still
    /// check each other ([`Access`](crate::Access), [`Trust`](crate::Trust)); what that means
    /// with a .NET peer, and its `PipeOptions.CurrentUserOnly`, is in docs/INTEROP.md.
    ///
    /// ```
    /// use pipette::{ClientOptions, Encoding, Name, Server, ServerOptions};
    ///
    /// // The pipe of a C# `new NamedPipeServerStream("my-service")`.
    /// let name = Name::dotnet("my-service")?;
    /// #[cfg(unix)]
    /// assert!(name.as_str().ends_with("/CoreFxPipe_my-service"));
    /// #[cfg(windows)]
    /// assert_eq!(name.as_str(), r"\\.\pipe\my-service");
    ///
    /// // A pipette server that a C# `NamedPipeClientStream(".", "...")` reaches: raw bytes,
    /// // strings in .NET's `Encoding.Unicode`.
    /// # let name = Name::dotnet(&format!("doc-dotnet-{}", std::process::id()))?;
    /// let server = Server::bind_with(&name, &ServerOptions::new().raw(true))?;
    /// # let mut client = pipette::Client::connect_with(&name, &ClientOptions::new().raw(true))?;
    /// # client.send_text("hi", Encoding::Utf16Le)?;
    /// let mut conn = server.accept()?;
    /// let request = conn.recv_text(Encoding::Utf16Le)?;
    /// # assert_eq!(request, "hi");
    /// # Ok::<(), pipette::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name .NET refuses or that would not name the same pipe on
    /// both sides: empty, `anonymous` (reserved by .NET), with a NUL, with a `/` (other than
    /// an absolute path on Unix); on Windows also with `.` or `..` between backslashes; on
    /// Unix when `TMPDIR` is not an absolute path, or the socket path is too long.
    pub fn dotnet(pipe_name: &str) -> Result<Name> {
        let invalid = |reason: String| Error::InvalidName {
            name: pipe_name.to_owned(),
            reason,
        };
        let endpoint = endpoint(pipe_name, std::env::var_os("TMPDIR")).map_err(invalid)?;
        Name::new(&endpoint).map_err(|e| match e {
            Error::InvalidName { reason, .. } => invalid(reason),
            other => other,
        })
    }
}

/// The rules every operating system shares: what .NET itself refuses.
fn check_common(pipe_name: &str) -> std::result::Result<(), String> {
    if pipe_name.is_empty() {
        return Err("a .NET pipe name cannot be empty".into());
    }
    if pipe_name.eq_ignore_ascii_case("anonymous") {
        return Err("\"anonymous\" is reserved by .NET for anonymous pipes".into());
    }
    if pipe_name.contains('\0') {
        return Err("the name contains a NUL character".into());
    }
    Ok(())
}

/// Windows: `\\.\pipe\<name>`.
#[cfg(windows)]
fn endpoint(
    pipe_name: &str,
    _tmpdir: Option<std::ffi::OsString>,
) -> std::result::Result<String, String> {
    check_common(pipe_name)?;
    if pipe_name.contains('/') {
        return Err("a '/' in a .NET pipe name becomes '\\' on Windows and is not a file name character on Unix: leave it out".into());
    }
    // .NET passes `\\.\pipe\<name>` through Path.GetFullPath, which would fold these away.
    if pipe_name
        .split('\\')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(
            "empty, \".\" or \"..\" parts between backslashes would be folded away by .NET's Path.GetFullPath".into(),
        );
    }
    Ok(format!(r"\\.\pipe\{pipe_name}"))
}

/// Unix: `Path.GetTempPath() + "CoreFxPipe_" + name`, or an absolute path as it is. This is
/// dotnet/runtime's `PipeStream.GetPipePath` (`PipeStream.Unix.cs`) with `GetTempPath`
/// (`Path.Unix.cs`): `TMPDIR`, a `/` appended when missing, `/tmp/` when unset or empty.
#[cfg(unix)]
fn endpoint(
    pipe_name: &str,
    tmpdir: Option<std::ffi::OsString>,
) -> std::result::Result<String, String> {
    check_common(pipe_name)?;
    if pipe_name.starts_with('/') {
        // .NET: "Caller is in full control of file location."
        return Ok(pipe_name.to_owned());
    }
    if pipe_name.contains('/') {
        return Err(
            "a .NET pipe name is a file name: no '/' (or give an absolute socket path)".into(),
        );
    }
    let temp = match tmpdir {
        None => "/tmp/".to_owned(),
        Some(dir) if dir.is_empty() => "/tmp/".to_owned(),
        Some(dir) => {
            let Some(dir) = dir.to_str() else {
                return Err("TMPDIR is not valid Unicode; set it to a path that is".into());
            };
            if !dir.starts_with('/') {
                return Err(format!(
                    "TMPDIR is {dir:?}, not an absolute path (.NET would use it relative to its working directory); set it to an absolute path"
                ));
            }
            if dir.ends_with('/') {
                dir.to_owned()
            } else {
                format!("{dir}/")
            }
        }
    };
    Ok(format!("{temp}{UNIX_PREFIX}{pipe_name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn unix_paths_follow_dotnets_temp_directory_rule() {
        let at = |name: &str, tmp: Option<&str>| endpoint(name, tmp.map(Into::into));
        assert_eq!(at("x", None).unwrap(), "/tmp/CoreFxPipe_x");
        assert_eq!(at("x", Some("")).unwrap(), "/tmp/CoreFxPipe_x");
        assert_eq!(at("x", Some("/var/t")).unwrap(), "/var/t/CoreFxPipe_x");
        assert_eq!(at("x", Some("/var/t/")).unwrap(), "/var/t/CoreFxPipe_x");
        assert_eq!(at("a\\b c", None).unwrap(), "/tmp/CoreFxPipe_a\\b c");
        assert_eq!(
            at("/run/app.sock", Some("/var/t")).unwrap(),
            "/run/app.sock"
        );
        assert!(at("x", Some("rel"))
            .unwrap_err()
            .contains("not an absolute path"));
        assert!(at("a/b", None).unwrap_err().contains("no '/'"));
    }

    #[test]
    fn names_dotnet_refuses_are_refused() {
        for (bad, why) in [
            ("", "empty"),
            ("anonymous", "reserved"),
            ("Anonymous", "reserved"),
            ("a\0b", "NUL"),
        ] {
            match Name::dotnet(bad) {
                Err(Error::InvalidName { reason, .. }) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_unix_name_is_an_explicit_socket_path_checked_for_length() {
        let n = Name::dotnet("/tmp/x/y.sock").unwrap();
        assert!(!n.is_plain());
        assert_eq!(n.path(), std::path::Path::new("/tmp/x/y.sock"));
        match Name::dotnet(&"x".repeat(120)) {
            Err(Error::InvalidName { name, reason }) => {
                assert_eq!(name, "x".repeat(120));
                assert!(reason.contains("107"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[cfg(windows)]
    #[test]
    fn windows_names_are_pipes_under_the_pipe_root() {
        let n = Name::dotnet("my-service").unwrap();
        assert!(!n.is_plain());
        assert_eq!(n.as_str(), r"\\.\pipe\my-service");
        assert_eq!(n.path(), std::path::Path::new(r"\\.\pipe\my-service"));
        assert_eq!(
            Name::dotnet(r"area\svc").unwrap().as_str(),
            r"\\.\pipe\area\svc"
        );
        for bad in ["a/b", r"a\..\b", r"\x", r"x\", r"a\.\b"] {
            assert!(
                matches!(Name::dotnet(bad), Err(Error::InvalidName { .. })),
                "{bad}"
            );
        }
    }
}
