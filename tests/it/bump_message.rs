//! The error of a bump in a folder with no version names the folder.

use crate::harness::Project;

#[test]
fn no_version_names_the_folder() {
    let project = Project::git(&[("README.md", "x\n")]);
    let folder = project.dir.canonicalize().unwrap();
    project
        .cdflow(&["bump", "patch"])
        .failure(2)
        .stderr_has(&format!(
            "no version found in {}: there is no Cargo.toml",
            folder.display()
        ));
}
