//! The client-side models against the real response samples of the OpenStack API reference
//! (nova `doc/api_samples`, glance/neutron-lib/keystone `api-ref/source/.../samples`), each with
//! the microversion or API version it belongs to. Verbatim unless a comment says otherwise.

use meridian_common::Session;
use meridian_tui::model::{Flavor, Image, Network, Server, Token, parse_list, parse_server};
use meridian_tui::table::{CellCtx, Resource};
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).expect("sample is JSON")
}

/// nova doc/api_samples/servers/server-get-resp.json — compute 2.1: flavor and image as
/// `{id, links}`, no extended status attributes.
const NOVA_2_1_SERVER_GET: &str = r#"{
    "server": {
        "accessIPv4": "1.2.3.4",
        "accessIPv6": "80fe::",
        "addresses": {
            "private": [
                {
                    "addr": "192.168.0.3",
                    "OS-EXT-IPS-MAC:mac_addr": "aa:bb:cc:dd:ee:ff",
                    "OS-EXT-IPS:type": "fixed",
                    "version": 4
                }
            ]
        },
        "created": "2013-09-03T04:01:32Z",
        "flavor": {
            "id": "1",
            "links": [
                {
                    "href": "http://openstack.example.com/6f70656e737461636b20342065766572/flavors/1",
                    "rel": "bookmark"
                }
            ]
        },
        "hostId": "92154fab69d5883ba2c8622b7e65f745dd33257221c07af363c51b29",
        "id": "0e44cc9c-e052-415d-afbf-469b0d384170",
        "image": {
            "id": "70a599e0-31e7-49b7-b260-868f441e862b",
            "links": [
                {
                    "href": "http://openstack.example.com/6f70656e737461636b20342065766572/images/70a599e0-31e7-49b7-b260-868f441e862b",
                    "rel": "bookmark"
                }
            ]
        },
        "key_name": null,
        "links": [
            {
                "href": "http://openstack.example.com/v2/6f70656e737461636b20342065766572/servers/0e44cc9c-e052-415d-afbf-469b0d384170",
                "rel": "self"
            },
            {
                "href": "http://openstack.example.com/6f70656e737461636b20342065766572/servers/0e44cc9c-e052-415d-afbf-469b0d384170",
                "rel": "bookmark"
            }
        ],
        "metadata": {
            "My Server Name": "Apache1"
        },
        "name": "new-server-test",
        "progress": 0,
        "status": "ACTIVE",
        "tenant_id": "6f70656e737461636b20342065766572",
        "updated": "2013-09-03T04:01:33Z",
        "user_id": "fake"
    }
}"#;

/// nova doc/api_samples/servers/v2.71/server-get-resp.json — compute 2.71: embedded flavor
/// (≥ 2.47), extended status and server attributes, server_groups.
const NOVA_2_71_SERVER_GET: &str = r#"{
    "server": {
        "OS-DCF:diskConfig": "AUTO",
        "OS-EXT-AZ:availability_zone": "nova",
        "OS-EXT-SRV-ATTR:host": "compute",
        "OS-EXT-SRV-ATTR:hostname": "new-server-test",
        "OS-EXT-SRV-ATTR:hypervisor_hostname": "fake-mini",
        "OS-EXT-SRV-ATTR:instance_name": "instance-00000001",
        "OS-EXT-SRV-ATTR:kernel_id": "",
        "OS-EXT-SRV-ATTR:launch_index": 0,
        "OS-EXT-SRV-ATTR:ramdisk_id": "",
        "OS-EXT-SRV-ATTR:reservation_id": "r-0scisg0g",
        "OS-EXT-SRV-ATTR:root_device_name": "/dev/sda",
        "OS-EXT-SRV-ATTR:user_data": "IyEvYmluL2Jhc2gKL2Jpbi9zdQplY2hvICJJIGFtIGluIHlvdSEiCg==",
        "OS-EXT-STS:power_state": 1,
        "OS-EXT-STS:task_state": null,
        "OS-EXT-STS:vm_state": "active",
        "OS-SRV-USG:launched_at": "2019-02-28T03:16:19.600768",
        "OS-SRV-USG:terminated_at": null,
        "accessIPv4": "1.2.3.4",
        "accessIPv6": "80fe::",
        "addresses": {
            "private": [
                {
                    "OS-EXT-IPS-MAC:mac_addr": "00:0c:29:0d:11:74",
                    "OS-EXT-IPS:type": "fixed",
                    "addr": "192.168.1.30",
                    "version": 4
                }
            ]
        },
        "config_drive": "",
        "created": "2019-02-28T03:16:18Z",
        "description": null,
        "flavor": {
            "disk": 1,
            "ephemeral": 0,
            "extra_specs": {},
            "original_name": "m1.tiny",
            "ram": 512,
            "swap": 0,
            "vcpus": 1
        },
        "hostId": "2091634baaccdc4c5a1d57069c833e402921df696b7f970791b12ec6",
        "host_status": "UP",
        "id": "84e2b49d-39a9-4d32-9100-e62161c236db",
        "image": {
            "id": "70a599e0-31e7-49b7-b260-868f441e862b",
            "links": [
                {
                    "href": "http://openstack.example.com/6f70656e737461636b20342065766572/images/70a599e0-31e7-49b7-b260-868f441e862b",
                    "rel": "bookmark"
                }
            ]
        },
        "key_name": null,
        "links": [
            {
                "href": "http://openstack.example.com/v2.1/6f70656e737461636b20342065766572/servers/84e2b49d-39a9-4d32-9100-e62161c236db",
                "rel": "self"
            },
            {
                "href": "http://openstack.example.com/6f70656e737461636b20342065766572/servers/84e2b49d-39a9-4d32-9100-e62161c236db",
                "rel": "bookmark"
            }
        ],
        "locked": false,
        "metadata": {
            "My Server Name": "Apache1"
        },
        "name": "new-server-test",
        "os-extended-volumes:volumes_attached": [],
        "progress": 0,
        "security_groups": [
            {
                "name": "default"
            }
        ],
        "server_groups": [
            "f3d86fe6-4246-4be8-b87c-eb894626c741"
        ],
        "status": "ACTIVE",
        "tags": [],
        "tenant_id": "6f70656e737461636b20342065766572",
        "trusted_image_certificates": null,
        "updated": "2019-02-28T03:16:19Z",
        "user_id": "fake"
    }
}"#;

/// nova doc/api_samples/servers/v2.100/servers-details-resp.json — compute 2.100: the newest
/// list shape (image properties, pinned AZ, scheduler hints) with a `servers_links` next page.
const NOVA_2_100_SERVERS_DETAIL: &str = r#"{
    "servers": [
        {
            "accessIPv4": "1.2.3.4",
            "accessIPv6": "80fe::",
            "addresses": {
                "private": [
                    {
                        "addr": "192.168.1.30",
                        "OS-EXT-IPS-MAC:mac_addr": "00:0c:29:0d:11:74",
                        "OS-EXT-IPS:type": "fixed",
                        "version": 4
                    }
                ]
            },
            "created": "2013-09-03T04:01:32Z",
            "description": "",
            "flavor": {
                "disk": 1,
                "ephemeral": 0,
                "extra_specs": {},
                "original_name": "m1.tiny",
                "ram": 512,
                "swap": 0,
                "vcpus": 1
            },
            "hostId": "bcf92836fc9ed4203a75cb0337afc7f917d2be504164b995c2334b25",
            "id": "f5dc173b-6804-445a-a6d8-c705dad5b5eb",
            "image": {
                "id": "70a599e0-31e7-49b7-b260-868f441e862b",
                "links": [
                    {
                        "href": "http://openstack.example.com/6f70656e737461636b20342065766572/images/70a599e0-31e7-49b7-b260-868f441e862b",
                        "rel": "bookmark"
                    }
                ],
                "properties": {
                    "architecture": "x86_64",
                    "auto_disk_config": "True",
                    "base_image_ref": "70a599e0-31e7-49b7-b260-868f441e862b",
                    "container_format": "ova",
                    "disk_format": "vhd",
                    "kernel_id": "nokernel",
                    "min_disk": "1",
                    "min_ram": "0",
                    "ramdisk_id": "nokernel"
                }
            },
            "key_name": null,
            "links": [
                {
                    "href": "http://openstack.example.com/v2/6f70656e737461636b20342065766572/servers/f5dc173b-6804-445a-a6d8-c705dad5b5eb",
                    "rel": "self"
                },
                {
                    "href": "http://openstack.example.com/6f70656e737461636b20342065766572/servers/f5dc173b-6804-445a-a6d8-c705dad5b5eb",
                    "rel": "bookmark"
                }
            ],
            "metadata": {
                "My Server Name": "Apache1"
            },
            "name": "new-server-test",
            "config_drive": "",
            "locked": false,
            "locked_reason": "",
            "OS-DCF:diskConfig": "AUTO",
            "OS-EXT-AZ:availability_zone": "us-west",
            "OS-EXT-SRV-ATTR:hostname": "new-server-test",
            "OS-EXT-STS:power_state": 1,
            "OS-EXT-STS:task_state": null,
            "OS-EXT-STS:vm_state": "active",
            "os-extended-volumes:volumes_attached": [
                {"id": "volume_id1", "delete_on_termination": false},
                {"id": "volume_id2", "delete_on_termination": false}
            ],
            "OS-SRV-USG:launched_at": "2013-09-23T13:53:12.774549",
            "OS-SRV-USG:terminated_at": null,
            "pinned_availability_zone": "us-west",
            "progress": 0,
            "scheduler_hints": {
                "same_host": [
                    "48e6a9f6-30af-47e0-bc04-acaed113bb4e"
                ]
            },
            "security_groups": [
                {
                    "name": "default"
                }
            ],
            "status": "ACTIVE",
            "tags": [],
            "tenant_id": "6f70656e737461636b20342065766572",
            "trusted_image_certificates": null,
            "updated": "2013-09-03T04:01:32Z",
            "user_id": "fake"
        }
    ],
    "servers_links": [
        {
            "href": "http://openstack.example.com/v2.1/6f70656e737461636b20342065766572/servers/detail?limit=1&marker=f5dc173b-6804-445a-a6d8-c705dad5b5eb",
            "rel": "next"
        }
    ]
}"#;

/// nova doc/api_samples/flavors/v2.75/flavors-detail-resp.json — compute 2.75 (first three of
/// its seven flavors; each entry verbatim).
const NOVA_2_75_FLAVORS_DETAIL: &str = r#"{
    "flavors": [
        {
            "OS-FLV-DISABLED:disabled": false,
            "disk": 1,
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "os-flavor-access:is_public": true,
            "id": "1",
            "links": [
                {"href": "http://openstack.example.com/v2/6f70656e737461636b20342065766572/flavors/1", "rel": "self"},
                {"href": "http://openstack.example.com/6f70656e737461636b20342065766572/flavors/1", "rel": "bookmark"}
            ],
            "name": "m1.tiny",
            "ram": 512,
            "swap": 0,
            "vcpus": 1,
            "rxtx_factor": 1.0,
            "description": null,
            "extra_specs": {}
        },
        {
            "OS-FLV-DISABLED:disabled": false,
            "disk": 20,
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "os-flavor-access:is_public": true,
            "id": "2",
            "links": [
                {"href": "http://openstack.example.com/v2/6f70656e737461636b20342065766572/flavors/2", "rel": "self"},
                {"href": "http://openstack.example.com/6f70656e737461636b20342065766572/flavors/2", "rel": "bookmark"}
            ],
            "name": "m1.small",
            "ram": 2048,
            "swap": 0,
            "vcpus": 1,
            "rxtx_factor": 1.0,
            "description": null,
            "extra_specs": {}
        },
        {
            "OS-FLV-DISABLED:disabled": false,
            "disk": 20,
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "os-flavor-access:is_public": true,
            "id": "7",
            "links": [
                {"href": "http://openstack.example.com/v2/6f70656e737461636b20342065766572/flavors/7", "rel": "self"},
                {"href": "http://openstack.example.com/6f70656e737461636b20342065766572/flavors/7", "rel": "bookmark"}
            ],
            "name": "m1.small.description",
            "ram": 2048,
            "swap": 0,
            "vcpus": 1,
            "rxtx_factor": 1.0,
            "description": "test description",
            "extra_specs": {
                "hw:cpu_policy": "shared",
                "hw:numa_nodes": "1"
            }
        }
    ]
}"#;

/// glance api-ref/source/v2/samples/images-list-response.json — Image API v2. The published
/// sample lacks the comma after each `os_hash_value` (it is not valid JSON as published); the
/// two commas are the only change.
const GLANCE_V2_IMAGES_LIST: &str = r#"{
    "images": [
        {
            "status": "active",
            "name": "cirros-0.3.2-x86_64-disk",
            "tags": [],
            "container_format": "bare",
            "created_at": "2014-11-07T17:07:06Z",
            "disk_format": "qcow2",
            "updated_at": "2014-11-07T17:19:09Z",
            "visibility": "public",
            "self": "/v2/images/1bea47ed-f6a9-463b-b423-14b9cca9ad27",
            "min_disk": 0,
            "protected": false,
            "id": "1bea47ed-f6a9-463b-b423-14b9cca9ad27",
            "file": "/v2/images/1bea47ed-f6a9-463b-b423-14b9cca9ad27/file",
            "checksum": "64d7c1cd2b6f60c92c14662941cb7913",
            "os_hash_algo": "sha512",
            "os_hash_value": "073b4523583784fbe01daff81eba092a262ec37ba6d04dd3f52e4cd5c93eb8258af44881345ecda0e49f3d8cc6d2df6b050ff3e72681d723234aff9d17d0cf09",
            "owner": "5ef70662f8b34079a6eddb8da9d75fe8",
            "size": 13167616,
            "min_ram": 0,
            "schema": "/v2/schemas/image",
            "virtual_size": null
        },
        {
            "status": "active",
            "name": "F17-x86_64-cfntools",
            "tags": [],
            "container_format": "bare",
            "created_at": "2014-10-30T08:23:39Z",
            "disk_format": "qcow2",
            "updated_at": "2014-11-03T16:40:10Z",
            "visibility": "public",
            "self": "/v2/images/781b3762-9469-4cec-b58d-3349e5de4e9c",
            "min_disk": 0,
            "protected": false,
            "id": "781b3762-9469-4cec-b58d-3349e5de4e9c",
            "file": "/v2/images/781b3762-9469-4cec-b58d-3349e5de4e9c/file",
            "checksum": "afab0f79bac770d61d24b4d0560b5f70",
            "os_hash_algo": "sha512",
            "os_hash_value": "ea3e20140df1cc65f53d4c5b9ee3b38d0d6868f61bbe2230417b0f98cef0e0c7c37f0ebc5c6456fa47f013de48b452617d56c15fdba25e100379bd0e81ee15ec",
            "owner": "5ef70662f8b34079a6eddb8da9d75fe8",
            "size": 476704768,
            "min_ram": 0,
            "schema": "/v2/schemas/image",
            "virtual_size": null
        }
    ],
    "schema": "/v2/schemas/images",
    "first": "/v2/images"
}"#;

/// neutron-lib api-ref/source/v2/samples/networks/networks-list-response.json — Network API v2.0.
const NEUTRON_V2_NETWORKS_LIST: &str = r#"{
    "networks": [
        {
            "status": "ACTIVE",
            "subnets": [
                "54d6f61d-db07-451c-9ab3-b9609b6b6f0b"
            ],
            "name": "private-network",
            "provider:physical_network": null,
            "admin_state_up": true,
            "project_id": "4fd44f30292945e481c7b8a0c8908869",
            "tenant_id": "4fd44f30292945e481c7b8a0c8908869",
            "qos_policy_id": "6a8454ade84346f59e8d40665f878b2e",
            "provider:network_type": "local",
            "router:external": true,
            "mtu": 0,
            "shared": true,
            "id": "d32019d3-bc6e-4319-9c1d-6722fc136a22",
            "provider:segmentation_id": null
        },
        {
            "status": "ACTIVE",
            "subnets": [
                "08eae331-0402-425a-923c-34f7cfe39c1b"
            ],
            "name": "private",
            "provider:physical_network": null,
            "admin_state_up": true,
            "project_id": "26a7980765d0414dbc1fc1f88cdb7e6e",
            "tenant_id": "26a7980765d0414dbc1fc1f88cdb7e6e",
            "qos_policy_id": "bfdb6c39f71e4d44b1dfbda245c50819",
            "provider:network_type": "local",
            "router:external": true,
            "mtu": 0,
            "shared": true,
            "id": "db193ab3-96e3-4cb3-8fc5-05f4296d0324",
            "provider:segmentation_id": null
        }
    ]
}"#;

/// keystone api-ref/source/v3/samples/admin/auth-password-project-scoped-response.json —
/// Identity v3. The catalog is cut to the four services the dashboard uses (of its fifteen);
/// each kept entry is verbatim.
const KEYSTONE_V3_PROJECT_TOKEN: &str = r#"{
    "token": {
        "methods": ["password"],
        "roles": [{"id": "51cc68287d524c759f47c811e6463340", "name": "admin"}],
        "expires_at": "2015-11-07T02:58:43.578887Z",
        "project": {
            "domain": {"id": "default", "name": "Default"},
            "id": "a6944d763bf64ee6a275f1263fae0352",
            "name": "admin"
        },
        "is_domain": false,
        "catalog": [
            {
                "endpoints": [
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:5000/v2.0", "region": "RegionOne", "interface": "public", "id": "068d1b359ee84b438266cb736d81de97"},
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:35357/v2.0", "region": "RegionOne", "interface": "admin", "id": "8bfc846841ab441ca38471be6d164ced"},
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:5000/v2.0", "region": "RegionOne", "interface": "internal", "id": "beb6d358c3654b4bada04d4663b640b9"}
                ],
                "type": "identity",
                "id": "050726f278654128aba89757ae25950c",
                "name": "keystone"
            },
            {
                "endpoints": [
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:9696/", "region": "RegionOne", "interface": "public", "id": "6a2840dc63bf433592cd8bca2183eb3c"},
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:9696/", "region": "RegionOne", "interface": "internal", "id": "7967cf45f8ab439a80cf24420e5ffd0e"},
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:9696/", "region": "RegionOne", "interface": "admin", "id": "84943ce595264303bd44e5d6d79bea7b"}
                ],
                "type": "network",
                "id": "67b993549db94296a853d635b48db3c9",
                "name": "neutron"
            },
            {
                "endpoints": [
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:8774/v2.1/a6944d763bf64ee6a275f1263fae0352", "region": "RegionOne", "interface": "admin", "id": "2511589f262a407bb0071a814a480af4"},
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:8774/v2.1/a6944d763bf64ee6a275f1263fae0352", "region": "RegionOne", "interface": "internal", "id": "9cf9209ae4fc4673a7295611001cf0ae"},
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:8774/v2.1/a6944d763bf64ee6a275f1263fae0352", "region": "RegionOne", "interface": "public", "id": "d200b2509e1343e3887dcc465b4fa534"}
                ],
                "type": "compute",
                "id": "a226b3eeb5594f50bf8b6df94636ed28",
                "name": "nova"
            },
            {
                "endpoints": [
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:9292", "region": "RegionOne", "interface": "public", "id": "512c10d230874ad295662157eeab0135"},
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:9292", "region": "RegionOne", "interface": "internal", "id": "614b1ab241da47a8b3a4e8f67b771446"},
                    {"region_id": "RegionOne", "url": "http://23.253.248.171:9292", "region": "RegionOne", "interface": "admin", "id": "9cef78a4286c42f3b977fbe4d5f927a6"}
                ],
                "type": "image",
                "id": "d512f8860c0f45cf99b1c3cef86cfd97",
                "name": "glance"
            }
        ],
        "user": {
            "domain": {"id": "default", "name": "Default"},
            "id": "ee4dfb6e5540447cb3741905149d9b6e",
            "name": "admin",
            "password_expires_at": "2016-11-06T15:32:17.000000"
        },
        "audit_ids": ["3T2dc1CGQxyJsHdDu1xkcw"],
        "issued_at": "2015-11-07T01:58:43.578929Z"
    }
}"#;

fn ctx() -> (std::collections::HashMap<String, String>, std::collections::HashMap<String, String>) {
    let mut flavors = std::collections::HashMap::new();
    flavors.insert("1".to_string(), "m1.tiny".to_string());
    (std::collections::HashMap::new(), flavors)
}

#[test]
fn nova_2_1_server_with_flavor_and_image_links() {
    let v = json(NOVA_2_1_SERVER_GET);
    let s = parse_server(&v["server"]).expect("parses");
    assert_eq!(s.id, "0e44cc9c-e052-415d-afbf-469b0d384170");
    assert_eq!((s.name.as_str(), s.status.as_str()), ("new-server-test", "ACTIVE"));
    assert_eq!(s.flavor.id.as_deref(), Some("1"));
    assert_eq!(s.flavor.original_name, None);
    assert_eq!(s.image.0.as_deref(), Some("70a599e0-31e7-49b7-b260-868f441e862b"));
    assert_eq!((s.task_state.clone(), s.power_state, s.host.clone()), (None, None, None));
    assert_eq!(s.addresses_text(), "192.168.0.3");
    assert!(!s.in_transition());
    // The flavor column resolves the 2.1 flavor ID through the flavor list.
    let (images, flavors) = ctx();
    let cells = s.cells(&CellCtx {
        admin: false,
        now: s.updated.expect("updated"),
        image_names: &images,
        flavor_names: &flavors,
        all_projects: false,
        project_names: &Default::default(),
    });
    assert_eq!(cells[5], "m1.tiny");
}

#[test]
fn nova_2_71_server_with_embedded_flavor_and_extended_attributes() {
    let v = json(NOVA_2_71_SERVER_GET);
    let s = parse_server(&v["server"]).expect("parses");
    assert_eq!(s.flavor.original_name.as_deref(), Some("m1.tiny"));
    assert_eq!((s.flavor.vcpus, s.flavor.ram, s.flavor.disk), (Some(1), Some(512), Some(1)));
    assert_eq!(s.flavor.id, None);
    assert_eq!(s.vm_state.as_deref(), Some("active"));
    assert_eq!(s.power_state, Some(1));
    assert_eq!(s.host.as_deref(), Some("compute"));
    assert_eq!(s.addresses["private"][0].kind.as_deref(), Some("fixed"));
    assert_eq!(s.created.map(|t| t.to_rfc3339()), Some("2019-02-28T03:16:18+00:00".into()));
    // The raw JSON is kept whole for the detail pane.
    assert_eq!(s.raw["server_groups"][0], "f3d86fe6-4246-4be8-b87c-eb894626c741");
}

#[test]
fn nova_2_100_servers_detail_list() {
    let v = json(NOVA_2_100_SERVERS_DETAIL);
    let list: Vec<Server> = parse_list(&v["servers"], |s: &mut Server, raw| s.raw = raw);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].image.0.as_deref(), Some("70a599e0-31e7-49b7-b260-868f441e862b"));
    assert_eq!(list[0].flavor.original_name.as_deref(), Some("m1.tiny"));
    assert_eq!(v["servers_links"][0]["rel"], "next");
}

#[test]
fn nova_2_75_flavors() {
    let v = json(NOVA_2_75_FLAVORS_DETAIL);
    let list: Vec<Flavor> = parse_list(&v["flavors"], |f: &mut Flavor, raw| f.raw = raw);
    let got: Vec<_> = list.iter().map(|f| (f.id.as_str(), f.name.as_str(), f.vcpus, f.ram, f.disk)).collect();
    assert_eq!(
        got,
        [("1", "m1.tiny", 1, 512, 1), ("2", "m1.small", 1, 2048, 20), ("7", "m1.small.description", 1, 2048, 20)]
    );
    assert_eq!(list[0].is_public, Some(true));
    assert_eq!(list[2].raw["extra_specs"]["hw:cpu_policy"], "shared");
}

#[test]
fn glance_v2_images() {
    let v = json(GLANCE_V2_IMAGES_LIST);
    let list: Vec<Image> = parse_list(&v["images"], |i: &mut Image, raw| i.raw = raw);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name, "cirros-0.3.2-x86_64-disk");
    assert_eq!((list[0].status.as_str(), list[0].visibility.as_str()), ("active", "public"));
    assert_eq!((list[0].size, list[0].min_ram, list[0].min_disk), (Some(13167616), 0, 0));
    assert_eq!(list[1].disk_format.as_deref(), Some("qcow2"));
    // No `next`: the list ends here.
    assert!(v.get("next").is_none());
}

#[test]
fn neutron_v2_networks() {
    let v = json(NEUTRON_V2_NETWORKS_LIST);
    let list: Vec<Network> = parse_list(&v["networks"], |n: &mut Network, raw| n.raw = raw);
    assert_eq!(list.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["private-network", "private"]);
    assert!(list[0].shared && list[0].external);
    assert_eq!(list[1].subnets, ["08eae331-0402-425a-923c-34f7cfe39c1b"]);
}

#[test]
fn keystone_v3_project_scoped_token_and_its_catalog() {
    let v = json(KEYSTONE_V3_PROJECT_TOKEN);
    let t: Token = serde_json::from_value(v["token"].clone()).expect("token");
    assert!(t.is_admin());
    assert_eq!(t.project.as_ref().map(|p| p.name.as_str()), Some("admin"));
    assert_eq!(t.user.as_ref().map(|u| u.id.as_str()), Some("ee4dfb6e5540447cb3741905149d9b6e"));
    assert_eq!(t.expires_at.map(|e| e.to_rfc3339()), Some("2015-11-07T02:58:43.578887+00:00".into()));
    // The shared client's session reads the same catalog; the dashboard's service roots follow.
    let session = Session { token: "t".into(), body: v["token"].clone() };
    assert_eq!(session.project_id(), Some("a6944d763bf64ee6a275f1263fae0352"));
    assert_eq!(
        session.endpoint("compute").expect("compute"),
        "http://23.253.248.171:8774/v2.1/a6944d763bf64ee6a275f1263fae0352"
    );
    let root = |svc: &str, v: &str| meridian_tui::worker::versioned(&session, svc, v).expect(svc);
    assert_eq!(root("image", "v2"), "http://23.253.248.171:9292/v2");
    assert_eq!(root("network", "v2.0"), "http://23.253.248.171:9696/v2.0");
    assert_eq!(root("identity", "v3"), "http://23.253.248.171:5000/v3");
}
