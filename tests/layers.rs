//! The module graph is one-way: no module uses a module of a higher layer, no command of
//! `analysis` uses another command, and the library draws nothing (no indicatif). Read
//! from the sources, so a new `use` that breaks the layering fails here.

use std::path::Path;

/// Layers, lowest first; a module may use its own layer and the ones before it.
const LAYERS: &[&[&str]] = &[
    &["addr", "error", "progress", "spill", "units"],
    &["image"],
    &["models"],
    &["alloc"],
    &["python"],
    &["analysis"],
    // The fuzz harness drives the walkers and analyses, never the renderers.
    &["report", "fuzzing"],
];

/// The analysis files that are commands (the others are shared by all of them).
const COMMANDS: &[&str] = &[
    "diff",
    "frag",
    "info",
    "leaks",
    "objects",
    "owner_diff",
    "owners",
    "report",
    "stacks",
    "summary",
    "traces",
    "why",
];

fn layer(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::NAME` and `super::NAME` a file mentions, with `super` resolved.
fn references(text: &str, module_path: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        let path: Vec<String> = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or("")
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if !path.is_empty() && !text[..i].ends_with("coreheap::") {
            out.push(path);
        }
    }
    for (i, _) in text.match_indices("super::") {
        if text[..i].ends_with("::") || text[i..].starts_with("super::*") {
            continue;
        }
        let name = text[i + 7..]
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        let mut p: Vec<String> = module_path[..module_path.len().saturating_sub(1)].to_vec();
        p.push(name.to_string());
        out.push(p);
    }
    out
}

#[test]
fn modules_depend_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let parts: Vec<String> = rel
            .with_extension("")
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| s != "mod")
            .collect();
        let text = std::fs::read_to_string(&f).unwrap();
        // Test modules may reach anywhere.
        let text = text.split("#[cfg(test)]").next().unwrap();
        // Comments may name any module.
        let text: String = text
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let text = text.as_str();
        if parts[0] == "cli" || parts[0] == "main" {
            continue; // the binary: uses the library through `coreheap::`
        }
        if text.contains("indicatif") {
            bad.push(format!("{}: the library mentions indicatif", rel.display()));
        }
        if parts[0] == "lib" {
            continue;
        }
        let mine = layer(&parts[0]).unwrap_or_else(|| panic!("{} is in no layer", parts[0]));
        for r in references(text, &parts) {
            let Some(theirs) = layer(&r[0]) else { continue };
            if theirs > mine {
                bad.push(format!(
                    "{}: uses crate::{} (a higher layer)",
                    rel.display(),
                    r.join("::")
                ));
            }
            if parts[0] == "analysis"
                && r[0] == "analysis"
                && parts.len() > 1
                && r.len() > 1
                && COMMANDS.contains(&parts[1].as_str())
                && COMMANDS.contains(&r[1].as_str())
                && parts[1] != r[1]
            {
                bad.push(format!(
                    "{}: the {} command uses the {} command",
                    rel.display(),
                    parts[1],
                    r[1]
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
