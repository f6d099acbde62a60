//! The URL of the repository a run releases, and the credentials git needs to reach it.
//!
//! The credentials come from the environment: `CDFLOW_GIT_TOKEN` (and `CDFLOW_GIT_USERNAME`,
//! whose default suits the CI system that runs cdflow), taken out of cdflow's own environment
//! as it starts, so that no command it runs inherits them (the app's tests, its build, cf, the
//! local platform's servers). A URL carrying them (`https://user:token@host/app.git`, as CI
//! systems used to hand them out) is still read, with a warning: on cdflow's command line the
//! token shows in `ps` and in the job's log of the command.
//!
//! Either way the credentials are split off where they are read, once: their values join the
//! secrets that everything printed or recorded is masked with, git is given the URL without
//! them (so that they land in no clone's `.git/config` and no record), and git gets them back,
//! when its host asks, from a credential helper that reads them from the environment of the
//! git commands that talk to the repository (clone, ls-remote, push): never from argv and
//! never from a file.

use std::ffi::OsString;
use std::sync::OnceLock;

use percent_encoding::percent_decode_str;
use url::Url;

/// The variable CI sets to the token that clones the repository and pushes the version back.
pub const TOKEN_VAR: &str = "CDFLOW_GIT_TOKEN";
/// The user that goes with the token; default: [`default_username`].
pub const USERNAME_SETTING: &str = "CDFLOW_GIT_USERNAME";

/// The environment variables that carry the credentials to the helper, on the git commands
/// that talk to the repository only.
const USERNAME_VAR: &str = "CDFLOW_GIT_USERNAME";
const PASSWORD_VAR: &str = "CDFLOW_GIT_PASSWORD";

/// The credential helper: a constant shell function that git runs with `sh`. It answers `get`
/// with the two variables and ignores `store` and `erase`, so that nothing is kept.
const HELPER: &str = "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \
                      \"$CDFLOW_GIT_USERNAME\" \"$CDFLOW_GIT_PASSWORD\"; }; f";

/// What git prints when the host refused or asked for credentials it did not get.
const AUTH_FAILURES: &[&str] = &[
    "Authentication failed",
    "could not read Username",
    "could not read Password",
    "terminal prompts disabled",
    "returned error: 401",
    "returned error: 403",
];

/// The token of `CDFLOW_GIT_TOKEN`, with its user.
#[derive(Debug, Clone)]
pub struct EnvToken {
    username: String,
    /// Where the user came from, for messages.
    username_from: &'static str,
    token: String,
}

impl EnvToken {
    pub fn token(&self) -> &str {
        &self.token
    }
}

static ENV_TOKEN: OnceLock<Option<EnvToken>> = OnceLock::new();

/// Reads `CDFLOW_GIT_TOKEN` (and `CDFLOW_GIT_USERNAME`) and removes the token from cdflow's
/// environment, so that only the git commands given it through [`RepoUrl::git_auth`] see it.
/// Called once, first thing in `main`, before any thread runs (changing the environment while
/// another thread reads it is not safe).
pub fn take_env_token() -> Option<&'static EnvToken> {
    ENV_TOKEN
        .get_or_init(|| {
            let token = std::env::var(TOKEN_VAR).ok();
            std::env::remove_var(TOKEN_VAR);
            // An unset CI secret is often an empty variable, not a missing one.
            let token = token.filter(|t| !t.trim().is_empty())?;
            let (username, username_from) = match std::env::var(USERNAME_SETTING) {
                Ok(user) if !user.trim().is_empty() => (user, "from CDFLOW_GIT_USERNAME"),
                _ => (default_username().to_string(), "the default"),
            };
            Some(EnvToken {
                username,
                username_from,
                token: token.trim().to_string(),
            })
        })
        .as_ref()
}

/// The token read by [`take_env_token`], if any.
pub fn env_token() -> Option<&'static EnvToken> {
    ENV_TOKEN.get().and_then(Option::as_ref)
}

/// The user a token goes with when `CDFLOW_GIT_USERNAME` is not set. GitLab needs
/// `gitlab-ci-token` for a job token (`CI_JOB_TOKEN`) and takes any user with an access token,
/// so that is the default in GitLab CI (`GITLAB_CI` set); GitHub takes any user with a token and
/// documents `x-access-token` for an app's (`GITHUB_TOKEN`), the default everywhere else.
pub fn default_username() -> &'static str {
    match std::env::var_os("GITLAB_CI") {
        Some(_) => "gitlab-ci-token",
        None => "x-access-token",
    }
}

/// Where the credentials git is given came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    None,
    /// The repository URL: `https://user:token@host/...`.
    Url,
    /// `CDFLOW_GIT_TOKEN`.
    Env,
}

#[derive(Debug, Clone)]
pub struct RepoUrl {
    /// The URL without credentials: what git is given, and what is printed and recorded.
    url: String,
    /// Every form in which the credentials may show: as written in the URL, and decoded.
    secrets: Vec<String>,
    /// `scheme://host[:port]` of an http(s) URL: the only URLs git asks the helper for.
    scope: Option<String>,
    /// What git's credential helper answers, for http(s).
    helper: Option<Helper>,
    source: Source,
}

#[derive(Debug, Clone)]
struct Helper {
    username: String,
    /// Where the user came from, for messages.
    username_from: &'static str,
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
            scope: None,
            helper: None,
            source: Source::None,
        };
        let Ok(mut url) = Url::parse(text) else {
            // Not a URL (`-https://user:token@host/...`, refused later): what it would hide
            // is masked all the same wherever it shows, the refusal first.
            return RepoUrl {
                secrets: embedded_credentials(text),
                ..verbatim
            };
        };
        let user = url.username().to_string();
        let password = url.password().map(String::from);
        let http = matches!(url.scheme(), "http" | "https");
        let scope = http.then(|| {
            format!(
                "{}://{}{}",
                url.scheme(),
                url.host_str().unwrap_or_default(),
                url.port().map(|p| format!(":{p}")).unwrap_or_default()
            )
        });
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
            // A URL of another kind may still hold one inside its path
            // (`ext::https://user:token@...`); its own user (ssh's) is no secret.
            None => {
                return RepoUrl {
                    scope,
                    secrets: embedded_credentials(&url[url::Position::BeforePath..]),
                    ..verbatim
                }
            }
        };
        let _ = url.set_password(None);
        let mut helper = None;
        if http {
            let _ = url.set_username("");
            helper = Some(Helper {
                username: decode(&user),
                username_from: "from the URL",
                password: password.as_deref().map(decode).unwrap_or_default(),
            });
        }
        RepoUrl {
            url: url.into(),
            secrets,
            scope,
            helper,
            source: Source::Url,
        }
    }

    /// Gives git the token of `CDFLOW_GIT_TOKEN` instead of any credentials the URL carried
    /// (a GitLab checkout's `origin` holds the job's own token, say). Only http(s) URLs take
    /// one: false for others, which are left as they are.
    pub fn use_env_token(&mut self, token: &EnvToken) -> bool {
        if self.scope.is_none() {
            return false;
        }
        self.secrets.push(token.token.clone());
        self.helper = Some(Helper {
            username: token.username.clone(),
            username_from: token.username_from,
            password: token.token.clone(),
        });
        self.source = Source::Env;
        true
    }

    /// The URL without credentials.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The values to mask wherever they show.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Where the credentials given to git come from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// What a git command that talks to the repository needs to authenticate: options to put
    /// before its subcommand, and environment variables. The options hold no secret; the
    /// variables do, and their values are among [`RepoUrl::secrets`]. Over http(s) git is told
    /// never to ask on the terminal: cdflow's commands have none to answer with, and a prompt
    /// would hang the run.
    pub fn git_auth(&self) -> (Vec<OsString>, Vec<(&'static str, String)>) {
        let Some(scope) = &self.scope else {
            return (Vec::new(), Vec::new());
        };
        let no_prompt = ("GIT_TERMINAL_PROMPT", "0".to_string());
        let Some(helper) = &self.helper else {
            return (Vec::new(), vec![no_prompt]);
        };
        let key = format!("credential.{scope}.helper");
        // The empty value empties the list of helpers for that host first, so that the user's
        // own (a `store` that would write the password to ~/.git-credentials) are not asked.
        let options = ["-c", &format!("{key}="), "-c", &format!("{key}={HELPER}")]
            .map(OsString::from)
            .into();
        let env = vec![
            (USERNAME_VAR, helper.username.clone()),
            (PASSWORD_VAR, helper.password.clone()),
            no_prompt,
        ];
        (options, env)
    }

    /// Whether a failed git command failed because the host refused, or asked for, credentials.
    pub fn is_auth_failure(err: &anyhow::Error) -> bool {
        let text = format!("{err:#}");
        AUTH_FAILURES.iter().any(|marker| text.contains(marker))
    }

    /// A failed git command that talked to the repository, with what to do about credentials
    /// when they were the reason: which were used, and where to set them.
    pub fn explain(&self, err: anyhow::Error) -> anyhow::Error {
        if !Self::is_auth_failure(&err) {
            return err;
        }
        let url = &self.url;
        let why = match (self.source, &self.helper) {
            (Source::Env, Some(helper)) => format!(
                "{url} refused the credentials from {TOKEN_VAR} (user `{}`, {}): check that the \
                 token is current and may read and push to the repository, and set \
                 {USERNAME_SETTING} if the host needs another user (see docs/ci.md)",
                helper.username, helper.username_from,
            ),
            (Source::Url, _) => format!(
                "{url} refused the credentials in the repository URL: check them; better, drop \
                 them from the URL and put the token in {TOKEN_VAR} (see docs/ci.md)"
            ),
            _ => format!(
                "{url} asks for credentials and none were given: set {TOKEN_VAR} to a token \
                 that may read and push to the repository ({USERNAME_SETTING} if the host needs \
                 a particular user; see docs/ci.md)"
            ),
        };
        err.context(why)
    }
}

/// The credentials of every `scheme://user[:password]@host` inside `text`, in each form they
/// may show: for a repository that is not a URL itself, and is printed as it was given.
fn embedded_credentials(text: &str) -> Vec<String> {
    let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    let mut secrets = Vec::new();
    for (at, _) in text.match_indices("://") {
        let rest = &text[at + 3..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let Some(end) = authority.rfind('@') else {
            continue;
        };
        let userinfo = &authority[..end];
        // `user:password` hides the password; a user alone is a token (`https://TOKEN@host`).
        let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
        for secret in [userinfo, password] {
            for form in [secret.to_string(), decode(secret)] {
                if !form.is_empty() && !secrets.contains(&form) {
                    secrets.push(form);
                }
            }
        }
    }
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_inside_what_is_not_a_url_are_masked_too() {
        let repo = RepoUrl::parse("-https://ci-bot:t%40ken@git.example.com/app.git");
        assert_eq!(
            repo.url(),
            "-https://ci-bot:t%40ken@git.example.com/app.git",
            "printed as given, to be refused"
        );
        for shown in ["ci-bot:t%40ken", "t%40ken", "ci-bot:t@ken", "t@ken"] {
            assert!(repo.secrets().contains(&shown.to_string()), "{shown}");
        }
        let ext = RepoUrl::parse("ext::https://t0ken@git.example.com/app.git");
        assert_eq!(ext.secrets(), ["t0ken"]);
        assert!(RepoUrl::parse("-x").secrets().is_empty());
        assert!(RepoUrl::parse("git@host.example.com:app.git")
            .secrets()
            .is_empty());
    }

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
                (PASSWORD_VAR, "t@ken".to_string()),
                ("GIT_TERMINAL_PROMPT", "0".to_string()),
            ]
        );
        assert_eq!(repo.source(), Source::Url);
    }

    fn env_token(token: &str) -> EnvToken {
        EnvToken {
            username: "x-access-token".into(),
            username_from: "the default",
            token: token.into(),
        }
    }

    #[test]
    fn the_environment_token_replaces_the_credentials_of_an_http_url() {
        // A GitLab checkout's origin carries the job's own token; CDFLOW_GIT_TOKEN wins.
        let mut repo =
            RepoUrl::parse("https://gitlab-ci-token:job-token@gitlab.example.com/acme/app.git");
        assert!(repo.use_env_token(&env_token("glpat-release")));
        assert_eq!(repo.url(), "https://gitlab.example.com/acme/app.git");
        assert_eq!(repo.source(), Source::Env);
        for secret in ["job-token", "glpat-release"] {
            assert!(repo.secrets().contains(&secret.to_string()), "{secret}");
        }
        let (options, env) = repo.git_auth();
        assert_eq!(options[1], "credential.https://gitlab.example.com.helper=");
        assert!(options
            .iter()
            .all(|o| !o.to_str().unwrap().contains("glpat")));
        assert_eq!(env[0], (USERNAME_VAR, "x-access-token".to_string()));
        assert_eq!(env[1], (PASSWORD_VAR, "glpat-release".to_string()));

        let mut plain = RepoUrl::parse("http://127.0.0.1:8080/app.git");
        assert_eq!(
            plain.git_auth().1,
            [("GIT_TERMINAL_PROMPT", "0".to_string())]
        );
        assert!(plain.use_env_token(&env_token("tok-1234")));
        assert_eq!(plain.git_auth().0.len(), 4);
    }

    #[test]
    fn the_environment_token_is_not_given_to_other_transports() {
        for text in [
            "/srv/git/app.git",
            "git@github.com:acme/app.git",
            "ssh://git@h/app.git",
        ] {
            let mut repo = RepoUrl::parse(text);
            assert!(!repo.use_env_token(&env_token("tok-1234")), "{text}");
            assert_eq!(repo.git_auth(), (Vec::new(), Vec::new()), "{text}");
            assert!(repo.secrets().is_empty());
        }
    }

    #[test]
    fn a_refusal_names_where_the_credentials_came_from() {
        let refused = || {
            anyhow::anyhow!(
                "`git push` exited with code 128; the end of its output:\nfatal: \
                 Authentication failed for 'https://git.example.com/app.git/'"
            )
        };
        let mut repo = RepoUrl::parse("https://git.example.com/app.git");
        let none = format!("{:#}", repo.explain(refused()));
        assert!(
            none.contains("none were given: set CDFLOW_GIT_TOKEN"),
            "{none}"
        );
        repo.use_env_token(&env_token("tok-1234"));
        let env = repo.explain(refused());
        let text = format!("{env:#}");
        assert!(
            text.contains("refused the credentials from CDFLOW_GIT_TOKEN (user `x-access-token`"),
            "{text}"
        );
        let url = RepoUrl::parse("https://u:secret@git.example.com/app.git");
        let text = format!("{:#}", url.explain(refused()));
        assert!(text.contains("put the token in CDFLOW_GIT_TOKEN"), "{text}");
        // Any other failure is left as it is.
        let other = repo.explain(anyhow::anyhow!("fatal: repository not found"));
        assert_eq!(format!("{other:#}"), "fatal: repository not found");
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
