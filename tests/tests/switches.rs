//! Switches that turn a tier off must never make a run pass silently: under CI (`CI` set) the
//! real-VM skip is refused. Each case runs this test binary again with the switch set, on a
//! helper test that only asks whether the tier runs.

use std::process::Command;

/// Asks the real-VM tier whether it runs (only meaningful when run by the tests below).
#[test]
#[ignore = "run by the tests below, in a child process with the switches set"]
fn probe_real_vm_switch() {
    assert!(!meridian_e2e::vm::enabled("probe"), "the probe expects MERIDIAN_SKIP_REAL_VM=1");
}

fn probe(ci: &str) -> std::process::Output {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "probe_real_vm_switch", "--include-ignored", "--nocapture"])
        .env("MERIDIAN_SKIP_REAL_VM", "1")
        .env("CI", ci)
        .output()
        .expect("run the probe")
}

#[test]
fn skipping_the_real_vm_tier_is_refused_under_ci() {
    let out = probe("true");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a skip under CI must fail the run:\n{text}");
    assert!(text.contains("refused under CI"), "{text}");
}

#[test]
fn outside_ci_the_skip_is_said_out_loud() {
    let out = probe("");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "outside CI the tier may be skipped:\n{text}");
    assert!(text.contains("SKIPPED real-VM test probe"), "{text}");
}
