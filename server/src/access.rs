//! Who may use which reader: `allowUsers` / `allowGroups` in a driver's group (all its
//! readers) or in one of its `reader {}` groups (that reader, matched by `name`; a reader's
//! own list replaces the driver's). A reader without any list is open to every client that
//! can connect to the socket. Root (uid 0) is always allowed.
//!
//! Clients are known by the socket's peer credentials (`SO_PEERCRED`: uid, gid, pid) taken
//! at connect, plus the supplementary groups of that pid read from `/proc` at the same time.
//! A client whose credentials cannot be read is allowed only on open readers.
//!
//! A reader a client may not use is hidden from it: not in `ListReaders`, no
//! `CardAvailable`, no reader or card notifications about it. Requests naming one of its
//! cards are answered with code 9 (permission denied).

use chipcard_ipc::Group;
use tracing::warn;

/// A client's credentials from its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// The process id, if known.
    pub pid: Option<i32>,
    /// Supplementary groups (from `/proc/PID/status` at connect; empty if unreadable).
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of a connected Unix socket's peer.
    pub fn of(stream: &tokio::net::UnixStream) -> Option<Peer> {
        let cred = stream.peer_cred().ok()?;
        let pid = cred.pid();
        Some(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid,
            groups: pid.map(supplementary_groups).unwrap_or_default(),
        })
    }
}

/// The `Groups:` line of `/proc/PID/status`.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// One allow list: users and groups by number (names are resolved when read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    users: Vec<u32>,
    groups: Vec<u32>,
}

impl Acl {
    /// The list in `g` (`allowUsers`, `allowGroups`); `None` when it has neither key.
    /// Names that do not resolve are logged and match nobody.
    pub fn from_group(g: &Group) -> Option<Acl> {
        let users = g.var("allowUsers");
        let groups = g.var("allowGroups");
        if users.is_none() && groups.is_none() {
            return None;
        }
        let names = |v: Option<&chipcard_ipc::Variable>| -> Vec<String> {
            v.map(|v| {
                v.values
                    .iter()
                    // A value may itself be a list: "root, scard".
                    .flat_map(|x| {
                        x.as_text()
                            .split(|c: char| c == ',' || c.is_whitespace())
                            .filter(|n| !n.is_empty())
                            .map(str::to_owned)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default()
        };
        let users = names(users)
            .iter()
            .filter_map(|n| {
                resolve(n, "user", |n| {
                    nix::unistd::User::from_name(n)
                        .ok()
                        .flatten()
                        .map(|u| u.uid.as_raw())
                })
            })
            .collect();
        let groups = names(groups)
            .iter()
            .filter_map(|n| {
                resolve(n, "group", |n| {
                    nix::unistd::Group::from_name(n)
                        .ok()
                        .flatten()
                        .map(|g| g.gid.as_raw())
                })
            })
            .collect();
        Some(Acl { users, groups })
    }

    /// True when `peer` may use what this list guards.
    pub fn allows(&self, peer: Option<&Peer>) -> bool {
        let Some(peer) = peer else {
            return false;
        };
        peer.uid == 0
            || self.users.contains(&peer.uid)
            || self.groups.contains(&peer.gid)
            || peer.groups.iter().any(|g| self.groups.contains(g))
    }
}

fn resolve(name: &str, what: &str, lookup: impl Fn(&str) -> Option<u32>) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    let id = lookup(name);
    if id.is_none() {
        warn!(name, "unknown {what} in an allow list; it matches nobody");
    }
    id
}

/// A driver's allow lists: its own, and its readers' by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverAccess {
    driver: Option<Acl>,
    readers: Vec<(String, Acl)>,
}

impl DriverAccess {
    /// The lists in a driver's configuration group.
    pub fn from_config(g: &Group) -> DriverAccess {
        let readers = g
            .groups("reader")
            .filter_map(|r| {
                let name = r.opt_char("name").ok().flatten()?.to_owned();
                Some((name, Acl::from_group(r)?))
            })
            .collect();
        DriverAccess {
            driver: Acl::from_group(g),
            readers,
        }
    }

    /// True when `peer` may use the reader named `reader`.
    pub fn allows(&self, reader: &str, peer: Option<&Peer>) -> bool {
        let acl = self
            .readers
            .iter()
            .find(|(name, _)| name == reader)
            .map(|(_, acl)| acl)
            .or(self.driver.as_ref());
        match acl {
            None => true,
            Some(acl) => acl.allows(peer),
        }
    }
}

/// The user and group a driver runs as: `user` (name or number; its primary group unless
/// `group` is given) and `group` in the driver's configuration group. Only honoured when
/// chipcardd runs as root; otherwise the keys are ignored with a warning and the driver runs
/// as chipcardd's own user. A name that does not resolve is an error (the driver is not
/// started rather than started with more rights than asked for).
pub fn run_as(g: &Group) -> Result<Option<(u32, u32)>, String> {
    let user = g.opt_char("user").ok().flatten().filter(|u| !u.is_empty());
    let group = g.opt_char("group").ok().flatten().filter(|u| !u.is_empty());
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    if !nix::unistd::geteuid().is_root() {
        warn!("driver user/group ignored: chipcardd does not run as root");
        return Ok(None);
    }
    let (mut uid, mut gid) = (0, 0);
    if let Some(user) = user {
        let found = match user.parse::<u32>() {
            Ok(n) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(n)),
            Err(_) => nix::unistd::User::from_name(user),
        };
        match found {
            Ok(Some(u)) => {
                uid = u.uid.as_raw();
                gid = u.gid.as_raw();
            }
            _ => match user.parse::<u32>() {
                // A bare number need not have a passwd entry.
                Ok(n) => {
                    uid = n;
                    gid = n;
                }
                Err(_) => return Err(format!("unknown user '{user}'")),
            },
        }
    }
    if let Some(group) = group {
        gid = match group.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match nix::unistd::Group::from_name(group) {
                Ok(Some(g)) => g.gid.as_raw(),
                _ => return Err(format!("unknown group '{group}'")),
            },
        };
    }
    Ok(Some((uid, gid)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn reader_lists_replace_the_driver_list_and_root_is_always_allowed() {
        let config = Group::new("config")
            .with_char("allowUsers", "1000")
            .with_group(
                Group::new("reader")
                    .with_char("name", "R1")
                    .with_char("allowGroups", "50"),
            )
            .with_group(Group::new("reader").with_char("name", "R2"));
        let access = DriverAccess::from_config(&config);
        let alice = peer(1000, 1000, &[]);
        let bob = peer(1001, 1001, &[50]);
        let root = peer(0, 0, &[]);
        assert!(access.allows("R2", Some(&alice)));
        assert!(!access.allows("R2", Some(&bob)));
        assert!(!access.allows("R1", Some(&alice)));
        assert!(access.allows("R1", Some(&bob)));
        assert!(access.allows("R1", Some(&root)));
        assert!(!access.allows("R1", None));
        assert!(DriverAccess::default().allows("any", None));
    }

    #[test]
    fn names_resolve_and_unknown_names_match_nobody() {
        let acl =
            Acl::from_group(&Group::new("r").with_char("allowUsers", "root, no-such-user-here"))
                .expect("a list");
        assert_eq!(acl.users, vec![0]);
        assert!(!acl.allows(Some(&peer(1000, 1000, &[]))));
    }
}
