//! Secret values and the one place where they are masked.
//!
//! Everything cdflow prints or records (command lines, command output, run records, errors)
//! passes through [`Secrets::mask`], so a secret cannot leak by a path that forgot to mask.

/// Environment variables whose values are always secret.
pub const ALWAYS_SECRET: &[&str] = &["CF_PASSWORD", "CF_CLIENT_SECRET"];

const MASK: &str = "****";

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
        // An empty value would match everywhere; it hides nothing anyway.
        if !value.is_empty() && !self.values.contains(&value) {
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
}
