#!/usr/bin/env python3
"""OpenStack conformance: runs tempest (unmodified, from PyPI) against a Meridian cloud it starts.

    run.py [--bin DIR] [--workdir DIR] [--concurrency N] [--regex RE] [--update] [--keep]

Starts `meridian-server` on a free loopback port with two agents on libvirt's `test:///default`
driver, provisions two images and a shared network (the accounts are tempest's dynamic
credentials, made and removed through Meridian's Identity API), writes `tempest.conf`
from what the server itself advertises (its catalog, the compute microversion range of its
discovery document, the Neutron extensions it lists) plus the feature table below, runs the
identity v3, compute, image v2, network and volume API packages, and reports:

- per package: passed / failed / skipped, and the whole run's time;
- every skip with tempest's reason (in WORKDIR/report.txt);
- the tests that pass now but are not in `must-pass.txt` beside this file (`--update` adds them);
- the tests of `must-pass.txt` that did not pass: any makes the exit status 1.

Runs with the tempest virtualenv's python (scripts/conformance.sh sets it up).
"""

import argparse
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MUST_PASS = os.path.join(HERE, "must-pass.txt")
# Tests of APIs Meridian does not have yet and that tempest has no switch for, one regex a line
# with the reason after `#`, one file per service; reported as excluded with that reason.
EXCLUDE_DIR = os.path.join(HERE, "exclude")
PACKAGES = [
    # (report name, id prefix); the first that matches a test id counts it.
    ("tempest.api.compute.servers", "tempest.api.compute.servers."),
    ("tempest.api.compute (the rest)", "tempest.api.compute."),
    ("tempest.api.network", "tempest.api.network."),
    ("tempest.api.identity.v3", "tempest.api.identity."),
    ("tempest.api.image.v2", "tempest.api.image."),
    ("tempest.api.volume", "tempest.api.volume."),
]
DEFAULT_REGEX = r"^tempest\.api\.(identity\.v3|identity\.admin\.v3|compute|image\.v2|network|volume)\."
PASSWORD = "Tempest-Secret-1"

# What Meridian implements beyond what its discovery documents say: each flag is tempest's own
# switch for a feature, True only where the feature works. Everything tempest enables by default
# and Meridian lacks is turned off here, so those tests are skipped with tempest's reason.
FEATURES = {
    "compute-feature-enabled": {
        "console_output": True,
        "config_drive": True,
        "metadata_service": False,
        "change_password": False,
        "resize": True,
        "cold_migration": True,
        # The API and its refusals are tempest's to check; the moves themselves need a
        # hypervisor that can migrate (excluded in exclude/compute.txt, run on real QEMU by
        # tests/tests/real_vm_live_migration.rs).
        "live_migration": True,
        "block_migration_for_live_migration": True,
        "pause": True,
        "suspend": True,
        "shelve": True,
        "shelve_migrate": False,
        # Server snapshots (createImage) are issue 17's; volume snapshots are Cinder's, below.
        "snapshot": True,
        "rescue": True,
        "stable_rescue": False,
        "interface_attach": True,
        "personality": False,
        "attach_encrypted_volume": False,
        "serial_console": False,
        "vnc_console": True,
        "spice_console": False,
        "rdp_console": False,
        "scheduler_enabled_filters": "RetryFilter,AvailabilityZoneFilter,ComputeFilter,ImagePropertiesFilter,"
        "ServerGroupAffinityFilter,ServerGroupAntiAffinityFilter,SameHostFilter,DifferentHostFilter",
        "volume_multiattach": False,
        "disk_config": False,
        "hostname_fqdn_sanitization": True,
        "unified_limits": False,
        "cold_migrate_across_cells": False,
    },
    "identity-feature-enabled": {
        "api_v2": False,
        "api_v3": True,
        "trust": False,
        "domain_specific_drivers": False,
        "security_compliance": False,
        "project_tags": True,
        "application_credentials": True,
        "access_rules": True,
        "external_idp": False,
    },
    "image-feature-enabled": {
        "api_v1": False,
        "api_v2": True,
        "import_image": False,
        "os_glance_reserved": True,
        "manage_locations": False,
        # Meridian stores what is uploaded without inspecting it against disk_format.
        "image_format_enforcement": False,
    },
    "network-feature-enabled": {
        "ipv6": True,
        "ipv6_subnet_attributes": True,
        "port_security": True,
        "floating_ips": False,
        "port_admin_state_change": True,
    },
    # Cinder: volumes, types, quotas, limits, AZs, the attach actions and attachments API, extend
    # of attached volumes (3.42), snapshots, clones, revert to a snapshot (3.40) and uploads to
    # images; none of the other optional features tempest can switch off.
    "volume-feature-enabled": {
        "multi_backend": False,
        "backup": False,
        "snapshot": True,
        "clone": True,
        "manage_snapshot": False,
        "manage_volume": False,
        "extend_attached_volume": True,
        "extend_attached_encrypted_volume": False,
        "extend_volume_with_snapshot": False,
        "volume_revert": True,
        "cluster_active_active": False,
        "enable_volume_image_dep_tests": False,
    },
    "service_available": {
        "nova": True,
        "glance": True,
        "neutron": True,
        "cinder": True,
        "swift": False,
        "heat": False,
        "designate": False,
        "octavia": False,
        "placement": False,
        "ironic": False,
    },
}


def log(msg):
    print(f"[conformance] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, token=None, body=None, data=None, headers=None, ok=(200, 201, 202, 204)):
    hdrs = dict(headers or {})
    if token:
        hdrs["X-Auth-Token"] = token
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read()
            return resp.status, resp.headers, (json.loads(text) if text.strip() else None)
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        if e.code in ok:
            return e.code, e.headers, None
        raise SystemExit(f"conformance: {method} {url} failed: {e.code} {text}") from None


class Cloud:
    """A server and two agents on test:///default, stopped (and their state removed) on exit."""

    def __init__(self, bindir, workdir):
        self.bindir = bindir
        self.dir = os.path.join(workdir, "cloud")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs = []

    def start(self):
        env = dict(os.environ, MERIDIAN_ADMIN_PASSWORD=PASSWORD, MERIDIAN_LOG="info,sqlx=warn")
        # libvirt's test driver reports a small host (about 3 GiB); tempest's parallel workers
        # keep many servers at once, so the simulated hosts overcommit memory as an operator's
        # setting would (Nova's fake driver reports a huge host for the same reason).
        config = os.path.join(self.dir, "server.toml")
        with open(config, "w") as f:
            f.write("[compute]\nram_allocation_ratio = 16.0\n")
        self._spawn(
            [os.path.join(self.bindir, "meridian-server"), "serve", "--config", config,
             "--listen", f"127.0.0.1:{self.port}", "--data-dir", os.path.join(self.dir, "server"),
             "--public-url", self.url],
            "server.log", env)
        deadline = time.time() + 60
        while True:
            try:
                call("GET", f"{self.url}/identity/v3")
                break
            except (OSError, SystemExit):
                if time.time() > deadline or self.procs[0].poll() is not None:
                    raise SystemExit("conformance: meridian-server did not start; see " + self.dir)
                time.sleep(0.1)
        token = open(os.path.join(self.dir, "server", "agent-token")).read().strip()
        for host in ("compute-1", "compute-2"):
            self._spawn(
                [os.path.join(self.bindir, "meridian-agent"), "--server", self.url, "--host", host,
                 "--libvirt-uri", "test:///default", "--state-dir", os.path.join(self.dir, host),
                 "--poll-wait-secs", "5", "--host-ip", "127.0.0.1"],
                f"{host}.log", dict(os.environ, MERIDIAN_AGENT_TOKEN=token, MERIDIAN_AGENT_LOG="info"))

    def _spawn(self, argv, logname, env):
        out = open(os.path.join(self.dir, logname), "ab")
        self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                           start_new_session=True))

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def login(base, user, project, domain="Default"):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": domain}, "password": PASSWORD}}},
        "scope": {"project": {"name": project, "domain": {"name": domain}}}}}
    _, headers, catalog = call("POST", f"{base}/identity/v3/auth/tokens", body=body)
    return headers["X-Subject-Token"], catalog["token"]


def provision(cloud):
    """Images and a shared network: what tempest expects to find. Accounts are tempest's own
    dynamic credentials (a project and users per test class, made and removed through our
    Identity API with the admin account), so parallel workers never share a project."""
    base = cloud.url
    admin, _ = login(base, "admin", "admin")
    images = []
    for name in ("tempest-image", "tempest-image-alt"):
        img = call("POST", f"{base}/image/v2/images", admin, {
            "name": name, "disk_format": "raw", "container_format": "bare", "visibility": "public"})[2]
        call("PUT", f"{base}/image/v2/images/{img['id']}/file", admin, data=b"\0" * (1 << 20),
             headers={"Content-Type": "application/octet-stream"})
        images.append(img["id"])

    net = call("POST", f"{base}/network/v2.0/networks", admin,
               {"network": {"name": "tempest-shared", "shared": True}})[2]["network"]
    call("POST", f"{base}/network/v2.0/subnets", admin, {"subnet": {
        "network_id": net["id"], "name": "tempest-shared-v4", "ip_version": 4, "cidr": "10.250.0.0/16"}})

    # Wait for both agents, as tempest's min_compute_nodes says.
    deadline = time.time() + 60
    while True:
        hv = call("GET", f"{base}/compute/v2.1/os-hypervisors", admin)[2]["hypervisors"]
        if len([h for h in hv if h.get("state") == "up"]) >= 2:
            break
        if time.time() > deadline:
            raise SystemExit(f"conformance: compute hosts did not come up: {hv}")
        time.sleep(0.5)
    return images, net


def discovered(cloud):
    """What the server advertises about itself: compute and volume microversions, Neutron and
    Cinder extensions."""
    admin, token = login(cloud.url, "admin", "admin")
    versions = call("GET", f"{cloud.url}/compute/", admin)[2]["versions"]
    v21 = next(v for v in versions if v["id"] == "v2.1")
    aliases = {e["alias"] for e in call("GET", f"{cloud.url}/network/v2.0/extensions", admin)[2]["extensions"]}
    # Neutron folded the network-only `tag` extension into `standard-attr-tag` (Stein); tempest
    # still gates its network tag tests on the old alias.
    if "standard-attr-tag" in aliases:
        aliases.add("tag")
    volume = call("GET", f"{cloud.url}/volume/v3/")[2]["versions"][0]
    project = token["project"]["id"]
    volume_ext = [e["alias"] for e in call("GET", f"{cloud.url}/volume/v3/{project}/extensions", admin)[2]["extensions"]]
    return {"min_microversion": v21["min_version"], "max_microversion": v21["version"],
            "network_extensions": sorted(aliases), "volume_extensions": sorted(volume_ext),
            "volume_min_microversion": volume["min_version"], "volume_max_microversion": volume["version"]}


def write_config(ws, cloud, images, net, disc):
    etc = os.path.join(ws, "etc")
    os.makedirs(etc, exist_ok=True)
    sections = {
        "DEFAULT": {"log_dir": os.path.join(ws, "logs"), "log_file": "tempest.log", "debug": True},
        "auth": {
            "use_dynamic_credentials": True,
            "admin_username": "admin",
            "admin_password": PASSWORD,
            "admin_project_name": "admin",
            "admin_domain_name": "Default",
            "default_credentials_domain_name": "Default",
            "create_isolated_networks": False,
            "tempest_roles": "member",
        },
        "identity": {
            "uri_v3": f"{cloud.url}/identity/v3",
            "auth_version": "v3",
            "region": "RegionOne",
            "default_domain_id": "default",
            "admin_role": "admin",
        },
        "compute": {
            "image_ref": images[0],
            "image_ref_alt": images[1],
            "flavor_ref": "1",
            "flavor_ref_alt": "2",
            "fixed_network_name": net["name"],
            "min_microversion": disc["min_microversion"],
            "max_microversion": disc["max_microversion"],
            "min_compute_nodes": 2,
            "build_timeout": 120,
            "build_interval": 1,
            "region": "RegionOne",
        },
        "image": {"region": "RegionOne", "build_timeout": 60, "build_interval": 1},
        "volume": {
            "region": "RegionOne",
            "catalog_type": "block-storage",
            "min_microversion": disc["volume_min_microversion"],
            "max_microversion": disc["volume_max_microversion"],
            "build_timeout": 60,
            "build_interval": 1,
            "volume_size": 1,
        },
        "network": {
            "region": "RegionOne",
            "project_network_cidr": "10.100.0.0/16",
            "project_network_mask_bits": 28,
            "shared_physical_network": False,
            "build_timeout": 60,
            "build_interval": 1,
        },
        "validation": {"run_validation": False},
    }
    for section, flags in FEATURES.items():
        sections.setdefault(section, {}).update(flags)
    sections["network-feature-enabled"]["api_extensions"] = ",".join(disc["network_extensions"]) or "None"
    # tempest checks the first one is listed ('all' would make it look for os-hosts, not served).
    sections["volume-feature-enabled"]["api_extensions"] = ",".join(disc["volume_extensions"]) or "None"
    with open(os.path.join(etc, "tempest.conf"), "w") as f:
        for section, values in sections.items():
            f.write(f"[{section}]\n")
            for k, v in values.items():
                f.write(f"{k} = {v}\n")
            f.write("\n")


def load_excludes():
    """[(regex, reason)] from exclude/*.txt."""
    out = []
    for name in sorted(os.listdir(EXCLUDE_DIR)) if os.path.isdir(EXCLUDE_DIR) else []:
        if not name.endswith(".txt"):
            continue
        for line in open(os.path.join(EXCLUDE_DIR, name)):
            pattern, _, reason = line.partition("#")
            if pattern.strip():
                out.append((pattern.strip(), reason.strip() or "excluded"))
    return out


def excluded_tests(tempest, ws, regex, excludes):
    """{name: ("excluded", reason)} for the tests the run leaves out (tempest lists them locally)."""
    listed = subprocess.run([tempest, "run", "--list-tests", "--regex", regex], cwd=ws, capture_output=True,
                            text=True, check=False).stdout.split()
    out = {}
    for test_id in listed:
        if not test_id.startswith("tempest."):
            continue
        for pattern, reason in excludes:
            if re.search(pattern, test_id):
                out[test_name(test_id)] = ("excluded", reason)
                break
    return out


def test_name(test_id):
    """A tempest id without its attributes: `pkg.Class.test_x[id-…,smoke]` → `pkg.Class.test_x`."""
    return re.sub(r"\[.*\]$", "", test_id)


def package_of(name):
    # setUpClass/tearDownClass failures are named `setUpClass (tempest.api....Class)`.
    m = re.match(r"^\w+ \((.*)\)$", name)
    path = m.group(1) if m else name
    for label, prefix in PACKAGES:
        if path.startswith(prefix):
            return label
    return "other"


def read_results(ws):
    """tempest's last run, from stestr's subunit stream: {name: (status, reason)}."""
    import subunit
    import testtools

    stream = subprocess.run([os.path.join(os.path.dirname(sys.executable), "stestr"), "last", "--subunit"],
                            cwd=ws, capture_output=True, check=False).stdout
    results = {}

    def on_test(test):
        status = test["status"]
        if status in ("exists", "inprogress"):
            return
        reason = ""
        details = test.get("details") or {}
        if "reason" in details:
            reason = details["reason"].as_text().strip()
        elif status == "fail" and "traceback" in details:
            lines = details["traceback"].as_text().strip().splitlines()
            reason = lines[-1] if lines else ""
        results[test_name(test["id"])] = (status, reason)

    case = subunit.ByteStreamToStreamResult(io.BytesIO(stream), non_subunit_name="stdout")
    result = testtools.StreamToDict(on_test)
    result.startTestRun()
    try:
        case.run(result)
    finally:
        result.stopTestRun()
    return results


def report(results, ws, elapsed, update):
    counts = {label: {"success": 0, "fail": 0, "skip": 0, "excluded": 0} for label, _ in PACKAGES}
    for name, (status, _) in results.items():
        label = package_of(name)
        if label in counts:
            key = {"success": "success", "xfail": "success", "skip": "skip", "excluded": "excluded"}.get(status, "fail")
            counts[label][key] += 1
    with open(os.path.join(ws, "report.txt"), "w") as f:
        for name, (status, reason) in sorted(results.items()):
            f.write(f"{status:8} {name}" + (f"  -- {reason}" if reason else "") + "\n")

    must = set()
    if os.path.exists(MUST_PASS):
        must = {l.strip() for l in open(MUST_PASS) if l.strip() and not l.startswith("#")}
    passed = {n for n, (s, _) in results.items() if s in ("success", "xfail")}
    broken = sorted(n for n in must if n not in passed)
    new = sorted(passed - must)

    print()
    print(f"{'package':34} {'passed':>7} {'failed':>7} {'skipped':>8} {'excluded':>9} {'pass rate':>10}")
    for label, _ in ([(l, None) for l, _ in PACKAGES] + [("total", None)]):
        c = counts[label] if label != "total" else {
            k: sum(c[k] for c in counts.values()) for k in ("success", "fail", "skip", "excluded")}
        ran = c["success"] + c["fail"]
        rate = f"{100.0 * c['success'] / ran:.1f} %" if ran else "-"
        print(f"{label:34} {c['success']:7} {c['fail']:7} {c['skip']:8} {c['excluded']:9} {rate:>10}")
    print(f"tempest run took {elapsed:.0f} s; every result with its reason: {ws}/report.txt")
    if new:
        print(f"\n{len(new)} test(s) pass that must-pass.txt does not list yet"
              + (" (added)" if update else " (run with --update to add them):"))
        for n in new:
            print(f"  + {n}")
        if update:
            with open(MUST_PASS, "w") as f:
                f.write("# tempest tests that must pass against Meridian (tests/conformance/run.py).\n"
                        "# Only ever grows: run.py --update adds the tests that newly pass.\n")
                for n in sorted(must | passed):
                    f.write(n + "\n")
    if broken:
        print(f"\n{len(broken)} test(s) of must-pass.txt did not pass:")
        for n in broken:
            status, reason = results.get(n, ("missing", "not run"))
            print(f"  - {n}: {status} {reason}")
    return not broken


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug"), help="where the Meridian binaries are")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "target", "conformance"))
    ap.add_argument("--concurrency", type=int, default=int(os.environ.get("MERIDIAN_TEMPEST_CONCURRENCY", "4")))
    ap.add_argument("--regex", default=DEFAULT_REGEX, help="which tempest tests to run")
    ap.add_argument("--update", action="store_true", help="add newly passing tests to must-pass.txt")
    ap.add_argument("--keep", action="store_true", help="leave the cloud running (print its URL) until Ctrl-C")
    args = ap.parse_args()

    os.makedirs(args.workdir, exist_ok=True)
    ws = os.path.join(args.workdir, "tempest")
    shutil.rmtree(ws, ignore_errors=True)
    tempest = os.path.join(os.path.dirname(sys.executable), "tempest")
    # A workspace registry of this run's own: the shared ~/.tempest one refuses a second
    # workspace named `tempest`, which every run (and every concurrent workdir) uses.
    registry = os.path.join(args.workdir, "workspace.yaml")
    if os.path.exists(registry):
        os.remove(registry)
    subprocess.run([tempest, "init", "--workspace-path", registry, ws], check=True, capture_output=True)

    cloud = Cloud(args.bin, args.workdir)
    try:
        cloud.start()
        images, net = provision(cloud)
        disc = discovered(cloud)
        write_config(ws, cloud, images, net, disc)
        log(f"cloud at {cloud.url}; compute microversions {disc['min_microversion']}–{disc['max_microversion']}; "
            f"running tempest with {args.concurrency} workers")
        excludes = load_excludes()
        exclude_file = os.path.join(ws, "exclude-list.txt")
        with open(exclude_file, "w") as f:
            f.writelines(p + "\n" for p, _ in excludes)
        start = time.time()
        subprocess.run([tempest, "run", "--concurrency", str(args.concurrency), "--regex", args.regex,
                        "--exclude-list", exclude_file],
                       cwd=ws, stdout=open(os.path.join(args.workdir, "tempest-output.txt"), "w"),
                       stderr=subprocess.STDOUT, check=False)
        elapsed = time.time() - start
        results = read_results(ws)
        if not results:
            print(open(os.path.join(args.workdir, "tempest-output.txt")).read()[-5000:])
            raise SystemExit("conformance: tempest ran no test")
        results.update(excluded_tests(tempest, ws, args.regex, excludes))
        ok = report(results, ws, elapsed, args.update)
        if args.keep:
            print(f"cloud left at {cloud.url} (admin password {PASSWORD}); Ctrl-C stops it")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        cloud.stop()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
