//! The new service's name, checked once for every place it goes: the Cloud Foundry app and its
//! route's host name (`orders-api`), and the crate or Python package made from it
//! (`orders_api`).

use serde::Deserialize;

/// The language of a template, whose rules the crate or module name must also follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    Python,
}

/// The forms of the name that templates use: `{{name}}`, `{{crate_name}}` and `{{module}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The app's name, its route's host name and the Cargo package's name: `orders-api`.
    pub name: String,
    /// The Rust crate as code names it: `orders_api`.
    pub crate_name: String,
    /// The Python package: `orders_api`.
    pub module: String,
}

impl Names {
    pub fn of(name: &str) -> Names {
        let ident = name.replace('-', "_");
        Names {
            name: name.to_string(),
            crate_name: ident.clone(),
            module: ident,
        }
    }

    /// Each placeholder with its value.
    pub fn placeholders(&self) -> [(&'static str, &str); 3] {
        [
            ("{{name}}", &self.name),
            ("{{crate_name}}", &self.crate_name),
            ("{{module}}", &self.module),
        ]
    }
}

/// A route's host name is a DNS label: at most 63 characters.
const MAX_LEN: usize = 63;

/// Every reason `name` cannot name a new service, empty if it can. `language` adds the rules of
/// the template's language, when the template is known.
pub fn problems(name: &str, language: Option<Language>) -> Vec<String> {
    if name.is_empty() {
        return vec!["the name is empty: give one such as `orders-api`".into()];
    }
    let mut problems = Vec::new();
    let shown = format!("`{}`", name.escape_debug());
    if name.len() > MAX_LEN {
        problems.push(format!(
            "{shown} is longer than {MAX_LEN} characters, which a route's host name cannot be"
        ));
    }
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        problems.push(format!(
            "{shown} has capital letters: app names and routes are lower case (`{}`)",
            suggestion(name)
        ));
    }
    if name.contains('_') {
        problems.push(format!(
            "{shown} has `_`: use `-` between words (`{}`); the crate or module gets `_` \
             by itself",
            suggestion(name)
        ));
    }
    let mut others: Vec<String> = Vec::new();
    for c in name.chars() {
        let fine = c.is_ascii_alphanumeric() || c == '-' || c == '_';
        let shown = format!("`{}`", c.escape_debug());
        if !fine && !others.contains(&shown) {
            others.push(shown);
        }
    }
    if !others.is_empty() {
        problems.push(format!(
            "{shown} holds {}: a name has only lower-case letters, digits and `-`",
            others.join(", ")
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        problems.push(format!("{shown} does not start with a letter"));
    }
    if name.ends_with('-') {
        problems.push(format!("{shown} ends with `-`"));
    }
    if !problems.is_empty() {
        return problems;
    }
    let ident = name.replace('-', "_");
    match language {
        Some(Language::Rust) => {
            if RUST_KEYWORDS.contains(&ident.as_str()) {
                problems.push(format!(
                    "{shown} makes the crate name `{ident}`, a Rust keyword"
                ));
            } else if CARGO_RESERVED.contains(&ident.as_str()) || is_windows_device(&ident) {
                problems.push(format!(
                    "{shown} is a name that cargo refuses for a package (it clashes with a \
                     Rust library, a build folder or a Windows device)"
                ));
            }
        }
        Some(Language::Python) => {
            if PYTHON_KEYWORDS.contains(&ident.as_str()) {
                problems.push(format!(
                    "{shown} makes the Python package `{ident}`, a Python keyword"
                ));
            } else if PYTHON_TAKEN.contains(&ident.as_str()) {
                problems.push(format!(
                    "{shown} makes the Python package `{ident}`, which would hide the module \
                     of that name that the app, its tests or its tools import"
                ));
            }
        }
        None => {}
    }
    problems
}

/// The name in lower case with `-` between words, as a hint.
fn suggestion(name: &str) -> String {
    name.to_ascii_lowercase().replace(['_', ' '], "-")
}

/// Strict and reserved keywords of every edition, which no crate can be named.
const RUST_KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Names `cargo new` refuses: Rust's own libraries and cargo's build folders (and Windows
/// devices, see [`is_windows_device`]).
const CARGO_RESERVED: &[&str] = &[
    "alloc",
    "core",
    "proc_macro",
    "std",
    "test",
    "build",
    "deps",
    "examples",
    "incremental",
];

fn is_windows_device(name: &str) -> bool {
    matches!(name, "con" | "prn" | "aux" | "nul")
        || (name.len() == 4
            && (name.starts_with("com") || name.starts_with("lpt"))
            && matches!(name.as_bytes()[3], b'1'..=b'9'))
}

const PYTHON_KEYWORDS: &[&str] = &[
    "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del", "elif",
    "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda",
    "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// Modules that a package of the same name would hide: what the python-falcon template and its
/// tests import, the tools that run them, the template's own folders, and the standard
/// library's best-known modules.
const PYTHON_TAKEN: &[&str] = &[
    "falcon",
    "gunicorn",
    "pytest",
    "tox",
    "pip",
    "setuptools",
    "tests",
    "service_tests",
    "e2e",
    "test",
    "json",
    "os",
    "sys",
    "socket",
    "signal",
    "subprocess",
    "time",
    "urllib",
    "pathlib",
    "http",
    "email",
    "logging",
    "string",
    "types",
    "typing",
    "random",
    "re",
    "io",
    "abc",
    "ast",
    "collections",
    "functools",
    "itertools",
    "math",
    "select",
    "site",
    "threading",
    "asyncio",
    "unittest",
    "uuid",
    "wsgiref",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn first(name: &str, language: Option<Language>) -> String {
        problems(name, language).join("\n")
    }

    #[test]
    fn good_names_give_every_form() {
        for name in ["orders-api", "a", "svc2", "billing-v2-api"] {
            assert!(problems(name, Some(Language::Rust)).is_empty(), "{name}");
            assert!(problems(name, Some(Language::Python)).is_empty(), "{name}");
        }
        let names = Names::of("orders-api");
        assert_eq!(names.crate_name, "orders_api");
        assert_eq!(names.module, "orders_api");
        assert!(problems(&"a".repeat(63), None).is_empty());
    }

    #[test]
    fn bad_names_say_why() {
        let cases = [
            ("", "the name is empty"),
            (
                "Bad Name",
                "has capital letters: app names and routes are lower case (`bad-name`)",
            ),
            ("Bad Name", "holds ` `"),
            ("orders_api", "use `-` between words (`orders-api`)"),
            ("-x", "does not start with a letter"),
            ("1abc", "does not start with a letter"),
            ("a/b", "holds `/`"),
            ("x-", "ends with `-`"),
            ("caf\u{e9}", "holds `\u{e9}`"),
            ("a\nb", "`a\\nb` holds `\\n`"),
        ];
        for (name, expected) in cases {
            let found = first(name, None);
            assert!(found.contains(expected), "{name:?}: {found}");
        }
        assert!(first(&"a".repeat(64), None).contains("longer than 63"));
    }

    #[test]
    fn each_language_refuses_its_keywords_and_reserved_names() {
        assert!(first("fn", Some(Language::Rust)).contains("a Rust keyword"));
        assert!(first("self", Some(Language::Rust)).contains("a Rust keyword"));
        assert!(first("test", Some(Language::Rust)).contains("cargo refuses"));
        assert!(first("com1", Some(Language::Rust)).contains("cargo refuses"));
        assert!(problems("com10", Some(Language::Rust)).is_empty());
        assert!(problems("fn", Some(Language::Python)).is_empty());
        assert!(first("import", Some(Language::Python)).contains("a Python keyword"));
        assert!(first("json", Some(Language::Python)).contains("would hide the module"));
        assert!(first("service-tests", Some(Language::Python)).contains("`service_tests`"));
        assert!(problems("json", Some(Language::Rust)).is_empty());
    }
}
