//! Live reconfiguration: cameras, zones, lines and rules changed through the API are validated
//! as a whole file, written durably, and put in force without a restart. The files stay the
//! source of truth (what `aegis validate` checks and what a restart loads); they are rewritten
//! from their parsed form, so comments in them are not kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aegis_config::{Config, ConfigError, FieldError};
use serde_yaml::{Mapping, Value};

use crate::{Appliance, PipelineError};

/// The sections of the rules file, each a list of items with unique names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesSection {
    Zones,
    Lines,
    Rules,
}

impl RulesSection {
    fn key(self) -> &'static str {
        match self {
            RulesSection::Zones => "zones",
            RulesSection::Lines => "lines",
            RulesSection::Rules => "rules",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The change would make an invalid file; nothing was changed.
    #[error("{} error(s)", .0.len())]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Reading or writing a file failed; nothing was changed.
    #[error("{0}")]
    Io(String),
    /// The new cameras could not be started; the file was restored and nothing changed.
    #[error(transparent)]
    Apply(#[from] PipelineError),
}

fn invalid(path: &str, message: &str) -> SettingsError {
    SettingsError::Invalid(vec![FieldError {
        path: path.to_owned(),
        message: message.to_owned(),
    }])
}

/// What to do with the item of a given name.
pub enum Change {
    /// Add it; a conflict if it exists.
    Create(serde_json::Value),
    /// Replace it, or add it if it is new.
    Put(serde_json::Value),
    Delete,
}

/// The config file the appliance was started from, and the appliance it configures.
pub struct Settings {
    path: PathBuf,
    appliance: Arc<Appliance>,
    /// One change at a time, from reading the file to putting it in force.
    lock: Mutex<()>,
}

impl Settings {
    pub fn new(path: &Path, appliance: Arc<Appliance>) -> Self {
        Self {
            path: path.to_owned(),
            appliance,
            lock: Mutex::new(()),
        }
    }

    fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn read_mapping(path: &Path) -> Result<Mapping, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError::Io(format!("{}: {e}", path.display())))?;
        match serde_yaml::from_str(&text) {
            Ok(Value::Mapping(m)) => Ok(m),
            Ok(Value::Null) => Ok(Mapping::new()),
            _ => Err(SettingsError::Io(format!(
                "{} is no longer a valid mapping",
                path.display()
            ))),
        }
    }

    fn write(path: &Path, doc: &Mapping) -> Result<(), SettingsError> {
        let text = serde_yaml::to_string(doc).expect("YAML values always serialise");
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        aegis_base::write_durably(Path::new(&tmp), path, text.as_bytes())
            .map_err(|e| SettingsError::Io(format!("{}: {e}", path.display())))
    }

    /// The cameras as written in the config file, with credentials in URLs hidden.
    pub fn cameras(&self) -> Result<serde_json::Value, SettingsError> {
        let doc = Self::read_mapping(&self.path)?;
        let mut cameras = items(&doc, "cameras");
        for cam in &mut cameras {
            if let Some(url) = cam.get_mut("url") {
                if let Some(u) = url.as_str() {
                    *url = Value::from(aegis_base::redact_url(u));
                }
            }
        }
        Ok(serde_json::to_value(cameras).expect("YAML values are JSON values"))
    }

    /// Adds, replaces or removes a camera, then starts, restarts or stops just that camera.
    pub fn change_camera(&self, name: &str, change: Change) -> Result<(), SettingsError> {
        let _lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let old = Self::read_mapping(&self.path)?;
        let mut doc = old.clone();
        let mut cameras = items(&doc, "cameras");
        let previous_url = cameras
            .iter()
            .find(|c| name_of(c) == Some(name))
            .and_then(|c| c.get("url").and_then(Value::as_str).map(str::to_owned));
        let change = match (change, previous_url) {
            // A URL sent back as it was shown (credentials hidden) keeps its credentials.
            (Change::Put(mut body), Some(prev)) => {
                if body.get("url").and_then(|u| u.as_str()) == Some(&aegis_base::redact_url(&prev))
                {
                    body["url"] = serde_json::Value::from(prev);
                }
                Change::Put(body)
            }
            (other, _) => other,
        };
        apply_change(&mut cameras, "cameras", name, change)?;
        set_items(&mut doc, "cameras", cameras);
        let config = self.validate(&doc)?;
        Self::write(&self.path, &doc)?;
        if let Err(e) = self.appliance.set_cameras(&config.cameras) {
            Self::write(&self.path, &old)?;
            return Err(e.into());
        }
        Ok(())
    }

    fn validate(&self, doc: &Mapping) -> Result<Config, SettingsError> {
        let text = serde_yaml::to_string(doc).expect("YAML values always serialise");
        Config::parse(&text, self.base_dir(), &|k| std::env::var(k).ok()).map_err(|e| match e {
            ConfigError::Invalid(errors) => SettingsError::Invalid(errors),
            other => SettingsError::Io(other.to_string()),
        })
    }

    /// The rules file, or where a first one is created: `rules.yaml` beside the config.
    fn rules_path(&self) -> Result<(PathBuf, bool), SettingsError> {
        let doc = Self::read_mapping(&self.path)?;
        match doc.get("rules").and_then(Value::as_str) {
            Some(p) => Ok((self.base_dir().join(p), true)),
            None => Ok((self.base_dir().join("rules.yaml"), false)),
        }
    }

    /// Zones, lines and rules as written in the rules file (empty lists when there is none).
    pub fn rules(&self) -> Result<serde_json::Value, SettingsError> {
        let (path, named) = self.rules_path()?;
        let doc = if named {
            Self::read_mapping(&path)?
        } else {
            Mapping::new()
        };
        let mut out = serde_json::Map::new();
        for section in [
            RulesSection::Zones,
            RulesSection::Lines,
            RulesSection::Rules,
        ] {
            let list = serde_json::to_value(items(&doc, section.key())).expect("json");
            out.insert(section.key().to_owned(), list);
        }
        Ok(serde_json::Value::Object(out))
    }

    /// Adds, replaces or removes a zone, line or rule and puts the rules in force.
    pub fn change_rules_item(
        &self,
        section: RulesSection,
        name: &str,
        change: Change,
    ) -> Result<(), SettingsError> {
        let _lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (path, named) = self.rules_path()?;
        let mut doc = if named {
            Self::read_mapping(&path)?
        } else {
            Mapping::new()
        };
        let mut list = items(&doc, section.key());
        apply_change(&mut list, section.key(), name, change)?;
        set_items(&mut doc, section.key(), list);
        let text = serde_yaml::to_string(&doc).expect("YAML values always serialise");
        let rules = aegis_rules::RuleSet::parse(&text, Some(&self.appliance.labels()))
            .map_err(|e| SettingsError::Invalid(e.0))?;
        Self::write(&path, &doc)?;
        if !named {
            let mut config = Self::read_mapping(&self.path)?;
            config.insert("rules".into(), Value::from("rules.yaml"));
            Self::write(&self.path, &config)?;
        }
        self.appliance.set_rules(rules);
        Ok(())
    }
}

impl Settings {
    /// Replaces every camera and the whole rules file at once, and the model when `model` names
    /// another (the core's desired config), as one transaction: all is validated first (rules
    /// against the new model's classes); if the new model or cameras cannot be started, the
    /// files are written back and what ran before runs again.
    ///
    /// `model` is the file name of a model manifest beside the one in use (the box's model
    /// directory).
    pub fn replace_all(
        &self,
        cameras: &serde_json::Value,
        rules: &serde_json::Value,
        model: Option<&str>,
    ) -> Result<(), SettingsError> {
        let _lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let old = Self::read_mapping(&self.path)?;
        let (rules_path, named) = self.rules_path()?;
        let old_rules = if named {
            Some(Self::read_mapping(&rules_path)?)
        } else {
            None
        };
        let yaml = |v: &serde_json::Value, what: &str| {
            serde_yaml::to_value(v).map_err(|e| invalid(what, &e.to_string()))
        };
        let mut doc = old.clone();
        doc.insert("cameras".into(), yaml(cameras, "cameras")?);
        if !named {
            doc.insert("rules".into(), Value::from("rules.yaml"));
        }
        let old_detector = self.appliance.detector_config();
        if let Some(model) = model {
            set_model(&mut doc, &old_detector, model)?;
        }
        let config = self.validate(&doc)?;
        let model_changes = config.detector != old_detector;
        let loaded = model_changes
            .then(|| self.appliance.load_detector(&config.detector))
            .transpose()
            .map_err(|e| invalid("model", &e.to_string()))?;
        let labels = match &loaded {
            Some(d) => d.labels().iter().map(|l| l.to_string()).collect(),
            None => self.appliance.labels(),
        };
        let Value::Mapping(rules_doc) = yaml(rules, "rules")? else {
            return Err(invalid(
                "rules",
                "must be a mapping of zones, lines and rules",
            ));
        };
        let text = serde_yaml::to_string(&rules_doc).expect("YAML values always serialise");
        let ruleset = aegis_rules::RuleSet::parse(&text, Some(&labels))
            .map_err(|e| SettingsError::Invalid(e.0))?;
        Self::write(&rules_path, &rules_doc)?;
        Self::write(&self.path, &doc)?;
        let previous = model_changes.then(|| self.appliance.detector());
        let applied = match loaded {
            Some(d) => self.appliance.set_detector(&config.detector, d),
            None => Ok(()),
        }
        .and_then(|()| self.appliance.set_cameras(&config.cameras));
        if let Err(e) = applied {
            Self::write(&self.path, &old)?;
            match &old_rules {
                Some(r) => Self::write(&rules_path, r)?,
                None => std::fs::remove_file(&rules_path)
                    .map_err(|e| SettingsError::Io(format!("{}: {e}", rules_path.display())))?,
            }
            if let Some(previous) = previous {
                self.appliance.set_detector(&old_detector, previous)?;
            }
            return Err(e.into());
        }
        self.appliance.set_rules(ruleset);
        Ok(())
    }
}

/// Points the document's `detector.model` at `model`, a manifest file name beside the
/// current manifest.
fn set_model(
    doc: &mut Mapping,
    current: &aegis_config::DetectorConfig,
    model: &str,
) -> Result<(), SettingsError> {
    let plain = Path::new(model)
        .file_name()
        .is_some_and(|n| n == std::ffi::OsStr::new(model));
    if !plain || model.starts_with('.') {
        return Err(invalid(
            "model",
            "must be the file name of a model manifest beside the one in use",
        ));
    }
    let detector = doc
        .entry("detector".into())
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    let Value::Mapping(detector) = detector else {
        return Err(invalid("detector", "must be a mapping"));
    };
    let in_use = detector
        .get("model")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .unwrap_or_else(|| current.model.clone());
    let next = in_use.with_file_name(model);
    detector.insert(
        "model".into(),
        Value::from(next.to_string_lossy().into_owned()),
    );
    Ok(())
}

/// A list section of a document (empty when absent).
fn items(doc: &Mapping, key: &str) -> Vec<Mapping> {
    doc.get(key)
        .and_then(Value::as_sequence)
        .map(|seq| seq.iter().filter_map(|v| v.as_mapping().cloned()).collect())
        .unwrap_or_default()
}

fn set_items(doc: &mut Mapping, key: &str, list: Vec<Mapping>) {
    let list = list.into_iter().map(Value::Mapping).collect();
    doc.insert(key.into(), Value::Sequence(list));
}

fn name_of(item: &Mapping) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

/// A request body as a list item named `name` (a body may omit the name, not contradict it).
fn item_from(body: serde_json::Value, name: &str) -> Result<Mapping, SettingsError> {
    let mut item: Mapping = match serde_json::from_value::<Value>(body) {
        Ok(Value::Mapping(m)) => m,
        _ => return Err(invalid("", "the body must be a JSON object")),
    };
    match name_of(&item) {
        Some(n) if n != name => {
            return Err(invalid(
                "name",
                &format!("{n:?} does not match {name:?} in the URL"),
            ))
        }
        _ => {}
    }
    item.insert("name".into(), Value::from(name));
    Ok(item)
}

fn apply_change(
    list: &mut Vec<Mapping>,
    what: &str,
    name: &str,
    change: Change,
) -> Result<(), SettingsError> {
    let at = list.iter().position(|i| name_of(i) == Some(name));
    match (change, at) {
        (Change::Create(_), Some(_)) => {
            return Err(SettingsError::Conflict(format!("{what}: {name:?} exists")))
        }
        (Change::Delete, None) => {
            return Err(SettingsError::NotFound(format!("{what}: no {name:?}")))
        }
        (Change::Delete, Some(i)) => {
            list.remove(i);
        }
        (Change::Create(body) | Change::Put(body), None) => list.push(item_from(body, name)?),
        (Change::Put(body), Some(i)) => list[i] = item_from(body, name)?,
    }
    Ok(())
}
