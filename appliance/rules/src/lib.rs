//! Rules: zones, lines, dwell and occupancy, turning tracks into the events people ask for.
//! Pure and synchronous: frames in, events out, time from the frames (docs/rules.md).

mod config;
mod engine;
mod geometry;

pub use config::{Anchor, Direction, Kind, LineDef, RuleDef, RuleSet, RulesError, ZoneDef};
pub use engine::{zone_occupancy, Crossed, Engine, Object, RuleEvent, TrackFrame, TrackIn, What};
pub use geometry::Point;
