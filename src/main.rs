//! The `grpm` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    grpm::cli::main()
}
