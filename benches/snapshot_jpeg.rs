//! The in-process half of a snapshot: a 1280x720 decoder picture (PPM, as ffmpeg hands it over) to JPEG,
//! with criterion. The other half, the ffmpeg child that decodes the keyframe, is measured with the whole
//! server by `benches/snapshot.sh`.

use criterion::{Criterion, criterion_group, criterion_main};
use livechannel::snapshot::{encode_jpeg, parse_ppm};

/// A 720p picture with gradients and edges, like a test pattern: a flat one would flatter the encoder.
fn picture() -> Vec<u8> {
    let (w, h) = (1280usize, 720usize);
    let mut ppm = format!("P6\n{w} {h}\n255\n").into_bytes();
    for y in 0..h {
        for x in 0..w {
            let bar = (x * 8 / w) as u8;
            ppm.extend_from_slice(&[
                (x * 255 / w) as u8 ^ (bar * 31),
                (y * 255 / h) as u8,
                if (x / 16 + y / 16) % 2 == 0 { 230 } else { 20 },
            ]);
        }
    }
    ppm
}

fn bench(c: &mut Criterion) {
    let ppm = picture();
    c.bench_function("snapshot: parse 720p PPM + encode JPEG q85", |b| {
        b.iter(|| encode_jpeg(&parse_ppm(&ppm).unwrap(), 85).unwrap().len())
    });
}

criterion_group! { name = benches; config = Criterion::default().sample_size(20); targets = bench }
criterion_main!(benches);
