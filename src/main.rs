//! The `nanoforge` command: parse, run, and turn errors into one clear line and an exit code.

use clap::Parser;
use nanoforge::cli::{self, Cli};

fn main() {
    limit_malloc_arenas();
    // An interrupted run leaves no partial output behind.
    let _ = ctrlc::set_handler(|| {
        nanoforge::core::output::remove_all_pending();
        eprintln!("nanoforge: interrupted; partial output removed");
        std::process::exit(130);
    });
    let cli = Cli::parse();
    if let Err(e) = cli::run(cli) {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        eprintln!("nanoforge: error: {}", dedup_chain(&chain));
        std::process::exit(1);
    }
}

/// glibc gives busy threads malloc arenas of their own, up to eight per core. Our decode
/// pipelines hand buffers between short-lived threads, and memory freed into one arena is
/// not reused by another, so the resident set creeps up as a large image is written (a 2 GB
/// WIM → VHDX peaked at 265 MiB, against 215 MiB with two arenas and no slower). The limit
/// is only read from the environment when the process starts, so the first start sets it
/// and replaces itself (same process, same arguments); a limit the user set is kept.
fn limit_malloc_arenas() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MALLOC_ARENA_MAX";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // Returns only when the exec failed: carry on as we are.
    let _ = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(VAR, "2")
        .exec();
}

/// Join an error chain into one line, skipping causes already quoted by their parent.
fn dedup_chain(chain: &[String]) -> String {
    let mut line = String::new();
    for c in chain {
        if !line.contains(c.as_str()) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(c);
        }
    }
    line
}
