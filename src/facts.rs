//! What a run knows once it has a checkout, gathered in one place: the app, the version the
//! checkout carries, and each environment's manifest as it would be deployed there. The
//! preflight judges these facts and the stages borrow them, so that what was checked is what
//! runs. The bump changes the checkout (the version in every file), so the facts are gathered
//! again after it.

use std::path::Path;

use anyhow::Result;
use indexmap::IndexMap;

use crate::app::App;
use crate::app_manifest::Resolved;
use crate::bump;
use crate::error::user_error;
use crate::exec::Exec;
use crate::repo_url::RepoUrl;

pub struct Facts {
    pub app: App,
    /// The repository the app comes from: with its name, what tells it from another app of
    /// the same name on one machine (see [`origin_of`]).
    pub origin: String,
    /// The version the checkout carries, or why it cannot be read.
    version: Result<String, String>,
    /// Each environment's manifest, resolved with its values, or why it cannot be.
    manifests: IndexMap<String, Result<Resolved, String>>,
}

impl Facts {
    pub fn gather(exec: &Exec, dir: &Path) -> Result<Facts> {
        let app = App::load(dir)?;
        let origin = origin_of(exec, dir);
        let version = bump::read_version(&app.dir, &app.loaded)
            .map(|facts| facts.current.to_string())
            .map_err(|err| format!("{err:#}"));
        let mut manifests = IndexMap::new();
        for name in app.envs.keys() {
            let resolved = app
                .target(name)
                .and_then(|target| app.manifest_for(&target))
                .map_err(|err| format!("{err:#}"));
            manifests.insert(name.clone(), resolved);
        }
        Ok(Facts {
            app,
            origin,
            version,
            manifests,
        })
    }

    /// The version the checkout carries.
    pub fn version(&self) -> Result<&str> {
        self.version
            .as_deref()
            .map_err(|err| user_error(err.to_string()))
    }

    /// The manifest as it would be deployed to `env`.
    pub fn manifest(&self, env: &str) -> Result<&Resolved> {
        match self.manifests.get(env) {
            Some(Ok(resolved)) => Ok(resolved),
            Some(Err(err)) => Err(user_error(err.clone())),
            // The error that lists the environments there are.
            None => Err(self
                .app
                .target(env)
                .err()
                .unwrap_or_else(|| user_error(format!("there is no environment `{env}`")))),
        }
    }
}

/// The checkout's `origin` URL (without credentials), else the checkout's own folder. A
/// release's clone has the released repository as its origin, and so does a developer's checkout
/// of it: both give the same answer.
pub fn origin_of(exec: &Exec, dir: &Path) -> String {
    if let Ok(url) = exec.query(xshell::cmd!(
        exec.sh(),
        "git -C {dir} remote get-url origin"
    )) {
        if !url.is_empty() {
            return normalized(dir, RepoUrl::parse(&url).url());
        }
    }
    exec.query(xshell::cmd!(
        exec.sh(),
        "git -C {dir} rev-parse --show-toplevel"
    ))
    .ok()
    .filter(|top| !top.is_empty())
    .unwrap_or_else(|| dir.display().to_string())
}

/// A local path as a clone records it (absolute, symbolic links resolved), so that a checkout
/// whose origin is `../app.git` and a release's clone of it agree; URLs (`https://...`,
/// `git@host:path`) as they are.
fn normalized(dir: &Path, url: &str) -> String {
    let scp_like = url
        .split_once(':')
        .is_some_and(|(host, _)| !host.contains('/'));
    if url.contains("://") || scp_like {
        return url.to_string();
    }
    std::fs::canonicalize(dir.join(url))
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_that_are_paths_are_made_absolute_and_urls_kept() {
        let root = tempfile::tempdir().unwrap();
        let checkout = root.path().join("app");
        std::fs::create_dir_all(root.path().join("app.git")).unwrap();
        std::fs::create_dir_all(&checkout).unwrap();
        let absolute = std::fs::canonicalize(root.path().join("app.git")).unwrap();
        assert_eq!(
            normalized(&checkout, "../app.git"),
            absolute.display().to_string()
        );
        assert_eq!(
            normalized(&checkout, absolute.to_str().unwrap()),
            absolute.display().to_string()
        );
        for url in ["https://example.com/a/b.git", "git@example.com:a/b.git"] {
            assert_eq!(normalized(&checkout, url), url);
        }
    }
}
