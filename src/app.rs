//! The app as cdflow sees it: its folder, its cdflow.toml, its manifest and its environments.

use std::path::{Path, PathBuf};

use anyhow::Result;
use indexmap::IndexMap;

use crate::app_manifest::{self, Resolved, Vars};
use crate::config::{self, EnvSection};
use crate::error::user_error;
use crate::platform::Target;
use crate::yaml_file;

pub const DEFAULT_MANIFEST: &str = "manifest.yml";

/// The environments an app gets when its cdflow.toml names none: the talk's two, on the local
/// platform, each on its own port.
pub const DEFAULT_ENVS: [(&str, u16); 2] = [("staging", 8081), ("production", 8082)];

#[derive(Debug)]
pub struct App {
    pub dir: PathBuf,
    pub loaded: config::Loaded,
    pub name: String,
    pub manifest: PathBuf,
    pub envs: IndexMap<String, EnvSection>,
}

impl App {
    pub fn load(dir: &Path) -> Result<App> {
        let mut loaded = config::load(dir)?;
        let manifest = dir.join(
            loaded
                .config
                .app
                .manifest
                .as_deref()
                .unwrap_or(DEFAULT_MANIFEST),
        );
        let name = match &loaded.config.app.name {
            Some(name) => name.clone(),
            None => first_application_name(&manifest)?,
        };
        let mut envs = std::mem::take(&mut loaded.config.env);
        if envs.is_empty() {
            for (name, port) in DEFAULT_ENVS {
                let env = EnvSection {
                    port: Some(port),
                    ..EnvSection::default()
                };
                envs.insert(name.to_string(), env);
            }
        }
        Ok(App {
            dir: dir.to_path_buf(),
            loaded,
            name,
            manifest,
            envs,
        })
    }

    /// The environment called `name`, or an error listing the known ones.
    pub fn target<'a>(&'a self, name: &'a str) -> Result<Target<'a>> {
        match self.envs.get(name) {
            Some(config) => Ok(Target {
                name,
                config,
                services: &self.loaded.config.services,
            }),
            None => Err(user_error(format!(
                "there is no environment `{name}`: the known ones are {}; add [env.{name}] to \
                 cdflow.toml",
                self.envs
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The names of the variables that any environment declares secret, and those that
    /// user-provided services read their credentials from: all of them are masked
    /// in whatever cdflow prints or records about the app, whichever environment it works on.
    pub fn secret_names(&self) -> Vec<String> {
        let services = self.loaded.config.services.values();
        self.envs
            .values()
            .flat_map(|env| env.secrets.iter().cloned())
            .chain(services.flat_map(|s| s.secret_names().map(str::to_string)))
            .collect()
    }

    /// The manifest with the placeholders filled for `env`.
    pub fn manifest_for(&self, env: &Target) -> Result<Resolved> {
        self.manifest_from(&self.manifest, env)
    }

    /// Another manifest (a verified release's) with the placeholders filled for `env`, from
    /// the environment's values in cdflow.toml.
    pub fn manifest_from(&self, manifest: &Path, env: &Target) -> Result<Resolved> {
        let vars = Vars::load(&self.dir, &env.config.vars_files, &env.config.vars)?;
        app_manifest::resolve(manifest, &vars)
    }
}

/// The name of the manifest's first application, read without filling placeholders.
fn first_application_name(manifest: &Path) -> Result<String> {
    let text = yaml_file::read(manifest, &manifest.display().to_string()).map_err(|err| {
        err.or_io(|err| {
            user_error(format!(
                "could not read the manifest {}: {err}; create it, or set [app] manifest (and \
                 name) in cdflow.toml",
                manifest.display()
            ))
        })
    })?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|err| user_error(format!("{} is not valid YAML: {err}", manifest.display())))?;
    doc.get("applications")
        .and_then(|apps| apps.get(0))
        .and_then(|app| app.get("name"))
        .and_then(|name| name.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            user_error(format!(
                "{} has no application with a name: add `- name: my-app` under `applications:`",
                manifest.display()
            ))
        })
}
