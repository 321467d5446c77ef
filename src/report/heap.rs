//! Text rendering of `frag` and `summary`.

use super::{human_bytes, Align, Table};
use crate::frag::Frag;
use crate::summary::Summary;
use std::io::{self, Write};

fn cnt(c: &crate::glibc::Count) -> String {
    if c.chunks == 0 {
        "-".into()
    } else {
        format!("{} ({})", human_bytes(c.bytes), c.chunks)
    }
}

pub fn write_frag(w: &mut dyn Write, f: &Frag) -> io::Result<()> {
    write_glibc(w, f)?;
    if let Some(py) = &f.pymalloc {
        writeln!(w)?;
        write_pymalloc(w, py)?;
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

fn write_pymalloc(w: &mut dyn Write, py: &crate::python::pymalloc::PymallocHeap) -> io::Result<()> {
    writeln!(
        w,
        "pymalloc (model {}, state {} found by {}): {} arenas of {}, pools of {}: {} used, {} full, {} empty",
        py.model,
        py.state,
        py.found_by,
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
    t.write(w, "  ")?;
    let pinned: Vec<_> = py.arena_list.iter().filter(|a| a.pinned).collect();
    if !pinned.is_empty() {
        let held: u64 = pinned.len() as u64 * py.arena_size;
        let live: u64 = pinned.iter().map(|a| a.bytes_in_use).sum();
        writeln!(
            w,
            "  {} of {} arenas are pinned (under {:.0}% used): {} held for {} of live blocks",
            pinned.len(),
            py.arenas,
            crate::python::pymalloc::PINNED_BELOW * 100.0,
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
        t.write(w, "    ")?;
        if pinned.len() > 10 {
            writeln!(w, "    ... {} more (see --json)", pinned.len() - 10)?;
        }
    }
    Ok(())
}

fn write_glibc(w: &mut dyn Write, f: &Frag) -> io::Result<()> {
    let Some(g) = &f.glibc else {
        return writeln!(w, "glibc malloc: not found in this process");
    };
    writeln!(
        w,
        "glibc {} malloc (model {}): main_arena {} (found by {}), safe-linking {}",
        g.version.as_deref().unwrap_or("?"),
        g.model,
        g.main_arena,
        g.main_arena_found_by,
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
            a.kind.to_string(),
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
    t.write(w, "  ")?;
    writeln!(w, "  mmapped chunks: {}", cnt(&g.mmapped))?;
    writeln!(w, "  tcaches: {} thread caches found", g.tcaches.len())?;
    Ok(())
}

pub fn write_summary(
    w: &mut dyn Write,
    s: &Summary,
    top: Option<usize>,
    by_type: bool,
) -> io::Result<()> {
    let n = top.unwrap_or(usize::MAX);
    if by_type && !s.types.is_empty() {
        let total: u64 = s.types.iter().map(|t| t.bytes).sum();
        let count: u64 = s.types.iter().map(|t| t.count).sum();
        writeln!(
            w,
            "live Python objects and other allocations by type: {count}, {}",
            human_bytes(total)
        )?;
        let mut t = Table::new(&[
            ("TYPE", Align::Left),
            ("COUNT", Align::Right),
            ("BYTES", Align::Right),
        ]);
        for r in s.types.iter().take(n) {
            t.row(vec![
                r.name.clone(),
                r.count.to_string(),
                human_bytes(r.bytes),
            ]);
        }
        t.write(w, "  ")?;
        if !s.freelists.is_empty() {
            let fl: Vec<String> = s
                .freelists
                .iter()
                .map(|f| format!("{} {}", f.count, f.name))
                .collect();
            writeln!(
                w,
                "  free-list residents (not counted above): {}",
                fl.join(", ")
            )?;
        }
        writeln!(w)?;
    }
    let mut rows: Vec<_> = s.size_classes.iter().collect();
    rows.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.size.cmp(&b.size)));
    let total: u64 = rows.iter().map(|r| r.bytes).sum();
    let cnt: u64 = rows.iter().map(|r| r.count).sum();
    let mut t = Table::new(&[
        ("ALLOCATOR", Align::Left),
        ("SIZE", Align::Right),
        ("COUNT", Align::Right),
        ("BYTES", Align::Right),
    ]);
    for r in rows.iter().take(n) {
        t.row(vec![
            r.allocator.to_string(),
            r.size.to_string(),
            r.count.to_string(),
            human_bytes(r.bytes),
        ]);
    }
    writeln!(
        w,
        "live allocations by size class: {cnt}, {}",
        human_bytes(total)
    )?;
    t.write(w, "  ")
}

pub fn write_objects(w: &mut dyn Write, l: &crate::objects::ObjectList) -> io::Result<()> {
    writeln!(
        w,
        "{} live {} objects, {}{}",
        l.total,
        l.type_name,
        human_bytes(l.total_bytes),
        if (l.objects.len() as u64) < l.total {
            format!(" (showing {})", l.objects.len())
        } else {
            String::new()
        }
    )?;
    let mut t = Table::new(&[
        ("ADDRESS", Align::Left),
        ("SIZE", Align::Right),
        ("PREVIEW", Align::Left),
    ]);
    for o in &l.objects {
        t.row(vec![
            o.address.to_string(),
            o.size.to_string(),
            o.preview.clone(),
        ]);
    }
    t.write(w, "  ")
}

pub fn write_diff(w: &mut dyn Write, d: &crate::diff::Diff, top: Option<usize>) -> io::Result<()> {
    use super::human_delta;
    let n = top.unwrap_or(20);
    let grew: i64 = d.types.iter().map(|t| t.bytes_delta).sum();
    writeln!(
        w,
        "what changed between the cores: {} in total",
        human_delta(grew)
    )?;
    let mut t = Table::new(&[
        ("TYPE", Align::Left),
        ("COUNT OLD", Align::Right),
        ("COUNT NEW", Align::Right),
        ("DELTA", Align::Right),
        ("BYTES OLD", Align::Right),
        ("BYTES NEW", Align::Right),
        ("BYTES DELTA", Align::Right),
    ]);
    for r in d.types.iter().take(n) {
        t.row(vec![
            r.name.clone(),
            r.count_old.to_string(),
            r.count_new.to_string(),
            format!("{:+}", r.count_delta),
            human_bytes(r.bytes_old),
            human_bytes(r.bytes_new),
            human_delta(r.bytes_delta),
        ]);
    }
    t.write(w, "  ")?;
    if !d.samples.is_empty() {
        writeln!(w, "\nsamples of what grew (from the new core):")?;
        for (name, list) in &d.samples {
            writeln!(w, "  {name}")?;
            for o in list {
                writeln!(w, "    {}  {:>6}  {}", o.address, o.size, o.preview)?;
            }
        }
    }
    writeln!(w, "\nsize classes:")?;
    let mut t = Table::new(&[
        ("ALLOCATOR", Align::Left),
        ("SIZE", Align::Right),
        ("COUNT OLD", Align::Right),
        ("COUNT NEW", Align::Right),
        ("DELTA", Align::Right),
        ("BYTES DELTA", Align::Right),
    ]);
    for r in d.size_classes.iter().take(n.min(10)) {
        t.row(vec![
            r.allocator.to_string(),
            r.size.to_string(),
            r.count_old.to_string(),
            r.count_new.to_string(),
            format!("{:+}", r.count_delta),
            human_delta(r.bytes_delta),
        ]);
    }
    t.write(w, "  ")
}
