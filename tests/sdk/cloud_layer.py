"""openstacksdk's cloud layer against Meridian, as Ansible's openstack.cloud modules and other
SDK-based tools drive it. Run by tests/tests/sdk.rs with the test virtualenv's python; prints one
JSON object of what it saw.

    cloud_layer.py AUTH_URL PASSWORD IMAGE_ID NETWORK_ID
"""

import json
import sys

import openstack


def main():
    auth_url, password, image_id, network_id = sys.argv[1:5]
    conn = openstack.connect(
        auth_url=auth_url, username="admin", password=password, project_name="admin",
        user_domain_name="Default", project_domain_name="Default", region_name="RegionOne")
    seen = {}

    # A subnet whose CIDR has host bits set: Neutron stores it normalised.
    net = conn.network.create_network(name="sdk-net")
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.99.99.0/16", name="sdk-sub")
    seen["subnet_cidr"] = sub.cidr
    conn.network.delete_subnet(sub)
    conn.network.delete_network(net)

    # What openstack.cloud.server does: create_server with the cloud layer's defaults
    # (auto_ip=True: it looks for floating IPs only if the cloud has the extensions for them).
    server = conn.create_server(
        "sdk-vm", image=image_id, flavor="m1.tiny", network=network_id, wait=True, timeout=120,
        admin_pass="Sdk-Pass-123", config_drive=True)
    seen["status"] = server.status
    seen["admin_password"] = server.admin_password
    shown = conn.compute.get_server(server.id)
    seen["config_drive"] = shown.has_config_drive
    seen["request_id_header"] = bool(conn.compute.get("/servers/" + server.id).headers.get("x-openstack-request-id"))
    seen["deleted"] = conn.delete_server(server.id, wait=True, timeout=120)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
