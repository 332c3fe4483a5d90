//! Canonical forms of a request target: what makes two spellings of one
//! URI one resource.
//!
//! - The *resource* of a path is its bytes with every well-formed `%XX`
//!   decoded, `%2F` included, the way a handler's path parameters see them
//!   (axum and `percent-encoding` decode a `%` without two hex digits after
//!   it as itself). `/users/%32`, `/users/2`, `/tags/caf%c3%a9` and
//!   `/tags/caf%C3%A9` are one resource each pair; `/a%2Fb` and `/a/b` are
//!   one too, because a wildcard capture decodes `%2F`: purging both is
//!   what keeps a write through either spelling from leaving the other.
//! - The *route* form (RFC 3986 section 6.2.2) upper-cases the hex digits
//!   of escapes and decodes escapes of unreserved characters, and nothing
//!   else: it decides which declared [`Route`](crate::Route) and purge rule
//!   a path matches, so `/%61dmin` meets the rules of `/admin`.
//! - A query is the list of its `name=value` pairs as `form_urlencoded`
//!   (axum's `Query`, serde) decodes them: `+` is a space, escapes are
//!   decoded, empty pairs are dropped and `a` is `a=`.
//! - An authority is lower-cased, with the scheme's default port dropped.
//!
//! A target whose escapes are malformed (`%zz`, a trailing `%`), or whose
//! decoded path or query is not UTF-8 or holds a NUL, is [`Malformed`]: the
//! layer passes such a GET through uncached, so it never shares an entry
//! with a well-formed target.

use std::borrow::Cow;

/// A target that is not keyed: malformed escapes, or decoded bytes that
/// are not UTF-8 or hold a NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

pub(super) fn hex_val(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The byte of the escape at `at` (`%XX`), if it is a well-formed one.
fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    match bytes.get(at..at + 3) {
        Some([b'%', hi, lo]) => Some(hex_val(*hi)? << 4 | hex_val(*lo)?),
        _ => None,
    }
}

/// Decodes every well-formed `%XX` of `bytes` (and `+` as a space when
/// `plus` is set). A `%` without two hex digits after it stays as it is;
/// the flag says whether there was one. Borrowed when there is nothing to
/// decode.
pub(super) fn decode(bytes: &[u8], plus: bool) -> (Cow<'_, [u8]>, bool) {
    let special = |b: &u8| *b == b'%' || (plus && *b == b'+');
    let Some(first) = bytes.iter().position(special) else {
        return (Cow::Borrowed(bytes), false);
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut malformed = false;
    let mut i = first;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'+' if plus => out.push(b' '),
            b'%' => match escape_at(bytes, i) {
                Some(decoded) => {
                    out.push(decoded);
                    i += 2;
                }
                None => {
                    malformed = true;
                    out.push(b'%');
                }
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    (Cow::Owned(out), malformed)
}

/// Checks what a strict decoder would accept: UTF-8 without NUL.
pub(super) fn well_formed(decoded: &[u8], malformed: bool) -> Result<(), Malformed> {
    if malformed || decoded.contains(&0) || std::str::from_utf8(decoded).is_err() {
        return Err(Malformed);
    }
    Ok(())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The RFC 3986 section 6.2.2 form of a path: escapes' hex digits in upper
/// case, escapes of unreserved characters decoded, everything else as it
/// is. Borrowed when the path is in that form already (no `%`, or only
/// upper-case escapes of reserved bytes).
pub(crate) fn route_form(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    // Most paths hold no `%` at all: one scan for it, then a look at each.
    let Some(first_percent) = bytes.iter().position(|&b| b == b'%') else {
        return Cow::Borrowed(path);
    };
    // A `%` the normal form writes otherwise: a stray one, an escape of an
    // unreserved byte, or one with lower-case hex digits.
    let needs_work = |at: usize| match escape_at(bytes, at) {
        Some(decoded) => {
            is_unreserved(decoded) || bytes[at + 1..at + 3].iter().any(u8::is_ascii_lowercase)
        }
        None => true,
    };
    let Some(first) = (first_percent..bytes.len()).find(|&i| bytes[i] == b'%' && needs_work(i))
    else {
        return Cow::Borrowed(path);
    };
    let mut out = String::with_capacity(path.len());
    out.push_str(&path[..first]);
    let mut i = first;
    while i < bytes.len() {
        match escape_at(bytes, i) {
            Some(decoded) if is_unreserved(decoded) => {
                out.push(char::from(decoded));
                i += 3;
            }
            Some(_) => {
                out.push('%');
                out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                i += 3;
            }
            None => {
                // A `%` that starts no escape is the text `%`, as a lenient
                // decoder reads it: written `%25`, so that what follows can
                // never form an escape with it (`%c%33` is not `%c3`).
                // Then copy up to the next `%` (UTF-8 text is copied whole,
                // `%` being ASCII).
                let mut from = i;
                if bytes[i] == b'%' {
                    out.push_str("%25");
                    from = i + 1;
                }
                let next = bytes[from..]
                    .iter()
                    .position(|&b| b == b'%')
                    .map_or(bytes.len(), |p| from + p);
                out.push_str(&path[from..next]);
                i = next;
            }
        }
    }
    Cow::Owned(out)
}

/// The canonical form of an authority: lower case, without the default
/// port of `scheme` (both 80 and 443 when the scheme is not known, as in
/// an HTTP/1.1 request's `Host`), without an empty port.
pub(crate) fn authority_form<'a>(authority: &'a str, scheme: Option<&str>) -> Cow<'a, str> {
    // One pass over the bytes: the last `:` and whether any is upper case
    // (this runs on every request).
    let (mut colon, mut upper) = (None, false);
    for (i, &byte) in authority.as_bytes().iter().enumerate() {
        match byte {
            b':' => colon = Some(i),
            // An IPv6 literal's colons are inside its brackets.
            b']' => colon = None,
            b'A'..=b'Z' => upper = true,
            _ => {}
        }
    }
    let host = match colon {
        Some(at) => {
            let port = &authority[at + 1..];
            let default = match scheme {
                Some(s) if s.eq_ignore_ascii_case("http") => port == "80",
                Some(s) if s.eq_ignore_ascii_case("https") => port == "443",
                Some(_) => false,
                None => port == "80" || port == "443",
            };
            if port.is_empty() || default {
                &authority[..at]
            } else {
                authority
            }
        }
        None => authority,
    };
    if upper {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// One query parameter, decoded.
pub(super) type Pair<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// The query's parameters as `form_urlencoded` decodes them, in their
/// order; [`Malformed`] for a malformed escape or a decoded name or value
/// that is not UTF-8 or holds a NUL.
pub(super) fn query_pairs(query: &str) -> Result<Vec<Pair<'_>>, Malformed> {
    let mut pairs = Vec::with_capacity(query.bytes().filter(|&b| b == b'&').count() + 1);
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let (name, bad_name) = decode(name.as_bytes(), true);
        let (value, bad_value) = decode(value.as_bytes(), true);
        well_formed(&name, bad_name)?;
        well_formed(&value, bad_value)?;
        pairs.push((name, value));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_lenient_and_says_so() {
        assert_eq!(
            decode(b"/users/2", false),
            (Cow::Borrowed(&b"/users/2"[..]), false)
        );
        assert_eq!(decode(b"/users/%32", false).0.as_ref(), b"/users/2");
        assert_eq!(decode(b"/a%2fb%2F", false).0.as_ref(), b"/a/b/");
        assert_eq!(decode(b"a+b%20c", true).0.as_ref(), b"a b c");
        assert_eq!(decode(b"a+b", false).0.as_ref(), b"a+b");
        for bad in [&b"%zz"[..], b"%", b"%4", b"a%g1"] {
            let (decoded, malformed) = decode(bad, false);
            assert!(malformed, "{bad:?}");
            assert_eq!(decoded.as_ref(), bad);
        }
        assert!(well_formed(b"caf\xc3\xa9", false).is_ok());
        assert!(well_formed(b"\xc0\xaf", false).is_err(), "overlong");
        assert!(well_formed(b"\xff", false).is_err());
        assert!(well_formed(b"a\0b", false).is_err());
        assert!(well_formed(b"ab", true).is_err());
    }

    #[test]
    fn route_form_is_rfc_3986_normalisation() {
        assert!(matches!(route_form("/users/2"), Cow::Borrowed(_)));
        assert!(matches!(route_form("/a%2Fb%3A"), Cow::Borrowed(_)));
        assert_eq!(route_form("/users/%32"), "/users/2");
        assert_eq!(route_form("/%7Ealice/%61dmin"), "/~alice/admin");
        assert_eq!(route_form("/tags/caf%c3%a9"), "/tags/caf%C3%A9");
        assert_eq!(route_form("/a%2fb"), "/a%2Fb");
        assert_eq!(route_form("/é%7e%zz%"), "/é~%25zz%25");
        assert_eq!(route_form("/%41%zz%2f"), "/A%25zz%2F");
        // A stray `%` never makes an escape with what follows it.
        assert_eq!(route_form("/%c%33"), "/%25c3");
        assert_eq!(route_form("/%%36%31dmin"), "/%2561dmin");
        for path in ["/%c%33", "/%%36%31dmin", "/é%7e%zz%", "/a%2fb"] {
            assert_eq!(route_form(&route_form(path)), route_form(path), "{path}");
        }
    }

    #[test]
    fn authorities_lose_case_and_default_ports() {
        assert_eq!(
            authority_form("API.example.com:80", None),
            "api.example.com"
        );
        assert_eq!(
            authority_form("api.example.com:443", None),
            "api.example.com"
        );
        assert_eq!(authority_form("api.example.com:", None), "api.example.com");
        assert_eq!(authority_form("a.b:80", Some("http")), "a.b");
        assert_eq!(authority_form("a.b:80", Some("https")), "a.b:80");
        assert_eq!(authority_form("a.b:443", Some("https")), "a.b");
        assert_eq!(authority_form("a.b:8080", None), "a.b:8080");
        assert_eq!(authority_form("[::1]", None), "[::1]");
        assert_eq!(authority_form("[::1]:80", None), "[::1]");
        assert!(matches!(authority_form("a.b", None), Cow::Borrowed("a.b")));
    }

    #[test]
    fn query_pairs_decode_as_forms_do() {
        let pairs = query_pairs("q=a+b&&%61=1&flag&x=%3D=").unwrap();
        let text: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(n, v)| (n.as_ref(), v.as_ref()))
            .collect();
        assert_eq!(
            text,
            [
                (&b"q"[..], &b"a b"[..]),
                (b"a", b"1"),
                (b"flag", b""),
                (b"x", b"=="),
            ]
        );
        assert_eq!(query_pairs("q=%zz"), Err(Malformed));
        assert_eq!(query_pairs("q=%ff"), Err(Malformed));
        assert_eq!(query_pairs("%00=1"), Err(Malformed));
        assert!(query_pairs("").unwrap().is_empty());
    }
}
