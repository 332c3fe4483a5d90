//! The declared purge rules (`purge_on`): a method and a route template,
//! and the targets a matching write purges, with the template's
//! parameters substituted. Request text fills a parameter's place only:
//! it never widens a pattern.

use http::Method;

use crate::key::{KeyConfig, ResourceKey, ResourcePattern};
use crate::Error;

/// One thing to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purge {
    Resource(ResourceKey),
    Pattern(ResourcePattern),
}

impl Purge {
    /// Whether this purge covers the resource.
    pub(crate) fn covers(&self, resource: &ResourceKey) -> bool {
        match self {
            Purge::Resource(r) => r == resource,
            Purge::Pattern(p) => p.prefix() == resource.prefix() && p.matches(resource.resource()),
        }
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    Param(String),
    Wildcard,
}

/// A parsed purge target, such as `/users/{id}` or `/teams/*/members`.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pieces: Vec<Piece>,
}

impl Target {
    /// Parses `text`; every `{name}` must be one of `params`.
    fn parse(text: &str, params: &[String]) -> Result<Target, String> {
        if !text.starts_with('/') {
            return Err(format!("target `{text}` does not start with `/`"));
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(format!("target `{text}` has an unclosed `{{`"));
                    }
                    let name = name.trim_start_matches('*');
                    if name.is_empty() {
                        return Err(format!("target `{text}` has an empty or unclosed `{{}}`"));
                    }
                    if !params.iter().any(|p| p == name) {
                        return Err(format!(
                            "target `{text}` uses `{{{name}}}`, which the rule's template does not capture"
                        ));
                    }
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    pieces.push(Piece::Param(name.to_owned()));
                }
                '}' => return Err(format!("target `{text}` has a `}}` without `{{`")),
                '*' => {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    pieces.push(Piece::Wildcard);
                }
                c => literal.push(c),
            }
        }
        pieces.push(Piece::Literal(literal));
        pieces.retain(|p| !matches!(p, Piece::Literal(l) if l.is_empty()));
        Ok(Target { pieces })
    }

    /// The purge for one request: parameters substituted from `params`.
    fn render(&self, keys: &KeyConfig, params: &matchit::Params<'_, '_>) -> Purge {
        let value = |piece: &Piece| -> Option<String> {
            match piece {
                Piece::Literal(text) => Some(text.clone()),
                Piece::Param(name) => Some(params.get(name).unwrap_or_default().to_owned()),
                Piece::Wildcard => None,
            }
        };
        if self.pieces.iter().any(|p| matches!(p, Piece::Wildcard)) {
            let values: Vec<Option<String>> = self.pieces.iter().map(value).collect();
            Purge::Pattern(keys.path_pattern(values.iter().map(|v| v.as_deref())))
        } else {
            let path: String = self.pieces.iter().filter_map(value).collect();
            Purge::Resource(keys.resource_key(&path))
        }
    }
}

/// The declared purge rules, by method.
#[derive(Default)]
pub(crate) struct PurgeRules {
    by_method: Vec<(Method, matchit::Router<Vec<Target>>)>,
}

impl std::fmt::Debug for PurgeRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.by_method.iter().map(|(m, _)| m))
            .finish()
    }
}

impl PurgeRules {
    /// Adds a rule; fails on a bad template, a bad target or a duplicate.
    pub(crate) fn add(
        &mut self,
        method: Method,
        template: &str,
        targets: &[String],
    ) -> Result<(), Error> {
        let invalid = |reason: String| Error::InvalidRoute {
            template: template.to_owned(),
            reason,
        };
        if !template.starts_with('/') {
            return Err(invalid("a template starts with `/`".into()));
        }
        let params = template_params(template);
        let targets = targets
            .iter()
            .map(|t| Target::parse(t, &params))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        let index = match self.by_method.iter().position(|(m, _)| *m == method) {
            Some(index) => index,
            None => {
                self.by_method
                    .push((method.clone(), matchit::Router::new()));
                self.by_method.len() - 1
            }
        };
        self.by_method[index]
            .1
            .insert(template, targets)
            .map_err(|e| invalid(format!("purge rule for {method}: {e}")))
    }

    /// The rule targets for a request, rendered.
    pub(crate) fn targets(&self, keys: &KeyConfig, method: &Method, path: &str) -> Vec<Purge> {
        let Some((_, router)) = self.by_method.iter().find(|(m, _)| m == method) else {
            return Vec::new();
        };
        // In the path's RFC 3986 normal form: `/us%65rs/2` meets the rules
        // of `/users/{id}`; the parameters are decoded when their targets
        // become resources.
        let path = crate::key::route_form(path);
        match router.at(&path) {
            Ok(matched) => matched
                .value
                .iter()
                .map(|t| t.render(keys, &matched.params))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Names of the parameters a template captures (`{id}`, `{*rest}`).
fn template_params(template: &str) -> Vec<String> {
    template
        .split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}'))
        .map(|(name, _)| name.trim_start_matches('*').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn keys() -> KeyConfig {
        KeyConfig {
            prefix: Arc::from("t:"),
            include_authority: true,
            query: crate::key::QueryKey::All,
            vary_by: Vec::new(),
        }
    }

    fn rules(method: Method, template: &str, targets: &[&str]) -> Result<PurgeRules, Error> {
        let mut rules = PurgeRules::default();
        let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
        rules.add(method, template, &targets)?;
        Ok(rules)
    }

    fn resource(path: &str) -> Purge {
        Purge::Resource(keys().resource_key(path))
    }

    #[test]
    fn parameters_are_substituted_into_targets() {
        let rules = rules(
            Method::PUT,
            "/users/{id}",
            &["/users/{id}", "/users", "/teams/*/members"],
        )
        .unwrap();
        let purges = rules.targets(&keys(), &Method::PUT, "/users/42");
        assert_eq!(purges[0], resource("/users/42"));
        assert_eq!(purges[1], resource("/users"));
        assert!(matches!(&purges[2], Purge::Pattern(p) if p.pattern() == "/teams/*/members"));
        assert!(rules
            .targets(&keys(), &Method::POST, "/users/42")
            .is_empty());
        assert!(rules.targets(&keys(), &Method::PUT, "/teams/1").is_empty());
    }

    #[test]
    fn request_text_cannot_widen_a_pattern() {
        let rules = rules(Method::DELETE, "/users/{id}", &["/users/{id}/*"]).unwrap();
        let purges = rules.targets(&keys(), &Method::DELETE, "/users/*");
        assert!(matches!(&purges[0], Purge::Pattern(p) if p.pattern() == "/users/%2A/*"));
        let rules2 = PurgeRules::default();
        assert!(rules2.targets(&keys(), &Method::DELETE, "/x").is_empty());
    }

    #[test]
    fn bad_rules_fail_at_build() {
        assert!(rules(Method::PUT, "/users/{id}", &["/users/{name}"]).is_err());
        assert!(rules(Method::PUT, "/users/{id}", &["users"]).is_err());
        assert!(rules(Method::PUT, "/users/{id}", &["/users/{id"]).is_err());
        assert!(rules(Method::PUT, "/users/{id}", &["/users/id}"]).is_err());
        assert!(rules(Method::PUT, "users/{id}", &["/users"]).is_err());
        let mut twice = rules(Method::PUT, "/users/{id}", &["/users"]).unwrap();
        assert!(twice
            .add(Method::PUT, "/users/{id}", &["/x".into()])
            .is_err());
        assert!(twice
            .add(Method::POST, "/users/{id}", &["/x".into()])
            .is_ok());
    }

    #[test]
    fn rules_match_and_render_every_spelling() {
        let rules = rules(
            Method::PUT,
            "/users/{id}",
            &["/users/{id}", "/teams/{id}/*"],
        )
        .unwrap();
        for spelling in ["/users/2", "/users/%32", "/us%65rs/2", "/%75sers/%32"] {
            let purges = rules.targets(&keys(), &Method::PUT, spelling);
            assert_eq!(purges.len(), 2, "{spelling}");
            assert_eq!(purges[0], resource("/users/2"), "{spelling}");
            assert!(purges[1].covers(&keys().resource_key("/teams/2/members")));
        }
        let purges = rules.targets(&keys(), &Method::PUT, "/users/caf%c3%a9");
        assert_eq!(purges[0], resource("/users/caf%C3%A9"));
        assert!(purges[1].covers(&keys().resource_key("/teams/caf%C3%A9/x")));
    }

    #[test]
    fn catch_all_parameters_substitute_too() {
        let rules = rules(
            Method::POST,
            "/files/{*path}",
            &["/files/{path}", "/index/{*path}"],
        )
        .unwrap();
        let purges = rules.targets(&keys(), &Method::POST, "/files/a/b.txt");
        assert_eq!(
            purges,
            vec![resource("/files/a/b.txt"), resource("/index/a/b.txt")]
        );
    }
}
