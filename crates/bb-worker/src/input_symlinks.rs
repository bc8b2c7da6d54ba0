//! Input symlinks are resolved as the kernel would resolve them in the laid
//! out tree, following the links they pass through (up to the kernel's 40),
//! and any that lands above the input root is rejected. Checking each link
//! alone is not enough: `up -> ../../../..` deep in the tree is harmless by
//! itself, but `out -> a/b/c/d/up/..` leaves the root through it.

use crate::inputs::{InputTree, Node};
use bb_util::Digest;
use bb_util::path::{RelativePath, symlink_stays_inside};
use std::collections::HashMap;
use tonic::Status;

/// Links followed in one resolution before the kernel gives up (ELOOP).
const MAX_HOPS: usize = 40;
/// Path components looked at while checking one input root; a tree that
/// needs more is rejected rather than checked for ever.
const MAX_STEPS: u64 = 20_000_000;

/// Checks one symlink's target by itself: well-formed, relative, and not
/// climbing above the root from where it is.
pub fn check_target(location: &RelativePath, target: &str) -> Result<(), Status> {
    if symlink_stays_inside(location, target) {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "input symlink {:?} points at {target:?}, outside the input root",
        location.to_string()
    )))
}

/// A directory on the resolution path: one of the tree's, or one that does
/// not exist in it (the action may make it; its contents are unknown).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Known(Digest),
    Unknown,
}

struct Escaped;

/// What a name in a directory is, for resolution.
#[derive(Clone, Copy)]
enum Entry<'a> {
    Directory(Digest),
    Symlink(&'a str),
    File,
}

/// Checks every symlink of the tree at every path it is laid out at.
pub fn check(tree: &InputTree) -> Result<(), Status> {
    let mut checker = Checker { tree, has_links: HashMap::new(), names: HashMap::new(), steps: 0 };
    if !checker.has_links(&tree.root) {
        return Ok(());
    }
    let mut path = vec![Step::Known(tree.root)];
    let mut names = Vec::new();
    checker.walk(&tree.root, &mut path, &mut names)
}

struct Checker<'a> {
    tree: &'a InputTree,
    /// Whether a directory holds a symlink anywhere below it.
    has_links: HashMap<Digest, bool>,
    /// The entries, by name, of each directory resolution looked into: a
    /// lookup costs the same however large the directory.
    names: HashMap<Digest, HashMap<&'a str, Entry<'a>>>,
    steps: u64,
}

impl<'a> Checker<'a> {
    fn lookup(&mut self, directory: &Digest, name: &str) -> Option<Entry<'a>> {
        let node: &'a Node = &self.tree.nodes[directory];
        let names = self.names.entry(*directory).or_insert_with(|| {
            let files = node.files.iter().map(|(n, _)| (n.as_str(), Entry::File));
            let directories = node.directories.iter().map(|(n, d)| (n.as_str(), Entry::Directory(*d)));
            let symlinks = node.symlinks.iter().map(|(n, t)| (n.as_str(), Entry::Symlink(t.as_str())));
            files.chain(directories).chain(symlinks).collect()
        });
        names.get(name).copied()
    }

    fn has_links(&mut self, digest: &Digest) -> bool {
        if let Some(known) = self.has_links.get(digest) {
            return *known;
        }
        let node = &self.tree.nodes[digest];
        let children: Vec<Digest> = node.directories.iter().map(|(_, d)| *d).collect();
        let mut found = !node.symlinks.is_empty();
        for child in children {
            found |= self.has_links(&child);
        }
        self.has_links.insert(*digest, found);
        found
    }

    /// Checks the symlinks of the directory at `path` (ancestors included)
    /// and below it.
    fn walk(&mut self, digest: &Digest, path: &mut Vec<Step>, names: &mut Vec<String>) -> Result<(), Status> {
        let node = &self.tree.nodes[digest];
        for (name, target) in &node.symlinks {
            if self.resolve(target, path.clone(), 0).is_err() {
                let location = names.iter().chain([name]).cloned().collect::<Vec<_>>().join("/");
                return Err(Status::invalid_argument(format!(
                    "input symlink {location:?} -> {target:?} resolves outside the input root \
                     (through the symlinks on its way)"
                )));
            }
            if self.steps > MAX_STEPS {
                return Err(Status::invalid_argument(format!(
                    "the symlinks of input root {} take more than {MAX_STEPS} steps to resolve",
                    self.tree.root
                )));
            }
        }
        for (name, child) in &node.directories {
            if !self.has_links(child) {
                continue;
            }
            path.push(Step::Known(*child));
            names.push(name.clone());
            self.walk(child, path, names)?;
            names.pop();
            path.pop();
        }
        Ok(())
    }

    /// Follows `target` from the directory `at` (root first) and returns
    /// where it lands, or `Escaped`.
    fn resolve(&mut self, target: &str, mut at: Vec<Step>, hops: usize) -> Result<Vec<Step>, Escaped> {
        if target.starts_with('/') {
            return Err(Escaped);
        }
        for component in target.split('/') {
            self.steps += 1;
            match component {
                "" | "." => {}
                ".." => {
                    if at.len() == 1 {
                        return Err(Escaped);
                    }
                    at.pop();
                }
                name => {
                    let Step::Known(current) = *at.last().expect("the root is never popped") else {
                        at.push(Step::Unknown);
                        continue;
                    };
                    match self.lookup(&current, name) {
                        Some(Entry::Directory(child)) => at.push(Step::Known(child)),
                        // The kernel stops here (ELOOP): nothing escapes.
                        Some(Entry::Symlink(_)) if hops == MAX_HOPS => return Ok(at),
                        Some(Entry::Symlink(link)) => at = self.resolve(link, at, hops + 1)?,
                        // Nothing resolves through a file (ENOTDIR).
                        Some(Entry::File) => return Ok(at),
                        None => at.push(Step::Unknown),
                    }
                }
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bb_util::DigestFunction;
    use std::sync::Arc;

    /// A tree from (path of a directory, its symlinks) pairs; every
    /// directory named is made, parents included.
    fn tree(links: &[(&str, &[(&str, &str)])]) -> InputTree {
        let mut nodes: HashMap<String, Node> = HashMap::new();
        nodes.insert(String::new(), Node::default());
        for (dir, symlinks) in links {
            let mut path = String::new();
            for part in dir.split('/').filter(|p| !p.is_empty()) {
                let parent = path.clone();
                path = if path.is_empty() { part.to_string() } else { format!("{path}/{part}") };
                if !nodes.contains_key(&path) {
                    nodes.insert(path.clone(), Node::default());
                    let digest = Digest::of(DigestFunction::Sha256, path.as_bytes());
                    nodes.get_mut(&parent).unwrap().directories.push((part.to_string(), digest));
                }
            }
            for (name, target) in *symlinks {
                nodes.get_mut(*dir).unwrap().symlinks.push((name.to_string(), target.to_string()));
            }
        }
        let nodes = nodes
            .into_iter()
            .map(|(path, node)| (Digest::of(DigestFunction::Sha256, path.as_bytes()), Arc::new(node)))
            .collect();
        let root = Digest::of(DigestFunction::Sha256, b"");
        InputTree { root, nodes, keys: Default::default() }
    }

    #[test]
    fn chains_that_leave_together_are_caught() {
        let escaping = tree(&[("a/b/c/d", &[("up", "../../../..")]), ("", &[("out", "a/b/c/d/up/..")])]);
        let error = check(&escaping).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(error.message().contains("\"out\""), "{}", error.message());
        // The same link alone, or used to stay inside, is fine.
        assert!(check(&tree(&[("a/b/c/d", &[("up", "../../../..")])])).is_ok());
        assert!(
            check(&tree(&[("a/b/c/d", &[("up", "../../../..")]), ("", &[("ok", "a/b/c/d/up/a")])])).is_ok()
        );
    }

    #[test]
    fn deeper_chains_loops_and_unknown_components() {
        // Through two links, from a subdirectory.
        let two =
            tree(&[("x", &[("l1", "../y/l2")]), ("y", &[("l2", "..")]), ("z", &[("bad", "../x/l1/..")])]);
        assert!(check(&two).is_err());
        // A loop stops resolution (ELOOP) without escaping.
        assert!(check(&tree(&[("", &[("a", "b"), ("b", "a")])])).is_ok());
        // A directory the action may create later: resolved by name only.
        assert!(check(&tree(&[("d", &[("l", "new/../x")])])).is_ok());
        assert!(check(&tree(&[("", &[("l", "new/../..")])])).is_err());
    }
}
