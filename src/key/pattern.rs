//! [`ResourcePattern`]: a glob over encoded paths, and its matching.

use std::sync::Arc;

/// Readable head kept when a resource is hashed.
pub(super) const HASHED_HEAD_LEN: usize = 256;

/// A set of resources named by a glob over encoded paths, for purges.
///
/// `*` is the only wildcard and matches any run of characters, `/`
/// included. Every other character is literal: the path encoding leaves no
/// other glob character in a resource, and text taken from a request is
/// encoded the same way, so it can never widen the pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourcePattern {
    prefix: Arc<str>,
    pattern: String,
}

impl ResourcePattern {
    /// A pattern over encoded paths under `prefix`.
    pub(super) fn new(prefix: Arc<str>, pattern: String) -> ResourcePattern {
        ResourcePattern { prefix, pattern }
    }

    /// The key prefix configured on the layer.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pattern over encoded paths; `*` is its only special character.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern may match a resource: exactly for a resource
    /// kept verbatim; for a long resource kept as `<head>#<hash>`, whenever
    /// some path starting with its head would match (an over-approximation:
    /// purging too much is safe, too little is not).
    pub fn matches(&self, resource: &str) -> bool {
        match resource.split_once('#') {
            Some((head, _hash)) => glob_match_prefix(self.pattern.as_bytes(), head.as_bytes()),
            None => glob_match(self.pattern.as_bytes(), resource.as_bytes()),
        }
    }

    /// The literal start of the pattern (up to its first `*`), cut to the
    /// head a long resource keeps: every resource the pattern
    /// [`matches`](Self::matches) starts with it. A store that scans for
    /// candidates matches on `<this>*` and filters with `matches`.
    pub fn literal_prefix(&self) -> &str {
        let literal = self.pattern.split('*').next().unwrap_or("");
        &literal[..literal.len().min(HASHED_HEAD_LEN)]
    }
}

/// Matches `text` against `pattern`, where `*` matches any run of bytes.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    glob_walk(pattern, text, false)
}

/// Whether some text starting with `head` matches `pattern`.
fn glob_match_prefix(pattern: &[u8], head: &[u8]) -> bool {
    glob_walk(pattern, head, true)
}

fn glob_walk(pattern: &[u8], text: &[u8], prefix_only: bool) -> bool {
    // Classic greedy match with one backtrack point: O(len(pattern) * len(text)).
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    // All of the text is consumed: as a prefix, the rest of the pattern can
    // always be met by what follows.
    prefix_only || pattern[p..].iter().all(|&b| b == b'*')
}
