//! Version arithmetic: what each bump part makes of a SemVer 2.0 version.

use std::fmt;
use std::str::FromStr;

use semver::{BuildMetadata, Prerelease, Version};

use crate::error::user_error;

/// What `cdflow bump` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bump {
    Major,
    Minor,
    /// `micro` is the talk's word for it (bumpversion's).
    Patch,
    /// The next pre-release: 1.2.3 -> 1.2.4-rc.1 -> 1.2.4-rc.2.
    Pre,
    /// Drop the pre-release: 1.2.4-rc.2 -> 1.2.4.
    Release,
    Exact(Version),
}

/// The parts shown by `cdflow bump --show`, in order.
pub const PARTS: [Bump; 5] = [
    Bump::Major,
    Bump::Minor,
    Bump::Patch,
    Bump::Pre,
    Bump::Release,
];

impl FromStr for Bump {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Bump> {
        Ok(match text {
            "major" => Bump::Major,
            "minor" => Bump::Minor,
            "patch" | "micro" => Bump::Patch,
            "pre" => Bump::Pre,
            "release" => Bump::Release,
            other => match Version::parse(other.strip_prefix('v').unwrap_or(other)) {
                Ok(version) => Bump::Exact(version),
                Err(err) => {
                    return Err(user_error(format!(
                        "`{other}` is neither a part nor a version ({err}): use one of major, \
                         minor, patch (or micro), pre, release, or a SemVer version such as 1.2.3"
                    )))
                }
            },
        })
    }
}

impl fmt::Display for Bump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bump::Major => f.write_str("major"),
            Bump::Minor => f.write_str("minor"),
            Bump::Patch => f.write_str("patch"),
            Bump::Pre => f.write_str("pre"),
            Bump::Release => f.write_str("release"),
            Bump::Exact(version) => write!(f, "{version}"),
        }
    }
}

/// The label a first pre-release gets.
const PRE_LABEL: &str = "rc";

impl Bump {
    /// The version that follows `current`, or why there is none. The result is always greater
    /// than `current`.
    pub fn apply(&self, current: &Version) -> anyhow::Result<Version> {
        let is_pre = !current.pre.is_empty();
        let mut next = Version::new(current.major, current.minor, current.patch);
        match self {
            // As cargo-release does: a pre-release of x.0.0 becomes x.0.0 itself.
            Bump::Major if is_pre && current.minor == 0 && current.patch == 0 => {}
            Bump::Major => next = Version::new(current.major + 1, 0, 0),
            Bump::Minor if is_pre && current.patch == 0 => {}
            Bump::Minor => next = Version::new(current.major, current.minor + 1, 0),
            Bump::Patch if is_pre => {}
            Bump::Patch => next.patch += 1,
            Bump::Pre if is_pre => next.pre = next_prerelease(&current.pre)?,
            Bump::Pre => {
                next.patch += 1;
                next.pre = Prerelease::new(&format!("{PRE_LABEL}.1"))?;
            }
            Bump::Release if is_pre => {}
            Bump::Release => {
                return Err(user_error(format!(
                    "{current} is not a pre-release, so there is nothing to release: \
                     use patch, minor or major"
                )))
            }
            Bump::Exact(version) => next = version.clone(),
        }
        next.build = BuildMetadata::EMPTY;
        if next <= *current {
            return Err(user_error(format!(
                "the new version {next} is not greater than the current version {current}: \
                 a version number must never be reused or go back"
            )));
        }
        Ok(next)
    }
}

/// `rc.1` -> `rc.2`, `beta` -> `beta.1`, `alpha.beta` -> `alpha.beta.1`.
fn next_prerelease(pre: &Prerelease) -> anyhow::Result<Prerelease> {
    let text = pre.as_str();
    let next = match text.rsplit_once('.') {
        Some((head, last)) if last.bytes().all(|b| b.is_ascii_digit()) => {
            let number: u64 = last.parse()?;
            format!("{head}.{}", number + 1)
        }
        _ => format!("{text}.1"),
    };
    Ok(Prerelease::new(&next)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bump(part: &str, from: &str) -> String {
        part.parse::<Bump>()
            .unwrap()
            .apply(&Version::parse(from).unwrap())
            .map(|v| v.to_string())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn parts() {
        assert_eq!(bump("major", "1.2.3"), "2.0.0");
        assert_eq!(bump("minor", "1.2.3"), "1.3.0");
        assert_eq!(bump("patch", "1.2.3"), "1.2.4");
        assert_eq!(bump("micro", "1.2.3"), "1.2.4");
        assert_eq!(bump("patch", "1.2.3+build.5"), "1.2.4");
    }

    #[test]
    fn pre_releases() {
        assert_eq!(bump("pre", "1.2.3"), "1.2.4-rc.1");
        assert_eq!(bump("pre", "1.2.4-rc.1"), "1.2.4-rc.2");
        assert_eq!(bump("pre", "1.2.4-rc.9"), "1.2.4-rc.10");
        assert_eq!(bump("pre", "1.2.4-beta"), "1.2.4-beta.1");
        assert_eq!(bump("release", "1.2.4-rc.2"), "1.2.4");
        assert_eq!(bump("patch", "1.2.4-rc.2"), "1.2.4");
        assert_eq!(bump("minor", "1.3.0-rc.1"), "1.3.0");
        assert_eq!(bump("minor", "1.3.1-rc.1"), "1.4.0");
        assert_eq!(bump("major", "2.0.0-rc.1"), "2.0.0");
        assert_eq!(bump("major", "2.1.0-rc.1"), "3.0.0");
    }

    #[test]
    fn refusals_say_why() {
        assert!(bump("release", "1.2.3").contains("not a pre-release"));
        assert!(bump("1.2.3", "1.2.3").contains("not greater than the current version 1.2.3"));
        assert!(bump("1.0.0", "1.2.3").contains("not greater"));
        assert_eq!(bump("v2.0.0", "1.2.3"), "2.0.0");
        let err = "mega".parse::<Bump>().unwrap_err().to_string();
        assert!(err.contains("`mega`") && err.contains("major, minor, patch"));
        assert!("1.2".parse::<Bump>().is_err());
    }
}
