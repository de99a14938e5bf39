//! `nanoforge bcd ...`: Boot Configuration Data stores.

use crate::formats::bcd::Store;
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum BcdCommand {
    /// Print a BCD store like `bcdedit /store STORE /enum all`.
    #[command(after_help = "Examples:
  nanoforge bcd show BCD
  nanoforge bcd show esp/EFI/Microsoft/Boot/BCD

Well-known objects print by alias ({bootmgr}, {globalsettings}...); the boot manager's
default entry prints as {default}. Devices show the GPT partition and disk GUIDs, since
an offline store has no drive letters.")]
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// BCD store (a registry hive).
    pub store: PathBuf,
}

pub fn run(cmd: BcdCommand) -> anyhow::Result<()> {
    match cmd {
        BcdCommand::Show(a) => {
            let bytes = std::fs::read(&a.store)
                .with_context(|| format!("reading {}", a.store.display()))?;
            let store = Store::parse(&bytes).with_context(|| format!("{}", a.store.display()))?;
            print!("{}", store.render());
            Ok(())
        }
    }
}
