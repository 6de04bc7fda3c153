//! The `grpm` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    // The keeper is entered before anything else (no argument parsing, no runtime).
    if let Some(code) = grpm::keeper::main_if_keeper() {
        return code;
    }
    grpm::cli::main()
}
