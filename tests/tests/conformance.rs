//! The conformance tier: OpenStack's own suite, tempest (pinned, unmodified, from PyPI), run by
//! `scripts/conformance.sh` against a fresh cloud of the binaries this build made (server and
//! two agents on `test:///default`). Fails when a test of `tests/conformance/must-pass.txt`
//! does not pass; the report (per package, run time, newly passing tests, skip reasons) is in
//! the test's output.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn tempest_must_pass_list_passes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let server = meridian_e2e::binary("meridian-server");
    let bin = server.parent().expect("binary dir");
    assert!(bin.join("meridian-agent").exists(), "meridian-agent not built beside {}", server.display());
    let workdir = std::env::temp_dir().join(format!("meridian-conformance-{}", std::process::id()));
    let status = Command::new(root.join("scripts/conformance.sh"))
        .arg("--bin")
        .arg(bin)
        .arg("--workdir")
        .arg(&workdir)
        .status()
        .expect("run scripts/conformance.sh");
    assert!(status.success(), "tempest conformance failed (details above; tempest's logs in {})", workdir.display());
    let _ = std::fs::remove_dir_all(&workdir);
}
