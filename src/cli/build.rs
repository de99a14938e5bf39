//! `nanoforge build [TEMPLATE.toml] [settings] -o OUT`: the flags are generated from the
//! settings table (`pipeline::config::SETTINGS`), so a template key and its flag are always
//! the same setting.

use crate::core::time::build_epoch;
use crate::core::units::Bytes;
use crate::pipeline::build::{self, BuildRequest, Plan, Progress};
use crate::pipeline::config::{kind_word, Config, Kind, Value, SETTINGS};
use clap::{Arg, ArgAction, ArgMatches, Command};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;

pub const AFTER_HELP: &str = "Examples:
  nanoforge build templates/container-host.toml --media demo -o host.vhdx
  nanoforge build templates/container-host.toml --media /mnt/iso --base-image base.wim -o host.vhdx
  nanoforge build --media /mnt/iso --edition Standard --compute --containers -o nano.vhdx
  nanoforge build templates/bare-metal.toml --media /mnt/iso -o server.img
  nanoforge build templates/kvm-guest.toml --media demo --dry-run --json -o kvm.vhdx
  nanoforge build templates/hyperv-guest.toml --media demo -o nano.wim

Every flag is also a template key (the flag's name with _ for -); flags override the
template, the template overrides the default. The output's extension picks what is
written: .vhdx (GPT, UEFI), .img (raw disk for bare metal), .vhd (GPT in a VHD; BIOS boot is
not provided yet), .wim (the serviced Windows volume as a one-image WIM for WDS/PXE).
The Administrator password is read from a file, an environment variable or a no-echo
prompt, never from the command line. Times come from SOURCE_DATE_EPOCH; GUIDs from --seed
or from the inputs, so the same inputs give the same bytes. OUT.report.json records every
input's SHA-256, what was installed and the output's SHA-256.";

/// Parsed `build` arguments.
#[derive(Debug, Clone)]
pub struct BuildArgs {
    pub template: Option<PathBuf>,
    pub output: PathBuf,
    pub force: bool,
    pub dry_run: bool,
    pub json: bool,
    pub verbose: bool,
    /// Settings given as flags: key → all values given.
    pub flags: Vec<(&'static str, Vec<String>)>,
}

fn help_of(st: &crate::pipeline::config::Setting) -> String {
    let mut h = st.help.to_string();
    if let Kind::Choice(words) = st.kind {
        h.push_str(&format!(" [{}]", words.join(", ")));
    }
    if let Some(d) = st.default {
        if st.kind != Kind::Bool || d != "false" {
            h.push_str(&format!(" [default: {d}]"));
        }
    }
    h
}

impl clap::Args for BuildArgs {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd
            .arg(
                Arg::new("template")
                    .value_name("TEMPLATE.toml")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Template with settings (see templates/); flags override it"),
            )
            .arg(
                Arg::new("output")
                    .short('o')
                    .long("output")
                    .required(true)
                    .value_name("OUT")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("Output: .vhdx, .img, .vhd or .wim"),
            )
            .arg(
                Arg::new("force")
                    .long("force")
                    .action(ArgAction::SetTrue)
                    .help("Replace OUT if it exists"),
            )
            .arg(
                Arg::new("dry_run")
                    .long("dry-run")
                    .action(ArgAction::SetTrue)
                    .help("Plan the build (inputs, packages, layout, space) and write nothing"),
            )
            .arg(
                Arg::new("json")
                    .long("json")
                    .action(ArgAction::SetTrue)
                    .help("With --dry-run, print the plan as JSON"),
            )
            .arg(
                Arg::new("verbose")
                    .short('v')
                    .long("verbose")
                    .action(ArgAction::SetTrue)
                    .help("Print each step's details"),
            );
        for st in SETTINGS {
            let mut a = Arg::new(st.key)
                .long(st.flag())
                .help(help_of(st))
                .help_heading(st.group);
            a = match st.kind {
                Kind::Bool => a
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true")
                    .value_name("BOOL"),
                Kind::List | Kind::PathList => a.action(ArgAction::Append).value_name("VALUE"),
                Kind::Size => a.value_name("SIZE"),
                Kind::Int => a.value_name("N"),
                Kind::Path => a.value_name("PATH"),
                _ => a.value_name("VALUE"),
            };
            cmd = cmd.arg(a);
        }
        cmd.after_help(AFTER_HELP)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for BuildArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Vec::new();
        for st in SETTINGS {
            if m.value_source(st.key) == Some(clap::parser::ValueSource::CommandLine) {
                let vals: Vec<String> = m
                    .get_many::<String>(st.key)
                    .map(|v| v.cloned().collect())
                    .unwrap_or_default();
                flags.push((st.key, vals));
            }
        }
        Ok(BuildArgs {
            template: m.get_one::<PathBuf>("template").cloned(),
            output: m
                .get_one::<PathBuf>("output")
                .cloned()
                .expect("required by clap"),
            force: m.get_flag("force"),
            dry_run: m.get_flag("dry_run"),
            json: m.get_flag("json"),
            verbose: m.get_flag("verbose"),
            flags,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// Bars on stderr, one per phase; hidden when quiet or not a terminal.
struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    show: bool,
    verbose: bool,
}

impl Progress for Bars {
    fn phase(&self, name: &str, total: u64) {
        let mut g = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = g.take() {
            b.finish_and_clear();
        }
        let b = if total > 0 {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            b
        } else {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{prefix:>12} {spinner} {elapsed}")
                    .expect("static template"),
            );
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        };
        if !self.show {
            b.set_draw_target(ProgressDrawTarget::hidden());
        }
        b.set_prefix(name.to_string());
        *g = Some(b);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            b.inc(n);
        }
    }

    fn hook(&self) -> crate::formats::ntfs::ProgressHook {
        match self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(b) => {
                let b = b.clone();
                crate::formats::ntfs::ProgressHook::new(move |n| b.inc(n))
            }
            None => Default::default(),
        }
    }

    fn detail(&self, line: &str) {
        if self.verbose {
            match self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
    }
}

impl Bars {
    fn done(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}

/// Render the plan for people.
pub fn describe(plan: &Plan) -> String {
    let mut s = String::new();
    let mut line = |t: String| {
        s.push_str(&t);
        s.push('\n');
    };
    line(format!(
        "output     {} ({:?})",
        plan.output.display(),
        plan.kind
    ));
    line(format!("media      {}", plan.media));
    line(format!(
        "image      {} index {}: {} ({}, {}, release {}{})",
        plan.image.wim,
        plan.image.index,
        plan.image.name,
        plan.image.edition_id,
        plan.image.version,
        plan.image.release,
        plan.image
            .language
            .as_deref()
            .map(|l| format!(", language {l}"))
            .unwrap_or_default()
    ));
    line("packages, in install order:".into());
    for p in &plan.servicing.packages.packages {
        line(format!(
            "  {:<34} {} files, {} registry values, {} services, {} drivers; {} not applied  ({})",
            format!(
                "{}{}",
                p.name,
                if p.language_pack {
                    " (language pack)"
                } else {
                    ""
                }
            ),
            p.files.len(),
            p.registry_values.len(),
            p.services.len(),
            p.drivers.len(),
            p.not_applied.len(),
            p.cab
        ));
        for n in &p.not_applied {
            line(format!("      {n}"));
        }
    }
    for s in &plan.servicing.staged {
        line(format!("staged     {s} (installed by DISM at first boot)"));
    }
    for d in &plan.servicing.drivers {
        line(format!(
            "driver     {} → {} in {} ({} device ids, {} not applied)",
            d.source,
            d.published_name,
            d.file_repository,
            d.device_ids.len(),
            d.not_applied.len()
        ));
    }
    for l in &plan.servicing.packages.limitations {
        line(format!("limitation {l}"));
    }
    for b in &plan.base_images {
        line(format!(
            "base image {} {} → {} ({}, {} files{})",
            b.name,
            b.version,
            b.path,
            Bytes(b.size),
            b.files,
            if b.utility_vm { ", utility VM" } else { "" }
        ));
    }
    for c in &plan.copies {
        line(format!("copy       {c}"));
    }
    for r in &plan.host_settings.registry {
        line(format!("registry   {r}"));
    }
    for f in &plan.host_settings.files {
        line(format!("file       {f}"));
    }
    line(format!(
        "volume     {} of file data",
        Bytes(plan.volume_data_bytes)
    ));
    if let Some(d) = &plan.disk {
        line(format!(
            "disk       {} {:?}, {}-byte sectors",
            Bytes(d.layout.disk_size),
            d.format,
            d.layout.sector_size
        ));
        for p in &d.layout.partitions {
            line(format!(
                "  {:<8} {:>10} at LBA {}  {}",
                format!("{:?}", p.role),
                Bytes(p.size()).to_string(),
                p.first_lba,
                p.part_guid
            ));
        }
        if let Some(w) = &d.windows {
            line(format!(
                "  Windows NTFS: {} used of the partition, {} MFT records, clusters of {}",
                Bytes(w.used_bytes),
                w.mft_records,
                w.cluster_size
            ));
        }
        line(format!("  ESP files: {}", d.esp_files.len()));
    }
    for w in &plan.windows_only_steps {
        line(format!("windows-only {w}"));
    }
    for n in &plan.notes {
        line(format!("note       {n}"));
    }
    line(format!("seed       {}", plan.seed));
    line(format!("inputs     {} files:", plan.inputs.len()));
    for i in &plan.inputs {
        line(format!(
            "  {}  {:>10}  {}  ({})",
            &i.sha256[..16],
            Bytes(i.bytes).to_string(),
            i.path,
            i.role
        ));
    }
    line("settings:".into());
    for e in &plan.settings {
        let (k, o) = (&e.key, e.origin);
        let shown = match &e.value {
            Value::Text(t) => t.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::List(l) => format!("[{}]", l.join(", ")),
        };
        line(format!("  {k} = {shown}  ({o:?})"));
    }
    s
}

pub fn run(a: BuildArgs, quiet: bool) -> anyhow::Result<()> {
    let mut config = Config::defaults();
    if let Some(t) = &a.template {
        config.apply_template(t)?;
    }
    for (k, vals) in &a.flags {
        config.apply_flag(k, vals)?;
    }
    let time = build_epoch()?;
    let bars = Bars {
        bar: Mutex::new(None),
        show: !quiet && !a.json && std::io::stderr().is_terminal(),
        verbose: a.verbose && !quiet,
    };
    let req = BuildRequest {
        config: &config,
        template: a.template.clone(),
        output: a.output.clone(),
        force: a.force || a.dry_run,
        time,
        progress: &bars,
    };
    let plan = build::plan(&req);
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            bars.done();
            return Err(e.into());
        }
    };
    if a.dry_run {
        bars.done();
        if a.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", describe(&plan));
            println!("dry run: nothing written");
        }
        return Ok(());
    }
    if a.verbose && !quiet {
        eprint!("{}", describe(&plan));
    }
    let res = build::write(&plan, &bars);
    bars.done();
    let (bytes, sha) = res?;
    if !quiet {
        eprintln!(
            "wrote {} ({}, sha256 {sha}) and {}",
            a.output.display(),
            Bytes(bytes),
            build::report_path(&a.output).display()
        );
        for n in &plan.notes {
            eprintln!("note: {n}");
        }
        let mut partial: Vec<&str> = plan
            .servicing
            .packages
            .packages
            .iter()
            .filter(|p| !p.not_applied.is_empty())
            .map(|p| p.name.as_str())
            .collect();
        partial.dedup();
        if !partial.is_empty() {
            eprintln!(
                "note: not everything of {} was applied offline; the report lists what",
                partial.join(", ")
            );
        }
    }
    // The plan holds the volume's whole tree: the process ends now, and freeing it node by
    // node would only make the user wait.
    std::mem::forget(plan);
    Ok(())
}

/// One line per setting for the README's table: key, flag, default, help.
pub fn settings_table_markdown() -> String {
    let mut s =
        String::from("| key | flag | kind | default | what it does |\n|---|---|---|---|---|\n");
    for st in SETTINGS {
        s.push_str(&format!(
            "| `{}` | `--{}` | {} | {} | {} |\n",
            st.key,
            st.flag(),
            match st.kind {
                Kind::Choice(w) => format!("one of {}", w.join(", ")),
                k => kind_word(k).to_string(),
            },
            st.default.map(|d| format!("`{d}`")).unwrap_or_default(),
            st.help.replace('|', "\\|")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/settings.md is generated from the settings table; NANOFORGE_BLESS=1 rewrites it.
    #[test]
    fn settings_doc_matches_the_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/settings.md");
        let want = format!(
            "# Build settings\n\nEvery setting is a template key and a flag of `nanoforge build` \
             (generated from `pipeline::config::SETTINGS`; `NANOFORGE_BLESS=1 cargo test \
             settings_doc` rewrites this file).\n\n{}",
            settings_table_markdown()
        );
        if std::env::var_os("NANOFORGE_BLESS").is_some() {
            std::fs::write(path, &want).unwrap();
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/settings.md is stale: run NANOFORGE_BLESS=1 cargo test settings_doc"
        );
    }
}
