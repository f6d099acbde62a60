//! Secret values and the one place where they are masked.
//!
//! Everything cdflow prints or records (command lines, command output, run records, errors)
//! passes through [`Secrets::mask`], so a secret cannot leak by a path that forgot to mask.

/// Environment variables whose values are always secret.
pub const ALWAYS_SECRET: &[&str] = &["CF_PASSWORD", "CF_CLIENT_SECRET"];

const MASK: &str = "****";

/// Values shorter than this are not masked: masking `ab` would blank every `ab` of every line
/// and hide nothing a reader could not guess. The preflight refuses such secrets instead
/// ([`too_short`]).
pub const MIN_LEN: usize = 4;

#[derive(Debug, Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
}

impl Secrets {
    /// Collects the values of [`ALWAYS_SECRET`] and of `extra_names` from the environment.
    pub fn from_env<'a>(extra_names: impl IntoIterator<Item = &'a str>) -> Secrets {
        let mut secrets = Secrets::default();
        for name in ALWAYS_SECRET.iter().copied().chain(extra_names) {
            if let Ok(value) = std::env::var(name) {
                secrets.add(value);
            }
        }
        secrets
    }

    pub fn add(&mut self, value: impl Into<String>) {
        let value = value.into();
        if value.chars().count() >= MIN_LEN && !self.values.contains(&value) {
            self.values.push(value);
            // Longest first, so that a secret containing another one is masked whole.
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    pub fn mask(&self, text: &str) -> String {
        let mut masked = text.to_string();
        for value in &self.values {
            if masked.contains(value.as_str()) {
                masked = masked.replace(value.as_str(), MASK);
            }
        }
        masked
    }
}

/// The names among [`ALWAYS_SECRET`] and `names` whose value in the environment is set but
/// too short to mask, each as a problem with its fix.
pub fn too_short<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    ALWAYS_SECRET
        .iter()
        .copied()
        .chain(names)
        .filter(|name| std::env::var(name).is_ok_and(|v| (1..MIN_LEN).contains(&v.chars().count())))
        .map(|name| {
            format!(
                "the secret {name} is shorter than {MIN_LEN} characters, too short to mask \
                 without masking ordinary text: use a longer value"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_longest_first() {
        let mut secrets = Secrets::default();
        secrets.add("hunter2");
        secrets.add("hunter2-extra");
        secrets.add("");
        assert_eq!(
            secrets.mask("a hunter2 b hunter2-extra c"),
            "a **** b **** c"
        );
        assert_eq!(secrets.mask("nothing here"), "nothing here");
    }

    #[test]
    fn a_value_too_short_to_mask_blanks_nothing() {
        let mut secrets = Secrets::default();
        secrets.add("ab");
        assert_eq!(secrets.mask("tab, cab and lab"), "tab, cab and lab");
    }
}
