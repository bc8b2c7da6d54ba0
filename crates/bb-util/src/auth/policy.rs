//! Who may do what, where: rules granting permissions to identities on
//! instance names.

use super::Permission;
use serde::Deserialize;

/// One `[[authentication.policy]]` rule.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The identities granted: certificate names, token names, or the
    /// values of the JWT identity claim. `"*"` is every authenticated
    /// identity.
    pub identities: Vec<String>,
    /// The instance names covered, by whole path components: `"a"` (or
    /// `"a/"`) covers `a` and `a/b`, not `ab`; `""`, the default, covers
    /// every instance.
    #[serde(default)]
    pub instance_prefix: String,
    /// What the identities may do there: `execute`, `read` (CAS and
    /// Action Cache reads), `write-cas`, `write-action-cache`, `worker`
    /// (the worker API; it includes what a worker does to storage: read,
    /// write-cas, write-action-cache) and `admin` (drain and undrain).
    pub permissions: Vec<Permission>,
}

/// Every rule of a program; permissions are the union of the rules that
/// apply.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// Whether `prefix` covers `instance`, component by component.
fn covers(prefix: &str, instance: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match instance.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl Rule {
    fn grants(&self, identity: &str, instance: &str, permission: Permission) -> bool {
        let includes = |held: &Permission| {
            *held == permission
                || (*held == Permission::Worker
                    && matches!(
                        permission,
                        Permission::Read | Permission::WriteCas | Permission::WriteActionCache
                    ))
        };
        self.identities.iter().any(|name| name == "*" || name == identity)
            && covers(&self.instance_prefix, instance)
            && self.permissions.iter().any(includes)
    }
}

impl Policy {
    pub fn new(rules: Vec<Rule>) -> Self {
        Policy { rules }
    }

    pub fn allows(&self, identity: &str, instance: &str, permission: Permission) -> bool {
        self.rules.iter().any(|rule| rule.grants(identity, instance, permission))
    }

    /// Whether `identity` holds `permission` on some instance.
    pub fn allows_anywhere(&self, identity: &str, permission: Permission) -> bool {
        self.rules.iter().any(|rule| rule.grants(identity, &rule.instance_prefix, permission))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(identity: &str, prefix: &str, permissions: &[Permission]) -> Rule {
        Rule {
            identities: vec![identity.into()],
            instance_prefix: prefix.into(),
            permissions: permissions.to_vec(),
        }
    }

    #[test]
    fn prefixes_cover_whole_components() {
        assert!(covers("", "anything"));
        assert!(covers("a/", "a"));
        assert!(covers("a", "a/b"));
        assert!(!covers("a", "ab"));
        assert!(!covers("a/", "b"));
        assert!(!covers("a/b", "a"));
    }

    #[test]
    fn permissions_are_granted_per_identity_and_instance() {
        let policy = Policy::new(vec![
            rule("reader", "", &[Permission::Read]),
            rule("alice", "a", &[Permission::Execute, Permission::WriteCas]),
            rule("w1", "", &[Permission::Worker]),
            rule("*", "public", &[Permission::Read]),
        ]);
        assert!(policy.allows("reader", "b", Permission::Read));
        assert!(!policy.allows("reader", "b", Permission::Execute));
        assert!(policy.allows("alice", "a/x", Permission::Execute));
        assert!(!policy.allows("alice", "b", Permission::Execute));
        assert!(policy.allows("w1", "", Permission::WriteActionCache), "workers write results");
        assert!(!policy.allows("w1", "", Permission::Admin));
        assert!(policy.allows("anyone", "public", Permission::Read));
        assert!(!policy.allows("anyone", "", Permission::Read));
        assert!(policy.allows_anywhere("alice", Permission::Execute));
        assert!(!policy.allows_anywhere("alice", Permission::Worker));
    }
}
