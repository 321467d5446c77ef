//! A real core whose heap was damaged on purpose: an impossible chunk size, a looping bin
//! list, a broken tcache link. The walk reports each with its address, never panics nor
//! hangs, and still counts everything it can.

use crate::corpus;
use coreheap::alloc::glibc::{ChunkState, GlibcHeap};
use coreheap::image::core::CoreFile;
use coreheap::image::modules::SearchPaths;
use coreheap::{Addr, Options, Process};

fn file_offset(core: &CoreFile, a: u64) -> usize {
    let s = core
        .segments
        .iter()
        .find(|s| a >= s.vaddr.get() && a + 8 <= s.vaddr.get() + s.in_core)
        .expect("address in the core");
    (s.offset + (a - s.vaddr.get())) as usize
}

fn walk(bytes: Vec<u8>, sysroot: &std::path::Path) -> GlibcHeap {
    let core = CoreFile::from_bytes("damaged", bytes).unwrap();
    let opts = Options {
        search: SearchPaths {
            sysroot: Some(sysroot.to_path_buf()),
            ..Default::default()
        },
        heap_models: None,
    };
    let p = Process::from_core(core, &opts);
    let models = coreheap::models::glibc_models(None).unwrap();
    coreheap::alloc::glibc::analyze(&p, &models)
        .unwrap()
        .unwrap()
}

#[test]
fn damaged_heap_is_reported_and_the_rest_counted() {
    let cases = corpus::reference_cases();
    let case = cases
        .iter()
        .find(|c| c.scenario == "c_heap" && c.name.starts_with("trixie"))
        .expect("trixie c_heap reference case");
    let sysroot = case.sysroot.clone().unwrap();
    let raw = zstd::decode_all(std::fs::File::open(&case.core).unwrap()).unwrap();
    let base = walk(raw.clone(), &sysroot);
    let core = CoreFile::from_bytes("index", raw.clone()).unwrap();

    // Pick victims in different arenas: a live chunk in thread arena 1, a small-bin chunk
    // in the main arena, a tcache chunk whose list we break.
    let arena_of = |a: Addr| {
        base.arenas.iter().position(|ar| {
            ar.heaps
                .iter()
                .any(|h| a >= h.address && a.get() < h.address.get() + h.size)
        })
    };
    let live = base
        .chunks
        .iter()
        .filter(|c| c.state() == ChunkState::InUse && arena_of(c.addr) == Some(1))
        .nth(20)
        .expect("a live chunk in arena 1");
    let small = base
        .chunks
        .iter()
        .find(|c| c.state() == ChunkState::SmallBin && arena_of(c.addr) == Some(0))
        .expect("a small-bin chunk in the main arena");
    let tc = base
        .chunks
        .iter()
        .find(|c| c.state() == ChunkState::Tcache && arena_of(c.addr) == Some(2))
        .expect("a tcache chunk in arena 2");

    let mut bytes = raw;
    let put = |b: &mut Vec<u8>, a: u64, v: u64| {
        let o = file_offset(&core, a);
        b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    };
    put(&mut bytes, live.addr.get() + 8, 0x7fff_ffff_ffff_fff1); // impossible size
    put(&mut bytes, small.addr.get() + 24, small.addr.get()); // bk -> itself: a loop
    put(&mut bytes, tc.addr.get() + 16, 0x4141_4141_4141_4141); // tcache next -> garbage

    let h = walk(bytes, &sysroot);
    let mentions = |a: Addr| {
        h.diagnostics
            .iter()
            .any(|d| d.address == Some(a) || d.message.contains(&format!("{a}")))
    };
    assert!(
        mentions(live.addr),
        "size damage at {} not reported: {:#?}",
        live.addr,
        h.diagnostics
    );
    assert!(
        h.diagnostics
            .iter()
            .any(|d| d.message.contains("seen twice")),
        "bin loop not reported: {:#?}",
        h.diagnostics
    );
    assert!(
        h.diagnostics
            .iter()
            .any(|d| d.message.contains("tcache list")),
        "tcache damage not reported: {:#?}",
        h.diagnostics
    );
    // The rest is still counted: every arena still has its chunks; the damaged live chunk's
    // arena loses at most the chunks between the damage and the resynchronisation point.
    assert_eq!(h.arenas.len(), base.arenas.len());
    for (a, b) in h.arenas.iter().zip(&base.arenas) {
        assert_eq!(a.system_bytes, b.system_bytes);
        assert!(a.in_use.chunks > 0);
        assert!(
            a.in_use.chunks + 64 >= b.in_use.chunks,
            "{} lost too much: {} vs {}",
            a.address,
            a.in_use.chunks,
            b.in_use.chunks
        );
    }
    assert_eq!(h.mmapped, base.mmapped);
}

/// Random damage all over a real Python core's memory: the walkers and the census never
/// panic, whatever they read (bounded lists, checked sizes, validated types).
#[test]
fn random_memory_damage_never_panics() {
    for case in corpus::reference_cases()
        .into_iter()
        .filter(|c| c.name.starts_with("trixie") || c.name.starts_with("bullseye"))
    {
        damage_rounds(&case);
    }
}

fn damage_rounds(case: &corpus::Case) {
    let sysroot = case.sysroot.clone().unwrap();
    let raw = zstd::decode_all(std::fs::File::open(&case.core).unwrap()).unwrap();
    let core = CoreFile::from_bytes("index", raw.clone()).unwrap();
    let data: Vec<(usize, usize)> = core
        .segments
        .iter()
        .filter(|s| s.in_core >= 4096)
        .map(|s| (s.offset as usize, s.in_core as usize))
        .collect();
    let g = coreheap::models::glibc_models(None).unwrap();
    let c = coreheap::models::cpython_models(None).unwrap();
    let mut seed = std::env::var("COREHEAP_DAMAGE_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x2545_f491_4f6c_dd1d);
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..12 {
        let mut bytes = raw.clone();
        for _ in 0..400 {
            let (off, len) = data[(next() % data.len() as u64) as usize];
            let at = off + ((next() % (len as u64 - 8)) as usize & !7);
            let v = match next() % 4 {
                0 => 0,
                1 => u64::MAX,
                2 => next(),
                _ => {
                    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) ^ (1 << (next() % 64))
                }
            };
            bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let sysroot = sysroot.clone();
        let models = coreheap::analysis::Models {
            glibc: g.clone(),
            cpython: c.clone(),
            cpython_ft: Vec::new(),
        };
        let r = std::panic::catch_unwind(move || {
            let core = CoreFile::from_bytes("damaged", bytes).unwrap();
            let opts = Options {
                search: SearchPaths {
                    sysroot: Some(sysroot),
                    ..Default::default()
                },
                heap_models: None,
            };
            let p = Process::from_core(core, &opts);
            if let Ok(a) =
                coreheap::analysis::Analysis::run(&p, &models, &coreheap::progress::NoProgress)
            {
                let _ = coreheap::analysis::summary::summary(
                    &a,
                    coreheap::analysis::summary::By::Type,
                    &Default::default(),
                );
                let _ = coreheap::analysis::frag::frag(&a);
            }
        });
        assert!(r.is_ok(), "{}: round {round} panicked", case.name);
    }
}
