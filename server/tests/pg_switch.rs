//! `MERIDIAN_TEST_PG=skip` turns the PostgreSQL half of the store tests off; under CI (`CI`
//! set) that is refused, so the run fails instead of passing on SQLite alone. Each case runs
//! this test binary again, with the switch set, on a probe that only asks for the backend.

mod common;

use std::process::Command;

#[test]
#[ignore = "run by the tests below, in a child process with the switches set"]
fn probe_pg_switch() {
    assert!(common::pg_base().is_none(), "the probe expects MERIDIAN_TEST_PG=skip");
}

fn probe(ci: &str) -> std::process::Output {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "probe_pg_switch", "--include-ignored", "--nocapture"])
        .env("MERIDIAN_TEST_PG", "skip")
        .env("CI", ci)
        .output()
        .expect("run the probe")
}

#[test]
fn skipping_postgres_is_refused_under_ci() {
    let out = probe("true");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a skip under CI must fail the run:\n{text}");
    assert!(text.contains("refused under CI"), "{text}");
}

#[test]
fn outside_ci_the_skip_is_said_out_loud() {
    let out = probe("");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "outside CI PostgreSQL may be skipped:\n{text}");
    assert!(text.contains("SKIPPED PostgreSQL"), "{text}");
}
