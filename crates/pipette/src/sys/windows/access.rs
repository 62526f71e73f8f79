//! The access policy on Windows: the pipe's security descriptor (DACL).
//!
//! The pipe namespace is global: every user sees every pipe name. What keeps other users
//! out is the DACL that the first instance is created with:
//!
//! - `CurrentUser`: one ACE, full access for the server's user SID (from the process token).
//! - `Group`: also read/write for the user's primary group SID.
//! - `Everyone`: also read/write for the world SID (`WD`, S-1-1-0).
//!
//! The DACL is protected (`P`, nothing inherited). Other users get read/write data access
//! but never `FILE_APPEND_DATA`, which on a pipe is `FILE_CREATE_PIPE_INSTANCE`: so they can
//! connect, but cannot add instances of the pipe and intercept its clients. Remote clients
//! are refused by `PIPE_REJECT_REMOTE_CLIENTS`.

use std::io;

use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
    ConvertStringSidToSidW, GetSecurityInfo, SDDL_REVISION_1, SE_KERNEL_OBJECT,
};
use windows_sys::Win32::Security::RevertToSelf;
use windows_sys::Win32::Security::{
    GetTokenInformation, LookupAccountNameW, LookupAccountSidW, TokenGroups, TokenPrimaryGroup,
    TokenUser, GROUP_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
    SID_NAME_USE, TOKEN_GROUPS, TOKEN_PRIMARY_GROUP, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::Pipes::ImpersonateNamedPipeClient;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentThread, OpenProcessToken, OpenThreadToken,
};

use super::wide;
use crate::proto::{Credentials, TrustPolicy};
use crate::{Access, PeerIdentity, Trust};

/// Access mask for users other than the owner: `FILE_GENERIC_READ | FILE_GENERIC_WRITE`
/// without `FILE_APPEND_DATA` (= `FILE_CREATE_PIPE_INSTANCE` on a pipe).
const PEER_RIGHTS: &str = "0x12019b";

/// This process's identity: its user SID, primary group SID and the SIDs of its token's
/// groups, read once (a process's token does not change user). `with_groups` is for the
/// Unix side's benefit: the groups are always there.
pub(crate) fn credentials(_with_groups: bool) -> Credentials {
    static ME: std::sync::OnceLock<Credentials> = std::sync::OnceLock::new();
    ME.get_or_init(|| {
        let (sid, group_sid) = match current_user_sids() {
            Ok((u, g)) => (Some(u), Some(g)),
            Err(_) => (None, None),
        };
        Credentials {
            sid,
            group_sid,
            group_sids: token_group_sids().unwrap_or_default(),
            ..Credentials::default()
        }
    })
    .clone()
}

/// A client's trust policy with `Trust::User` resolved to a SID.
pub(crate) fn trust_policy(trust: &Trust) -> io::Result<TrustPolicy> {
    let user_sid = match trust {
        Trust::User(account) => Some(resolve_account(account)?),
        _ => None,
    };
    Ok(TrustPolicy {
        trust: trust.clone(),
        user_uid: None,
        user_sid,
    })
}

/// The SDDL string of the security descriptor for `access`. The owner and group are set
/// explicitly (`O:`, `G:`) to the server's user and primary group: clients check the owner
/// (and, for `Trust::Group`, the group) to know who serves the pipe, and an elevated
/// process's default owner would be the Administrators group instead.
pub(super) fn sddl(access: Access) -> io::Result<String> {
    let (user, group) = current_user_sids()?;
    let mut s = format!("O:{user}G:{group}D:P(A;;FA;;;{user})");
    match access {
        Access::CurrentUser => {}
        Access::Group => s.push_str(&format!("(A;;{PEER_RIGHTS};;;{group})")),
        Access::Everyone => s.push_str(&format!("(A;;{PEER_RIGHTS};;;WD)")),
    }
    Ok(s)
}

/// A self-relative security descriptor allocated by
/// `ConvertStringSecurityDescriptorToSecurityDescriptorW`, freed with `LocalFree`.
#[derive(Debug)]
pub(super) struct SecurityDescriptor(PSECURITY_DESCRIPTOR);

// SAFETY: the descriptor is an immutable block of memory owned by this value; it is only
// read (by CreateNamedPipeW) after creation, so it can be shared and sent across threads.
unsafe impl Send for SecurityDescriptor {}
// SAFETY: see above: shared access is read-only.
unsafe impl Sync for SecurityDescriptor {}

impl SecurityDescriptor {
    pub(super) fn for_access(access: Access) -> io::Result<SecurityDescriptor> {
        let text = sddl(access)?;
        let w = wide(text.as_ref());
        let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `w` is NUL-terminated; `sd` receives a LocalAlloc'ed descriptor that we own;
        // the size output is optional.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                w.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SecurityDescriptor(sd))
    }

    pub(super) fn as_ptr(&self) -> PSECURITY_DESCRIPTOR {
        self.0
    }
}

impl Drop for SecurityDescriptor {
    fn drop(&mut self) {
        // SAFETY: the pointer came from LocalAlloc (via the conversion function) and is freed
        // exactly once.
        unsafe { LocalFree(self.0) };
    }
}

/// A SID in string form (`S-1-5-…`).
fn sid_string(sid: PSID) -> io::Result<String> {
    let mut out: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` points to a valid SID inside a live token buffer; `out` receives a
    // LocalAlloc'ed, NUL-terminated string that we free below.
    if unsafe { ConvertSidToStringSidW(sid, &mut out) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut len = 0;
    // SAFETY: `out` is NUL-terminated, so every index up to the NUL is in bounds.
    while unsafe { *out.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `out` is valid for `len` u16 reads (just measured).
    let s = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(out, len) });
    // SAFETY: allocated by ConvertSidToStringSidW with LocalAlloc; freed once.
    unsafe { LocalFree(out.cast()) };
    Ok(s)
}

/// The current process's user SID and primary group SID, as strings.
pub(super) fn current_user_sids() -> io::Result<(String, String)> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo-handle of the current process needs no closing; `token` receives a
    // handle that we close below.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let user = token_user_sid(token)?;
        let group = token_info(token, TokenPrimaryGroup)?;
        // SAFETY: the buffer holds a TOKEN_PRIMARY_GROUP (u64-aligned, and at least its size,
        // as GetTokenInformation succeeded), whose SID points into the same buffer.
        let group =
            sid_string(unsafe { (*group.as_ptr().cast::<TOKEN_PRIMARY_GROUP>()).PrimaryGroup })?;
        Ok((user, group))
    })();
    // SAFETY: `token` is a handle we own, closed once.
    unsafe { CloseHandle(token) };
    result
}

/// The user SID of an open token (queried with `TOKEN_QUERY`), as a string.
pub(super) fn token_user_sid(token: HANDLE) -> io::Result<String> {
    let user = token_info(token, TokenUser)?;
    // SAFETY: the buffer holds a TOKEN_USER (u64-aligned, and at least its size, as
    // GetTokenInformation succeeded), whose SID points into the same buffer.
    sid_string(unsafe { (*user.as_ptr().cast::<TOKEN_USER>()).User.Sid })
}

/// The user SID of the client connected to the server end `pipe`, read by impersonating it
/// for a moment (identification level: its token can be queried, not used). `None` when that
/// fails, for example before the client has written anything.
pub(super) fn pipe_client_sid(pipe: HANDLE) -> Option<String> {
    // SAFETY: `pipe` is an open server end of a named pipe.
    if unsafe { ImpersonateNamedPipeClient(pipe) } == 0 {
        return None;
    }
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the current thread's pseudo-handle; OpenAsSelf = TRUE checks access with the
    // process's own token. `token` receives a handle that we close below.
    let opened = unsafe { OpenThreadToken(GetCurrentThread(), TOKEN_QUERY, 1, &mut token) };
    // SAFETY: ends the impersonation started above. Going on as the client would be a
    // security hole, so failing to revert ends the process.
    if unsafe { RevertToSelf() } == 0 {
        std::process::abort();
    }
    if opened == 0 {
        return None;
    }
    let sid = token_user_sid(token).ok();
    // SAFETY: `token` is a handle we own, closed once.
    unsafe { CloseHandle(token) };
    sid
}

/// `GetTokenInformation` into a u64-aligned buffer of the size it asks for.
fn token_info(token: HANDLE, class: i32) -> io::Result<Vec<u64>> {
    let mut needed = 0u32;
    // SAFETY: a size query: null buffer of length 0, `needed` receives the size.
    unsafe { GetTokenInformation(token, class, std::ptr::null_mut(), 0, &mut needed) };
    if needed == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u64; (needed as usize).div_ceil(8)];
    // SAFETY: `buf` is valid for writes of `buf.len() * 8 >= needed` bytes.
    let ok = unsafe {
        GetTokenInformation(
            token,
            class,
            buf.as_mut_ptr().cast(),
            (buf.len() * 8) as u32,
            &mut needed,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buf)
}

/// This process's user SID, read once (a process's user does not change).
pub(super) fn own_user_sid() -> Option<&'static str> {
    static USER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    USER.get_or_init(|| current_user_sids().ok().map(|(user, _)| user))
        .as_deref()
}

/// The owner and group SIDs of the kernel object `handle` (a pipe end opened with
/// `READ_CONTROL`, which `FILE_GENERIC_READ` includes), as strings.
pub(super) fn object_owner_and_group(handle: HANDLE) -> io::Result<(String, Option<String>)> {
    let mut owner: PSID = std::ptr::null_mut();
    let mut group: PSID = std::ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: `handle` is open for the call; the out pointers are valid; on success `sd` is a
    // LocalAlloc'ed descriptor that `owner` and `group` point into, freed below.
    let err = unsafe {
        GetSecurityInfo(
            handle,
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION | GROUP_SECURITY_INFORMATION,
            &mut owner,
            &mut group,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if err != 0 {
        return Err(super::os_error(err));
    }
    let result = (|| {
        if owner.is_null() {
            return Err(io::Error::other("the pipe has no owner"));
        }
        let owner = sid_string(owner)?;
        let group = if group.is_null() {
            None
        } else {
            sid_string(group).ok()
        };
        Ok((owner, group))
    })();
    // SAFETY: allocated by GetSecurityInfo with LocalAlloc; freed once, after the SIDs that
    // point into it were converted.
    unsafe { LocalFree(sd) };
    result
}

/// The SID (string form) of an account given as a SID or a name (`DOMAIN\user`, `user`).
fn resolve_account(account: &str) -> io::Result<String> {
    if account.len() > 4 && account[..4].eq_ignore_ascii_case("S-1-") {
        return Ok(account.to_owned());
    }
    let not_found = |e: io::Error| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("no account named {account:?} ({e}); Trust::User takes a SID (S-1-5-...) or an account name"),
        )
    };
    let w = wide(account.as_ref());
    let mut sid = vec![0u64; 16]; // 128 bytes: more than the largest SID (68 bytes)
    let mut sid_len = (sid.len() * 8) as u32;
    let mut domain = vec![0u16; 256];
    let mut domain_len = domain.len() as u32;
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: `w` is NUL-terminated; the buffers are valid for the sizes passed, which the
    // call updates.
    let ok = unsafe {
        LookupAccountNameW(
            std::ptr::null(),
            w.as_ptr(),
            sid.as_mut_ptr().cast(),
            &mut sid_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return Err(not_found(io::Error::last_os_error()));
    }
    sid_string(sid.as_mut_ptr().cast())
}

/// The account name of a SID (`DOMAIN\user`), where it can be looked up.
fn account_name(sid: &str) -> Option<String> {
    let w = wide(sid.as_ref());
    let mut psid: PSID = std::ptr::null_mut();
    // SAFETY: `w` is NUL-terminated; `psid` receives a LocalAlloc'ed SID freed below.
    if unsafe { ConvertStringSidToSidW(w.as_ptr(), &mut psid) } == 0 {
        return None;
    }
    let mut name = vec![0u16; 256];
    let mut name_len = name.len() as u32;
    let mut domain = vec![0u16; 256];
    let mut domain_len = domain.len() as u32;
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: `psid` is a valid SID; the buffers are valid for the sizes passed.
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            psid,
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    // SAFETY: allocated by ConvertStringSidToSidW; freed once.
    unsafe { LocalFree(psid) };
    if ok == 0 {
        return None;
    }
    let name = String::from_utf16_lossy(&name[..name_len as usize]);
    let domain = String::from_utf16_lossy(&domain[..domain_len as usize]);
    Some(if domain.is_empty() {
        name
    } else {
        format!("{domain}\\{name}")
    })
}

/// The user a server runs as (its pipe's owner), for messages: `S-1-5-21-… (DOMAIN\user)`.
pub(crate) fn describe_owner(server: &PeerIdentity) -> String {
    match server.sid.as_deref() {
        Some(sid) => match account_name(sid) {
            Some(name) => format!("{sid} ({name})"),
            None => sid.to_owned(),
        },
        None => "an unknown user".to_owned(),
    }
}

/// Who runs a server, for messages: `S-1-5-21-… (DOMAIN\user), pid 123`.
pub(crate) fn describe_server(server: &PeerIdentity) -> String {
    match server.pid {
        Some(pid) => format!("{}, pid {pid}", describe_owner(server)),
        None => describe_owner(server),
    }
}

/// Whether `server` runs as this process's own user.
pub(crate) fn is_own_user(server: &PeerIdentity) -> bool {
    match (server.sid.as_deref(), own_user_sid()) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// The SIDs of the groups in this process's token, as strings.
fn token_group_sids() -> io::Result<Vec<String>> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo-handle of the current process needs no closing; `token` receives a
    // handle that we close below.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        let buf = token_info(token, TokenGroups)?;
        // SAFETY: the buffer holds a TOKEN_GROUPS (u64-aligned, and at least its size, as
        // GetTokenInformation succeeded) followed by its `GroupCount` entries, whose SIDs point
        // into the same buffer.
        let groups = unsafe { &*buf.as_ptr().cast::<TOKEN_GROUPS>() };
        let count = groups.GroupCount as usize;
        // SAFETY: `Groups` is the first of `count` SID_AND_ATTRIBUTES entries laid out in the
        // buffer (a variable-length array in C).
        let entries = unsafe { std::slice::from_raw_parts(groups.Groups.as_ptr(), count) };
        Ok(entries
            .iter()
            .filter_map(|g| sid_string(g.Sid).ok())
            .collect())
    })();
    // SAFETY: `token` is a handle we own, closed once.
    unsafe { CloseHandle(token) };
    result
}
