//! Text rendering of `coreheap frag`.

use super::{clean, human_bytes, Align, Table, Text};
use crate::analysis::frag::Frag;
use std::io::{self, Write};

/// The words for how glibc's state was found (JSON has the identifier).
fn glibc_found_by(f: crate::alloc::glibc::FoundBy) -> &'static str {
    use crate::alloc::glibc::FoundBy::*;
    match f {
        Symbol => "symbol",
        DataInitializer => "libc .data initializer",
        ThreadArenaRing => "thread arena ring",
        BinScan => "bin-head scan",
    }
}

fn pymalloc_found_by(f: crate::alloc::pymalloc::FoundBy) -> &'static str {
    use crate::alloc::pymalloc::FoundBy::*;
    match f {
        Symbol => "symbol",
        UsedpoolsSignature => "usedpools signature",
    }
}

fn arena_kind(k: crate::alloc::glibc::ArenaKind) -> &'static str {
    match k {
        crate::alloc::glibc::ArenaKind::Main => "main",
        crate::alloc::glibc::ArenaKind::Thread => "thread",
    }
}

fn cnt(c: &crate::alloc::glibc::Count) -> String {
    if c.chunks == 0 {
        "-".into()
    } else {
        format!("{} ({})", human_bytes(c.bytes), c.chunks)
    }
}

pub fn write_text(w: &mut dyn Write, f: &Frag, text: Text) -> io::Result<()> {
    write_glibc(w, f, text)?;
    if let Some(py) = &f.pymalloc {
        writeln!(w)?;
        write_pymalloc(w, py, text)?;
    }
    if let Some(mi) = &f.mimalloc {
        writeln!(w)?;
        write_mimalloc(w, mi, text)?;
    }
    let o = &f.overall;
    writeln!(w, "\noverall")?;
    writeln!(
        w,
        "  mapped                     {:>12}",
        human_bytes(o.mapped_bytes)
    )?;
    if let Some(b) = o.live_object_bytes {
        writeln!(w, "  in live Python objects     {:>12}", human_bytes(b))?;
    }
    if f.glibc.is_some() {
        writeln!(
            w,
            "  glibc arenas               {:>12}  in use {}, free {} (top included)",
            human_bytes(o.glibc_system_bytes),
            human_bytes(o.glibc_in_use_bytes),
            human_bytes(o.glibc_free_bytes)
        )?;
        writeln!(
            w,
            "  glibc mmapped chunks       {:>12}",
            human_bytes(o.glibc_mmapped_bytes)
        )?;
    }
    if f.mimalloc.is_some() {
        writeln!(
            w,
            "  mimalloc pages in use      {:>12}  in live blocks {}, free {}",
            human_bytes(o.mimalloc_page_bytes),
            human_bytes(o.mimalloc_in_use_bytes),
            human_bytes(o.mimalloc_free_bytes)
        )?;
    }
    if f.pymalloc.is_some() {
        writeln!(
            w,
            "  pymalloc arenas            {:>12}  in use {}, free {}",
            human_bytes(o.pymalloc_arena_bytes),
            human_bytes(o.pymalloc_in_use_bytes),
            human_bytes(o.pymalloc_free_bytes)
        )?;
    }
    Ok(())
}

fn write_pymalloc(
    w: &mut dyn Write,
    py: &crate::alloc::pymalloc::PymallocHeap,
    text: Text,
) -> io::Result<()> {
    writeln!(
        w,
        "pymalloc (model {}, state {} found by {}): {} arenas of {}, pools of {}: {} used, {} full, {} empty",
        py.model,
        py.state,
        pymalloc_found_by(py.found_by),
        py.arenas,
        human_bytes(py.arena_size),
        human_bytes(py.pool_size),
        py.pools.used,
        py.pools.full,
        py.pools.empty
    )?;
    let mut t = Table::new(&[
        ("SIZE", Align::Right),
        ("POOLS", Align::Right),
        ("BLOCKS IN USE", Align::Right),
        ("FREE BLOCKS", Align::Right),
        ("IN USE", Align::Right),
        ("UTILISATION", Align::Right),
    ]);
    for c in py.size_classes.iter().filter(|c| c.pools > 0) {
        let total = c.blocks_in_use + c.blocks_free;
        t.row(vec![
            c.size.to_string(),
            c.pools.to_string(),
            c.blocks_in_use.to_string(),
            c.blocks_free.to_string(),
            human_bytes(c.blocks_in_use * c.size),
            format!(
                "{:.0}%",
                100.0 * c.blocks_in_use as f64 / total.max(1) as f64
            ),
        ]);
    }
    t.write(w, "  ", text)?;
    let pinned: Vec<_> = py.arena_list.iter().filter(|a| a.pinned).collect();
    if !pinned.is_empty() {
        let held: u64 = pinned.len() as u64 * py.arena_size;
        let live: u64 = pinned.iter().map(|a| a.bytes_in_use).sum();
        writeln!(
            w,
            "  {} of {} arenas are pinned (under {:.0}% used): {} held for {} of live blocks",
            pinned.len(),
            py.arenas,
            crate::alloc::pymalloc::PINNED_BELOW * 100.0,
            human_bytes(held),
            human_bytes(live)
        )?;
        let mut t = Table::new(&[
            ("ARENA", Align::Left),
            ("LIVE BLOCKS", Align::Right),
            ("IN USE", Align::Right),
            ("PINNED BY (block size x live blocks)", Align::Left),
        ]);
        for a in pinned.iter().take(10) {
            let mut cls = a.classes.clone();
            cls.sort_by(|x, y| y[1].cmp(&x[1]));
            let by: Vec<String> = cls
                .iter()
                .take(4)
                .map(|c| format!("{}x{}", c[0], c[1]))
                .collect();
            t.row(vec![
                a.address.to_string(),
                a.blocks_in_use.to_string(),
                human_bytes(a.bytes_in_use),
                by.join(", "),
            ]);
        }
        t.write(w, "    ", text)?;
        if pinned.len() > 10 {
            writeln!(w, "    ... {} more (see --json)", pinned.len() - 10)?;
        }
    }
    Ok(())
}

/// mimalloc pages per heap tag and block size, their fill, and the pages kept by few live
/// blocks (a page returns to its segment only when all its blocks are free).
fn write_mimalloc(
    w: &mut dyn Write,
    mi: &crate::alloc::mimalloc::MimallocHeap,
    text: Text,
) -> io::Result<()> {
    writeln!(
        w,
        "mimalloc (free-threaded CPython, model {}): {} segments ({} abandoned), {} pages with live blocks",
        mi.model, mi.segments, mi.abandoned_segments, mi.pages
    )?;
    let mut t = Table::new(&[
        ("HEAP", Align::Left),
        ("BLOCK SIZE", Align::Right),
        ("PAGES", Align::Right),
        ("LIVE BLOCKS", Align::Right),
        ("FREE BLOCKS", Align::Right),
        ("IN USE", Align::Right),
        ("FILL", Align::Right),
        ("SPARSE PAGES", Align::Right),
    ]);
    for c in &mi.size_classes {
        let total = c.count + c.free_count;
        t.row(vec![
            c.heap.clone(),
            c.size.to_string(),
            c.pages.to_string(),
            c.count.to_string(),
            c.free_count.to_string(),
            human_bytes(c.count * c.size),
            format!("{:.0}%", 100.0 * c.count as f64 / total.max(1) as f64),
            c.sparse_pages.to_string(),
        ]);
    }
    t.write(w, "  ", text)?;
    // Every thread allocates into its own heaps: live bytes by owner and heap tag.
    let mut t = Table::new(&[
        ("HEAPS OF THREAD", Align::Left),
        ("PAGES", Align::Right),
        ("LIVE BLOCKS", Align::Right),
        ("MEM", Align::Right),
        ("OBJECT", Align::Right),
        ("GC", Align::Right),
        ("GC_PRE", Align::Right),
    ]);
    for th in &mi.threads {
        t.row(vec![
            match (th.thread_id, th.tid) {
                (0, _) => "abandoned (threads that ended)".to_string(),
                (_, Some(tid)) => format!("{tid} ({:#x})", th.thread_id),
                (x, None) => format!("{x:#x} (not in the core)"),
            },
            th.pages.to_string(),
            th.live_blocks.to_string(),
            human_bytes(th.live_bytes[0]),
            human_bytes(th.live_bytes[1]),
            human_bytes(th.live_bytes[2]),
            human_bytes(th.live_bytes[3]),
        ]);
    }
    t.write(w, "  ", text)?;
    let mut sparse: Vec<_> = mi
        .page_list
        .iter()
        .filter(|p| (p.live as f64) < crate::alloc::mimalloc::SPARSE_BELOW * p.reserved as f64)
        .collect();
    if !sparse.is_empty() {
        sparse.sort_by(|a, b| {
            (b.bytes - (b.live * b.block_size).min(b.bytes))
                .cmp(&(a.bytes - (a.live * a.block_size).min(a.bytes)))
        });
        let held: u64 = sparse.iter().map(|p| p.bytes).sum();
        let live: u64 = sparse.iter().map(|p| p.live * p.block_size).sum();
        writeln!(
            w,
            "  {} of {} pages are kept by few live blocks (under {:.0}% full): {} held for {} of live blocks",
            sparse.len(),
            mi.pages,
            crate::alloc::mimalloc::SPARSE_BELOW * 100.0,
            human_bytes(held),
            human_bytes(live)
        )?;
        let mut t = Table::new(&[
            ("PAGE", Align::Left),
            ("HEAP", Align::Left),
            ("BLOCK SIZE", Align::Right),
            ("LIVE", Align::Right),
            ("OF", Align::Right),
            ("HELD", Align::Right),
        ]);
        for p in sparse.iter().take(10) {
            t.row(vec![
                p.address.to_string(),
                p.heap.clone(),
                p.block_size.to_string(),
                p.live.to_string(),
                p.reserved.to_string(),
                human_bytes(p.bytes),
            ]);
        }
        t.write(w, "    ", text)?;
        if sparse.len() > 10 {
            writeln!(w, "    ... {} more (see --json)", sparse.len() - 10)?;
        }
    }
    Ok(())
}

fn write_glibc(w: &mut dyn Write, f: &Frag, text: Text) -> io::Result<()> {
    let Some(g) = &f.glibc else {
        return writeln!(w, "glibc malloc: not found in this process");
    };
    writeln!(
        w,
        "glibc {} malloc (model {}): main_arena {} (found by {}), safe-linking {}",
        clean(g.version.as_deref().unwrap_or("?")),
        g.model,
        g.main_arena,
        glibc_found_by(g.main_arena_found_by),
        match g.safe_linking {
            Some(true) => "on",
            Some(false) => "off",
            None => "unknown",
        }
    )?;
    let mut t = Table::new(&[
        ("ARENA", Align::Left),
        ("KIND", Align::Left),
        ("HEAPS", Align::Right),
        ("SYSTEM", Align::Right),
        ("IN USE (chunks)", Align::Right),
        ("TCACHE", Align::Right),
        ("FASTBINS", Align::Right),
        ("UNSORTED", Align::Right),
        ("SMALL BINS", Align::Right),
        ("LARGE BINS", Align::Right),
        ("TOP", Align::Right),
        ("OVERHEAD", Align::Right),
        ("LARGEST FREE", Align::Right),
        ("FRAG", Align::Right),
    ]);
    for a in &g.arenas {
        t.row(vec![
            a.address.to_string(),
            arena_kind(a.kind).to_string(),
            a.heaps.len().to_string(),
            human_bytes(a.system_bytes),
            cnt(&a.in_use),
            cnt(&a.free.tcache),
            cnt(&a.free.fastbins),
            cnt(&a.free.unsorted),
            cnt(&a.free.smallbins),
            cnt(&a.free.largebins),
            human_bytes(a.top_bytes),
            human_bytes(a.overhead_bytes),
            human_bytes(a.largest_free),
            format!("{:.2}", a.fragmentation),
        ]);
    }
    t.write(w, "  ", text)?;
    writeln!(w, "  mmapped chunks: {}", cnt(&g.mmapped))?;
    writeln!(w, "  tcaches: {} thread caches found", g.tcaches.len())?;
    Ok(())
}
