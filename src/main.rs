//! The `nanoforge` command: parse, run, and turn errors into one clear line and an exit code.

use clap::Parser;
use nanoforge::cli::{self, Cli};

fn main() {
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
