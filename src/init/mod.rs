//! `cdflow init`: a new service from a template of `templates/`, as a git repository with one
//! commit, ready for `cdflow release` with no further edit.
//!
//! Three phases, as everywhere in cdflow: facts and checks (the name, the template, the
//! folder, git), all reported at once; a plan (every file, rendered in memory); then the
//! change, which is undone if it does not finish, so that a refused or failed init leaves
//! nothing behind.

mod cargo_lock;
mod name;
mod template;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::cmd;

use crate::cli::InitArgs;
use crate::error::user_error;
use crate::exec::Exec;

use self::name::Names;
use self::template::{File, Template};

pub fn run(exec: &Exec, args: &InitArgs) -> Result<()> {
    if args.list {
        return list(exec);
    }
    let plan = plan(exec, args)?;
    create(exec, &plan)?;
    report(exec, &plan);
    Ok(())
}

/// `cdflow init --list`: each template with its line.
fn list(exec: &Exec) -> Result<()> {
    for template in template::all()? {
        if exec.ui().is_json() {
            exec.ui().emit(crate::events::Event::Template {
                name: template.name.to_string(),
                description: template.meta.description.clone(),
                default: template.name == template::DEFAULT,
                options: template
                    .meta
                    .options
                    .iter()
                    .map(|(name, what)| crate::events::TemplateOption {
                        name: name.clone(),
                        description: what.clone(),
                    })
                    .collect(),
            });
            continue;
        }
        let default = if template.name == template::DEFAULT {
            "  (default)"
        } else {
            ""
        };
        exec.ui().note(&format!(
            "{:<14} {}{default}",
            template.name, template.meta.description
        ));
        for (option, what) in &template.meta.options {
            exec.ui()
                .note(&format!("{:<14}   --with {option}: {what}", ""));
        }
    }
    Ok(())
}

/// Everything `cdflow init` will make, computed before anything is written.
struct Plan {
    template: Template,
    names: Names,
    /// The new folder as the user named it, and as a path.
    shown: String,
    dir: PathBuf,
    files: Vec<File>,
}

fn plan(exec: &Exec, args: &InitArgs) -> Result<Plan> {
    let name = args.name.as_deref().unwrap_or_default();
    let mut problems = Vec::new();
    let template = template::find(&args.template)?;
    if template.is_none() {
        let known: Vec<String> = template::all()?
            .iter()
            .map(|t| format!("`{}`", t.name))
            .collect();
        problems.push(format!(
            "there is no template `{}`: the templates are {} (see `cdflow init --list`)",
            args.template,
            known.join(", ")
        ));
    }
    let name_problems = name::problems(name, template.as_ref().map(|t| t.meta.language));
    let mut name_ok = name_problems.is_empty();
    problems.extend(name_problems);
    if let Some(template) = &template {
        problems.extend(template.unknown_options(&args.with));
    }
    if let (true, Some(template)) = (name_ok, &template) {
        let clash = template.crate_name_clash(&Names::of(name))?;
        name_ok = clash.is_none();
        problems.extend(clash);
    }
    let relative = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    let shown = relative.display().to_string();
    let dir = exec.dir().join(&relative);
    // A folder named after a name that is refused would only repeat the name's problem.
    if args.dir.is_some() || name_ok {
        problems.extend(folder_problem(&dir, &shown));
    }
    problems.extend(git_problem(exec)?);
    if !problems.is_empty() {
        let what = if name.is_empty() {
            "the service".to_string()
        } else {
            format!("`{}`", name.escape_debug())
        };
        let message = match problems.as_slice() {
            [one] => format!("cannot create {what}: {one}"),
            many => format!("cannot create {what}:\n  - {}", many.join("\n  - ")),
        };
        return Err(user_error(message));
    }
    let template = template.expect("checked above");
    let names = Names::of(name);
    let files = template.render(&names, &args.with)?;
    Ok(Plan {
        template,
        names,
        shown,
        dir,
        files,
    })
}

/// Why the service cannot go into `dir`, if it cannot: it must not exist yet, or be an empty
/// folder.
fn folder_problem(dir: &Path, shown: &str) -> Option<String> {
    match std::fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_some().then(|| {
                format!(
                    "the folder `{shown}` exists and is not empty: choose another name, or \
                     another folder with --dir"
                )
            }),
            Err(err) => Some(format!("cannot read the folder `{shown}`: {err}")),
        },
        Ok(_) => Some(format!("`{shown}` exists and is not a folder")),
        Err(err)
            if matches!(
                err.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            if std::fs::symlink_metadata(dir).is_ok() {
                return Some(format!("`{shown}` is a link to nothing"));
            }
            // The nearest folder that exists is where the new ones are made.
            let parent = dir
                .ancestors()
                .skip(1)
                .find(|ancestor| std::fs::symlink_metadata(ancestor).is_ok())?;
            (!parent.is_dir()).then(|| {
                format!(
                    "`{shown}` cannot be made: `{}` is not a folder",
                    parent.display()
                )
            })
        }
        Err(err) => Some(format!("cannot use `{shown}`: {err}")),
    }
}

/// Why git cannot make the first commit, if it cannot.
fn git_problem(exec: &Exec) -> Result<Option<String>> {
    let sh = exec.sh();
    if !exec.check(cmd!(sh, "git --version")).unwrap_or(false) {
        return Ok(Some(
            "git is not installed (or not on PATH): the new service is a git repository".into(),
        ));
    }
    let known = exec.check(cmd!(sh, "git var GIT_AUTHOR_IDENT"))?
        && exec.check(cmd!(sh, "git var GIT_COMMITTER_IDENT"))?;
    Ok((!known).then(|| {
        "git does not know who you are, so it cannot make the first commit: run `git config \
         --global user.name \"Your Name\"` and `git config --global user.email you@example.com`"
            .into()
    }))
}

/// Writes the files and makes the repository; on any failure, removes what it made.
fn create(exec: &Exec, plan: &Plan) -> Result<()> {
    let undo = Undo::new(&plan.dir);
    std::fs::create_dir_all(&plan.dir)
        .with_context(|| format!("could not create the folder `{}`", plan.shown))?;
    for file in &plan.files {
        let path = plan.dir.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("could not create `{}`", parent.display()))?;
        }
        // Not the seam's atomic replace: these files are new, in a folder that `Undo` clears
        // if anything fails, and a plain write gives them the usual permissions (the seam's
        // temporary files are private to their owner).
        std::fs::write(&path, &file.contents)
            .with_context(|| format!("could not write `{}`", path.display()))?;
    }
    let sh = exec.sh();
    let _in_new = sh.push_dir(&plan.dir);
    let paths: Vec<String> = plan
        .files
        .iter()
        .map(|file| file.path.to_string_lossy().into_owned())
        .collect();
    let message = format!(
        "New service {}, from cdflow's {} template",
        plan.names.name, plan.template.name
    );
    exec.run(cmd!(sh, "git init -q"))?;
    // Forced, so that a global excludes file of the user's cannot leave a template file out.
    exec.run(cmd!(sh, "git add --force -- {paths...}"))?;
    exec.run(cmd!(sh, "git commit -q -m {message}"))?;
    // `cdflow release` in a repository with no `origin` clones the repository itself and
    // pushes the version commit and tag back to it; git refuses a push to the branch that is
    // checked out unless told to update the work tree as well (which it does only when that
    // tree is clean).
    exec.run(cmd!(
        sh,
        "git config receive.denyCurrentBranch updateInstead"
    ))?;
    undo.keep();
    Ok(())
}

fn report(exec: &Exec, plan: &Plan) {
    let ui = exec.ui();
    ui.note(&format!(
        "created {} from the {} template in {}: {} files, committed",
        plan.names.name,
        plan.template.name,
        plan.shown,
        plan.files.len()
    ));
    ui.note("next:");
    let steps = [
        (format!("cd {}", plan.shown), ""),
        (
            plan.template.meta.try_command.clone(),
            "its unit and service tiers",
        ),
        (
            "cdflow manifest --env staging".to_string(),
            "the manifest as staging gets it",
        ),
        (
            "cdflow release".to_string(),
            "test, bump, push to staging, e2e, promote to production",
        ),
    ];
    for (command, what) in steps {
        let line = if what.is_empty() {
            format!("  {command}")
        } else {
            format!("  {command:<31} {what}")
        };
        ui.note(line.trim_end());
    }
}

/// What `cdflow init` made, removed when dropped unless kept: the folders it created, or, in a
/// folder that was empty, everything in it.
struct Undo {
    dir: PathBuf,
    /// The outermost folder that did not exist before.
    created: Option<PathBuf>,
    kept: std::cell::Cell<bool>,
}

impl Undo {
    fn new(dir: &Path) -> Undo {
        let created = dir
            .ancestors()
            .take_while(|ancestor| std::fs::symlink_metadata(ancestor).is_err())
            .last()
            .map(Path::to_path_buf);
        Undo {
            dir: dir.to_path_buf(),
            created,
            kept: std::cell::Cell::new(false),
        }
    }

    fn keep(&self) {
        self.kept.set(true);
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.kept.get() {
            return;
        }
        match &self.created {
            Some(created) => {
                let _ = std::fs::remove_dir_all(created);
            }
            None => {
                for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_absent_or_empty_folder_is_accepted() {
        let root = tempfile::tempdir().unwrap();
        let at = |path: &str| folder_problem(&root.path().join(path), path);
        assert_eq!(at("new/deeper"), None);
        std::fs::create_dir(root.path().join("empty")).unwrap();
        assert_eq!(at("empty"), None);
        std::fs::write(root.path().join("empty/x"), "").unwrap();
        assert!(at("empty").unwrap().contains("exists and is not empty"));
        std::fs::write(root.path().join("file"), "").unwrap();
        assert!(at("file").unwrap().contains("is not a folder"));
        assert!(at("file/sub").unwrap().contains("is not a folder"));
        std::os::unix::fs::symlink("nowhere", root.path().join("dangling")).unwrap();
        assert!(at("dangling").unwrap().contains("a link to nothing"));
    }

    #[test]
    fn undo_removes_only_what_init_made() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("a/b");
        let undo = Undo::new(&new);
        std::fs::create_dir_all(new.join("src")).unwrap();
        std::fs::write(new.join("src/x"), "").unwrap();
        drop(undo);
        assert!(!root.path().join("a").exists());

        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let undo = Undo::new(&empty);
        std::fs::create_dir_all(empty.join(".git")).unwrap();
        std::fs::write(empty.join("f"), "").unwrap();
        drop(undo);
        assert!(empty.is_dir());
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

        let kept = root.path().join("kept");
        let undo = Undo::new(&kept);
        std::fs::create_dir(&kept).unwrap();
        undo.keep();
        drop(undo);
        assert!(kept.is_dir());
    }
}
