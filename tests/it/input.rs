//! Bad input is refused early and clearly: the file, the line and the fix, with exit code 2.

use crate::harness::Project;

#[test]
fn a_pipeline_file_that_is_not_utf8_is_named_and_the_others_still_listed() {
    let project = Project::empty();
    project.write(
        "pipelines/good.yml",
        "description: our own check\nstages:\n  - kind: test\n",
    );
    let mut bad = b"description: caf".to_vec();
    bad.push(0xe9); // Latin-1 "é"
    bad.extend_from_slice(b"\nstages:\n  - kind: test\n");
    std::fs::write(project.path("pipelines/bad.yml"), bad).unwrap();

    let run = project.cdflow(&["pipelines"]);
    run.failure(2)
        .stdout_has("good       our own check  (pipelines/good.yml)")
        .stdout_has("release    clone, test, bump")
        .stderr_has("pipelines/bad.yml:1:17")
        .stderr_has("not UTF-8");

    project
        .cdflow(&["release", "--pipeline", "bad", "--dry-run"])
        .failure(2)
        .stderr_has("pipelines/bad.yml:1:17")
        .stderr_has("byte 16");
    project
        .cdflow(&["release", "--pipeline", "pipelines/bad.yml", "--dry-run"])
        .failure(2)
        .stderr_has("pipelines/bad.yml:1:17");
}
