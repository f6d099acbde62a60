//! The URL of the repository a run releases, and the credentials it may carry
//! (`https://user:token@host/app.git`, as CI systems hand them out).
//!
//! The credentials are split off where the URL is read, once: their values join the secrets
//! that everything printed or recorded is masked with, git is given the URL without them (so
//! that they land in no clone's `.git/config` and no record), and git gets them back, when its
//! host asks, from a credential helper that reads them from git's environment: never from argv
//! and never from a file.

use std::ffi::OsString;

use percent_encoding::percent_decode_str;
use url::Url;

/// The environment variables that carry the credentials to the helper.
const USERNAME_VAR: &str = "CDFLOW_GIT_USERNAME";
const PASSWORD_VAR: &str = "CDFLOW_GIT_PASSWORD";

/// The credential helper: a constant shell function that git runs with `sh`. It answers `get`
/// with the two variables and ignores `store` and `erase`, so that nothing is kept.
const HELPER: &str = "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \
                      \"$CDFLOW_GIT_USERNAME\" \"$CDFLOW_GIT_PASSWORD\"; }; f";

#[derive(Debug, Clone)]
pub struct RepoUrl {
    /// The URL without credentials: what git is given, and what is printed and recorded.
    url: String,
    /// Every form in which the credentials may show: as written in the URL, and decoded.
    secrets: Vec<String>,
    /// What git's credential helper answers, for http(s).
    helper: Option<Helper>,
}

#[derive(Debug, Clone)]
struct Helper {
    /// `scheme://host[:port]`: the only URLs git asks the helper for.
    scope: String,
    username: String,
    password: String,
}

impl RepoUrl {
    /// Reads a repository URL or path. Only http(s) URLs carry credentials that git sends; for
    /// other URLs (ssh://git:pw@host/...) a password is dropped and masked, and the user, which
    /// is who ssh logs in as, is kept. Paths and `git@host:path` are kept as they are.
    pub fn parse(text: &str) -> RepoUrl {
        let verbatim = RepoUrl {
            url: text.to_string(),
            secrets: Vec::new(),
            helper: None,
        };
        let Ok(mut url) = Url::parse(text) else {
            return verbatim;
        };
        let user = url.username().to_string();
        let password = url.password().map(String::from);
        let http = matches!(url.scheme(), "http" | "https");
        let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
        let secrets = match &password {
            Some(password) => vec![
                format!("{user}:{password}"),
                password.clone(),
                format!("{}:{}", decode(&user), decode(password)),
                decode(password),
            ],
            // A user alone, on http, is a token (https://TOKEN@host/...).
            None if http && !user.is_empty() => vec![user.clone(), decode(&user)],
            None => return verbatim,
        };
        let _ = url.set_password(None);
        let mut helper = None;
        if http {
            let _ = url.set_username("");
            helper = Some(Helper {
                scope: format!(
                    "{}://{}{}",
                    url.scheme(),
                    url.host_str().unwrap_or_default(),
                    url.port().map(|p| format!(":{p}")).unwrap_or_default()
                ),
                username: decode(&user),
                password: password.as_deref().map(decode).unwrap_or_default(),
            });
        }
        RepoUrl {
            url: url.into(),
            secrets,
            helper,
        }
    }

    /// The URL without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The values to mask wherever they show.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// What a git command that talks to the repository needs to authenticate: options to put
    /// before its subcommand, and environment variables. The options hold no secret; the
    /// variables do, and their values are among [`RepoUrl::secrets`].
    pub fn git_auth(&self) -> (Vec<OsString>, Vec<(&'static str, String)>) {
        let Some(helper) = &self.helper else {
            return (Vec::new(), Vec::new());
        };
        let key = format!("credential.{}.helper", helper.scope);
        // The empty value empties the list of helpers for that host first, so that the user's
        // own (a `store` that would write the password to ~/.git-credentials) are not asked.
        let options = ["-c", &format!("{key}="), "-c", &format!("{key}={HELPER}")]
            .map(OsString::from)
            .into();
        let env = vec![
            (USERNAME_VAR, helper.username.clone()),
            (PASSWORD_VAR, helper.password.clone()),
        ];
        (options, env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_credentials_are_split_off_decoded_and_masked() {
        let repo = RepoUrl::parse("https://ci-bot:t%40ken@git.example.com:8443/acme/app.git");
        assert_eq!(repo.url(), "https://git.example.com:8443/acme/app.git");
        let secrets = repo.secrets();
        for shown in ["ci-bot:t%40ken", "t%40ken", "ci-bot:t@ken", "t@ken"] {
            assert!(secrets.contains(&shown.to_string()), "{secrets:?}");
        }
        assert!(
            !secrets.contains(&"ci-bot".to_string()),
            "a user is no secret"
        );
        let (options, env) = repo.git_auth();
        assert_eq!(
            options[1],
            "credential.https://git.example.com:8443.helper="
        );
        assert!(options[3]
            .to_str()
            .unwrap()
            .starts_with("credential.https://git.example.com:8443.helper=!f() {"));
        assert!(options.iter().all(|o| !o.to_str().unwrap().contains("ken")));
        assert_eq!(
            env,
            [
                (USERNAME_VAR, "ci-bot".to_string()),
                (PASSWORD_VAR, "t@ken".to_string())
            ]
        );
    }

    #[test]
    fn a_token_as_the_user_is_a_secret() {
        let repo = RepoUrl::parse("https://ghp_abc123@github.com/acme/app.git");
        assert_eq!(repo.url(), "https://github.com/acme/app.git");
        assert!(repo.secrets().contains(&"ghp_abc123".to_string()));
        assert_eq!(repo.git_auth().1[0].1, "ghp_abc123");
    }

    #[test]
    fn other_urls_and_paths_are_kept_as_they_are() {
        for text in [
            "git@github.com:acme/app.git",
            "ssh://git@github.com/acme/app.git",
            "/srv/git/app.git",
            "../app",
            "file:///srv/git/app.git",
            "https://github.com/acme/app.git",
        ] {
            let repo = RepoUrl::parse(text);
            assert_eq!(repo.url(), text);
            assert!(repo.secrets().is_empty(), "{text}");
            assert_eq!(repo.git_auth().0.len(), 0, "{text}");
        }
        // ssh logs in as the user; a password there is dropped (ssh never takes it) and masked.
        let repo = RepoUrl::parse("ssh://git:pw@host.example.com/app.git");
        assert_eq!(repo.url(), "ssh://git@host.example.com/app.git");
        assert!(repo.secrets().contains(&"pw".to_string()));
        assert_eq!(repo.git_auth().0.len(), 0);
    }
}
