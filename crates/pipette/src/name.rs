//! Endpoint names: what a user types, and where it lives on this machine.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// The longest plain name, in characters.
pub const MAX_PLAIN_LEN: usize = 100;

/// A validated endpoint name and the place it resolves to.
///
/// Two forms are accepted:
///
/// - A **plain name** such as `my-app`: 1 to 100 characters from `A-Z a-z 0-9 . _ -`, not
///   `.`, without `..`, and not a Windows device name (`CON`, `NUL`, `COM1`, …, so that a
///   name works on every platform). On Unix it maps to a per-user endpoint:
///   `$XDG_RUNTIME_DIR/pipette/<name>.sock`, or, when `XDG_RUNTIME_DIR` is not set,
///   `/tmp/pipette-<uid>/<name>.sock` (Linux, FreeBSD) or
///   `~/Library/Caches/pipette/<name>.sock` (macOS), so two users can use the same plain
///   name without meeting. A name whose socket path would be longer than the 103 bytes a
///   socket address holds on every Unix gets a short file name instead, `+<hash>.sock`
///   (the rule, with test vectors, is in docs/PROTOCOL.md §8); listings still show the
///   name. So every plain name works in a directory of up to 80 bytes (an
///   `XDG_RUNTIME_DIR` of up to 72); beyond that a long name is refused with an error
///   naming the directory.
///   On Windows it maps to the named pipe `\\.\pipe\pipette-<SID>-<name>`, `<SID>` being the
///   user's SID (`S-1-5-21-…`), so names are per user there too. The pipe namespace itself is
///   shared by all users and SIDs are public, so another user could create that pipe first:
///   the server then gets [`Error::AddrInUse`] naming the holder, and clients refuse to talk
///   to it ([`Error::UntrustedServer`], see [`Trust`](crate::Trust)).
/// - An **explicit endpoint**, used exactly as given: on Unix an absolute path such as
///   `/run/my-app/control.sock`; on Windows a pipe path such as `\\.\pipe\my-app`
///   (at most 256 characters).
///
/// A name that cannot work is refused here, before any system call, with
/// [`Error::InvalidName`] saying why (for example a resolved path longer than a Unix socket
/// address can hold).
///
/// ```
/// use pipette::Name;
///
/// let name = Name::new("my-app")?;
/// assert!(name.is_plain());
/// assert!(name.path().to_string_lossy().contains("my-app"));
/// assert!(Name::new("../etc/passwd").is_err());
/// # Ok::<(), pipette::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name {
    given: String,
    path: PathBuf,
    plain: bool,
}

impl Name {
    /// Validates `name` and resolves where it lives.
    pub fn new(name: &str) -> Result<Name> {
        let invalid = |reason: String| Error::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if let Some(explicit) = sys::explicit_endpoint(name) {
            let path = explicit.map_err(invalid)?;
            return Ok(Name {
                given: name.to_owned(),
                path,
                plain: false,
            });
        }
        validate_plain(name).map_err(invalid)?;
        let path = sys::plain_endpoint(name).map_err(invalid)?;
        Ok(Name {
            given: name.to_owned(),
            path,
            plain: true,
        })
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.given
    }

    /// Where the endpoint lives: a socket path on Unix, a pipe path on Windows.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this is a plain, per-user name (as opposed to an explicit path).
    pub fn is_plain(&self) -> bool {
        self.plain
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Name")
            .field("name", &self.given)
            .field("path", &self.path)
            .finish()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.given)
    }
}

/// Anything that names an endpoint: `&str`, `String`, a path (`&Path`, `PathBuf`: an
/// explicit endpoint), or an already validated [`Name`].
///
/// This is what [`Server::bind`](crate::Server::bind) and
/// [`Client::connect`](crate::Client::connect) take, like `std`'s `ToSocketAddrs`.
pub trait IntoName {
    /// Validates and resolves the name.
    fn into_name(self) -> Result<Name>;
}

impl IntoName for Name {
    fn into_name(self) -> Result<Name> {
        Ok(self)
    }
}

impl IntoName for &Name {
    fn into_name(self) -> Result<Name> {
        Ok(self.clone())
    }
}

impl IntoName for &str {
    fn into_name(self) -> Result<Name> {
        Name::new(self)
    }
}

impl IntoName for String {
    fn into_name(self) -> Result<Name> {
        Name::new(&self)
    }
}

impl IntoName for &String {
    fn into_name(self) -> Result<Name> {
        Name::new(self)
    }
}

/// A path names an explicit endpoint (on Unix an absolute socket path; on Windows a
/// `\\.\pipe\…` path). A path that is not valid Unicode is refused with
/// [`Error::InvalidName`].
impl IntoName for &Path {
    fn into_name(self) -> Result<Name> {
        match self.to_str() {
            Some(s) => Name::new(s),
            None => Err(Error::InvalidName {
                name: self.display().to_string(),
                reason: "the path is not valid Unicode; use a path that is".to_owned(),
            }),
        }
    }
}

impl IntoName for PathBuf {
    fn into_name(self) -> Result<Name> {
        self.as_path().into_name()
    }
}

impl IntoName for &PathBuf {
    fn into_name(self) -> Result<Name> {
        self.as_path().into_name()
    }
}

const DEVICE_NAMES: &[&str] = &["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"];

/// Checks the platform-free rules for plain names; returns the reason on failure.
fn validate_plain(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty: use 1 to 100 characters from A-Z a-z 0-9 . _ -".into());
    }
    // (Valid names are ASCII: counting characters is for the error message.)
    let chars = if name.is_ascii() {
        name.len()
    } else {
        name.chars().count()
    };
    if chars > MAX_PLAIN_LEN {
        return Err(format!(
            "the name has {chars} characters, more than the {MAX_PLAIN_LEN} allowed"
        ));
    }
    if let Some((i, c)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        let what = match c {
            '\0' => "a NUL byte".to_owned(),
            '/' | '\\' => format!("the path separator {c:?} (a path must be absolute)"),
            c => format!("the character {c:?}"),
        };
        return Err(format!(
            "it contains {what} at byte {i}: plain names use only A-Z a-z 0-9 . _ -"
        ));
    }
    if name == "." || name.contains("..") {
        return Err("\".\" and \"..\" are not allowed in a name".into());
    }
    // ASCII from here on (checked above).
    let stem = name.split('.').next().unwrap_or(name);
    let is_device = DEVICE_NAMES.iter().any(|d| d.eq_ignore_ascii_case(stem))
        || (stem.len() == 4
            && (stem[..3].eq_ignore_ascii_case("COM") || stem[..3].eq_ignore_ascii_case("LPT"))
            && stem.as_bytes()[3].is_ascii_digit());
    if is_device {
        return Err(format!(
            "{} is a reserved Windows device name; pick another so the name works everywhere",
            stem.to_ascii_uppercase()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> String {
        match Name::new(name) {
            Err(Error::InvalidName { reason, .. }) => reason,
            other => panic!("{name:?}: expected InvalidName, got {other:?}"),
        }
    }

    #[test]
    fn plain_names_resolve_into_the_per_user_directory() {
        let n = Name::new("my-app.v2_x").unwrap();
        assert!(n.is_plain());
        assert_eq!(n.as_str(), "my-app.v2_x");
        #[cfg(unix)]
        {
            let p = n.path().to_str().unwrap();
            assert!(
                p.ends_with("/pipette/my-app.v2_x.sock") || p.contains("/pipette-"),
                "{p}"
            );
        }
    }

    #[test]
    fn bad_names_say_why() {
        assert!(reason("").contains("empty"));
        assert!(reason(&"a".repeat(101)).contains("101 characters"));
        assert!(reason("a/b").contains("path separator"));
        assert!(reason("a\0b").contains("NUL"));
        assert!(reason("..").contains(".."));
        assert!(reason("a..b").contains(".."));
        assert!(reason(".").contains("\".\""));
        assert!(reason("hello world").contains("' '"));
        assert!(reason("con").contains("CON is a reserved Windows device name"));
        // Characters, not bytes, for a name that is not ASCII.
        assert!(reason(&"ü".repeat(101)).contains("101 characters"));
        assert!(reason(&"ü".repeat(60)).contains("'ü'"));
        assert!(reason("COM1.pipe").contains("device"));
        assert!(reason("lpt9").contains("device"));
        assert!(reason("über").contains("'ü'"));
    }

    #[test]
    fn device_like_but_harmless_names_pass() {
        for ok in ["console", "com", "COM10", "nul-x", "auxiliary", "a.con"] {
            Name::new(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[cfg(unix)]
    #[test]
    fn paths_name_explicit_endpoints() {
        let p = std::path::Path::new("/tmp/x/app.sock");
        let n = p.into_name().unwrap();
        assert!(!n.is_plain());
        assert_eq!(n.path(), p);
        assert_eq!(p.to_path_buf().into_name().unwrap(), n);
        use std::os::unix::ffi::OsStrExt;
        let bad = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/tmp/\xff.sock"));
        assert!(matches!(bad.into_name(), Err(Error::InvalidName { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn absolute_paths_are_used_as_given_and_checked_for_length() {
        let n = Name::new("/tmp/x/y.sock").unwrap();
        assert!(!n.is_plain());
        assert_eq!(n.path(), Path::new("/tmp/x/y.sock"));
        let long = format!("/tmp/{}", "x".repeat(200));
        // The system's own socket address size: 108 bytes on Linux, 104 elsewhere.
        let max = if cfg!(target_os = "linux") {
            "107"
        } else {
            "103"
        };
        assert!(reason(&long).contains(max));
    }
}
