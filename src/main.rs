//! The `ward` binary: parses arguments and calls the library (`ward::cli`).

/// mimalloc instead of the system allocator: the service allocates and frees per request
/// from several threads, where it costs less (BENCHMARKS.md, "The service").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ward::cli::main_with(|cli| {
        // A batch command faults small pages (`ward::alloc`); a server keeps the
        // system's default.
        if !cli.command.serves() {
            ward::alloc::batch_mode();
        }
    })
}
