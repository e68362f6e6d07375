//! The rules file: zones, lines and rules (docs/rules.md). Strict: unknown fields, bad geometry,
//! references to missing zones or lines and unknown labels are all reported, each with its path.

use std::collections::HashSet;

use aegis_config::{section, FieldError};
use serde::Deserialize;

use crate::geometry::{self, Point};

/// Zones smaller than this (a fraction of the image) are degenerate.
const MIN_AREA: f64 = 1e-6;
/// Lines shorter than this are degenerate.
const MIN_LENGTH: f64 = 1e-4;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneDef {
    pub name: String,
    /// The camera (stream) the zone is drawn on.
    pub camera: String,
    /// Vertices in order, normalised 0..1, at least three; not self-intersecting.
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineDef {
    pub name: String,
    pub camera: String,
    /// Side A is on the left when walking from `from` to `to` as drawn on the image, side B on
    /// the right: for a line drawn left to right, A is above and B below.
    pub from: Point,
    pub to: Point,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ZoneEnter,
    ZoneExit,
    LineCross,
    Dwell,
    Occupancy,
    Stationary,
    /// Fires when every rule in `of` has fired within `within_s`, on one stream.
    All,
    /// Fires when any rule in `of` fires.
    Any,
}

/// Which crossings of a line count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    AToB,
    BToA,
    Either,
}

/// The point of a box that stands for the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// Where a person or vehicle touches the ground.
    #[default]
    BottomCenter,
    Center,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub name: String,
    pub kind: Kind,
    /// zone_enter, zone_exit, dwell, occupancy.
    pub zone: Option<String>,
    /// line_cross.
    pub line: Option<String>,
    /// line_cross; default either.
    pub direction: Option<Direction>,
    /// dwell: time in the zone, in seconds, before the rule fires (once per visit).
    /// stationary: time without moving more than `max_move`, in the zone.
    pub seconds: Option<f64>,
    /// stationary: how far (normalised) an object may drift and still count as not moving;
    /// default 0.02.
    pub max_move: Option<f64>,
    /// occupancy: fire only when the count goes above this and when it comes back down;
    /// without it, every change of the count fires.
    pub above: Option<u32>,
    /// all, any: the rules this one combines (not themselves combinations).
    pub of: Option<Vec<String>>,
    /// all: the window in which every rule of `of` must have fired, in seconds.
    pub within_s: Option<f64>,
    /// Only these labels; all labels when absent.
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    pub min_score: f32,
    /// After firing for an object, the rule stays quiet for that object this long.
    #[serde(default)]
    pub cooldown_s: f64,
    /// Consecutive observations on the new side (in or out of a zone, either side of a line)
    /// before a change counts, so a flickering box does not fire.
    #[serde(default = "one")]
    pub inertia: u32,
    #[serde(default)]
    pub anchor: Anchor,
}

fn one() -> u32 {
    1
}

/// A rules file, validated: every reference resolves, every shape is sound.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub zones: Vec<ZoneDef>,
    pub lines: Vec<LineDef>,
    pub rules: Vec<RuleDef>,
}

#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in the rules:\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct RulesError(pub Vec<FieldError>);

impl RuleSet {
    /// Parses and validates YAML. With `known_labels` (the model's classes), rules that name
    /// any other label are refused.
    pub fn parse(text: &str, known_labels: Option<&[String]>) -> Result<RuleSet, RulesError> {
        let root: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| RulesError(vec![field("", &format!("not valid YAML: {e}"))]))?;
        let serde_yaml::Value::Mapping(map) = root else {
            return Err(RulesError(vec![field(
                "",
                "the rules file must be a mapping with zones, lines and rules",
            )]));
        };
        let mut errors = Vec::new();
        for key in map.keys() {
            let name = key.as_str().unwrap_or("?");
            if !["zones", "lines", "rules"].contains(&name) {
                errors.push(field(
                    name,
                    "unknown section, expected zones, lines or rules",
                ));
            }
        }
        let (zone_at, zones) = list(&map, "zones", &mut errors);
        let (line_at, lines) = list(&map, "lines", &mut errors);
        let (rule_at, rules) = list(&map, "rules", &mut errors);
        let set = RuleSet {
            zones,
            lines,
            rules,
        };
        set.check(known_labels, [&zone_at, &line_at, &rule_at], &mut errors);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(RulesError(errors))
        }
    }

    /// `at`: each zone's, line's and rule's position in the file (items that failed to parse
    /// are not in the set, so positions and indices can differ).
    fn check(
        &self,
        known_labels: Option<&[String]>,
        [zone_at, line_at, rule_at]: [&[usize]; 3],
        errors: &mut Vec<FieldError>,
    ) {
        let mut names = HashSet::new();
        for (i, z) in self.zones.iter().enumerate() {
            let at = |f: &str| format!("zones[{}].{f}", zone_at[i]);
            if !names.insert(z.name.as_str()) {
                errors.push(field(
                    &at("name"),
                    "duplicate name (zones and lines share names)",
                ));
            }
            if z.points.len() < 3 {
                errors.push(field(&at("points"), "a zone needs at least 3 points"));
            } else if let Some(p) = out_of_range(&z.points) {
                errors.push(field(&at("points"), &p));
            } else if geometry::self_intersects(&z.points) {
                errors.push(field(&at("points"), "the outline crosses itself"));
            } else if geometry::area(&z.points) < MIN_AREA {
                errors.push(field(&at("points"), "the zone has no area"));
            }
        }
        for (i, l) in self.lines.iter().enumerate() {
            let at = |f: &str| format!("lines[{}].{f}", line_at[i]);
            if !names.insert(l.name.as_str()) {
                errors.push(field(
                    &at("name"),
                    "duplicate name (zones and lines share names)",
                ));
            }
            if let Some(p) = out_of_range(&[l.from, l.to]) {
                errors.push(field(&at("from"), &p));
            } else if (l.to[0] - l.from[0]).hypot(l.to[1] - l.from[1]) < MIN_LENGTH {
                errors.push(field(&at("to"), "the line has no length"));
            }
        }
        let mut rule_names = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = |f: &str| format!("rules[{}].{f}", rule_at[i]);
            if !rule_names.insert(r.name.as_str()) {
                errors.push(field(&at("name"), "duplicate rule name"));
            }
            let composite = matches!(r.kind, Kind::All | Kind::Any);
            let wants_line = r.kind == Kind::LineCross;
            let wants_zone = !wants_line && !composite;
            let timed = matches!(r.kind, Kind::Dwell | Kind::Stationary);
            let checks = [
                ("zone", wants_zone, r.zone.is_some()),
                ("line", wants_line, r.line.is_some()),
                ("of", composite, r.of.is_some()),
                ("within_s", r.kind == Kind::All, r.within_s.is_some()),
                ("labels", !composite, r.labels.is_some()),
                (
                    "direction",
                    r.kind == Kind::LineCross,
                    r.direction.is_some(),
                ),
                ("seconds", timed, r.seconds.is_some()),
                ("max_move", r.kind == Kind::Stationary, r.max_move.is_some()),
                ("above", r.kind == Kind::Occupancy, r.above.is_some()),
            ];
            for (name, allowed, present) in checks {
                if present && !allowed {
                    errors.push(field(&at(name), "does not apply to this kind of rule"));
                }
            }
            if wants_zone {
                match &r.zone {
                    None => errors.push(field(&at("zone"), "missing: this rule needs a zone")),
                    Some(z) if !self.zones.iter().any(|d| &d.name == z) => {
                        errors.push(field(&at("zone"), &format!("no zone named {z:?}")))
                    }
                    Some(_) => {}
                }
            } else if wants_line {
                match &r.line {
                    None => errors.push(field(&at("line"), "missing: this rule needs a line")),
                    Some(l) if !self.lines.iter().any(|d| &d.name == l) => {
                        errors.push(field(&at("line"), &format!("no line named {l:?}")))
                    }
                    Some(_) => {}
                }
            }
            if composite {
                self.check_composite(r, &at, errors);
            }
            match r.seconds {
                None if timed => errors.push(field(&at("seconds"), "missing: how long")),
                Some(s) if !(s > 0.0 && s.is_finite()) => {
                    errors.push(field(&at("seconds"), "must be a positive number"))
                }
                _ => {}
            }
            if r.max_move.is_some_and(|m| !(m > 0.0 && m <= 1.0)) {
                errors.push(field(&at("max_move"), "must be in (0, 1]"));
            }
            if !(0.0..=1.0).contains(&r.min_score) {
                errors.push(field(&at("min_score"), "must be between 0 and 1"));
            }
            if !(r.cooldown_s >= 0.0 && r.cooldown_s.is_finite()) {
                errors.push(field(&at("cooldown_s"), "must be zero or more seconds"));
            }
            if r.inertia == 0 {
                errors.push(field(&at("inertia"), "must be at least 1"));
            }
            if let (Some(labels), Some(known)) = (&r.labels, known_labels) {
                for (j, l) in labels.iter().enumerate() {
                    if !known.contains(l) {
                        errors.push(field(
                            &at(&format!("labels[{j}]")),
                            &format!("unknown label {l:?}: the model does not detect it"),
                        ));
                    }
                }
            }
        }
    }

    fn check_composite(
        &self,
        r: &RuleDef,
        at: &dyn Fn(&str) -> String,
        errors: &mut Vec<FieldError>,
    ) {
        let of = r.of.as_deref().unwrap_or_default();
        let least = if r.kind == Kind::All { 2 } else { 1 };
        if of.len() < least {
            errors.push(field(
                &at("of"),
                &format!("needs at least {least} rule name(s)"),
            ));
        }
        for (j, name) in of.iter().enumerate() {
            let target = self.rules.iter().find(|x| &x.name == name);
            let problem = match target {
                _ if of[..j].contains(name) => Some(format!("{name:?} is listed twice")),
                None => Some(format!("no rule named {name:?}")),
                Some(t) if matches!(t.kind, Kind::All | Kind::Any) => Some(format!(
                    "{name:?} is itself a combination; combine base rules"
                )),
                Some(_) => None,
            };
            if let Some(p) = problem {
                errors.push(field(&at(&format!("of[{j}]")), &p));
            }
        }
        match r.within_s {
            None if r.kind == Kind::All => {
                errors.push(field(&at("within_s"), "missing: the window, in seconds"))
            }
            Some(w) if !(w > 0.0 && w.is_finite()) => {
                errors.push(field(&at("within_s"), "must be a positive number"))
            }
            _ => {}
        }
    }

    pub fn zone(&self, name: &str) -> &ZoneDef {
        self.zones
            .iter()
            .find(|z| z.name == name)
            .expect("validated")
    }

    pub fn line(&self, name: &str) -> &LineDef {
        self.lines
            .iter()
            .find(|l| l.name == name)
            .expect("validated")
    }
}

fn field(path: &str, message: &str) -> FieldError {
    FieldError {
        path: path.to_owned(),
        message: message.to_owned(),
    }
}

fn out_of_range(points: &[Point]) -> Option<String> {
    points
        .iter()
        .find(|p| !p.iter().all(|v| (0.0..=1.0).contains(v)))
        .map(|p| format!("{p:?} is outside the image: coordinates are normalised, 0 to 1"))
}

/// A list section, each item deserialised on its own so that every bad item is reported.
/// Returns the items that parsed, and each one's position in the file.
fn list<T: serde::de::DeserializeOwned>(
    map: &serde_yaml::Mapping,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> (Vec<usize>, Vec<T>) {
    match map.get(name) {
        None => Default::default(),
        Some(serde_yaml::Value::Sequence(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                Some((i, section(Some(item), &format!("{name}[{i}]"), errors)?))
            })
            .unzip(),
        Some(_) => {
            errors.push(field(name, "must be a list"));
            Default::default()
        }
    }
}
