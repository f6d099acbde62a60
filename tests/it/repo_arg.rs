//! A `--repo` that starts with `-` never reaches git as an option: it is refused before
//! anything runs, and the refusal masks the credentials it carries.

use crate::harness::Project;

#[test]
fn a_repo_that_reads_as_an_option_is_refused_with_its_credentials_masked() {
    let project = Project::git(&[("README.md", "x\n")]);
    for repo in [
        "-https://ci-bot:s3cr3t-t0ken@git.example.com/acme/app.git",
        "--upload-pack=https://s3cr3t-t0ken@git.example.com/x",
        "ext::https://ci-bot:s3cr3t%2Dt0ken@git.example.com/x",
    ] {
        for dry_run in [true, false] {
            let mut args = vec!["release".to_string(), format!("--repo={repo}")];
            if dry_run {
                args.push("--dry-run".into());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = project.cdflow(&args);
            run.failure(2)
                .stderr_has("is refused: it would be read as an option");
            for shown in [&run.stdout, &run.stderr] {
                assert!(!shown.contains("s3cr3t"), "{repo}: {run}");
            }
            assert!(!run.stdout.contains("$ git"), "nothing ran: {run}");
        }
    }
    // Given as a separate word, clap takes it for an option of cdflow's, and says how to pass it.
    project
        .cdflow(&["release", "--repo", "-x"])
        .failure(2)
        .stderr_has("unexpected argument '-x'");
}
