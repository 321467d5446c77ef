//! Which glibc and which CPython the process ran, found without debug symbols.
//!
//! glibc: the banner string in libc's read-only data ("GNU C Library (...) stable release
//! version 2.36."), read through the address space (from the core or the verified file),
//! else the `libc-2.NN.so` file name of older releases.
//! CPython (layouts.md §C.7): `_Py_DebugOffsets` at `_PyRuntime` (3.13+, cookie "xdebugpy"),
//! the exported `Py_Version` (3.11+), the `sys.version` buffer Py_GetVersion() fills at
//! start-up (writable data, so in the core), and last the file name.

use crate::addr::Addr;
use crate::image::memory::ByteSource;
use crate::image::modules::Module;
use crate::image::process::Process;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct GlibcInfo {
    pub version: String,
    pub module: String,
    /// How the version was found: "banner" or "file name".
    pub source: &'static str,
}

/// The module holding glibc: `libc.so.6` (or `libc-2.NN.so`), else the module defining
/// `gnu_get_libc_version` (statically linked programs carry libc in the executable).
pub fn libc_module(p: &Process) -> Option<&Module> {
    let is_libc_name = |n: &str| {
        n == "libc.so.6" || n == "libc.so" || (n.starts_with("libc-") && n.ends_with(".so"))
    };
    let by_name = p.modules.modules.iter().find(|m| is_libc_name(m.name()));
    by_name.or_else(|| {
        p.modules
            .modules
            .iter()
            .find(|m| m.symbol(&p.space, "gnu_get_libc_version").is_some())
    })
}

pub fn detect_glibc(p: &Process) -> Option<GlibcInfo> {
    let module = libc_module(p)?;
    if let Some(v) = banner_version(p, module) {
        return Some(GlibcInfo {
            version: v,
            module: module.path.clone(),
            source: "banner",
        });
    }
    let n = module.name();
    let v = n.strip_prefix("libc-")?.strip_suffix(".so")?;
    Some(GlibcInfo {
        version: v.to_string(),
        module: module.path.clone(),
        source: "file name",
    })
}

fn banner_version(p: &Process, m: &Module) -> Option<String> {
    const NEEDLE: &[u8] = b"GNU C Library";
    let finder = memchr::memmem::Finder::new(NEEDLE);
    let mut found = None;
    for mp in &m.mappings {
        p.space.for_each_slice(mp.range, |a, s| {
            let mut start = 0;
            while let Some(i) = finder.find(&s[start..]) {
                let at = a.wrapping_add((start + i) as u64);
                if let Some(text) = p.space.read_cstr(at, 512) {
                    if let Some(v) = parse_banner(&text) {
                        found = Some(v);
                        return false;
                    }
                }
                start += i + 1;
            }
            true
        });
        if found.is_some() {
            break;
        }
    }
    found
}

/// "... release version 2.36." → "2.36".
fn parse_banner(text: &[u8]) -> Option<String> {
    let t = std::str::from_utf8(text).ok()?;
    let i = t.find("release version ")?;
    let rest = &t[i + "release version ".len()..];
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v = v.trim_end_matches('.');
    (v.contains('.') && v.len() >= 3).then(|| v.to_string())
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TypeProbe {
    pub symbol: &'static str,
    pub tp_name: String,
    /// Where the name's bytes came from: the core or the verified file on disk.
    pub source: ByteSource,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PythonInfo {
    /// "3.11.2"; only "3.11" when just the file name told.
    pub version: Option<String>,
    /// PY_VERSION_HEX when known.
    pub hex: Option<u64>,
    pub source: &'static str,
    /// The module holding the interpreter (executable for static libpython builds).
    pub module: String,
    pub shared_libpython: bool,
    pub runtime: Option<Addr>,
    pub free_threaded: bool,
    /// `PyLong_Type.tp_name`, read through the address space: proves that type names are
    /// readable (for kernel cores they normally come from the file on disk).
    pub probe: Option<TypeProbe>,
}

impl PythonInfo {
    pub fn minor(&self) -> Option<(u32, u32)> {
        let v = self.version.as_deref()?;
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    }
}

/// True for `python3.11`, `python3.13t`, `libpython3.11.so.1.0`, `libpython3.13t.so`...
pub fn python_file_minor(name: &str) -> Option<(String, bool)> {
    let rest = name
        .strip_prefix("lib")
        .unwrap_or(name)
        .strip_prefix("python")?;
    let ver: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let ver = ver.trim_end_matches('.').to_string();
    let after = &rest[ver.len()..];
    let free_threaded = after.starts_with('t');
    let tail_ok = after.is_empty()
        || after.starts_with(".so")
        || after.starts_with('t')
        || after.starts_with('d')
        || after.starts_with('m');
    (ver.starts_with("3.") && ver.len() >= 3 && tail_ok).then_some((ver, free_threaded))
}

pub fn format_hex_version(h: u64) -> String {
    let major = (h >> 24) & 0xff;
    let minor = (h >> 16) & 0xff;
    let micro = (h >> 8) & 0xff;
    let level = (h >> 4) & 0xf;
    let serial = h & 0xf;
    let mut s = format!("{major}.{minor}.{micro}");
    match level {
        0xa => s += &format!("a{serial}"),
        0xb => s += &format!("b{serial}"),
        0xc => s += &format!("rc{serial}"),
        _ => {}
    }
    s
}

fn plausible_hex(h: u64) -> bool {
    let major = (h >> 24) & 0xff;
    let minor = (h >> 16) & 0xff;
    let level = (h >> 4) & 0xf;
    h >> 32 == 0 && major == 3 && minor <= 40 && matches!(level, 0xa | 0xb | 0xc | 0xf)
}

pub fn detect_python(p: &Process) -> Option<PythonInfo> {
    // Prefer modules named like Python; then any module exporting _PyRuntime.
    let named: Vec<&Module> = p
        .modules
        .modules
        .iter()
        .filter(|m| python_file_minor(m.name()).is_some())
        .collect();
    let with_runtime = named
        .iter()
        .copied()
        .chain(p.modules.modules.iter())
        .find_map(|m| m.symbol(&p.space, "_PyRuntime").map(|s| (m, s.addr)));
    let (module, runtime) = match with_runtime {
        Some((m, r)) => (m, Some(r)),
        None => {
            // No symbol: prefer libpython over the executable when both are named like Python.
            let m = named
                .iter()
                .copied()
                .find(|m| m.name().starts_with("libpython"))
                .or_else(|| named.first().copied())?;
            (m, None)
        }
    };
    let name_info = python_file_minor(module.name());
    let mut free_threaded = name_info.as_ref().is_some_and(|n| n.1);
    let mut hex = None;
    let mut source = "file name";
    if let Some(rt) = runtime {
        let mut cookie = [0u8; 8];
        if p.space.read(rt, &mut cookie).is_ok() && &cookie == b"xdebugpy" {
            if let Ok(h) = p.space.read_u64(rt.wrapping_add(8)) {
                if plausible_hex(h) {
                    hex = Some(h);
                    source = "_Py_DebugOffsets";
                    if let Ok(ft) = p.space.read_u64(rt.wrapping_add(16)) {
                        free_threaded |= ft != 0;
                    }
                }
            }
        }
    }
    if hex.is_none() {
        if let Some(s) = module.symbol(&p.space, "Py_Version") {
            if let Ok(h) = p.space.read_u64(s.addr) {
                if plausible_hex(h & 0xffff_ffff) {
                    hex = Some(h & 0xffff_ffff);
                    source = "Py_Version";
                }
            }
        }
    }
    let mut version = hex.map(format_hex_version);
    if version.is_none() {
        if let Some(v) = version_string_scan(p, module, name_info.as_ref().map(|n| n.0.as_str())) {
            version = Some(v);
            source = "sys.version";
        }
    }
    if version.is_none() {
        version = name_info.as_ref().map(|n| n.0.clone());
    }
    let probe = p
        .modules
        .find_symbol(&p.space, "PyLong_Type")
        .and_then(|(_, s)| {
            let name_ptr = p.space.read_addr(s.addr.wrapping_add(0x18)).ok()?;
            let name = p.space.read_cstr(name_ptr, 256)?;
            Some(TypeProbe {
                symbol: "PyLong_Type",
                tp_name: String::from_utf8_lossy(&name).into_owned(),
                source: p.space.source_of(name_ptr),
            })
        });
    Some(PythonInfo {
        version,
        hex,
        source,
        module: module.path.clone(),
        shared_libpython: module.name().starts_with("libpython"),
        runtime,
        free_threaded,
        probe,
    })
}

/// Find the `sys.version` text ("3.9.2 (default, Feb 28 2021, 17:03:44) \n[GCC ...]") in the
/// module's writable data: Py_GetVersion() formats it into a static buffer at start-up.
fn version_string_scan(p: &Process, m: &Module, minor: Option<&str>) -> Option<String> {
    let finder = memchr::memmem::Finder::new(b" (");
    let mut found = None;
    let writable_first = {
        let mut v: Vec<_> = m.mappings.iter().collect();
        // Writable mappings (data, bss) hold the formatted buffer; bss may extend past the
        // file mapping, so also look just past the module's last mapping.
        v.sort_by_key(|mp| std::cmp::Reverse(mp.file_offset));
        v
    };
    let mut ranges: Vec<crate::addr::Range> = writable_first.iter().map(|mp| mp.range).collect();
    if let Some(last) = m.mappings.iter().map(|mp| mp.range.end).max() {
        if let Some(seg) = p.core.segments.iter().find(|s| s.vaddr == last) {
            ranges.insert(0, seg.range());
        }
    }
    for r in ranges {
        p.space.for_each_slice(r, |_, s| {
            let mut start = 0;
            while let Some(i) = finder.find(&s[start..]) {
                let at = start + i;
                if let Some(v) = version_before(&s[..at], minor) {
                    if s[at..].starts_with(b" (main")
                        || s[at..].starts_with(b" (default")
                        || s[at..].starts_with(b" (tags/")
                        || s[at..].starts_with(b" (heads/")
                        || s[at..].starts_with(b" (v")
                    {
                        found = Some(v);
                        return false;
                    }
                }
                start = at + 1;
            }
            true
        });
        if found.is_some() {
            break;
        }
    }
    found
}

/// The version token ending at the end of `before`, if it looks like "3.11.2" / "3.13.0rc1",
/// starts after a NUL (start of the buffer), and agrees with `minor` when known.
fn version_before(before: &[u8], minor: Option<&str>) -> Option<String> {
    let start = before
        .iter()
        .rposition(|&b| b == 0)
        .map(|i| i + 1)
        .unwrap_or(0);
    let tok = std::str::from_utf8(&before[start..]).ok()?;
    if tok.len() > 20 || !tok.starts_with("3.") {
        return None;
    }
    let mut parts = tok.splitn(3, '.');
    let (_, mi, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if !mi.chars().all(|c| c.is_ascii_digit()) || !rest.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    if !tok
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '+')
    {
        return None;
    }
    if let Some(m) = minor {
        if !tok.starts_with(&format!("{m}.")) {
            return None;
        }
    }
    Some(tok.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner() {
        assert_eq!(
            parse_banner(
                b"GNU C Library (Debian GLIBC 2.36-9+deb12u14) stable release version 2.36.\n"
            )
            .as_deref(),
            Some("2.36")
        );
        assert_eq!(
            parse_banner(b"GNU C Library (GNU libc) development release version 2.42.9000.")
                .as_deref(),
            Some("2.42.9000")
        );
        assert_eq!(parse_banner(b"GNU C Library"), None);
    }

    #[test]
    fn hex_versions() {
        assert_eq!(format_hex_version(0x030b07f0), "3.11.7");
        assert_eq!(format_hex_version(0x030e0af0), "3.14.10");
        assert_eq!(format_hex_version(0x030d00c1), "3.13.0rc1");
        assert!(plausible_hex(0x030d00f0));
        assert!(!plausible_hex(0x7f00_0000_0000));
    }

    #[test]
    fn python_names() {
        assert_eq!(
            python_file_minor("python3.11"),
            Some(("3.11".into(), false))
        );
        assert_eq!(
            python_file_minor("libpython3.9.so.1.0"),
            Some(("3.9".into(), false))
        );
        assert_eq!(
            python_file_minor("python3.13t"),
            Some(("3.13".into(), true))
        );
        assert_eq!(
            python_file_minor("libpython3.14t.so.1.0"),
            Some(("3.14".into(), true))
        );
        assert_eq!(python_file_minor("python"), None);
        assert_eq!(python_file_minor("libc.so.6"), None);
    }

    #[test]
    fn version_token() {
        assert_eq!(
            version_before(b"\x003.9.2", Some("3.9")).as_deref(),
            Some("3.9.2")
        );
        assert_eq!(
            version_before(b"3.13.0rc1", None).as_deref(),
            Some("3.13.0rc1")
        );
        assert_eq!(version_before(b"\x003.9.2", Some("3.1")), None);
        assert_eq!(version_before(b"x3.9", None), None);
    }
}
