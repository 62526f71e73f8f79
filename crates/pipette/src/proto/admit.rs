//! The admission decisions, both ways, from credentials passed in as data: does a server's
//! access policy admit a client, and does a client's trust policy admit a server.
//!
//! The platform layer reads the credentials (`SO_PEERCRED`, `SO_PEERGROUPS`, a pipe's
//! owner, a token's groups) and resolves names; nothing here asks the operating system or a
//! user database anything, so a decision never blocks.

use crate::{Access, PeerIdentity, Trust};

/// This process's identity, as the platform layer read it: what a server compares its peers
/// with, and what a client trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Effective user id (Unix).
    pub uid: Option<u32>,
    /// Effective group id (Unix).
    pub gid: Option<u32>,
    /// Supplementary group ids (Unix).
    pub groups: Vec<u32>,
    /// User SID (Windows).
    pub sid: Option<String>,
    /// Primary group SID (Windows).
    pub group_sid: Option<String>,
    /// The SIDs of every group in the process's token (Windows).
    pub group_sids: Vec<String>,
}

/// A server's identity: the credentials it had when it bound (it compares peers with the
/// user that owns its endpoint, whatever its process does later).
pub type ServerIdentity = Credentials;

/// Does `access` admit `peer`, for a server that bound as `owner`?
///
/// `peer_groups`: the peer's supplementary groups where the platform can tell (Linux:
/// `SO_PEERGROUPS`). `enforced_by_os`: the operating system has already refused everyone the
/// policy does not admit (a Windows pipe's DACL, which sees the peer's whole token), so a
/// peer whose user cannot be read passes. A peer the platform cannot identify is refused
/// otherwise, unless everyone is admitted.
pub fn admit_peer(
    access: Access,
    owner: &ServerIdentity,
    peer: &PeerIdentity,
    peer_groups: Option<&[u32]>,
    enforced_by_os: bool,
) -> bool {
    if access == Access::Everyone {
        return true;
    }
    let same_user = match (peer.uid, peer.sid.as_deref()) {
        (Some(uid), _) => owner.uid == Some(uid),
        (None, Some(sid)) => owner
            .sid
            .as_deref()
            .is_some_and(|own| own.eq_ignore_ascii_case(sid)),
        (None, None) => return enforced_by_os,
    };
    match access {
        Access::CurrentUser => same_user,
        Access::Group => {
            same_user
                || enforced_by_os
                || owner.gid.is_some_and(|gid| {
                    peer.gid == Some(gid) || peer_groups.is_some_and(|g| g.contains(&gid))
                })
        }
        _ => false,
    }
}

/// A client's trust policy with its [`Trust::User`] resolved to an id by the platform layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    /// The policy as configured.
    pub trust: Trust,
    /// `Trust::User` resolved to a uid (Unix).
    pub user_uid: Option<u32>,
    /// `Trust::User` resolved to a SID (Windows).
    pub user_sid: Option<String>,
}

/// The system's users, trusted by every policy: root (uid 0); LocalSystem and the
/// Administrators group (owners of an elevated process's objects).
const SYSTEM_SIDS: [&str; 2] = ["S-1-5-18", "S-1-5-32-544"];

/// Does a client of identity `me` trust the server `server` (what the platform read right
/// after connecting: Unix `SO_PEERCRED`; Windows the pipe's owner as `sid` and its group as
/// `group_sid`) under `policy`? A server whose user cannot be read is trusted only by
/// [`Trust::Everyone`].
pub fn trusts(policy: &TrustPolicy, me: &Credentials, server: &PeerIdentity) -> bool {
    if policy.trust == Trust::Everyone {
        return true;
    }
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let user_trusted = match (server.uid, server.sid.as_deref()) {
        (Some(uid), _) => uid == 0 || me.uid == Some(uid) || policy.user_uid == Some(uid),
        (None, Some(sid)) => {
            SYSTEM_SIDS.iter().any(|s| same(s, sid))
                || me.sid.as_deref().is_some_and(|own| same(own, sid))
                || policy.user_sid.as_deref().is_some_and(|u| same(u, sid))
        }
        (None, None) => return false,
    };
    if user_trusted {
        return true;
    }
    if policy.trust != Trust::Group {
        return false;
    }
    let gid_ours = server
        .gid
        .is_some_and(|gid| me.gid == Some(gid) || me.groups.contains(&gid));
    let sid_ours = server.group_sid.as_deref().is_some_and(|g| {
        me.group_sid.as_deref().is_some_and(|own| same(own, g))
            || me.group_sids.iter().any(|own| same(own, g))
    });
    gid_ours || sid_ours
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(uid: u32, gid: u32) -> PeerIdentity {
        PeerIdentity {
            pid: Some(1),
            uid: Some(uid),
            gid: Some(gid),
            ..PeerIdentity::default()
        }
    }

    fn me() -> Credentials {
        Credentials {
            uid: Some(1000),
            gid: Some(100),
            groups: vec![100, 27],
            ..Credentials::default()
        }
    }

    #[test]
    fn servers_admit_exactly_their_policy() {
        let owner = me();
        let cases = [
            (Access::CurrentUser, unix(1000, 5), None, true),
            (Access::CurrentUser, unix(1001, 100), None, false),
            (Access::Group, unix(1001, 100), None, true),
            (Access::Group, unix(1001, 5), Some(&[7, 100][..]), true),
            (Access::Group, unix(1001, 5), Some(&[7][..]), false),
            (Access::Everyone, unix(1001, 5), None, true),
            (Access::Everyone, PeerIdentity::default(), None, true),
            (Access::CurrentUser, PeerIdentity::default(), None, false),
        ];
        for (access, peer, groups, admitted) in cases {
            assert_eq!(
                admit_peer(access, &owner, &peer, groups, false),
                admitted,
                "{access:?} {peer:?} {groups:?}"
            );
        }
        // Windows: the DACL has checked; CurrentUser still compares the SID when known.
        let win = Credentials {
            sid: Some("S-1-5-21-1".into()),
            ..Credentials::default()
        };
        let peer = |sid: &str| PeerIdentity {
            sid: Some(sid.into()),
            ..PeerIdentity::default()
        };
        assert!(admit_peer(
            Access::CurrentUser,
            &win,
            &peer("s-1-5-21-1"),
            None,
            true
        ));
        assert!(!admit_peer(
            Access::CurrentUser,
            &win,
            &peer("S-1-5-21-2"),
            None,
            true
        ));
        assert!(admit_peer(
            Access::Group,
            &win,
            &peer("S-1-5-21-2"),
            None,
            true
        ));
        assert!(admit_peer(
            Access::CurrentUser,
            &win,
            &PeerIdentity::default(),
            None,
            true
        ));
    }

    #[test]
    fn clients_trust_exactly_their_policy() {
        let policy = |trust: Trust| TrustPolicy {
            trust,
            user_uid: Some(999),
            user_sid: Some("S-1-5-21-9".into()),
        };
        let cases = [
            (Trust::CurrentUser, unix(1000, 5), true),
            (Trust::CurrentUser, unix(0, 0), true),
            (Trust::CurrentUser, unix(1001, 100), false),
            (Trust::Group, unix(1001, 100), true),
            (Trust::Group, unix(1001, 27), true),
            (Trust::Group, unix(1001, 5), false),
            (Trust::User("x".into()), unix(999, 5), true),
            (Trust::User("x".into()), unix(998, 5), false),
            (Trust::Everyone, PeerIdentity::default(), true),
            (Trust::CurrentUser, PeerIdentity::default(), false),
        ];
        for (trust, server, trusted) in cases {
            let p = policy(trust.clone());
            let p = TrustPolicy {
                user_uid: matches!(trust, Trust::User(_)).then_some(999),
                ..p
            };
            assert_eq!(trusts(&p, &me(), &server), trusted, "{trust:?} {server:?}");
        }
        let win_me = Credentials {
            sid: Some("S-1-5-21-1".into()),
            group_sid: Some("S-1-5-21-513".into()),
            group_sids: vec!["S-1-5-32-545".into()],
            ..Credentials::default()
        };
        let pipe = |owner: &str, group: &str| PeerIdentity {
            sid: Some(owner.into()),
            group_sid: Some(group.into()),
            ..PeerIdentity::default()
        };
        let p = policy(Trust::CurrentUser);
        assert!(trusts(&p, &win_me, &pipe("S-1-5-21-1", "x")));
        assert!(trusts(&p, &win_me, &pipe("S-1-5-18", "x")));
        assert!(trusts(&p, &win_me, &pipe("S-1-5-32-544", "x")));
        assert!(!trusts(&p, &win_me, &pipe("S-1-5-7", "S-1-5-32-545")));
        let p = policy(Trust::Group);
        assert!(trusts(&p, &win_me, &pipe("S-1-5-7", "S-1-5-32-545")));
        assert!(trusts(&p, &win_me, &pipe("S-1-5-7", "S-1-5-21-513")));
        assert!(!trusts(&p, &win_me, &pipe("S-1-5-7", "S-1-5-7")));
        let p = policy(Trust::User("S-1-5-21-9".into()));
        assert!(trusts(&p, &win_me, &pipe("S-1-5-21-9", "x")));
    }
}
