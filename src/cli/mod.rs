//! The command line: clap definitions, one `run` per command, progress and colour, and the
//! mapping of errors to exit codes (0 success, 2 error; a closed stdout pipe is success).

mod progress;

use clap::{Args, Parser, Subcommand, ValueEnum};
use coreheap::analysis::{self, Analysis, Limits, Models, Needs};
use coreheap::error::{Diagnostic, Error, Severity};
use coreheap::image::modules::SearchPaths;
use coreheap::report::{self, Text};
use coreheap::{Options, Process};
use progress::Bars;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "coreheap",
    version,
    about = "Where did this service's memory go? Heap and Python object census from Linux core dumps.",
    long_about = None,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: Global,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ColorWhen {
    /// Colour when stdout is a terminal and NO_COLOR is not set.
    Auto,
    Always,
    Never,
}

#[derive(Args, Clone)]
struct Global {
    /// Write JSON to stdout instead of text tables (every document carries a "schema").
    #[arg(long, global = true)]
    json: bool,
    /// Look for the binaries the core maps under DIR first (e.g. a copy of the container's root).
    #[arg(long, global = true, value_name = "DIR")]
    sysroot: Option<PathBuf>,
    /// Look for separate debug files (DIR/.build-id/xx/yyyy.debug) under DIR.
    #[arg(long = "debug-dir", global = true, value_name = "DIR")]
    debug_dir: Vec<PathBuf>,
    /// Read heap layout models from DIR instead of the built-in ones.
    #[arg(long = "heap-models", global = true, value_name = "DIR")]
    heap_models: Option<PathBuf>,
    /// No progress bars and no notes; warnings and errors are still printed.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// When to colour the text output.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    color: ColorWhen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SummaryBy {
    /// Live Python objects by type, then allocations by size class.
    Type,
    /// Allocations by size class only.
    Size,
    /// Retained memory by owner (module globals, class attributes, roots): the dominator
    /// tree of the object graph.
    Owner,
    /// tracemalloc's traces by the file of their most recent frame (statistics('filename')).
    Filename,
    /// tracemalloc's traces by their most recent frame (statistics('lineno')).
    Lineno,
    /// tracemalloc's traces by their whole traceback (statistics('traceback')).
    Traceback,
}

/// How the ownership views are written (besides --json).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned tables.
    Text,
    /// Folded stacks (KIND;OWNER;TYPE BYTES) for flamegraph.pl, inferno, speedscope.
    Folded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DiffBy {
    /// Objects by type and allocations by size class.
    Type,
    /// Retained memory by owner (matched by path), largest growth first.
    Owner,
    /// tracemalloc's compare_to('filename').
    Filename,
    /// tracemalloc's compare_to('lineno').
    Lineno,
    /// tracemalloc's compare_to('traceback').
    Traceback,
}

fn trace_key(by: SummaryBy) -> Option<analysis::traces::Key> {
    use analysis::traces::Key;
    match by {
        SummaryBy::Filename => Some(Key::Filename),
        SummaryBy::Lineno => Some(Key::Lineno),
        SummaryBy::Traceback => Some(Key::Traceback),
        _ => None,
    }
}

#[derive(Subcommand)]
enum Command {
    /// What the core is: process, threads, signal, mappings, modules, glibc and CPython versions.
    Info {
        /// The core file (plain, or compressed with zstd, lz4 or xz).
        core: PathBuf,
    },
    /// Live Python objects by type and allocations by size class.
    Summary {
        /// The core file (plain, or compressed with zstd, lz4 or xz).
        core: PathBuf,
        /// What to group by.
        #[arg(long, value_enum, default_value_t = SummaryBy::Type)]
        by: SummaryBy,
        /// With --by lineno|filename: every frame of a trace counts, not only the most recent.
        #[arg(long)]
        cumulative: bool,
        /// With --by owner: `folded` writes folded stacks (owner;type bytes) for flame graphs.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// With --by type: a RETAINED column, what each type's instances keep alive together
        /// (builds the object graph and its dominator tree: about 3 x the time).
        #[arg(long)]
        retained: bool,
        /// Show only the N largest rows of each table (text and JSON alike).
        #[arg(long, value_name = "N")]
        top: Option<usize>,
    },
    /// Instances of one Python type, with a short preview of each.
    Objects {
        /// The core file (plain, or compressed with zstd, lz4 or xz).
        core: PathBuf,
        /// The type, named as `summary` names it (e.g. `dict`, `app.models.Response`).
        #[arg(long = "type", value_name = "NAME")]
        type_name: String,
        /// Show at most N instances.
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
    },
    /// What accumulated, and what shrank, between two cores, by type and size class.
    Diff {
        /// The older core.
        old: PathBuf,
        /// The newer core.
        new: PathBuf,
        /// Rows per section (grew, shrank), text and JSON alike.
        #[arg(long, value_name = "N", default_value_t = analysis::diff::DEFAULT_TOP)]
        top: usize,
        /// What to compare: types, owners (retained memory), or tracemalloc's traces
        /// (`filename`, `lineno`, `traceback`: new.compare_to(old, KEY)).
        #[arg(long, value_enum, default_value_t = DiffBy::Type)]
        by: DiffBy,
        /// With --by lineno|filename: every frame of a trace counts.
        #[arg(long)]
        cumulative: bool,
        /// With --by owner: `folded` writes folded stacks of the growth for flame graphs.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// What every thread was doing: Python stacks (and native ones), and the crash.
    Stacks {
        /// The core file (plain, or compressed with zstd, lz4 or xz).
        core: PathBuf,
        /// Also unwind each thread's native stack (CFI, frame-pointer fallback).
        #[arg(long)]
        native: bool,
        /// List each Python frame's arguments and locals with previews.
        #[arg(long)]
        locals: bool,
    },
    /// What nothing reachable holds: uncollected cyclic garbage, objects whose reference
    /// count exceeds the references found with no native anchor, and native (glibc) chunks
    /// no pointer chain from a stack, register or static reaches (leaked, unreferenced).
    Leaks {
        /// The core file (plain, or compressed with zstd, lz4 or xz).
        core: PathBuf,
        /// Samples per type.
        #[arg(long, value_name = "N", default_value_t = 3)]
        samples: usize,
    },
    /// Why an object or native chunk is alive: the shortest chain of references from a root
    /// (module global, thread frame, stack, register, static) to it.
    Why {
        /// The core file (plain, or compressed with zstd, lz4 or xz).
        core: PathBuf,
        /// The object's address (as `objects` lists it), or any address inside a used
        /// glibc chunk.
        #[arg(value_name = "ADDRESS", required_unless_present = "type_name", value_parser = parse_addr)]
        address: Option<u64>,
        /// The first objects of this type instead of one address.
        #[arg(long = "type", value_name = "NAME", conflicts_with = "address")]
        type_name: Option<String>,
        /// With --type: at most N objects.
        #[arg(long, value_name = "N", default_value_t = 3)]
        limit: usize,
        /// With --type: objects that are not in this older core first.
        #[arg(long, value_name = "OLD")]
        since: Option<PathBuf>,
    },
    /// Fragmentation of the glibc arenas and the pymalloc arenas.
    Frag {
        /// The core file (plain, or compressed with zstd, lz4 or xz).
        core: PathBuf,
    },
    /// One self-contained HTML page to share: process and crash, memory, types, growth (with
    /// two cores, in `diff` order), fragmentation. Nothing in it is fetched.
    Report {
        /// The core (or, with two, the older core).
        core: PathBuf,
        /// The newer core: the page then shows what grew and shrank between the two.
        new: Option<PathBuf>,
        /// Where to write the page.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
    },
    /// Print a shell completion script (e.g. `coreheap completions bash > /etc/bash_completion.d/coreheap`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these definitions: `coreheap man | man -l -`.
    Man,
    /// Print the JSON Schema of a command's `--json` document (generated from the types).
    Schema {
        /// The command: info, stacks, summary, objects, diff or frag.
        command: String,
    },
}

fn parse_addr(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let r = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| format!("not an address: {s:?} (give 0x... or a decimal number)"))
}

/// The report's ownership sections, from the same analyses as `summary --by owner` and
/// `diff --by owner`: growth by owner (two cores) and the retained-memory tree by owner.
/// A core without a Python heap has none; an analysis error is one diagnostic line.
fn owner_sections(a: &Analysis, old: Option<&Analysis>) -> Vec<analysis::report::Section> {
    use analysis::report::{Cell, Column, Section, SectionBody, TreeNode};
    let mut out = Vec::new();
    if a.census.is_none() {
        return out;
    }
    if let Some(o) = old {
        let limits = Limits {
            top: Some(30),
            ..Limits::default()
        };
        match analysis::owner_diff::owner_diff(o, a, &limits) {
            Ok(d) => {
                let col = |t: &str, kind: &'static str| Column {
                    title: t.into(),
                    kind,
                };
                let rows = d
                    .owners
                    .iter()
                    .filter(|x| x.retained_bytes_delta != 0 || x.retained_count_delta != 0)
                    .map(|x| {
                        let grew: Vec<String> = x
                            .types
                            .iter()
                            .filter(|t| t.count_delta != 0 || t.bytes_delta != 0)
                            .take(3)
                            .map(|t| format!("{:+} {}", t.count_delta, t.name))
                            .collect();
                        vec![
                            Cell::Text(x.owner.clone()),
                            Cell::Text(x.kind.to_string()),
                            Cell::Int(x.retained_bytes_old as i64),
                            Cell::Int(x.retained_bytes_new as i64),
                            Cell::Int(x.retained_bytes_delta),
                            Cell::Int(x.retained_count_delta),
                            Cell::Text(grew.join(", ")),
                        ]
                    })
                    .collect();
                out.push(Section::new(
                    "owner-growth",
                    "Growth by owner",
                    "Who holds what grew: retained memory per owner (module global, class attribute, thread frame), matched between the cores by path, largest growth first.",
                    SectionBody::Table {
                        columns: vec![
                            col("owner", "text"),
                            col("kind", "text"),
                            col("retained old", "bytes"),
                            col("retained new", "bytes"),
                            col("Δ bytes", "delta"),
                            col("Δ count", "count"),
                            col("types that grew", "text"),
                        ],
                        rows,
                    },
                ));
            }
            Err(e) => eprintln!(
                "coreheap: warning: report: growth by owner: {}",
                report::clean(&e.to_string())
            ),
        }
    }
    match analysis::ownership::all_owners(a, Some(8)) {
        Ok(o) => {
            let children: Vec<TreeNode> = o
                .owners
                .iter()
                .take(200)
                .map(|x| {
                    let mut kids: Vec<TreeNode> = x
                        .types
                        .iter()
                        .map(|t| TreeNode {
                            name: t.name.clone(),
                            bytes: t.bytes,
                            count: t.count,
                            children: Vec::new(),
                        })
                        .collect();
                    let listed: u64 = kids.iter().map(|k| k.bytes).sum();
                    if x.retained_bytes > listed {
                        kids.push(TreeNode {
                            name: "(other types)".into(),
                            bytes: x.retained_bytes - listed,
                            count: 0,
                            children: Vec::new(),
                        });
                    }
                    TreeNode {
                        name: format!("{} ({})", x.owner, x.kind),
                        bytes: x.retained_bytes,
                        count: x.retained_count,
                        children: kids,
                    }
                })
                .collect();
            let root = TreeNode {
                name: "reachable from a root".into(),
                bytes: children.iter().map(|c| c.bytes).sum(),
                count: children.iter().map(|c| c.count).sum(),
                children,
            };
            out.push(Section::new(
                "owners",
                "Retained memory by owner",
                "The dominator tree of the object graph at its named owners: click an owner to zoom, hover for counts and bytes.",
                SectionBody::Tree { root },
            ));
        }
        Err(e) => eprintln!(
            "coreheap: warning: report: owners: {}",
            report::clean(&e.to_string())
        ),
    }
    out
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are successes; usage errors exit 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Error(e)) => {
            // One line, whatever the error's own text looks like, and never a raw control
            // character from the core.
            let msg = e.to_string();
            let msg: Vec<&str> = msg.split_whitespace().collect();
            eprintln!("coreheap: error: {}", report::clean(&msg.join(" ")));
            ExitCode::from(2)
        }
    }
}

enum Failure {
    BrokenPipe,
    Error(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Error(e)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::BrokenPipe
        } else {
            Failure::Error(Error::Other(format!("writing output: {e}")))
        }
    }
}

fn options(g: &Global) -> Options {
    Options {
        search: SearchPaths {
            sysroot: g.sysroot.clone(),
            debug_dirs: g.debug_dir.clone(),
            skip_system_debug: false,
            core_only: false,
        },
        heap_models: g.heap_models.clone(),
    }
}

fn print_diagnostics(g: &Global, diags: &[Diagnostic]) {
    for d in diags {
        if d.severity == Severity::Info && g.quiet {
            continue;
        }
        eprintln!("coreheap: {}", report::clean(&d.to_string()));
    }
}

fn text_style(g: &Global) -> Text {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let color = match g.color {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => !no_color && io::stdout().is_terminal(),
    };
    Text {
        color: color && !g.json,
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let g = &cli.global;
    let opts = options(g);
    let bars = Bars::new(g.quiet);
    let text = text_style(g);
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let models = || Models::load(g.heap_models.as_deref());
    match &cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut buf = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "coreheap", &mut buf);
            out.write_all(&buf)?;
        }
        Command::Schema { command } => {
            let Some(v) = report::schema::for_command(command) else {
                return Err(Error::Usage(format!(
                    "{command:?} writes no JSON; schemas exist for: {}",
                    report::schema::COMMANDS.join(", ")
                ))
                .into());
            };
            serde_json::to_writer_pretty(&mut out, &v).map_err(io::Error::other)?;
            writeln!(out)?;
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
        }
        Command::Info { core } => {
            let models = models()?;
            let p = Process::open(core, &opts, &bars)?;
            let mut info = analysis::info::info_with(&p, &models);
            if let Some((st, d)) = analysis::traces::state(&p, &models.cpython) {
                info.tracemalloc = Some(st);
                info.diagnostics.extend(d.to_vec());
            }
            print_diagnostics(g, &info.diagnostics);
            if g.json {
                report::write_json(&mut out, "info", &info)?;
            } else {
                report::info::write_text(&mut out, &info, text)?;
            }
        }
        Command::Stacks {
            core,
            native,
            locals,
        } => {
            let models = models()?;
            let p = Process::open(core, &opts, &bars)?;
            let o = analysis::stacks::StackOptions {
                native: *native,
                locals: *locals,
                ..Default::default()
            };
            let mut s = analysis::stacks::stacks(&p, &models, o);
            print_diagnostics(g, &s.diagnostics.to_vec());
            if g.json {
                report::write_json(&mut out, "stacks", &s)?;
            } else {
                analysis::threads::fill_sources(&mut s, g.sysroot.clone());
                report::stacks::write_text(&mut out, &s)?;
            }
        }
        Command::Frag { core } => {
            let models = models()?;
            let p = Process::open(core, &opts, &bars)?;
            let a = Analysis::run(&p, &models, &bars)?;
            let f = analysis::frag::frag(&a);
            print_diagnostics(g, &f.diagnostics.to_vec());
            if g.json {
                report::write_json(&mut out, "frag", &f)?;
            } else {
                report::frag::write_text(&mut out, &f, text)?;
            }
        }
        Command::Summary {
            core,
            top,
            by,
            cumulative,
            retained,
            format,
        } => {
            let models = models()?;
            let p = Process::open(core, &opts, &bars)?;
            let a = Analysis::run_for(
                &p,
                &models,
                &bars,
                Needs {
                    objects: *by == SummaryBy::Owner || *retained,
                    edges_unused: true,
                },
            )?;
            if *format == Format::Folded && *by != SummaryBy::Owner {
                return Err(Error::Usage("--format folded needs --by owner".into()).into());
            }
            if *by == SummaryBy::Owner {
                let o = analysis::owners::owners(
                    &a,
                    &Limits {
                        top: top.or(Some(30)),
                        ..Limits::default()
                    },
                )?;
                print_diagnostics(g, &o.diagnostics.to_vec());
                if g.json {
                    report::write_json(&mut out, "summary", &o)?;
                } else if *format == Format::Folded {
                    report::folded::write_owners(&mut out, &o)?;
                } else {
                    report::owners::write_text(&mut out, &o, text)?;
                }
                out.flush()?;
                return Ok(());
            }
            if let Some(key) = trace_key(*by) {
                let limits = Limits {
                    top: *top,
                    ..Limits::default()
                };
                let s = analysis::traces::summary(&a, key, *cumulative, &limits)?;
                print_diagnostics(g, &s.diagnostics.to_vec());
                if g.json {
                    report::write_json(&mut out, "summary", &s)?;
                } else {
                    report::traces::write_summary(&mut out, &s, text)?;
                }
                out.flush()?;
                return Ok(());
            }
            if *cumulative {
                return Err(
                    Error::Usage("--cumulative needs --by lineno or --by filename".into()).into(),
                );
            }
            let by = match by {
                SummaryBy::Type => analysis::summary::By::Type,
                _ => analysis::summary::By::Size,
            };
            let limits = Limits {
                top: *top,
                retained: *retained,
                ..Limits::default()
            };
            let s = analysis::summary::summary(&a, by, &limits);
            print_diagnostics(g, &s.diagnostics.to_vec());
            if g.json {
                report::write_json(&mut out, "summary", &s)?;
            } else {
                report::summary::write_text(&mut out, &s, text)?;
            }
        }
        Command::Objects {
            core,
            type_name,
            limit,
        } => {
            let models = models()?;
            let p = Process::open(core, &opts, &bars)?;
            let a = Analysis::run(&p, &models, &bars)?;
            print_diagnostics(g, &a.diagnostics.to_vec());
            let list = analysis::objects::objects(&a, type_name, *limit)?;
            if g.json {
                report::write_json(&mut out, "objects", &list)?;
            } else {
                report::objects::write_text(&mut out, &list, text)?;
            }
        }
        Command::Report { core, new, output } => {
            if g.json {
                return Err(Error::Usage(
                    "report writes an HTML page (-o FILE); --json does not apply to it".into(),
                )
                .into());
            }
            let models = models()?;
            // The page shows the newer core; with two, the older one is the base of the growth.
            let po = Process::open(core, &opts, &bars)?;
            let pn = match new {
                Some(n) => Some(Process::open(n, &opts, &bars)?),
                None => None,
            };
            let (old_a, a) = match &pn {
                Some(pn) => {
                    // With both object graphs (built in parallel): the page shows who holds
                    // the growth.
                    let (a, b) = analysis::owner_diff::analyze_pair(&po, pn, &models, &bars)?;
                    (Some(a), b)
                }
                None => (None, Analysis::run_for(&po, &models, &bars, Needs::GRAPH)?),
            };
            let p = a.process;
            let core_of =
                |p: &Process| report::html::CoreSummary::of(&analysis::info::info_with(p, &models));
            let mut stacks =
                analysis::stacks::stacks(p, &models, analysis::stacks::StackOptions::default());
            analysis::threads::fill_sources(&mut stacks, g.sysroot.clone());
            let limits = Limits::default();
            let summary = analysis::summary::summary(&a, analysis::summary::By::Type, &limits);
            let frag = analysis::frag::frag(&a);
            let diff = old_a.as_ref().map(|o| {
                // Every row: the page shows the largest and, apart, the program's classes
                // among all of them (it caps both).
                let l = Limits {
                    top: Some(usize::MAX),
                    ..Limits::default()
                };
                analysis::diff::diff(o, &a, &l)
            });
            let heap = analysis::report::heap_map(&a);
            match &diff {
                Some(d) => print_diagnostics(g, &d.diagnostics.to_vec()),
                None => print_diagnostics(g, &summary.diagnostics.to_vec()),
            }
            let page = report::html::Page {
                core: core_of(p),
                old: old_a.as_ref().map(|o| core_of(o.process)),
                stacks: &stacks,
                summary: &summary,
                frag: &frag,
                diff: diff.as_ref(),
                heap: &heap,
                sections: owner_sections(&a, old_a.as_ref()),
            };
            let html = report::html::render(&page)
                .map_err(|e| Error::Other(format!("rendering the report: {e}")))?;
            std::fs::write(output, html).map_err(|e| Error::io(output, e))?;
            if !g.quiet {
                eprintln!(
                    "coreheap: wrote {}",
                    report::clean(&output.display().to_string())
                );
            }
        }
        Command::Why {
            core,
            address,
            type_name,
            limit,
            since,
        } => {
            let models = models()?;
            let p = Process::open(core, &opts, &bars)?;
            let a = Analysis::run_for(&p, &models, &bars, Needs::GRAPH)?;
            let po = match since {
                Some(s) => Some(Process::open(s, &opts, &bars)?),
                None => None,
            };
            let b = match &po {
                Some(po) => Some(Analysis::run_for(po, &models, &bars, Needs::GRAPH)?),
                None => None,
            };
            let target = match (address, type_name) {
                (Some(x), _) => analysis::why::Target::Address(*x),
                (None, Some(t)) => analysis::why::Target::Type(t.clone()),
                (None, None) => unreachable!("clap requires one"),
            };
            let y = analysis::why::why(&a, &target, *limit, b.as_ref())?;
            print_diagnostics(g, &y.diagnostics.to_vec());
            if g.json {
                report::write_json(&mut out, "why", &y)?;
            } else {
                report::why::write_text(&mut out, &y, text)?;
            }
        }
        Command::Leaks { core, samples } => {
            let models = models()?;
            let p = Process::open(core, &opts, &bars)?;
            let a = Analysis::run_for(&p, &models, &bars, Needs::GRAPH)?;
            let l = analysis::leaks::leaks(&a, *samples)?;
            print_diagnostics(g, &l.diagnostics.to_vec());
            if g.json {
                report::write_json(&mut out, "leaks", &l)?;
            } else {
                report::leaks::write_text(&mut out, &l, text)?;
            }
        }
        Command::Diff {
            old,
            new,
            top,
            by,
            cumulative,
            format,
        } => {
            if *format == Format::Folded && *by != DiffBy::Owner {
                return Err(Error::Usage("--format folded needs --by owner".into()).into());
            }
            let models = models()?;
            let po = Process::open(old, &opts, &bars)?;
            let pn = Process::open(new, &opts, &bars)?;
            let (a, b) = if *by == DiffBy::Owner {
                analysis::owner_diff::analyze_pair(&po, &pn, &models, &bars)?
            } else {
                analysis::diff::analyze_pair(&po, &pn, &models, &bars)?
            };
            if *by == DiffBy::Owner {
                let limits = Limits {
                    top: Some(*top),
                    ..Limits::default()
                };
                let d = analysis::owner_diff::owner_diff(&a, &b, &limits)?;
                print_diagnostics(g, &d.diagnostics.to_vec());
                if g.json {
                    report::write_json(&mut out, "diff", &d)?;
                } else if *format == Format::Folded {
                    report::folded::write_owner_diff(&mut out, &d)?;
                } else {
                    report::leaks::write_owner_diff(&mut out, &d, text)?;
                }
                out.flush()?;
                return Ok(());
            }
            let key = match by {
                DiffBy::Filename => Some(analysis::traces::Key::Filename),
                DiffBy::Lineno => Some(analysis::traces::Key::Lineno),
                DiffBy::Traceback => Some(analysis::traces::Key::Traceback),
                _ => None,
            };
            if let Some(key) = key {
                let limits = Limits {
                    top: Some(*top),
                    ..Limits::default()
                };
                let d = analysis::traces::diff(&a, &b, key, *cumulative, &limits)?;
                print_diagnostics(g, &d.diagnostics.to_vec());
                if g.json {
                    report::write_json(&mut out, "diff", &d)?;
                } else {
                    report::traces::write_diff(&mut out, &d, text)?;
                }
                out.flush()?;
                return Ok(());
            }
            if *cumulative {
                return Err(
                    Error::Usage("--cumulative needs --by lineno or --by filename".into()).into(),
                );
            }
            let limits = Limits {
                top: Some(*top),
                ..Limits::default()
            };
            let d = analysis::diff::diff(&a, &b, &limits);
            print_diagnostics(g, &d.diagnostics.to_vec());
            if g.json {
                report::write_json(&mut out, "diff", &d)?;
            } else {
                report::diff::write_text(&mut out, &d, text)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
