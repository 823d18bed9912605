#!/usr/bin/env python3
"""Seeds a local Meridian cloud for scripts/up.sh, idempotently, through its public APIs.

    seed.py URL ADMIN_PASSWORD DEMO_PASSWORD IMAGE_FILE

Creates what is missing (never a duplicate): project `demo`, user `demo` with the member role on
it, the public image `meridian-guest` (IMAGE_FILE, qcow2), and, as the demo user, network
`demo-net` with subnet `demo-subnet` (10.20.0.0/24), and in demo's default security group ingress
rules for ssh (tcp 22) and ICMP from anywhere (IPv4). Standard library only.
"""

import json
import sys
import urllib.error
import urllib.parse
import urllib.request


def call(method, url, token=None, body=None, data=None, content_type="application/json"):
    headers = {}
    if token:
        headers["X-Auth-Token"] = token
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req) as resp:
            text = resp.read()
            return resp.headers, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        sys.exit(f"seed: {method} {url} failed: {e.code} {e.read().decode(errors='replace')}")


def login(base, user, password, project):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    headers, _ = call("POST", f"{base}/identity/v3/auth/tokens", body=body)
    return headers["X-Subject-Token"]


def q(name):
    return urllib.parse.quote(name)


def main():
    base, admin_password, demo_password, image_file = sys.argv[1:5]
    admin = login(base, "admin", admin_password, "admin")
    ks = f"{base}/identity/v3"

    _, r = call("GET", f"{ks}/projects?name=demo", admin)
    if r["projects"]:
        project = r["projects"][0]["id"]
    else:
        _, r = call("POST", f"{ks}/projects", admin, {"project": {"name": "demo", "domain_id": "default",
                                                                  "description": "up.sh demo project"}})
        project = r["project"]["id"]
        print("seed: created project demo")

    _, r = call("GET", f"{ks}/users?name=demo", admin)
    if r["users"]:
        user = r["users"][0]["id"]
    else:
        _, r = call("POST", f"{ks}/users", admin, {"user": {"name": "demo", "password": demo_password,
                                                            "domain_id": "default", "default_project_id": project}})
        user = r["user"]["id"]
        print("seed: created user demo")
    _, r = call("GET", f"{ks}/roles?name=member", admin)
    member = r["roles"][0]["id"]
    call("PUT", f"{ks}/projects/{project}/users/{user}/roles/{member}", admin)

    _, r = call("GET", f"{base}/image/v2/images?name=meridian-guest", admin)
    active = [i for i in r["images"] if i["status"] == "active"]
    if not active:
        for stale in r["images"]:
            call("DELETE", f"{base}/image/v2/images/{stale['id']}", admin)
        _, img = call("POST", f"{base}/image/v2/images", admin, {
            "name": "meridian-guest", "disk_format": "qcow2", "container_format": "bare",
            "visibility": "public", "min_disk": 1, "os_distro": "busybox"})
        with open(image_file, "rb") as f:
            call("PUT", f"{base}/image/v2/images/{img['id']}/file", admin, data=f.read(),
                 content_type="application/octet-stream")
        print("seed: uploaded image meridian-guest")

    demo = login(base, "demo", demo_password, "demo")
    net_api = f"{base}/network/v2.0"
    _, r = call("GET", f"{net_api}/networks?name=demo-net&project_id={project}", demo)
    if r["networks"]:
        net = r["networks"][0]["id"]
    else:
        _, r = call("POST", f"{net_api}/networks", demo, {"network": {"name": "demo-net"}})
        net = r["network"]["id"]
        print("seed: created network demo-net")
    _, r = call("GET", f"{net_api}/subnets?network_id={net}", demo)
    if not r["subnets"]:
        call("POST", f"{net_api}/subnets", demo, {"subnet": {
            "name": "demo-subnet", "network_id": net, "cidr": "10.20.0.0/24", "ip_version": 4,
            "dns_nameservers": []}})
        print("seed: created subnet demo-subnet 10.20.0.0/24")

    # The agent enforces security groups, and Neutron's default group admits only its own
    # members: without these a newcomer could neither ssh (`x` in the dashboard) nor ping a guest.
    _, r = call("GET", f"{net_api}/security-groups?name=default&project_id={project}", demo)
    group = next(g for g in r["security_groups"] if g["project_id"] == project)
    for protocol, port, what in (("tcp", 22, "ssh (tcp 22)"), ("icmp", None, "ICMP")):
        if not any(rule["direction"] == "ingress" and rule["ethertype"] == "IPv4" and rule["protocol"] == protocol
                   and rule["port_range_min"] == port and rule["remote_ip_prefix"] in ("0.0.0.0/0", None)
                   and rule["remote_group_id"] is None for rule in group["security_group_rules"]):
            call("POST", f"{net_api}/security-group-rules", demo, {"security_group_rule": {
                "security_group_id": group["id"], "direction": "ingress", "ethertype": "IPv4",
                "protocol": protocol, "port_range_min": port, "port_range_max": port,
                "remote_ip_prefix": "0.0.0.0/0"}})
            print(f"seed: default security group of demo: ingress {what} from anywhere (IPv4)")


if __name__ == "__main__":
    main()
