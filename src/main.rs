//! The `coreheap` binary: everything is in `cli`, which parses arguments, runs one
//! analysis of the library, renders it and maps errors to exit codes.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
