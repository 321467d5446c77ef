//! Text rendering of `coreheap info`.

use super::{clean, ellipsize, human_bytes, Align, Table, Text};
use crate::analysis::info::Info;
use crate::image::memory::ByteSource;
use crate::image::modules::FileStatus;
use std::io::{self, Write};

pub fn write_text(w: &mut dyn Write, i: &Info, text: Text) -> io::Result<()> {
    let kind = match i.producer {
        crate::image::core::Producer::Kernel => "kernel core",
        crate::image::core::Producer::Gdb => "gdb core",
    };
    let mut extra = vec![
        human_bytes(i.core_size),
        kind.to_string(),
        i.arch.name().to_string(),
    ];
    if let Some(c) = i.compression {
        extra.push(format!("{c}-compressed"));
    }
    if i.truncated {
        extra.push("TRUNCATED".into());
    }
    writeln!(w, "core      {} ({})", clean(&i.core), extra.join(", "))?;
    let pid = i.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    match (i.ppid, i.uid) {
        (Some(pp), Some(uid)) => writeln!(w, "pid       {pid} (ppid {pp}, uid {uid})")?,
        _ => writeln!(w, "pid       {pid}")?,
    }
    writeln!(w, "exe       {}", clean(i.exe.as_deref().unwrap_or("?")))?;
    writeln!(w, "cmdline   {}", clean(&shell_join(&i.cmdline)))?;
    match &i.signal {
        Some(s) => {
            write!(w, "signal    {} ({})", s.name, s.number)?;
            if let Some(t) = s.tid {
                write!(w, " in thread {t}")?;
            }
            if let Some(a) = s.fault_address {
                write!(w, " at {a}")?;
            }
            writeln!(w)?;
            if let Some(c) = &i.crash {
                writeln!(w, "crash     {}", super::stacks::crash_line(&c.crash))?;
                if let Some(f) = &c.crash.native_frame {
                    writeln!(w, "  died in {}", super::stacks::native_frame_text(f))?;
                }
                if !c.python_frames.is_empty() {
                    writeln!(w, "  Python (innermost first):")?;
                    for f in &c.python_frames {
                        writeln!(w, "    {}", super::stacks::python_frame_text(f))?;
                    }
                }
            }
        }
        None => match i.stop_signal {
            Some(s) => writeln!(
                w,
                "signal    none: a snapshot of a live process (stopped by {s})"
            )?,
            None => writeln!(w, "signal    none")?,
        },
    }
    let tids: Vec<String> = i.threads.iter().map(|t| t.tid.to_string()).collect();
    let shown = if tids.len() > 12 {
        format!("{} ...", tids[..12].join(" "))
    } else {
        tids.join(" ")
    };
    writeln!(w, "threads   {}: {}", i.threads.len(), shown)?;
    match &i.glibc {
        Some(g) => writeln!(
            w,
            "glibc     {} ({}, from {})",
            clean(&g.version),
            clean(&g.module),
            g.source
        )?,
        None => writeln!(w, "glibc     not found")?,
    }
    match &i.python {
        Some(p) => {
            let kind = if p.shared_libpython {
                "shared libpython"
            } else {
                "libpython in executable"
            };
            write!(
                w,
                "python    {} ({}, {kind}, from {}{})",
                clean(p.version.as_deref().unwrap_or("?")),
                clean(&p.module),
                p.source,
                if p.free_threaded {
                    ", free-threaded"
                } else {
                    ""
                }
            )?;
            writeln!(w)?;
            if let Some(pr) = &p.probe {
                let src = match pr.source {
                    ByteSource::Core => "core",
                    ByteSource::Disk => "file on disk",
                    ByteSource::Unavailable => "?",
                };
                writeln!(
                    w,
                    "          {}.tp_name = {:?} (read from the {src})",
                    pr.symbol, pr.tp_name
                )?;
            }
        }
        None => writeln!(w, "python    not found")?,
    }
    let t = &i.totals;
    writeln!(
        w,
        "memory    {} mapped: {} in core, {} from files on disk, {} unavailable",
        human_bytes(t.mapped),
        human_bytes(t.in_core),
        human_bytes(t.from_disk),
        human_bytes(t.unavailable)
    )?;

    writeln!(w, "\nMODULES")?;
    let mut mt = Table::new(&[
        ("BASE", Align::Left),
        ("BUILD-ID", Align::Left),
        ("FILE", Align::Left),
        ("SYMBOLS", Align::Left),
        ("PATH", Align::Left),
    ]);
    for m in &i.modules {
        let status = match &m.status {
            FileStatus::Verified => "ok".to_string(),
            FileStatus::NotNeeded => "in core".to_string(),
            FileStatus::Mismatch { .. } => "MISMATCH".to_string(),
            FileStatus::Missing => "missing".to_string(),
            FileStatus::Unverifiable => "unverifiable".to_string(),
        };
        let syms = if m.debug_file.is_some() {
            "debug file"
        } else if m.symtab {
            "symtab"
        } else {
            "dynsym"
        };
        let id = m
            .build_id
            .as_deref()
            .map(|b| ellipsize(b, 17).into_owned())
            .unwrap_or_else(|| "-".into());
        mt.row(vec![
            m.base.to_string(),
            id,
            status,
            syms.into(),
            m.path.clone(),
        ]);
    }
    mt.write(w, "  ", text)?;

    writeln!(w, "\nMAPPINGS")?;
    let mut t = Table::new(&[
        ("START", Align::Left),
        ("END", Align::Left),
        ("PERM", Align::Left),
        ("SIZE", Align::Right),
        ("IN CORE", Align::Right),
        ("FROM DISK", Align::Right),
        ("UNAVAILABLE", Align::Right),
        ("PATH", Align::Left),
    ]);
    for m in &i.mappings {
        let z = |n: u64| {
            if n == 0 {
                "-".to_string()
            } else {
                human_bytes(n)
            }
        };
        t.row(vec![
            m.start.to_string(),
            m.end.to_string(),
            m.perms.clone().unwrap_or_else(|| "?".into()),
            human_bytes(m.size),
            z(m.in_core),
            z(m.from_disk),
            z(m.unavailable),
            m.path.clone().unwrap_or_default(),
        ]);
    }
    t.write(w, "  ", text)?;
    Ok(())
}

fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
