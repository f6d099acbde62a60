//! The command-line surface as users see it: every command's `--help` and the usage errors,
//! compared with the files in tests/cmd/ (`TRYCMD=overwrite cargo test --test it surface`
//! writes them anew after a deliberate change, for review in the diff).

#[test]
fn help_and_usage_errors_read_as_recorded() {
    trycmd::TestCases::new()
        .env("NO_COLOR", "1")
        .case("tests/cmd/*.toml");
}
