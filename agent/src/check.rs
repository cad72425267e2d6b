//! `shrike check`: a preflight of what this kernel and machine support.

use std::path::{Path, PathBuf};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};
use clap::Args;
use serde::Serialize;

use crate::{
    caps::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, effective_caps, privileged},
    probes::{self, compat, compat::Hook},
};

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// libpam to check [default: found with ldconfig].
    #[arg(long)]
    pub libpam: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct Item {
    name: String,
    ok: bool,
    /// Without it the agent cannot run at all.
    required: bool,
    detail: String,
}

pub fn run(args: &CheckArgs) -> i32 {
    let mut items = Vec::new();
    let mut add = |name: &str, ok: bool, required: bool, detail: String| {
        items.push(Item { name: name.into(), ok, required, detail })
    };

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    add("kernel", true, false, format!("Linux {}", release.trim()));

    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    let privileged = privileged(caps);
    add(
        "privileges",
        privileged,
        true,
        format!(
            "CapEff={caps:#x}: CAP_BPF={} CAP_PERFMON={} CAP_SYS_ADMIN={}{}",
            has(CAP_BPF),
            has(CAP_PERFMON),
            has(CAP_SYS_ADMIN),
            if privileged { "" } else { " (run as root, or grant CAP_BPF and CAP_PERFMON)" }
        ),
    );

    let bpf = is_program_supported(ProgramType::TracePoint);
    add(
        "bpf tracepoint programs",
        matches!(bpf, Ok(true)),
        true,
        match bpf {
            Ok(v) => format!("supported: {v}"),
            Err(e) => format!("cannot probe: {e}"),
        },
    );
    let ring = is_map_supported(MapType::RingBuf).unwrap_or(false);
    add(
        "ring buffer",
        ring,
        false,
        if ring { "BPF_MAP_TYPE_RINGBUF".into() } else { "absent: perf event arrays will be used".into() },
    );
    let perf = is_map_supported(MapType::PerfEventArray).unwrap_or(false);
    add("perf event array", perf, !ring, format!("supported: {perf}"));
    add(
        "btf",
        Path::new("/sys/kernel/btf/vmlinux").exists(),
        false,
        "/sys/kernel/btf/vmlinux (not required: Shrike needs no CO-RE)".into(),
    );
    let uprobes = Path::new("/sys/bus/event_source/devices/uprobe").exists();
    add("uprobes", uprobes, false, "needed for login (PAM) events".into());

    match probes::ensure_tracefs() {
        Ok(tracefs) => {
            add("tracefs", true, true, tracefs.display().to_string());
            let mut missing = Vec::new();
            let mut total = 0;
            for spec in compat::table() {
                if let Hook::Tracepoint { category, name } = spec.hook {
                    total += 1;
                    match compat::read_format(&tracefs, category, name) {
                        Ok(f) => {
                            if let Err(e) = compat::check_fields(&f, spec.fields) {
                                missing.push(format!("{category}/{name} ({e})"));
                            }
                        }
                        Err(_) => missing.push(format!("{category}/{name} (absent)")),
                    }
                }
            }
            add(
                "tracepoints",
                missing.len() < total,
                true,
                if missing.is_empty() {
                    format!("all {total} available with the expected formats")
                } else {
                    format!(
                        "{} of {total} unusable, their events will be missing: {}",
                        missing.len(),
                        missing.join(", ")
                    )
                },
            );
        }
        Err(e) => add("tracefs", false, true, e.to_string()),
    }

    match args.libpam.clone().map(Ok).unwrap_or_else(probes::pam::find_libpam) {
        Ok(p) => match probes::pam::unprobeable(&p, "pam_start") {
            Some(why) => add("libpam", false, false, format!("{why}: login events unavailable")),
            None => add("libpam", true, false, p.display().to_string()),
        },
        Err(e) => add("libpam", false, false, format!("{e}: login events unavailable")),
    }

    let fatal: Vec<&Item> = items.iter().filter(|i| i.required && !i.ok).collect();
    let can_run = fatal.is_empty();
    if args.json {
        let report = serde_json::json!({ "can_run": can_run, "checks": items });
        println!("{report}");
    } else {
        for i in &items {
            println!(
                "{:4} {:26} {}",
                if i.ok {
                    "ok"
                } else if i.required {
                    "FAIL"
                } else {
                    "no"
                },
                i.name,
                i.detail
            );
        }
        if can_run {
            println!("shrike can run here");
        } else {
            let names: Vec<_> = fatal.iter().map(|i| i.name.as_str()).collect();
            println!("shrike cannot run here: {}", names.join(", "));
        }
    }
    if can_run { 0 } else { crate::EXIT_CANNOT_RUN }
}
