//! Helpers the benchmark binaries share: their flags, min/median/max rows, timed commands.

use std::path::Path;
use std::time::Instant;

use meridian_common::Client;

use crate::vm;

pub const MIB: f64 = 1024.0 * 1024.0;
/// The guest's data (see [`fill_user_data`]): MiB FILL_AT to FILL_AT + FILL_MIB of its 1 GiB disk.
pub const FILL_AT: u64 = 64;
pub const FILL_MIB: u64 = 960;
const BLOCK_MIB: u64 = 16;
/// Hang guards only, never timing assertions.
pub const WAIT_SECS: u64 = 900;

/// A guest's user data that fills its disk on its first boot: 16 MiB of random bytes written
/// FILL_MIB/BLOCK_MIB times from MiB FILL_AT, then a marker just below the data (inside the
/// unused space past the guest's partition), so a reboot keeps it. Every boot prints
/// `bench-boot boot=<id> fill=new:<secs>|kept` (see [`next_boot`]).
pub fn fill_user_data() -> String {
    format!(
        "#!/bin/sh\n\
         if dd if=/dev/vda bs=1M skip={marker} count=1 2>/dev/null | grep -q bench-filled; then f=kept; else \
         t0=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/urandom of=/tmp/blk bs=1M count={BLOCK_MIB} 2>/dev/null; \
         i=0; while [ $i -lt {blocks} ]; do \
         dd if=/tmp/blk of=/dev/vda bs=1M seek=$(({FILL_AT} + i * {BLOCK_MIB})) conv=notrunc,fsync 2>/dev/null || {{ echo \"bench-boot boot=none fill=failed\"; exit 1; }}; \
         i=$((i + 1)); done; rm -f /tmp/blk; \
         echo bench-filled | dd of=/dev/vda bs=1M seek={marker} conv=notrunc,fsync 2>/dev/null; \
         f=new:$(cut -d' ' -f1 /proc/uptime)-$t0; fi\n\
         echo \"bench-boot boot=$(cat /proc/sys/kernel/random/boot_id) fill=$f\"\n",
        marker = FILL_AT - 1,
        blocks = FILL_MIB / BLOCK_MIB,
    )
}

/// The boot id of the guest's next boot after `previous` (its `bench-boot` line), and whether
/// that boot filled the disk. A migrated guest's console log starts afresh on its new host.
pub async fn next_boot(client: &Client, id: &str, previous: &str) -> (String, String) {
    let line = |c: &str| c.lines().rev().find(|l| l.contains("bench-boot ")).map(str::to_string);
    let field =
        |l: &str, k: &str| l.split_whitespace().find_map(|w| w.strip_prefix(k).map(str::to_string)).unwrap_or_default();
    let log = vm::wait_console(client, id, WAIT_SECS, |c| {
        line(c).is_some_and(|l| c.contains(vm::READY) && field(&l, "boot=") != previous)
    })
    .await;
    let l = line(&log).unwrap_or_default();
    (field(&l, "boot="), field(&l, "fill="))
}

/// `--name value` from the command line, else `BENCH_NAME`, else the default.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    let given = args.iter().position(|a| a == &format!("--{name}")).and_then(|i| args.get(i + 1)).cloned();
    given
        .or_else(|| std::env::var(format!("BENCH_{}", name.to_uppercase())).ok())
        .map(|v| v.parse().unwrap_or_else(|_| panic!("--{name}: not a number: {v}")))
        .unwrap_or(default)
}

/// min, median, max.
pub fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.as_slice() {
        [] => (f64::NAN, f64::NAN, f64::NAN),
        [first, .., last] => (*first, s[s.len() / 2], *last),
        [one] => (*one, *one, *one),
    }
}

/// One table row: min/median/max of `secs`, and of `bytes / secs` in MiB/s when given.
pub fn row(name: &str, secs: &[f64], bytes: Option<f64>) {
    let (lo, med, hi) = spread(secs);
    let rate = bytes.map(|b| format!("{:8.1} {:8.1} {:8.1}", b / hi / MIB, b / med / MIB, b / lo / MIB));
    println!("{name:<44} {lo:8.3} {med:8.3} {hi:8.3}   {}", rate.unwrap_or_default());
}

/// The header of a table of [`row`]s.
pub fn header() {
    println!(
        "\n{:<44} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
        "figure (s; MiB/s)", "min", "median", "max", "min", "median", "max"
    );
}

/// Runs a command to completion; seconds it took.
pub async fn timed(program: &str, args: &[&std::ffi::OsStr]) -> f64 {
    let t0 = Instant::now();
    let out = tokio::process::Command::new(program).args(args).output().await.expect("run a baseline command");
    let secs = t0.elapsed().as_secs_f64();
    assert!(out.status.success(), "{program}: {}", String::from_utf8_lossy(&out.stderr));
    secs
}

/// A file's length.
pub fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
