//! Tracker throughput: frames per second at 10, 50 and 200 objects per frame.
//! Objects move on straight lines across a 1920x1080 frame with detection noise.

use std::sync::Arc;

use aegis_domain::{BBox, Detection, Tracker};
use aegis_track::{ByteTracker, TrackerParams};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn scene(objects: usize, frames: usize) -> Vec<Vec<Detection>> {
    let mut seed = 7u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 40) as f32 / (1u64 << 24) as f32
    };
    let label: Arc<str> = Arc::from("person");
    let starts: Vec<(f32, f32, f32, f32)> = (0..objects)
        .map(|_| {
            (
                rnd() * 1800.0,
                rnd() * 950.0,
                rnd() * 6.0 - 3.0,
                rnd() * 4.0 - 2.0,
            )
        })
        .collect();
    (0..frames)
        .map(|f| {
            starts
                .iter()
                .map(|&(x, y, vx, vy)| {
                    let (x, y) = (
                        (x + vx * f as f32).rem_euclid(1800.0),
                        (y + vy * f as f32).rem_euclid(950.0),
                    );
                    Detection {
                        bbox: BBox::from_xywh(x + rnd() * 2.0, y + rnd() * 2.0, 40.0, 100.0),
                        score: 0.3 + 0.7 * rnd(),
                        class_id: 0,
                        label: label.clone(),
                    }
                })
                .collect()
        })
        .collect()
}

fn tracker(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker");
    for objects in [10, 50, 200] {
        let frames = scene(objects, 100);
        group.throughput(Throughput::Elements(frames.len() as u64));
        group.bench_with_input(BenchmarkId::new("frames", objects), &frames, |b, frames| {
            b.iter(|| {
                let mut t = ByteTracker::new(TrackerParams::default());
                for dets in frames {
                    criterion::black_box(t.update(dets));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, tracker);
criterion_main!(benches);
