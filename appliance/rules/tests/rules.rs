//! The rules as a user would write them, driven by tracks with known paths.

use aegis_rules::{Crossed, Engine, RuleEvent, RuleSet, TrackFrame, TrackIn, What};

/// A person-sized box whose bottom centre is at (x, y), normalised, in a 1000x1000 frame.
fn at(id: u64, label: &str, score: f32, x: f32, y: f32) -> TrackIn {
    let (px, py) = (x * 1000.0, y * 1000.0);
    TrackIn {
        id,
        label: label.into(),
        score,
        bbox: [px - 20.0, py - 80.0, px + 20.0, py],
    }
}

fn frame(stream: &str, t_ms: i64, tracks: Vec<TrackIn>, ended: Vec<u64>) -> TrackFrame {
    TrackFrame {
        stream: stream.into(),
        t_ms,
        frame: [1000, 1000],
        tracks,
        ended,
    }
}

fn engine(yaml: &str) -> Engine {
    Engine::new(RuleSet::parse(yaml, None).unwrap_or_else(|e| panic!("{e}")))
}

/// One person walking through the positions, one frame every 100 ms.
fn walk(e: &mut Engine, stream: &str, path: &[(f32, f32)]) -> Vec<RuleEvent> {
    path.iter()
        .enumerate()
        .flat_map(|(i, &(x, y))| {
            e.update(&frame(
                stream,
                i as i64 * 100,
                vec![at(1, "person", 0.9, x, y)],
                vec![],
            ))
        })
        .collect()
}

const ZONE: &str = "
zones:
  - {name: porch, camera: door, points: [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]}
";

#[test]
fn zone_enter_and_exit_need_inertia_so_a_flickering_box_does_not_fire() {
    let mut e = engine(&format!(
        "{ZONE}rules:\n  - {{name: in, kind: zone_enter, zone: porch, inertia: 3}}\n  - {{name: out, kind: zone_exit, zone: porch, inertia: 3}}\n"
    ));
    // On the edge: in, out, in, out… never three in a row.
    let flicker: Vec<_> = (0..10)
        .map(|i| (if i % 2 == 0 { 0.41 } else { 0.39 }, 0.5))
        .collect();
    assert!(walk(&mut e, "door", &flicker).is_empty());

    let mut e = engine(&format!(
        "{ZONE}rules:\n  - {{name: in, kind: zone_enter, zone: porch, inertia: 3}}\n  - {{name: out, kind: zone_exit, zone: porch, inertia: 3}}\n"
    ));
    let path = [
        (0.2, 0.5),
        (0.3, 0.5),
        (0.45, 0.5),
        (0.5, 0.5),
        (0.55, 0.5),
        (0.7, 0.5),
        (0.8, 0.5),
        (0.9, 0.5),
    ];
    let events = walk(&mut e, "door", &path);
    let fired: Vec<_> = events.iter().map(|e| (e.rule.as_str(), e.at_ms)).collect();
    // In from the 3rd frame inside (t=400), out from the 3rd frame outside (t=700).
    assert_eq!(fired, [("in", 400), ("out", 700)]);
}

#[test]
fn an_object_lost_inside_a_zone_exits_it_and_occupancy_drops() {
    let mut e = engine(&format!(
        "{ZONE}rules:\n  - {{name: out, kind: zone_exit, zone: porch}}\n  - {{name: count, kind: occupancy, zone: porch}}\n"
    ));
    let first = e.update(&frame(
        "door",
        0,
        vec![at(7, "person", 0.8, 0.5, 0.5)],
        vec![],
    ));
    assert!(
        matches!(first[0].what, What::Occupancy { count: 1, .. }),
        "{first:?}"
    );
    let gone = e.update(&frame("door", 100, vec![], vec![7]));
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert!(
        matches!(&gone[0].what, What::ZoneExit { track_ended: true, object, .. } if object.track_id == 7)
    );
    assert!(matches!(gone[1].what, What::Occupancy { count: 0, .. }));
}

const LINE: &str = "
lines:
  - {name: gate, camera: door, from: [0.2, 0.5], to: [0.8, 0.5]}
";

#[test]
fn line_crossings_have_a_direction_and_going_around_the_end_is_not_crossing() {
    let mut e = engine(&format!(
        "{LINE}rules:\n  - {{name: any, kind: line_cross, line: gate}}\n  - {{name: inbound, kind: line_cross, line: gate, direction: a_to_b}}\n"
    ));
    // Down through the middle (A above, B below), then back up.
    let events = walk(
        &mut e,
        "door",
        &[
            (0.5, 0.3),
            (0.5, 0.45),
            (0.5, 0.55),
            (0.5, 0.7),
            (0.5, 0.52),
            (0.5, 0.4),
        ],
    );
    let got: Vec<_> = events
        .iter()
        .map(|e| match &e.what {
            What::LineCross { direction, .. } => (e.rule.as_str(), *direction, e.at_ms),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            ("any", Crossed::AToB, 200),
            ("inbound", Crossed::AToB, 200),
            ("any", Crossed::BToA, 500)
        ]
    );

    // Past the right end of the line: the side changes but nothing crossed it.
    let mut e = engine(&format!(
        "{LINE}rules:\n  - {{name: any, kind: line_cross, line: gate}}\n"
    ));
    assert!(walk(&mut e, "door", &[(0.9, 0.3), (0.95, 0.5), (0.9, 0.7)]).is_empty());
}

#[test]
fn cooldown_keeps_a_rule_quiet_for_an_object_that_paces_back_and_forth() {
    let mut e = engine(&format!(
        "{LINE}rules:\n  - {{name: any, kind: line_cross, line: gate, cooldown_s: 1}}\n"
    ));
    let pacing: Vec<_> = (0..20)
        .map(|i| (0.5, if i % 2 == 0 { 0.45 } else { 0.55 }))
        .collect();
    // 19 crossings in 1.9 s; with a 1 s cooldown, the first and one a second later.
    let times: Vec<_> = walk(&mut e, "door", &pacing)
        .iter()
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(times, [100, 1100]);
}

#[test]
fn dwell_fires_once_per_visit_after_the_time_in_the_zone() {
    let mut e = engine(&format!(
        "{ZONE}rules:\n  - {{name: loiter, kind: dwell, zone: porch, seconds: 1}}\n"
    ));
    let mut path = vec![(0.2, 0.5)];
    path.extend(std::iter::repeat_n((0.5, 0.5), 25)); // 2.5 s inside
    path.push((0.2, 0.5)); // leaves
    path.extend(std::iter::repeat_n((0.5, 0.5), 12)); // back for 1.2 s
    let events = walk(&mut e, "door", &path);
    let got: Vec<_> = events
        .iter()
        .map(|e| match &e.what {
            What::Dwell { seconds, .. } => (e.at_ms, *seconds),
            other => panic!("{other:?}"),
        })
        .collect();
    // Entered at t=100, fires at t=1100; re-entered at t=2700, fires at t=3700.
    assert_eq!(got, [(1100, 1.0), (3700, 1.0)]);
}

#[test]
fn a_parked_object_fires_once_and_a_moving_one_never() {
    let mut e = engine(&format!(
        "{ZONE}rules:\n  - {{name: parked, kind: stationary, zone: porch, seconds: 2, max_move: 0.01}}\n"
    ));
    let mut out = Vec::new();
    for f in 0..60 {
        let t = f * 100;
        // Object 1 drives in and stops at t=1000, wobbling by a pixel or two (the detector's
        // jitter); object 2 walks through the zone without stopping.
        let parked_x = if f < 10 {
            0.3 + f as f32 * 0.02
        } else {
            0.5 + (f % 2) as f32 * 0.002
        };
        let walker_y = 0.3 + f as f32 * 0.007;
        let tracks = vec![
            at(1, "car", 0.9, parked_x, 0.5),
            at(2, "person", 0.9, 0.45, walker_y),
        ];
        out.extend(e.update(&frame("door", t, tracks, vec![])));
    }
    let got: Vec<_> = out
        .iter()
        .map(|e| match &e.what {
            What::Stationary {
                object, seconds, ..
            } => (object.track_id, e.at_ms, *seconds),
            other => panic!("{other:?}"),
        })
        .collect();
    // It stopped at t=1000 (x=0.5); the wobble stays within 0.01, so it fires 2 s later.
    assert_eq!(got, [(1, 3000, 2.0)]);
}

#[test]
fn combinations_fire_when_all_their_rules_fire_within_the_window_or_any_does() {
    let mut e = engine(&format!(
        "{ZONE}{}rules:
  - {{name: at-door, kind: zone_enter, zone: porch}}
  - {{name: through-gate, kind: line_cross, line: gate}}
  - {{name: both, kind: all, of: [at-door, through-gate], within_s: 1}}
  - {{name: either, kind: any, of: [at-door, through-gate]}}
",
        LINE.trim_start()
    ));
    let step = |e: &mut Engine, t, tracks| e.update(&frame("door", t, tracks, vec![]));
    let names = |ev: Vec<RuleEvent>| {
        ev.into_iter()
            .map(|e| (e.rule, e.at_ms))
            .collect::<Vec<_>>()
    };
    // Person 1 enters the porch at t=0; person 2 crosses the gate at t=500: both within 1 s.
    let mut got = names(step(
        &mut e,
        0,
        vec![
            at(1, "person", 0.9, 0.5, 0.5),
            at(2, "person", 0.9, 0.3, 0.45),
        ],
    ));
    got.extend(names(step(
        &mut e,
        500,
        vec![
            at(1, "person", 0.9, 0.5, 0.5),
            at(2, "person", 0.9, 0.3, 0.55),
        ],
    )));
    assert_eq!(
        got,
        [
            ("at-door".to_string(), 0),
            ("either".to_string(), 0),
            ("through-gate".to_string(), 500),
            ("both".to_string(), 500),
            ("either".to_string(), 500),
        ]
    );
    // Person 2 crosses back at t=2000: alone, `both` stays quiet.
    let late = names(step(
        &mut e,
        2000,
        vec![
            at(1, "person", 0.9, 0.5, 0.5),
            at(2, "person", 0.9, 0.3, 0.45),
        ],
    ));
    assert_eq!(
        late,
        [
            ("through-gate".to_string(), 2000),
            ("either".to_string(), 2000)
        ]
    );
}

#[test]
fn occupancy_thresholds_fire_on_the_way_up_and_down() {
    let mut e = engine(&format!(
        "{ZONE}rules:\n  - {{name: crowd, kind: occupancy, zone: porch, labels: [person], above: 2}}\n"
    ));
    let people = |n: u64| {
        (1..=n)
            .map(|id| at(id, "person", 0.9, 0.5, 0.5))
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    for (t, n) in [(0, 1), (100, 2), (200, 3), (300, 4), (400, 2), (500, 1)] {
        let mut tracks = people(n);
        tracks.push(at(99, "car", 0.9, 0.5, 0.5)); // not counted: wrong label
        out.extend(e.update(&frame("door", t, tracks, vec![])));
    }
    let got: Vec<_> = out
        .iter()
        .map(|e| match e.what {
            What::Occupancy { count, above, .. } => (e.at_ms, count, above),
            ref other => panic!("{other:?}"),
        })
        .collect();
    // Nobody "ended" at t=400: ids 3 and 4 are simply not seen, so they still count until the
    // tracker ends them. The threshold event is about the tracks the tracker reports.
    assert_eq!(got, [(200, 3, Some(true))]);
    let out = e.update(&frame("door", 600, people(1), vec![2, 3, 4]));
    assert!(
        matches!(
            out[0].what,
            What::Occupancy {
                count: 1,
                above: Some(false),
                ..
            }
        ),
        "{out:?}"
    );
}

#[test]
fn labels_scores_and_streams_filter_what_a_rule_sees() {
    let mut e = engine(&format!(
        "{ZONE}rules:\n  - {{name: in, kind: zone_enter, zone: porch, labels: [car], min_score: 0.5}}\n"
    ));
    let inside = |id, label: &str, score| at(id, label, score, 0.5, 0.5);
    assert!(e
        .update(&frame("door", 0, vec![inside(1, "person", 0.9)], vec![]))
        .is_empty());
    assert!(e
        .update(&frame("door", 0, vec![inside(2, "car", 0.3)], vec![]))
        .is_empty());
    assert!(
        e.update(&frame("yard", 0, vec![inside(3, "car", 0.9)], vec![]))
            .is_empty(),
        "zone is on door"
    );
    let fired = e.update(&frame("door", 0, vec![inside(4, "car", 0.9)], vec![]));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].stream, "door");
}

#[test]
fn bad_rules_are_refused_with_every_problem_and_its_path() {
    let labels = vec!["person".to_string(), "car".to_string()];
    let err = RuleSet::parse(
        "
zones:
  - {name: bowtie, camera: a, points: [[0, 0], [1, 1], [1, 0], [0, 1]]}
  - {name: flat, camera: a, points: [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]}
  - {name: far, camera: a, points: [[0.1, 0.1], [1.5, 0.1], [0.1, 0.5]]}
  - {name: two, camera: a, points: [[0.1, 0.1], [0.2, 0.2]]}
lines:
  - {name: dot, camera: a, from: [0.5, 0.5], to: [0.5, 0.5]}
rules:
  - {name: r1, kind: zone_enter, zone: nowhere}
  - {name: r2, kind: line_cross, line: dot, seconds: 3}
  - {name: r3, kind: dwell, zone: flat}
  - {name: r4, kind: zone_exit, zone: flat, labels: [unicorn], inertia: 0}
  - {name: r5, kind: teleport, zone: flat}
  - {name: r6, kind: occupancy, zone: flat, colour: red}
  - {name: r7, kind: stationary, zone: flat, max_move: 2}
  - {name: r8, kind: all, of: [r1, r8, ghost], zone: flat}
",
        Some(&labels),
    )
    .expect_err("must refuse")
    .to_string();
    for want in [
        "zones[0].points: the outline crosses itself",
        "zones[1].points: the zone has no area",
        "zones[2].points: [1.5, 0.1] is outside the image",
        "zones[3].points: a zone needs at least 3 points",
        "lines[0].to: the line has no length",
        "rules[0].zone: no zone named \"nowhere\"",
        "rules[1].seconds: does not apply",
        "rules[2].seconds: missing",
        "rules[3].labels[0]: unknown label \"unicorn\"",
        "rules[3].inertia: must be at least 1",
        "rules[4].kind: unknown variant `teleport`",
        "rules[5].colour: unknown field `colour`",
        "rules[6].seconds: missing",
        "rules[6].max_move: must be in (0, 1]",
        "rules[7].zone: does not apply",
        "rules[7].of[1]: \"r8\" is itself a combination",
        "rules[7].of[2]: no rule named \"ghost\"",
        "rules[7].within_s: missing",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn zone_occupancy_counts_each_label_standing_in_each_zone_of_the_stream() {
    let set = RuleSet::parse(
        "zones:\n  - {name: porch, camera: door, points: [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]}\n  - {name: yard, camera: door, points: [[0, 0], [1, 0], [1, 1], [0, 1]]}\n  - {name: gate, camera: back, points: [[0, 0], [1, 0], [1, 1], [0, 1]]}\n",
        None,
    )
    .unwrap();
    let tracks = vec![
        at(1, "person", 0.9, 0.5, 0.5),
        at(2, "person", 0.9, 0.55, 0.45),
        at(3, "dog", 0.9, 0.5, 0.5),
        at(4, "person", 0.9, 0.9, 0.9),
    ];
    let counts = aegis_rules::zone_occupancy(&set.zones, &frame("door", 0, tracks, vec![]));
    let key = |z: &str, l: &str| (z.to_owned(), l.to_owned());
    assert_eq!(counts.get(&key("porch", "person")), Some(&2));
    assert_eq!(counts.get(&key("porch", "dog")), Some(&1));
    assert_eq!(counts.get(&key("yard", "person")), Some(&3));
    assert!(
        !counts.keys().any(|(z, _)| z == "gate"),
        "another stream's zone"
    );
    assert_eq!(counts.len(), 4);
}
