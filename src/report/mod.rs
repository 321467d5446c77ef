//! Renderers: text tables and JSON. They consume analysis data and never analyse.

pub mod heap;
pub mod info;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static COLOR: AtomicBool = AtomicBool::new(false);

/// Colour (bold table headers) on or off; the binary turns it on only for a terminal and
/// never when NO_COLOR is set.
pub fn set_color(on: bool) {
    COLOR.store(on, Ordering::Relaxed);
}

pub fn color() -> bool {
    COLOR.load(Ordering::Relaxed)
}

/// "1.5 MiB", "812 B".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else if v >= 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// Signed human size for deltas: "+1.5 MiB", "-812 B", "0 B".
pub fn human_delta(n: i64) -> String {
    match n {
        0 => "0 B".into(),
        n if n > 0 => format!("+{}", human_bytes(n as u64)),
        n => format!("-{}", human_bytes(n.unsigned_abs())),
    }
}

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
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    pub fn write(&self, w: &mut dyn Write, indent: &str) -> io::Result<()> {
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
            match c.as_bytes().first() {
                Some(b'+') => format!("\x1b[31m{c}\x1b[0m"),
                Some(b'-') => format!("\x1b[32m{c}\x1b[0m"),
                _ => c.to_string(),
            }
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
            write!(w, "\x1b[1m")?;
            line(w, &mut self.headers.iter().map(|h| h.0), false)?;
            write!(w, "\x1b[0m")?;
        } else {
            line(w, &mut self.headers.iter().map(|h| h.0), false)?;
        }
        for r in &self.rows {
            line(w, &mut r.iter().map(|s| s.as_str()), true)?;
        }
        Ok(())
    }
}

/// JSON to `w`, pretty-printed, with a trailing newline.
pub fn write_json<T: serde::Serialize>(w: &mut dyn Write, value: &T) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *w, value).map_err(io::Error::other)?;
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
    fn table_aligns() {
        let mut t = Table::new(&[("NAME", Align::Left), ("COUNT", Align::Right)]);
        t.row(vec!["dict".into(), "12".into()]);
        t.row(vec!["str".into(), "1234".into()]);
        let mut out = Vec::new();
        t.write(&mut out, "").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAME  COUNT\ndict     12\nstr    1234\n"
        );
    }
}
