//! The parser over a few thousand mutated cores: never a panic, never a hang.
//! (Coverage-guided fuzzing of the same entry point lives in fuzz/.)

use crate::synth;
use coreheap::image::core::CoreFile;
use coreheap::{Options, Process};
use std::time::{Duration, Instant};

/// xorshift64*: deterministic, so a failure reproduces from its iteration number.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const INTERESTING: [u64; 8] = [0, 1, 0x7f, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    // Mutations concentrate on the headers and notes, where the parser's decisions are.
    for _ in 0..1 + rng.below(8) {
        if b.is_empty() {
            return b;
        }
        let hot = b.len().min(4096);
        match rng.below(6) {
            0 => {
                let i = rng.below(hot);
                b[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(hot);
                b[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(hot.saturating_sub(8).max(1));
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let w = [1, 2, 4, 8][rng.below(4)];
                let end = (i + w).min(b.len());
                b[i..end].copy_from_slice(&v.to_le_bytes()[..end - i]);
            }
            3 => {
                let n = rng.below(b.len() + 1);
                b.truncate(n);
            }
            4 => {
                let i = rng.below(b.len());
                let j = rng.below(b.len());
                b.swap(i, j);
            }
            _ => {
                let n = rng.below(64);
                let i = rng.below(hot);
                let src: Vec<u8> = b[i..(i + n).min(b.len())].to_vec();
                let j = rng.below(hot);
                let end = (j + src.len()).min(b.len());
                b[j..end].copy_from_slice(&src[..end - j]);
            }
        }
    }
    b
}

fn exercise(bytes: Vec<u8>) {
    if let Ok(core) = CoreFile::from_bytes("mutant", bytes) {
        let p = Process::from_core(core, &Options::default());
        let info = coreheap::analysis::info::info(&p);
        // Render too: the renderers must cope with whatever the parser accepted.
        let mut sink = Vec::new();
        coreheap::report::info::write_text(&mut sink, &info, Default::default()).unwrap();
        coreheap::report::write_json(&mut sink, "info", &info).unwrap();
    }
}

#[test]
fn mutated_cores_never_panic() {
    let mut bases = vec![synth::core().bytes];
    // The head of a real core, when the reference corpus is checked out.
    if let Some(c) = crate::corpus::reference_cases()
        .into_iter()
        .find(|c| c.scenario == "py_heap")
    {
        if let Ok(raw) = zstd::decode_all(std::fs::File::open(&c.core).unwrap()) {
            bases.push(raw[..raw.len().min(256 << 10)].to_vec());
        }
    }
    let start = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = 3000;
    for i in 0..n {
        let base = &bases[i % bases.len()];
        let m = mutate(&mut rng, base);
        let r = std::panic::catch_unwind(move || exercise(m));
        assert!(r.is_ok(), "mutation {i} panicked");
        // A hang guard, not a performance assertion: each mutant is tiny.
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "parser too slow or hanging at mutation {i}"
        );
    }
}
