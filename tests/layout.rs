//! Keeps the shape of `src/` as designed. Std only: it reads the sources as
//! text and compiles nothing of the crate.
//!
//! The rules:
//!
//! 1. **No import cycle between files.** An edge `a.rs -> b.rs` is any
//!    `crate::`, `super::` or `self::` path in `a.rs`, in a `use` (grouped or
//!    not) or inline in code, naming an item of `b.rs` (the longest prefix
//!    of the path that is a module file). `src/lib.rs` is the public API and
//!    re-exports from everywhere: edges from it and into it are ignored.
//!    Comments, literals and the test module (`#[cfg(test)]` then
//!    `mod tests`, to the end of the file) are skipped.
//! 2. **Flow rank.** Each top-level module has a rank ([`RANKS`]); a file
//!    imports from its own rank or lower, never higher.
//! 3. **Size.** No file has more than [`MAX_CODE_LINES`] lines of non-test
//!    code, blank and comment-only lines not counted.
//! 4. **The root API.** `src/lib.rs` makes public only what a user types
//!    (and the `http` and `store` modules); a new root name is a decision,
//!    made by changing the list in `the_root_api_is_what_a_user_types`.
//!
//! How to fix a failure:
//!
//! - a cycle, printed `a.rs:12 -> b.rs:30 -> a.rs` (line 12 of `a.rs` names
//!   `b.rs`, line 30 of `b.rs` names `a.rs`): move what both need into a
//!   lower file, or pass it in (a parameter, a trait). A `mod.rs` that
//!   re-exports a child which uses `super::` items is a cycle too: move
//!   those items out of the `mod.rs`;
//! - a rank break: move the code where it belongs, or invert the dependency;
//! - an unknown top-level module: place it deliberately in [`RANKS`];
//! - a long file: split it by concern into a directory module.
//!
//! Not seen: a path through a re-export of `lib.rs` (`crate::Error`: use the
//! module's own path), a child named without `self::`, and `super::` inside
//! an inline module other than the test module.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// The top-level modules by rank: a file imports from its rank or lower.
const RANKS: &[(u32, &[&str])] = &[
    (5, &["http", "aside"]),
    (4, &["purge", "lease", "settings"]),
    (3, &["store"]),
    (2, &["key", "entry"]),
    (1, &["util", "error"]),
];

/// Most lines of non-test code a file of `src/` may have.
const MAX_CODE_LINES: usize = 650;

/// The crate root, exempt from the cycle and rank rules.
const LIB: &str = "src/lib.rs";

/// Sources as (path from the crate root with `/`, text): the real `src/` or
/// a fixture.
type Tree = [(String, String)];

/// A token (`::` is one; a literal is `""`) and its line, 1-based.
type Tok = (String, usize);

/// Paths, each as its segments and the line of its last one.
type Paths = Vec<(Vec<String>, usize)>;

/// One file naming another, at a line of `from`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    line: usize,
}

/// All `.rs` files under `src/`, sorted by path.
fn load_src() -> Vec<(String, String)> {
    let root = option_env!("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let root = root.unwrap_or_else(|| std::env::current_dir().expect("no current directory"));
    let mut files = Vec::new();
    walk(&root, &root.join("src"), &mut files);
    files.sort();
    files
}

fn fail(path: &Path, e: std::io::Error) -> ! {
    panic!(
        "layout test: {}: {e}; run it from the crate root",
        path.display()
    )
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| fail(dir, e)) {
        let path = entry.unwrap_or_else(|e| fail(dir, e)).path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| fail(&path, e));
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
            out.push((rel.join("/"), text));
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where `pat` first starts at or after `from`, else the end.
fn find(c: &[char], from: usize, pat: &[char]) -> usize {
    (from..c.len())
        .find(|&j| c[j..].starts_with(pat))
        .unwrap_or(c.len())
}

/// The tokens of a file before its test module, without comments (a
/// literal is the token `""`), and the lines holding them, each of its lines
/// for a multi-line literal.
fn lex(text: &str) -> (Vec<Tok>, Vec<usize>) {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let lit = || Some(String::from("\"\""));
    let (mut toks, mut lines, mut i, mut line) = (Vec::new(), BTreeSet::new(), 0, 1);
    while i < c.len() {
        // r"..", r#".."#, br"..": where the contents start, and the `#`s.
        let b = usize::from(at(i) == 'b');
        let hashes = c[(i + b + 1).min(c.len())..]
            .iter()
            .take_while(|&&ch| ch == '#');
        let hashes = hashes.count();
        let raw = at(i + b) == 'r' && at(i + b + 1 + hashes) == '"';
        let (end, tok) = if c[i].is_whitespace() {
            (i + 1, None)
        } else if at(i) == '/' && at(i + 1) == '/' {
            (find(&c, i, &['\n']), None)
        } else if at(i) == '/' && at(i + 1) == '*' {
            let (mut j, mut depth) = (i, 0);
            while j < c.len() {
                match (c[j], at(j + 1)) {
                    ('/', '*') => (depth, j) = (depth + 1, j + 2),
                    ('*', '/') => (depth, j) = (depth - 1, j + 2),
                    _ => j += 1,
                }
                if depth == 0 {
                    break;
                }
            }
            (j, None)
        } else if raw {
            let close: Vec<char> = "\"".chars().chain("#".repeat(hashes).chars()).collect();
            (find(&c, i + b + hashes + 2, &close) + close.len(), lit())
        } else if at(i) == '"' || (at(i) == 'b' && at(i + 1) == '"') {
            let mut j = i + 1 + b;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            (j + 1, lit())
        } else if at(i) == '\'' && at(i + 1) == '\\' {
            (find(&c, i + 3, &['\'']) + 1, lit()) // '\n', '\'', '\u{..}'
        } else if at(i) == '\'' && at(i + 2) == '\'' {
            (i + 3, lit()) // else a lifetime, whose `'` is a token
        } else if is_ident(c[i]) {
            let len = c[i..].iter().take_while(|&&ch| is_ident(ch)).count();
            (i + len, Some(c[i..i + len].iter().collect()))
        } else if at(i) == ':' && at(i + 1) == ':' {
            (i + 2, Some(String::from("::")))
        } else {
            (i + 1, Some(c[i].to_string()))
        };
        let end = end.min(c.len());
        let newlines = c[i..end].iter().filter(|&&ch| ch == '\n').count();
        if let Some(tok) = tok {
            lines.extend(line..=line + newlines);
            toks.push((tok, line));
        }
        (i, line) = (end, line + newlines);
    }
    if let Some(k) = (0..toks.len()).find(|&k| is_test_module(&toks[k..])) {
        let cut = toks[k].1;
        toks.truncate(k);
        lines.retain(|&l| l < cut);
    }
    (toks, lines.into_iter().collect())
}

/// Whether the tokens start `#[cfg(test)]`, other attributes, `mod tests`.
fn is_test_module(toks: &[Tok]) -> bool {
    let t = |i: usize| toks.get(i).map_or("", |t| t.0.as_str());
    if (0..7).map(t).ne(["#", "[", "cfg", "(", "test", ")", "]"]) {
        return false;
    }
    let mut i = 7;
    while t(i) == "#" && t(i + 1) == "[" {
        i += (i..toks.len())
            .position(|j| t(j) == "]")
            .map_or(toks.len(), |p| p + 1);
    }
    t(i) == "mod" && t(i + 1) == "tests"
}

/// Every `crate::`, `super::` or `self::` path in the tokens, a grouped
/// `use` split into its leaves, each with the line of its last segment.
fn paths(toks: &[Tok]) -> Paths {
    let t = |i: usize| toks.get(i).map_or("", |t| t.0.as_str());
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts = matches!(t(i), "crate" | "super" | "self")
            && t(i + 1) == "::"
            && t(i.wrapping_sub(1)) != "::"
            // `pub(in crate::a)` is a visibility, not an import.
            && !(t(i.wrapping_sub(1)) == "in" && t(i.wrapping_sub(2)) == "(");
        i = if starts {
            use_tree(toks, i, Vec::new(), &mut out)
        } else {
            i + 1
        };
    }
    out
}

/// Parses the path or use tree at `i` under `segs`; returns where it ends.
fn use_tree(toks: &[Tok], mut i: usize, mut segs: Vec<String>, out: &mut Paths) -> usize {
    let t = |i: usize| toks.get(i).map_or("", |t| t.0.as_str());
    let mut line = toks.get(i).map_or(0, |t| t.1);
    loop {
        if t(i) == "{" {
            i += 1;
            while !matches!(t(i), "}" | "") {
                i = use_tree(toks, i, segs.clone(), out).max(i + 1);
                i += usize::from(t(i) == ",");
            }
            return i + 1;
        }
        if t(i) == "*" || t(i).starts_with(is_ident) {
            line = toks[i].1;
            segs.extend((t(i) != "*").then(|| t(i).to_string()));
            i += 1;
        }
        if t(i) != "::" {
            i += if t(i) == "as" { 2 } else { 0 };
            break;
        }
        i += 1;
    }
    out.push((segs, line));
    i
}

/// The module of a file: `src/store/redis/read.rs` is `store::redis::read`,
/// `src/store/redis/mod.rs` is `store::redis`, `src/lib.rs` the root.
fn module_of(path: &str) -> Vec<String> {
    let rel = path
        .strip_prefix("src/")
        .unwrap_or(path)
        .trim_end_matches(".rs");
    let mut segs: Vec<String> = rel.split('/').map(String::from).collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib")) {
        segs.pop();
    }
    segs
}

/// The file a path in `from` names: the longest prefix of the absolute
/// path that is a module file (`a/b.rs` or `a/b/mod.rs`, then `a.rs`, ...);
/// `None` for the crate root.
fn resolve(files: &BTreeSet<&str>, from: &str, path: &[String]) -> Option<String> {
    let mut module = module_of(from);
    for (n, seg) in path.iter().enumerate() {
        match seg.as_str() {
            "crate" if n == 0 => module.clear(),
            "super" => drop(module.pop()?),
            "self" => {}
            _ => module.push(seg.clone()),
        }
    }
    (1..=module.len()).rev().find_map(|n| {
        let base = format!("src/{}", module[..n].join("/"));
        let names = [format!("{base}.rs"), format!("{base}/mod.rs")];
        names.into_iter().find(|f| files.contains(f.as_str()))
    })
}

/// Every file naming another, lib.rs excluded both ways.
fn edges(tree: &Tree) -> Vec<Edge> {
    let files: BTreeSet<&str> = tree.iter().map(|(p, _)| p.as_str()).collect();
    let mut edges = BTreeSet::new();
    for (from, text) in tree.iter().filter(|(p, _)| p != LIB) {
        for (path, line) in paths(&lex(text).0) {
            if let Some(to) = resolve(&files, from, &path).filter(|to| to != from && to != LIB) {
                edges.insert(Edge {
                    from: from.clone(),
                    to,
                    line,
                });
            }
        }
    }
    edges.into_iter().collect()
}

/// The cycles of the graph, printed `a.rs:LINE -> b.rs:LINE -> a.rs`: for
/// each edge on a cycle, the shortest cycle through it.
fn cycles(edges: &[Edge]) -> Vec<String> {
    let mut graph: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for e in edges {
        let targets = graph.entry(&e.from).or_default();
        targets.entry(&e.to).or_insert(e.line); // the first line naming it
    }
    let mut found = BTreeSet::new();
    for (&from, targets) in &graph {
        for &to in targets.keys() {
            // Breadth first from `to` back to `from`.
            let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
            let mut queue = VecDeque::from([to]);
            while let Some(node) = queue.pop_front().filter(|&n| n != from) {
                for &next in graph.get(node).into_iter().flat_map(|t| t.keys()) {
                    if next != to && !parent.contains_key(next) {
                        parent.insert(next, node);
                        queue.push_back(next);
                    }
                }
            }
            if parent.contains_key(from) {
                let mut cycle = vec![from];
                while let Some(&p) = parent.get(cycle[cycle.len() - 1]) {
                    cycle.push(p);
                }
                cycle.reverse();
                let first = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                cycle.rotate_left(first);
                found.insert(cycle);
            }
        }
    }
    let hop = |c: &[&str], i: usize| format!("{}:{}", c[i], graph[c[i]][c[(i + 1) % c.len()]]);
    let show = |c: Vec<&str>| {
        let hops: Vec<String> = (0..c.len()).map(|i| hop(&c, i)).collect();
        format!("{} -> {}", hops.join(" -> "), c[0])
    };
    found.into_iter().map(show).collect()
}

/// The rank of a top-level module, if [`RANKS`] has it.
fn rank(module: &str) -> Option<u32> {
    let (rank, _) = RANKS
        .iter()
        .find(|(_, modules)| modules.contains(&module))?;
    Some(*rank)
}

/// The first segment under `src/` of a file.
fn top(path: &str) -> String {
    module_of(path).into_iter().next().unwrap_or_default()
}

/// Top-level modules missing from [`RANKS`], and imports of a higher rank
/// (edges from or to a module missing from the table are not checked).
fn rank_violations(tree: &Tree, edges: &[Edge]) -> Vec<String> {
    let mut unknown: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (path, _) in tree
        .iter()
        .filter(|(p, _)| p != LIB && rank(&top(p)).is_none())
    {
        unknown.entry(top(path)).or_default().push(path);
    }
    let add = "is not in the rank table: add it to RANKS";
    let unknown = unknown
        .iter()
        .map(|(m, f)| format!("module `{m}` ({}) {add}", f.join(", ")));
    let mut out: Vec<String> = unknown.collect();
    for e in edges {
        let (from, to) = (top(&e.from), top(&e.to));
        let (Some(rf), Some(rt)) = (rank(&from), rank(&to)) else {
            continue;
        };
        if rt > rf {
            let what = format!("`{from}` (rank {rf}) imports `{to}` (rank {rt})");
            out.push(format!("{}:{}: {what} from {}", e.from, e.line, e.to));
        }
    }
    out
}

/// Files with more than `limit` lines of non-test code.
fn size_violations(tree: &Tree, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in tree {
        let lines = lex(text).1;
        if lines.len() > limit {
            let (n, over) = (lines.len(), lines[limit]);
            let what = format!("{n} lines of non-test code, limit {limit}");
            out.push(format!("{path}: {what} (passed at line {over})"));
        }
    }
    out
}

/// Panics listing every violation, if there is any.
fn assert_none(what: &str, fix: &str, violations: Vec<String>) {
    if !violations.is_empty() {
        let list: String = violations.iter().map(|v| format!("\n  - {v}")).collect();
        let n = violations.len();
        panic!("{n} {what}:{list}\n{fix}: see the top of tests/layout.rs");
    }
}

#[test]
fn no_import_cycle_between_files() {
    let cycles = cycles(&edges(&load_src()));
    assert_none("import cycles", "break each cycle", cycles);
}

#[test]
fn imports_follow_the_flow_rank() {
    let tree = load_src();
    let broken = rank_violations(&tree, &edges(&tree));
    assert_none(
        "rank violations",
        "import from the same rank or lower",
        broken,
    );
}

#[test]
fn files_stay_small() {
    let long = size_violations(&load_src(), MAX_CODE_LINES);
    assert_none("files too long", "split them by concern", long);
}

/// The names the crate root makes public, as `src/lib.rs` declares them:
/// `pub mod` and the leaves of `pub use`, leaving out what only the
/// crate-private `_internal` feature turns on.
fn root_api(lib: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut internal = false;
    let mut statement = String::new();
    for line in lib.lines().map(str::trim) {
        if line.starts_with("//") {
            continue;
        }
        if statement.is_empty() {
            if line == "#[cfg(feature = \"_internal\")]" {
                internal = true;
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            if !(line.starts_with("pub use ") || line.starts_with("pub mod ")) {
                internal = false;
                continue;
            }
        }
        statement.push_str(line);
        if !statement.ends_with(';') {
            continue;
        }
        let body = statement.trim_end_matches(';');
        if !internal {
            if let Some(module) = body.strip_prefix("pub mod ") {
                names.insert(module.trim().to_owned());
            } else {
                let path = body.trim_start_matches("pub use ");
                let leaves = match path.split_once('{') {
                    Some((_, group)) => group.trim_end_matches('}').to_owned(),
                    None => path.rsplit("::").next().unwrap_or(path).to_owned(),
                };
                for leaf in leaves.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                    names.insert(leaf.rsplit(' ').next().unwrap_or(leaf).to_owned());
                }
            }
        }
        statement.clear();
        internal = false;
    }
    names
}

#[test]
fn the_root_api_is_what_a_user_types() {
    let tree = load_src();
    let lib = tree
        .iter()
        .find(|(path, _)| path == LIB)
        .map(|(_, text)| text.as_str())
        .expect("src/lib.rs");
    let expected: BTreeSet<String> = [
        "CacheAsideLayer",
        "Builder",
        "Route",
        "Freshness",
        "Purger",
        "Cache",
        "CacheBuilder",
        "codec",
        "Error",
        "RedisStore",
        "MemoryStore",
        "Store",
        "IntoStore",
        "http",
        "store",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(
        root_api(lib),
        expected,
        "the crate root shows what a user types; backend types go under `store`, \
         named-only types under `http`, test and bench hooks behind `_internal`"
    );
}

/// The checker's own logic, on small trees in memory.
mod self_test {
    use super::*;

    #[test]
    fn root_api_reads_groups_and_leaves_internal_items_out() {
        let lib = "//! docs: pub use nothing::Here;\nmod private;\npub mod http;\n\
                   #[cfg(feature = \"_internal\")]\n#[doc(hidden)]\npub use self::http::bench_api;\n\
                   pub use self::a::{B,\n    C};\npub use self::d::E;\n";
        let names: Vec<String> = root_api(lib).into_iter().collect();
        assert_eq!(names, ["B", "C", "E", "http"]);
    }

    /// A tree from a spec: a line `== a.rs b.rs` starts files, all but the
    /// last empty; the next lines, trimmed, are the last one's text.
    fn tree(spec: &str) -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = Vec::new();
        for line in spec.lines().map(str::trim) {
            if let Some(paths) = line.strip_prefix("== ") {
                files.extend(
                    paths
                        .split_whitespace()
                        .map(|p| (p.to_string(), String::new())),
                );
            } else if let Some((_, text)) = files.last_mut() {
                text.push_str(line);
                text.push('\n');
            }
        }
        files
    }

    /// The edges of a tree, printed `from:line -> to`.
    fn edge_list(spec: &str) -> Vec<String> {
        let edges = edges(&tree(spec));
        edges
            .iter()
            .map(|e| format!("{}:{} -> {}", e.from, e.line, e.to))
            .collect()
    }

    #[test]
    fn a_two_file_cycle_is_found_and_lib_rs_is_exempt() {
        let t = tree(
            "== src/lib.rs
            mod a;
            pub use self::a::A;
            pub use self::b::B;
            == src/a.rs
            use crate::b::B;
            use crate::Error;
            == src/b.rs
            pub struct B;

            fn f() { crate::a::g() }
            == src/c.rs
            use crate::a::A;",
        );
        assert_eq!(cycles(&edges(&t)), ["src/a.rs:1 -> src/b.rs:3 -> src/a.rs"]);
    }

    #[test]
    fn a_grouped_multi_line_use_resolves_each_leaf() {
        let edges = edge_list(
            "== src/lib.rs src/a.rs src/c/mod.rs src/c/e.rs
            == src/util/mod.rs src/util/time.rs src/x.rs
            pub use crate::{
                a::B,
                c::{D, e::E as F},
            };
            pub(crate) use crate::util::{self, time::*};",
        );
        let expected = [
            "src/x.rs:2 -> src/a.rs",
            "src/x.rs:3 -> src/c/e.rs",
            "src/x.rs:3 -> src/c/mod.rs",
            "src/x.rs:5 -> src/util/mod.rs",
            "src/x.rs:5 -> src/util/time.rs",
        ];
        assert_eq!(edges, expected);
    }

    #[test]
    fn comments_and_literals_are_ignored() {
        let spec = r##"== src/lib.rs src/a.rs src/b.rs src/x.rs
            //! use tower_cache_aside::x;
            //! use crate::a::X;
            /// crate::a::f()
            /* crate::a /* nested */ crate::a */
            const S: &str = "crate::a \" crate::a";
            const R: &str = r#"crate::a "# ;
            fn f<'a>(x: &'a str) -> char { '"' }
            fn g() -> u8 { b'\'' }
            use crate::b::B;"##;
        assert_eq!(edge_list(spec), ["src/x.rs:9 -> src/b.rs"]);
        assert!(
            size_violations(&tree(spec), 5).is_empty(),
            "comment lines counted"
        );
        let over = "src/x.rs: 5 lines of non-test code, limit 4 (passed at line 9)";
        assert_eq!(size_violations(&tree(spec), 4), [over]);
    }

    #[test]
    fn the_test_module_is_ignored() {
        let spec = "== src/lib.rs src/a.rs src/b.rs src/c.rs src/x.rs
            use crate::a::A;

            #[cfg(test)]
            fn helper() { crate::b::f() }
            #[cfg(test)]
            #[allow(unused)]
            mod tests {
                use crate::c::C;
            }";
        assert_eq!(
            edge_list(spec),
            ["src/x.rs:1 -> src/a.rs", "src/x.rs:4 -> src/b.rs"]
        );
        assert!(
            size_violations(&tree(spec), 3).is_empty(),
            "the test module counted"
        );
    }

    #[test]
    fn super_resolves_from_a_mod_rs_and_from_a_leaf() {
        let edges = edge_list(
            "== src/lib.rs src/key.rs src/store/memory.rs src/store/redis/names.rs
            == src/store/mod.rs
            use super::key::K;
            mod redis;
            pub use self::redis::Redis;
            == src/store/redis/mod.rs
            use super::Store;
            mod names;
            == src/store/redis/read.rs
            use super::names::N;
            fn f() { super::super::memory::M::new() }",
        );
        let expected = [
            "src/store/mod.rs:1 -> src/key.rs",
            "src/store/mod.rs:3 -> src/store/redis/mod.rs",
            "src/store/redis/mod.rs:1 -> src/store/mod.rs",
            "src/store/redis/read.rs:2 -> src/store/memory.rs",
            "src/store/redis/read.rs:1 -> src/store/redis/names.rs",
        ];
        assert_eq!(edges, expected);
    }

    #[test]
    fn ranks_flag_higher_imports_and_unknown_modules() {
        let t = tree(
            "== src/lib.rs src/key.rs src/http/mod.rs src/lease.rs
            use crate::store::S;
            == src/store/mod.rs

            use crate::lease::L;
            use crate::key::K;
            == src/aside/mod.rs
            use crate::http::H;
            == src/extra.rs
            use crate::aside::A;",
        );
        let expected = [
            "module `extra` (src/extra.rs) is not in the rank table: add it to RANKS",
            "src/store/mod.rs:2: `store` (rank 3) imports `lease` (rank 4) from src/lease.rs",
        ];
        assert_eq!(rank_violations(&t, &edges(&t)), expected);
    }
}
