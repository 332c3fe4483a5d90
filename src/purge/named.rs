//! [`PurgePaths`]: the resources a write's handler says it changed.

/// A response extension with which the handler of a write names more paths
/// it made stale: the layer purges them with the write's own path and its
/// rules' targets, before the response is returned, then removes the
/// extension.
///
/// It is for what no rule can know: an app that reads `/users/02` and
/// `/users/2` as one user (both parse to the integer 2) changes the
/// resource `/users/2` through either spelling, and only the handler knows
/// which resources its answer stands for.
///
/// Paths are written as they appear in request targets (percent-encoded);
/// any spelling of one resource purges every spelling of it.
///
/// ```
/// use axum::extract::Path;
/// use axum::response::IntoResponse;
/// use axum::Extension;
/// use tower_cache_aside::http::PurgePaths;
///
/// async fn update_user(Path(id): Path<u64>) -> impl IntoResponse {
///     // ... store the change for user `id` ...
///     // `/users/007` and `/users/7` are one user: purge the canonical one.
///     (Extension(PurgePaths::new().path(format!("/users/{id}"))), "updated")
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgePaths {
    paths: Vec<String>,
}

impl PurgePaths {
    /// No paths yet.
    pub fn new() -> PurgePaths {
        PurgePaths::default()
    }

    /// Adds a path to purge (every variant of it), as it appears in a
    /// request target.
    pub fn path(mut self, path: impl Into<String>) -> PurgePaths {
        self.paths.push(path.into());
        self
    }

    /// The paths named so far.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(String::as_str)
    }
}

impl<S: Into<String>> FromIterator<S> for PurgePaths {
    fn from_iter<I: IntoIterator<Item = S>>(paths: I) -> PurgePaths {
        PurgePaths {
            paths: paths.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PurgePaths;

    #[test]
    fn paths_are_kept_in_order() {
        let built = PurgePaths::new()
            .path("/users/2")
            .path(String::from("/users"));
        let collected: PurgePaths = ["/users/2", "/users"].into_iter().collect();
        assert_eq!(built, collected);
        assert_eq!(built.paths().collect::<Vec<_>>(), ["/users/2", "/users"]);
    }
}
