//! The `coreheap` binary: parse arguments, run one analysis, render it, map errors to
//! exit codes (0 success, 2 error; a closed stdout pipe is success).

use clap::{Args, Parser, Subcommand};
use coreheap::error::{Error, Severity};
use coreheap::modules::SearchPaths;
use coreheap::progress::Bars;
use coreheap::{report, Options, Process};
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

#[derive(Args, Clone)]
struct Global {
    /// Write JSON to stdout instead of text tables.
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
}

#[derive(Subcommand)]
enum Command {
    /// What the core is: process, threads, signal, mappings, modules, glibc and CPython versions.
    Info { core: PathBuf },
    /// Live Python objects by type and allocations by size class.
    Summary {
        core: PathBuf,
        /// Group by Python type or by allocation size class.
        #[arg(long, value_parser = ["type", "size"], default_value = "type")]
        by: String,
        /// Show only the N largest rows.
        #[arg(long, value_name = "N")]
        top: Option<usize>,
    },
    /// Instances of one Python type, with a short preview of each.
    Objects {
        core: PathBuf,
        #[arg(long = "type", value_name = "NAME")]
        type_name: String,
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
    },
    /// What accumulated between two cores, by type and size class.
    Diff {
        old: PathBuf,
        new: PathBuf,
        #[arg(long, value_name = "N")]
        top: Option<usize>,
    },
    /// Fragmentation of the glibc arenas and the pymalloc arenas.
    Frag { core: PathBuf },
}

fn main() -> ExitCode {
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
            // One line, whatever the error's own text looks like.
            let msg = e.to_string();
            let msg: Vec<&str> = msg.split_whitespace().collect();
            eprintln!("coreheap: error: {}", msg.join(" "));
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

fn print_diagnostics(g: &Global, diags: &[coreheap::Diagnostic]) {
    for d in diags {
        if d.severity == Severity::Info && g.quiet {
            continue;
        }
        eprintln!("coreheap: {d}");
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let g = &cli.global;
    let opts = options(g);
    let bars = Bars::new(g.quiet);
    {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        report::set_color(!g.json && !no_color && io::stdout().is_terminal());
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match &cli.command {
        Command::Info { core } => {
            let p = Process::open(core, &opts, &bars)?;
            let info = coreheap::info::info(&p);
            print_diagnostics(g, &info.diagnostics);
            if g.json {
                report::write_json(&mut out, &info)?;
            } else {
                report::info::write_text(&mut out, &info)?;
            }
        }
        Command::Frag { core } => {
            let models = coreheap::models::glibc_models(g.heap_models.as_deref())?;
            let p = Process::open(core, &opts, &bars)?;
            let py_models = coreheap::models::cpython_models(g.heap_models.as_deref())?;
            let f = coreheap::frag::frag(&p, &models, &py_models, &bars)?;
            print_diagnostics(g, &f.diagnostics);
            if g.json {
                report::write_json(&mut out, &f)?;
            } else {
                report::heap::write_frag(&mut out, &f)?;
            }
        }
        Command::Summary { core, top, by } => {
            let models = coreheap::models::glibc_models(g.heap_models.as_deref())?;
            let p = Process::open(core, &opts, &bars)?;
            let py_models = coreheap::models::cpython_models(g.heap_models.as_deref())?;
            let a = coreheap::summary::analyze_with(&p, &models, &py_models, &bars)?;
            let mut s = coreheap::summary::summary(&a);
            if by == "size" {
                s.types.clear();
                s.freelists.clear();
            }
            print_diagnostics(g, &s.diagnostics);
            if g.json {
                report::write_json(&mut out, &s)?;
            } else {
                report::heap::write_summary(&mut out, &s, *top, by == "type")?;
            }
        }
        Command::Objects {
            core,
            type_name,
            limit,
        } => {
            let models = coreheap::models::glibc_models(g.heap_models.as_deref())?;
            let py_models = coreheap::models::cpython_models(g.heap_models.as_deref())?;
            let p = Process::open(core, &opts, &bars)?;
            let a = coreheap::summary::analyze_with(&p, &models, &py_models, &bars)?;
            print_diagnostics(g, &a.diagnostics);
            let model = coreheap::python::model_for(&p, &py_models);
            let typer = model.and_then(|m| coreheap::python::objects::Typer::new(&p, m));
            let (Some(typer), Some(_)) = (typer, &a.census) else {
                return Err(Error::Unsupported(
                    "no CPython heap in this core: `objects` lists Python objects".into(),
                )
                .into());
            };
            let list = coreheap::objects::objects(&a, &typer, type_name, *limit);
            if list.total == 0 {
                let similar = coreheap::objects::similar_types(&a, type_name);
                let hint = if similar.is_empty() {
                    "see `coreheap summary` for the types present".to_string()
                } else {
                    format!("did you mean: {}?", similar.join(", "))
                };
                return Err(Error::Usage(format!(
                    "no live objects of type {type_name:?} ({hint})"
                ))
                .into());
            }
            if g.json {
                report::write_json(&mut out, &list.objects)?;
            } else {
                report::heap::write_objects(&mut out, &list)?;
            }
        }
        Command::Diff { old, new, top } => {
            let models = coreheap::models::glibc_models(g.heap_models.as_deref())?;
            let py_models = coreheap::models::cpython_models(g.heap_models.as_deref())?;
            let po = Process::open(old, &opts, &bars)?;
            let pn = Process::open(new, &opts, &bars)?;
            let (a, b) = coreheap::diff::analyze_pair(&po, &pn, &models, &py_models, &bars)?;
            let d = coreheap::diff::diff(&po, &pn, &a, &b, &py_models);
            print_diagnostics(g, &d.diagnostics);
            if g.json {
                report::write_json(&mut out, &d)?;
            } else {
                report::heap::write_diff(&mut out, &d, *top)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
