//! Batch planning at the paper's data scale: MJSynth + SynthText (14.4M images, two sources mixed 0.5/0.5,
//! batch 192) as a virtual dataset (sizes only; planning never reads images). A plan must cost O(batch):
//! compare with the same batch planned from a 1k-image dataset.

use criterion::{criterion_group, criterion_main, Criterion};
use strnas::data::loader::TrainStream;

fn bench(c: &mut Criterion) {
    let paper = TrainStream::new(vec![8_900_000, 5_500_000], &[0.5, 0.5], 192, 1).expect("stream");
    let small = TrainStream::new(vec![500, 500], &[0.5, 0.5], 192, 1).expect("stream");
    let mut i = 0u64;
    c.bench_function("data/plan batch 192 of 14.4M (MJ 8.9M + ST 5.5M)", |b| {
        b.iter(|| {
            i += 1;
            paper.batch(i)
        })
    });
    c.bench_function("data/plan batch 192 of 1k", |b| {
        b.iter(|| {
            i += 1;
            small.batch(i)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
