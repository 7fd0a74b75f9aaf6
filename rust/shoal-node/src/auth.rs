//! Who may call what (DESIGN §11), the decision: each gRPC method needs nothing (health), a role of an API key
//! (`read` < `write` < `admin`), a cluster member (a node certificate: the internal planes), or fault
//! injection turned on. Pure; `admission.rs` finds the caller and applies the verdict.
//!
//! ```text
//!   need \ caller      member (node cert)   key with role r        no key            unknown key
//!   open               ok                   ok                     ok                ok
//!   role R             ok                   ok if r >= R, else     UNAUTHENTICATED   UNAUTHENTICATED
//!                                           PERMISSION_DENIED
//!   member             ok                   PERMISSION_DENIED      UNAUTHENTICATED   UNAUTHENTICATED
//!   fault injection    UNIMPLEMENTED unless --enable-fault-injection; then as role admin
//! ```
//!
//! With `--insecure` every caller is allowed (fault injection still needs its flag).

use shoal_cluster::api_keys::Role;

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone (grpc.health.v1).
    Open,
    /// An API key with at least this role (or a member).
    Role(Role),
    /// A cluster member: a valid node certificate.
    Member,
    /// A test-only fault-injection method.
    Fault,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A peer presenting a valid node certificate for this node id.
    Member(u64),
    /// A client with a valid API key.
    Key {
        /// The key's name (never the key).
        name: String,
        /// Its role.
        role: Role,
    },
    /// No certificate and no key.
    Anonymous,
    /// A key the cluster does not know, or revoked.
    BadKey,
}

/// Why a call is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// UNAUTHENTICATED.
    Unauthenticated(String),
    /// PERMISSION_DENIED.
    PermissionDenied(String),
    /// UNIMPLEMENTED.
    Unimplemented(String),
}

/// What the gRPC method at `path` (`/package.Service/Method`) needs.
pub fn need(path: &str) -> Need {
    if path.starts_with("/grpc.health.v1.") {
        return Need::Open;
    }
    if path.starts_with("/shoal.internal.") {
        return Need::Member;
    }
    let method = path.rsplit('/').next().unwrap_or("");
    if let Some(rest) = path.strip_prefix("/shoal.v1.") {
        let service = rest.split('/').next().unwrap_or("");
        return match (service, method) {
            ("Points", "Upsert" | "Delete" | "UpdatePayload") => Need::Role(Role::Write),
            ("Points", _) => Need::Role(Role::Read),
            ("Collections", "Get" | "List") => Need::Role(Role::Read),
            ("Cluster", "Info" | "Shards" | "Health") => Need::Role(Role::Read),
            ("Cluster", "SetFaults" | "SkewClock" | "DivergeReplica") => Need::Fault,
            _ => Need::Role(Role::Admin),
        };
    }
    // Anything else (reflection, unknown services): members only.
    Need::Member
}

/// The verdict for `caller` calling the method at `path`.
pub fn decide(path: &str, caller: &Caller, secure: bool, faults_enabled: bool) -> Result<(), Refusal> {
    let method = path.trim_start_matches('/');
    let need = match need(path) {
        Need::Fault if !faults_enabled => {
            return Err(Refusal::Unimplemented(format!(
                "{method} exists only on a node started with --enable-fault-injection (a test-only switch)"
            )));
        }
        Need::Fault => Need::Role(Role::Admin),
        n => n,
    };
    if !secure || need == Need::Open {
        return Ok(());
    }
    match (need, caller) {
        (_, Caller::Member(_)) => Ok(()),
        (_, Caller::Anonymous) => Err(Refusal::Unauthenticated(format!(
            "{method} needs {}: send an API key as `authorization: Bearer <key>`",
            match need {
                Need::Member => "a cluster member's certificate".to_string(),
                Need::Role(r) => format!("the {} role", r.as_str()),
                _ => "credentials".to_string(),
            }
        ))),
        (_, Caller::BadKey) => Err(Refusal::Unauthenticated(format!("{method}: unknown or revoked API key"))),
        (Need::Member, Caller::Key { name, .. }) => Err(Refusal::PermissionDenied(format!(
            "{method} is for cluster members (node certificates) only; API key {name:?} cannot call it"
        ))),
        (Need::Role(r), Caller::Key { name, role }) if *role < r => Err(Refusal::PermissionDenied(format!(
            "{method} needs the {} role; API key {name:?} has the {} role",
            r.as_str(),
            role.as_str()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: Role) -> Caller {
        Caller::Key { name: "k1".into(), role }
    }

    #[test]
    fn methods_need_their_roles() {
        assert_eq!(need("/shoal.v1.Points/Search"), Need::Role(Role::Read));
        assert_eq!(need("/shoal.v1.Points/Scroll"), Need::Role(Role::Read));
        assert_eq!(need("/shoal.v1.Points/Upsert"), Need::Role(Role::Write));
        assert_eq!(need("/shoal.v1.Collections/Create"), Need::Role(Role::Admin));
        assert_eq!(need("/shoal.v1.Collections/List"), Need::Role(Role::Read));
        assert_eq!(need("/shoal.v1.Cluster/Shards"), Need::Role(Role::Read));
        assert_eq!(need("/shoal.v1.Cluster/RemoveNode"), Need::Role(Role::Admin));
        assert_eq!(need("/shoal.v1.Cluster/CreateApiKey"), Need::Role(Role::Admin));
        assert_eq!(need("/shoal.v1.Cluster/SetFaults"), Need::Fault);
        assert_eq!(need("/shoal.internal.RaftTransport/Vote"), Need::Member);
        assert_eq!(need("/shoal.internal.NodeInternal/MetaPropose"), Need::Member);
        assert_eq!(need("/grpc.health.v1.Health/Check"), Need::Open);
        assert_eq!(need("/grpc.reflection.v1.ServerReflection/Info"), Need::Member);
    }

    #[test]
    fn verdicts_follow_the_table() {
        let p = "/shoal.v1.Points/Upsert";
        assert_eq!(decide(p, &key(Role::Write), true, false), Ok(()));
        assert_eq!(decide(p, &key(Role::Admin), true, false), Ok(()));
        assert_eq!(decide(p, &Caller::Member(2), true, false), Ok(()));
        let Err(Refusal::PermissionDenied(m)) = decide(p, &key(Role::Read), true, false) else { panic!() };
        assert!(m.contains("shoal.v1.Points/Upsert") && m.contains("write role") && m.contains("\"k1\""), "{m}");
        assert!(matches!(decide(p, &Caller::Anonymous, true, false), Err(Refusal::Unauthenticated(_))));
        assert!(matches!(decide(p, &Caller::BadKey, true, false), Err(Refusal::Unauthenticated(_))));
        let internal = "/shoal.internal.RaftTransport/AppendEntries";
        assert!(matches!(decide(internal, &key(Role::Admin), true, false), Err(Refusal::PermissionDenied(_))));
        assert!(matches!(decide(internal, &Caller::Anonymous, true, false), Err(Refusal::Unauthenticated(_))));
        assert_eq!(decide(internal, &Caller::Member(3), true, false), Ok(()));
        // fault injection: absent without its flag, whatever the caller and the mode
        for secure in [true, false] {
            assert!(matches!(
                decide("/shoal.v1.Cluster/SetFaults", &key(Role::Admin), secure, false),
                Err(Refusal::Unimplemented(_))
            ));
        }
        assert_eq!(decide("/shoal.v1.Cluster/SetFaults", &key(Role::Admin), true, true), Ok(()));
        assert!(matches!(
            decide("/shoal.v1.Cluster/SetFaults", &key(Role::Write), true, true),
            Err(Refusal::PermissionDenied(_))
        ));
        // insecure: everything else open; health always open
        assert_eq!(decide(internal, &Caller::Anonymous, false, false), Ok(()));
        assert_eq!(decide("/grpc.health.v1.Health/Check", &Caller::Anonymous, true, false), Ok(()));
    }
}
