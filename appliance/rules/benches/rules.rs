//! Rules evaluation throughput: 20 zones, 10 lines and a rule on each (plus dwell and occupancy
//! on every zone), 200 objects moving across the frame. Reports track updates per second.

use aegis_rules::{Engine, RuleSet, TrackFrame, TrackIn};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const OBJECTS: usize = 200;
const FRAMES: usize = 50;

fn rules_yaml() -> String {
    let mut zones = String::from("zones:\n");
    let mut lines = String::from("lines:\n");
    let mut rules = String::from("rules:\n");
    for i in 0..20 {
        let (x, y) = ((i % 5) as f64 * 0.2, (i / 5) as f64 * 0.25);
        zones += &format!(
            "  - {{name: z{i}, camera: cam, points: [[{x}, {y}], [{}, {y}], [{}, {}], [{x}, {}]]}}\n",
            x + 0.18,
            x + 0.18,
            y + 0.22,
            y + 0.22
        );
        rules += &format!("  - {{name: enter{i}, kind: zone_enter, zone: z{i}, inertia: 2}}\n");
        rules += &format!("  - {{name: dwell{i}, kind: dwell, zone: z{i}, seconds: 5}}\n");
        rules += &format!("  - {{name: count{i}, kind: occupancy, zone: z{i}, above: 3}}\n");
    }
    for i in 0..10 {
        let y = 0.05 + i as f64 * 0.1;
        lines += &format!("  - {{name: l{i}, camera: cam, from: [0.0, {y}], to: [1.0, {y}]}}\n");
        rules += &format!("  - {{name: cross{i}, kind: line_cross, line: l{i}}}\n");
    }
    format!("{zones}{lines}{rules}")
}

fn frames() -> Vec<TrackFrame> {
    (0..FRAMES)
        .map(|f| TrackFrame {
            stream: "cam".into(),
            t_ms: f as i64 * 200,
            frame: [1920, 1080],
            tracks: (0..OBJECTS)
                .map(|i| {
                    let x = ((i * 97) % 1900) as f32;
                    let y = ((i * 53 + f * 7 * (1 + i % 3)) % 1000) as f32 + 60.0;
                    TrackIn {
                        id: i as u64 + 1,
                        label: if i % 4 == 0 { "car" } else { "person" }.into(),
                        score: 0.8,
                        bbox: [x, y - 60.0, x + 20.0, y],
                    }
                })
                .collect(),
            ended: vec![],
        })
        .collect()
}

fn rules(c: &mut Criterion) {
    let set = RuleSet::parse(&rules_yaml(), None).expect("valid rules");
    let frames = frames();
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements((OBJECTS * FRAMES) as u64));
    group.bench_function("200_objects_20_zones_10_lines", |b| {
        b.iter(|| {
            let mut engine = Engine::new(set.clone());
            for f in &frames {
                criterion::black_box(engine.update(f));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, rules);
criterion_main!(benches);
