//! The command-line surface as users see it: every command's `--help` and the usage errors,
//! compared with the files in tests/cmd/ (`TRYCMD=overwrite cargo test --test it surface`
//! writes them anew after a deliberate change, for review in the diff).

#[test]
fn help_and_usage_errors_read_as_recorded() {
    trycmd::TestCases::new()
        .env("NO_COLOR", "1")
        .case("tests/cmd/*.toml");
}

/// A message split over source lines needs a `\` at each line end; when one is lost and the
/// lines are joined, the indent of the next line ends up inside the text, as a run of spaces
/// in the middle of a sentence (seen in real dry-run output). No string literal that opens on
/// a line has such a run on that line; the help's example tables, whose columns are runs of
/// spaces, are on lines of their own inside their literals.
#[test]
fn no_message_has_a_run_of_spaces_from_a_lost_line_continuation() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for file in crate::harness::files_under(&src) {
        if file.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let Some((_, after)) = line.split_once('"') else {
                continue;
            };
            // The literal's text on this line, to its end or the line's.
            let literal = after.split('"').next().unwrap_or("");
            let inside = literal.trim();
            if inside.contains("        ") {
                found.push(format!("{}:{}: {line}", file.display(), number + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "runs of spaces inside a message (a `\\` missing at a line end?):\n{}",
        found.join("\n")
    );
}
