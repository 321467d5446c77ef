//! Progress bars on stderr (indicatif), for the binary only: the library reports phases
//! through `coreheap::progress::Progress` and never draws.

use coreheap::progress::{Phase, Progress, Unit};

/// indicatif bars on stderr; hidden when stderr is not a terminal or when asked to be quiet.
/// One `MultiProgress` draws them, so phases running in parallel (`diff`) do not collide.
pub struct Bars {
    visible: bool,
    multi: indicatif::MultiProgress,
    /// `COREHEAP_TIMINGS=1`: each phase's wall time on stderr when it ends (benchmarks).
    timings: bool,
}

impl Bars {
    pub fn new(quiet: bool) -> Bars {
        use std::io::IsTerminal;
        let visible = !quiet && std::io::stderr().is_terminal();
        let multi = indicatif::MultiProgress::with_draw_target(if visible {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        });
        let timings = std::env::var_os("COREHEAP_TIMINGS").is_some_and(|v| v != "0");
        Bars {
            visible,
            multi,
            timings,
        }
    }
}

struct NoPhase;
impl Phase for NoPhase {
    fn inc(&self, _: u64) {}
    fn set(&self, _: u64) {}
}

struct BarPhase(indicatif::ProgressBar);

impl Phase for BarPhase {
    fn inc(&self, n: u64) {
        self.0.inc(n)
    }
    fn set(&self, pos: u64) {
        self.0.set_position(pos)
    }
}

impl Drop for BarPhase {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A phase that reports its wall time when it ends.
struct Timed(Box<dyn Phase>, String, std::time::Instant);

impl Phase for Timed {
    fn inc(&self, n: u64) {
        self.0.inc(n)
    }
    fn set(&self, pos: u64) {
        self.0.set(pos)
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        // With the resident memory at the phase's end (Linux /proc; blank elsewhere).
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kb = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(String::new(), |v| format!("{} MiB", v / 1024))
        };
        // Minor faults so far (field 10 of /proc/self/stat, after the parenthesised name):
        // fresh pages cost more than the work on them in a VM, so each phase shows its count.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let faults = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(7))
            .unwrap_or("?")
            .to_string();
        eprintln!(
            "coreheap: timing: {:>8.3} s  {}  (anonymous {}, file {}, {} faults)",
            self.2.elapsed().as_secs_f64(),
            coreheap::report::clean(&self.1),
            kb("RssAnon:"),
            kb("RssFile:"),
            faults
        );
    }
}

impl Progress for Bars {
    fn phase(&self, name: &str, total: Option<u64>, unit: Unit) -> Box<dyn Phase + '_> {
        let inner = self.bar(name, total, unit);
        if self.timings {
            return Box::new(Timed(inner, name.to_string(), std::time::Instant::now()));
        }
        inner
    }
}

impl Bars {
    fn bar(&self, name: &str, total: Option<u64>, unit: Unit) -> Box<dyn Phase> {
        use indicatif::{ProgressBar, ProgressStyle};
        if !self.visible {
            return Box::new(NoPhase);
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        let bar = self.multi.add(bar);
        if total.is_none() {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        let tmpl = match (total.is_some(), unit) {
            (true, Unit::Bytes) => "{msg:>24} [{bar:40}] {bytes}/{total_bytes} ({eta})",
            (true, Unit::Items) => "{msg:>24} [{bar:40}] {human_pos}/{human_len} ({eta})",
            (false, Unit::Bytes) => "{msg:>24} {spinner} {bytes} ({elapsed})",
            (false, Unit::Items) => "{spinner} {msg} ({elapsed})",
        };
        if let Ok(style) = ProgressStyle::with_template(tmpl) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(coreheap::report::clean(name).into_owned());
        Box::new(BarPhase(bar))
    }
}
