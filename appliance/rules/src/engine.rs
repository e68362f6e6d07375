//! The rules engine: tracks in, rule events out. Pure and deterministic: time comes from the
//! frames, never the wall clock; each stream has its own state; the output order follows the
//! input (tracks in frame order, rules in file order).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::{Anchor, Direction, Kind, LineDef, RuleDef, RuleSet, ZoneDef};
use crate::geometry::{self, Point};

/// How far (normalised) a stationary object may drift, unless its rule says otherwise.
const DEFAULT_MAX_MOVE: f64 = 0.02;

/// One frame of one stream's tracks: a line of the replay input (docs/rules.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackFrame {
    pub stream: String,
    /// Frame time, milliseconds.
    pub t_ms: i64,
    /// Width and height in pixels, the space of the boxes.
    pub frame: [u32; 2],
    #[serde(default)]
    pub tracks: Vec<TrackIn>,
    /// Tracks that ended at this frame.
    #[serde(default)]
    pub ended: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackIn {
    pub id: u64,
    pub label: String,
    pub score: f32,
    /// x1, y1, x2, y2 in pixels.
    pub bbox: [f32; 4],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleEvent {
    pub rule: String,
    pub stream: String,
    pub at_ms: i64,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Object {
    pub track_id: u64,
    pub label: String,
    pub score: f32,
}

/// The side of a line an object came from and went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Crossed {
    AToB,
    BToA,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    ZoneEnter {
        zone: String,
        object: Object,
    },
    ZoneExit {
        zone: String,
        object: Object,
        /// The object was lost while inside (it left unseen, or the tracker gave up).
        track_ended: bool,
    },
    LineCross {
        line: String,
        direction: Crossed,
        object: Object,
    },
    Dwell {
        zone: String,
        object: Object,
        /// Time in the zone so far.
        seconds: f64,
    },
    /// An object that has not moved (more than the rule's `max_move`) for `seconds`, in the zone:
    /// a parked car, an abandoned bag.
    Stationary {
        zone: String,
        object: Object,
        seconds: f64,
    },
    /// The rules of an `all` or `any` rule that fired.
    Combination {
        rules: Vec<String>,
    },
    Occupancy {
        zone: String,
        count: u32,
        /// With a threshold: whether the count is now above it.
        #[serde(skip_serializing_if = "Option::is_none")]
        above: Option<bool>,
    },
}

/// A value that changes only after `inertia` consecutive observations of the new value.
#[derive(Debug, Clone, Default)]
struct Debounced<V> {
    settled: Option<V>,
    /// The candidate, how many times in a row it was seen, when and where it was first seen.
    pending: Option<(V, u32, i64, Point)>,
    /// Where the object was last seen with the settled value.
    last_settled_at: Option<Point>,
}

/// A settled change: from what, to what, first seen when and where.
struct Change<V> {
    from: Option<V>,
    to: V,
    since_ms: i64,
    first_at: Point,
}

impl<V: Copy + PartialEq> Debounced<V> {
    fn observe(&mut self, v: V, t_ms: i64, at: Point, inertia: u32) -> Option<Change<V>> {
        if self.settled == Some(v) {
            self.pending = None;
            self.last_settled_at = Some(at);
            return None;
        }
        let count = match self.pending {
            Some((p, n, _, _)) if p == v => n + 1,
            _ => 1,
        };
        let (since_ms, first_at) = match self.pending {
            Some((p, _, since, first)) if p == v => (since, first),
            _ => (t_ms, at),
        };
        self.pending = Some((v, count, since_ms, first_at));
        if count < inertia {
            return None;
        }
        let from = self.settled.replace(v);
        self.pending = None;
        self.last_settled_at = Some(at);
        Some(Change {
            from,
            to: v,
            since_ms,
            first_at,
        })
    }
}

/// What a rule remembers about one object.
#[derive(Debug, Clone, Default)]
struct ObjectState {
    inside: Debounced<bool>,
    /// Side of the line: false = A, true = B.
    side: Debounced<bool>,
    entered_ms: i64,
    dwell_fired: bool,
    /// Where the object has stayed (within `max_move`) since when, and whether that fired.
    still: Option<(Point, i64, bool)>,
    last_fired_ms: Option<i64>,
    /// Last label and score seen, for an exit reported when the track ends.
    label: String,
    score: f32,
}

#[derive(Debug, Default)]
struct RuleState {
    objects: BTreeMap<u64, ObjectState>,
    /// Occupancy: who is inside, and what was last reported.
    occupants: BTreeSet<u64>,
    reported: Option<(u32, Option<bool>)>,
    /// Combinations: when each rule last fired (all), and when this one last fired.
    seen: BTreeMap<String, i64>,
    fired_ms: Option<i64>,
}

/// A rule's zone or line, resolved once; combinations have neither.
#[derive(Debug)]
enum Shape {
    Zone(ZoneDef),
    Line(LineDef),
    Combination,
}

/// Runs a rule set over the frames of any number of streams.
#[derive(Debug)]
pub struct Engine {
    rules: Vec<(RuleDef, Shape)>,
    /// Per stream, per rule.
    state: HashMap<String, Vec<RuleState>>,
}

impl Engine {
    pub fn new(set: RuleSet) -> Self {
        let rules = set
            .rules
            .iter()
            .map(|r| {
                let shape = match (&r.zone, &r.line) {
                    (Some(z), _) => Shape::Zone(set.zone(z).clone()),
                    (None, Some(l)) => Shape::Line(set.line(l).clone()),
                    (None, None) => Shape::Combination,
                };
                (r.clone(), shape)
            })
            .collect();
        Self {
            rules,
            state: HashMap::new(),
        }
    }

    /// Feeds one frame; returns the rule events it caused.
    pub fn update(&mut self, frame: &TrackFrame) -> Vec<RuleEvent> {
        let n = self.rules.len();
        let states = self
            .state
            .entry(frame.stream.clone())
            .or_insert_with(|| (0..n).map(|_| RuleState::default()).collect());
        let mut out = Vec::new();
        for ((rule, shape), state) in self.rules.iter().zip(states.iter_mut()) {
            let camera = match shape {
                Shape::Zone(z) => &z.camera,
                Shape::Line(l) => &l.camera,
                Shape::Combination => continue, // below, once the base rules have run
            };
            if *camera != frame.stream {
                continue;
            }
            let mut emit = |what: What| {
                out.push(RuleEvent {
                    rule: rule.name.clone(),
                    stream: frame.stream.clone(),
                    at_ms: frame.t_ms,
                    what,
                })
            };
            for t in &frame.tracks {
                if !wanted(rule, t) {
                    continue;
                }
                let at = anchor(rule.anchor, t.bbox, frame.frame);
                let o = state.objects.entry(t.id).or_default();
                if o.label != t.label {
                    o.label.clone_from(&t.label);
                }
                o.score = t.score;
                let object = || Object {
                    track_id: t.id,
                    label: t.label.clone(),
                    score: t.score,
                };
                match shape {
                    Shape::Combination => unreachable!("skipped above"),
                    Shape::Line(def) => {
                        let s = geometry::cross(def.from, def.to, at);
                        if s == 0.0 {
                            continue; // on the line: no side yet
                        }
                        let before = o.side.last_settled_at;
                        let Some(change) = o.side.observe(s > 0.0, frame.t_ms, at, rule.inertia)
                        else {
                            continue;
                        };
                        let (Some(from), Some(before)) = (change.from, before) else {
                            continue; // first sighting: nothing was crossed
                        };
                        // It must have passed through the line, not around its end.
                        debug_assert_ne!(from, change.to);
                        if !geometry::segments_meet(before, change.first_at, def.from, def.to) {
                            continue;
                        }
                        let direction = if change.to {
                            Crossed::AToB
                        } else {
                            Crossed::BToA
                        };
                        let wanted = match rule.direction.unwrap_or(Direction::Either) {
                            Direction::Either => true,
                            Direction::AToB => direction == Crossed::AToB,
                            Direction::BToA => direction == Crossed::BToA,
                        };
                        if wanted && cooled(rule, o, frame.t_ms) {
                            emit(What::LineCross {
                                line: def.name.clone(),
                                direction,
                                object: object(),
                            });
                        }
                    }
                    Shape::Zone(def) => {
                        let inside = geometry::contains(&def.points, at);
                        if let Some(change) = o.inside.observe(inside, frame.t_ms, at, rule.inertia)
                        {
                            if change.to {
                                o.entered_ms = change.since_ms;
                                o.dwell_fired = false;
                                state.occupants.insert(t.id);
                            } else {
                                state.occupants.remove(&t.id);
                            }
                            let entered = change.to;
                            let exited = change.from == Some(true) && !change.to;
                            let fires = match rule.kind {
                                Kind::ZoneEnter => entered,
                                Kind::ZoneExit => exited,
                                _ => false,
                            };
                            if fires && cooled(rule, o, frame.t_ms) {
                                let zone = def.name.clone();
                                emit(if entered {
                                    What::ZoneEnter {
                                        zone,
                                        object: object(),
                                    }
                                } else {
                                    What::ZoneExit {
                                        zone,
                                        object: object(),
                                        track_ended: false,
                                    }
                                });
                            }
                        }
                        if rule.kind == Kind::Dwell
                            && o.inside.settled == Some(true)
                            && !o.dwell_fired
                        {
                            let seconds = (frame.t_ms - o.entered_ms) as f64 / 1000.0;
                            if seconds >= rule.seconds.unwrap_or_default()
                                && cooled(rule, o, frame.t_ms)
                            {
                                o.dwell_fired = true;
                                emit(What::Dwell {
                                    zone: def.name.clone(),
                                    object: object(),
                                    seconds,
                                });
                            }
                        }
                        if rule.kind == Kind::Stationary {
                            let max_move = rule.max_move.unwrap_or(DEFAULT_MAX_MOVE);
                            let (from, since, fired) = match o.still {
                                Some((p, since, fired))
                                    if (p[0] - at[0]).hypot(p[1] - at[1]) <= max_move =>
                                {
                                    (p, since, fired)
                                }
                                _ => (at, frame.t_ms, false),
                            };
                            let seconds = (frame.t_ms - since) as f64 / 1000.0;
                            let fires = !fired
                                && o.inside.settled == Some(true)
                                && seconds >= rule.seconds.unwrap_or_default()
                                && cooled(rule, o, frame.t_ms);
                            o.still = Some((from, since, fired || fires));
                            if fires {
                                emit(What::Stationary {
                                    zone: def.name.clone(),
                                    object: object(),
                                    seconds,
                                });
                            }
                        }
                    }
                }
            }
            for id in &frame.ended {
                let Some(o) = state.objects.remove(id) else {
                    continue;
                };
                let was_inside = state.occupants.remove(id);
                if rule.kind == Kind::ZoneExit && was_inside {
                    emit(What::ZoneExit {
                        zone: rule.zone.clone().unwrap_or_default(),
                        object: Object {
                            track_id: *id,
                            label: o.label,
                            score: o.score,
                        },
                        track_ended: true,
                    });
                }
            }
            if rule.kind == Kind::Occupancy {
                let count = state.occupants.len() as u32;
                let above = rule.above.map(|n| count > n);
                let changed = match (rule.above, state.reported) {
                    // Thresholded: only when the side of the threshold changes (not at start-up
                    // while the count is at or under it).
                    (Some(_), None) => above == Some(true),
                    (Some(_), Some((_, was))) => was != above,
                    (None, None) => count > 0,
                    (None, Some((was, _))) => was != count,
                };
                if changed {
                    state.reported = Some((count, above));
                    emit(What::Occupancy {
                        zone: rule.zone.clone().unwrap_or_default(),
                        count,
                        above,
                    });
                }
            }
        }
        for ((rule, shape), state) in self.rules.iter().zip(states.iter_mut()) {
            if matches!(shape, Shape::Combination) {
                let what = combine(rule, state, &out, frame.t_ms);
                out.extend(what.map(|what| RuleEvent {
                    rule: rule.name.clone(),
                    stream: frame.stream.clone(),
                    at_ms: frame.t_ms,
                    what,
                }));
            }
        }
        out
    }
}

/// A combination rule over this frame's events of its rules (`all`: within its window, on
/// this stream). Cooldown applies per stream.
fn combine(rule: &RuleDef, state: &mut RuleState, fired: &[RuleEvent], t_ms: i64) -> Option<What> {
    let of = rule.of.as_deref().unwrap_or_default();
    let now: BTreeSet<&str> = fired
        .iter()
        .map(|e| e.rule.as_str())
        .filter(|r| of.iter().any(|o| o == r))
        .collect();
    let matched: Vec<String> = match rule.kind {
        Kind::Any => now.iter().map(|r| r.to_string()).collect(),
        _ => {
            for r in now {
                state.seen.insert(r.to_owned(), t_ms);
            }
            let window = (rule.within_s.unwrap_or_default() * 1000.0) as i64;
            state.seen.retain(|_, t| t_ms - *t <= window);
            if state.seen.len() < of.len() {
                return None;
            }
            std::mem::take(&mut state.seen).into_keys().collect()
        }
    };
    if matched.is_empty() {
        return None;
    }
    let quiet = (rule.cooldown_s * 1000.0) as i64;
    if state.fired_ms.is_some_and(|last| t_ms - last < quiet) {
        return None;
    }
    state.fired_ms = Some(t_ms);
    Some(What::Combination { rules: matched })
}

fn wanted(rule: &RuleDef, t: &TrackIn) -> bool {
    t.score >= rule.min_score
        && rule
            .labels
            .as_ref()
            .is_none_or(|labels| labels.contains(&t.label))
}

/// Whether the rule may fire for this object now; if so, starts its cooldown.
fn cooled(rule: &RuleDef, o: &mut ObjectState, t_ms: i64) -> bool {
    let quiet = (rule.cooldown_s * 1000.0) as i64;
    if o.last_fired_ms.is_some_and(|last| t_ms - last < quiet) {
        return false;
    }
    o.last_fired_ms = Some(t_ms);
    true
}

/// How many objects of each label stand in each of `zones` drawn on the frame's stream (by
/// the bottom-centre of their boxes), keyed by (zone, label). Zones of other streams are
/// skipped; an empty zone has no entries.
pub fn zone_occupancy(zones: &[ZoneDef], frame: &TrackFrame) -> BTreeMap<(String, String), u32> {
    let mut counts = BTreeMap::new();
    for zone in zones.iter().filter(|z| z.camera == frame.stream) {
        for t in &frame.tracks {
            let at = anchor(Anchor::BottomCenter, t.bbox, frame.frame);
            if geometry::contains(&zone.points, at) {
                *counts
                    .entry((zone.name.clone(), t.label.clone()))
                    .or_insert(0) += 1;
            }
        }
    }
    counts
}

/// The object's position, normalised to 0..1.
fn anchor(anchor: Anchor, b: [f32; 4], frame: [u32; 2]) -> Point {
    let (w, h) = (f64::from(frame[0].max(1)), f64::from(frame[1].max(1)));
    let x = f64::from(b[0] + b[2]) / 2.0;
    let y = match anchor {
        Anchor::BottomCenter => f64::from(b[3]),
        Anchor::Center => f64::from(b[1] + b[3]) / 2.0,
    };
    [x / w, y / h]
}
