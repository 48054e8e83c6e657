//! The `ward` binary: parses arguments and calls the library (`ward::cli`).

fn main() -> std::process::ExitCode {
    ward::cli::main()
}
