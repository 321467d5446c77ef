//! Renderers: text tables and JSON. They consume analysis data and never analyse.

pub mod diff;
pub mod folded;
pub mod frag;
pub mod html;
pub mod info;
pub mod leaks;
pub mod objects;
pub mod owners;
pub mod schema;
pub mod stacks;
pub mod summary;
pub mod traces;
pub mod why;

use serde::Serialize;
use std::borrow::Cow;
use std::io::{self, Write};

/// How text is drawn. The binary decides (terminal, `--color`, `NO_COLOR`); the library
/// keeps no global state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Text {
    /// Bold headers, red growth and green shrinkage.
    pub color: bool,
}

/// Every string that comes from the core (paths, names, previews, messages) passes through
/// here before it reaches a terminal: control characters (C0, DEL, C1) and the Unicode
/// bidirectional overrides are written as escapes (`\x1b`, `\u{202e}`), so a hostile core
/// cannot set the terminal title, clear the screen or reorder what is shown.
pub fn clean(s: &str) -> Cow<'_, str> {
    let bad = |c: char| {
        c.is_control() && c != '\n' && c != '\t'
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(|c| bad(c) || c == '\n' || c == '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && bad(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` cut to at most `max` characters, with an ellipsis when it was cut.
pub fn ellipsize(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max {
        return Cow::Borrowed(s);
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    Cow::Owned(t)
}

pub use crate::units::{human_bytes, human_delta};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A plain aligned text table.
pub struct Table {
    headers: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[(&'static str, Align)]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }
    /// A row; every cell is sanitised (cells hold names and paths from the core).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        let cells = cells
            .into_iter()
            .map(|c| match clean(&c) {
                Cow::Borrowed(_) => c,
                Cow::Owned(o) => o,
            })
            .collect();
        self.rows.push(cells);
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    pub fn write(&self, w: &mut dyn Write, indent: &str, text: Text) -> io::Result<()> {
        let color = || text.color;
        let n = self.headers.len();
        let mut width: Vec<usize> = self.headers.iter().map(|h| h.0.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
            }
        }
        // On a terminal, growth in DELTA columns is red and shrinkage green; padding is
        // computed on the plain text so the escapes never shift the columns.
        let paint = |col: usize, c: &str| -> String {
            if !color() || !self.headers[col].0.contains("DELTA") {
                return c.to_string();
            }
            let style = match c.as_bytes().first() {
                Some(b'+') => anstyle::AnsiColor::Red.on_default(),
                Some(b'-') => anstyle::AnsiColor::Green.on_default(),
                _ => return c.to_string(),
            };
            format!("{}{c}{}", style.render(), style.render_reset())
        };
        let line = |w: &mut dyn Write,
                    cells: &mut dyn Iterator<Item = &str>,
                    body: bool|
         -> io::Result<()> {
            let mut s = String::from(indent);
            for (i, c) in cells.enumerate() {
                let pad = width[i] - c.chars().count();
                let last = i + 1 == n;
                let c = if body { paint(i, c) } else { c.to_string() };
                let c = c.as_str();
                match self.headers[i].1 {
                    Align::Right => {
                        s.extend(std::iter::repeat_n(' ', pad));
                        s.push_str(c);
                    }
                    Align::Left => {
                        s.push_str(c);
                        if !last {
                            s.extend(std::iter::repeat_n(' ', pad));
                        }
                    }
                }
                if !last {
                    s.push_str("  ");
                }
            }
            writeln!(w, "{}", s.trim_end())
        };
        if color() {
            let bold = anstyle::Style::new().bold();
            write!(w, "{}", bold.render())?;
            line(w, &mut self.headers.iter().map(|h| h.0), false)?;
            write!(w, "{}", bold.render_reset())?;
        } else {
            line(w, &mut self.headers.iter().map(|h| h.0), false)?;
        }
        for r in &self.rows {
            line(w, &mut r.iter().map(|s| s.as_str()), true)?;
        }
        Ok(())
    }
}

/// The version of every JSON document's schema; bumped when a field changes meaning or
/// goes away (new fields do not bump it).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize, schemars::JsonSchema)]
struct Document<'a, T: Serialize> {
    schema: String,
    #[serde(flatten)]
    body: &'a T,
}

/// A command's JSON document to `w`: `{"schema": "coreheap/<command>/1", ...}`,
/// pretty-printed, with a trailing newline.
pub fn write_json<T: Serialize>(w: &mut dyn Write, command: &str, value: &T) -> io::Result<()> {
    let doc = Document {
        schema: format!("coreheap/{command}/{SCHEMA_VERSION}"),
        body: value,
    };
    serde_json::to_writer_pretty(&mut *w, &doc).map_err(io::Error::other)?;
    writeln!(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(200 << 20), "200 MiB");
        assert_eq!(human_delta(-2048), "-2.00 KiB");
    }

    #[test]
    fn core_strings_are_escaped() {
        assert_eq!(clean("plain/path.so"), "plain/path.so");
        assert_eq!(clean("a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(clean("x\u{9b}2J"), "x\\x9b2J");
        assert_eq!(clean("evil\u{202e}txt"), "evil\\u{202e}txt");
        assert_eq!(clean("two\nlines"), "two\\nlines");
        let mut t = Table::new(&[("NAME", Align::Left)]);
        t.row(vec!["\x1b[2J".into()]);
        let mut out = Vec::new();
        t.write(&mut out, "", Text { color: false }).unwrap();
        assert!(!out.contains(&0x1b));
    }

    #[test]
    fn names_are_cut_with_an_ellipsis() {
        assert_eq!(ellipsize("short", 10), "short");
        assert_eq!(ellipsize("abcdefghijkl", 6), "abcde…");
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(&[("NAME", Align::Left), ("COUNT", Align::Right)]);
        t.row(vec!["dict".into(), "12".into()]);
        t.row(vec!["str".into(), "1234".into()]);
        let mut out = Vec::new();
        t.write(&mut out, "", Text::default()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME  COUNT\ndict     12\nstr    1234\n"
        );
    }
}
