//! Lists paged in SQL (issue 13), on SQLite and PostgreSQL: instance pages by every sort key
//! with markers and filters, Neutron network and port pages with keyset markers in both
//! directions, and byte order for text keys on both backends.

mod common;

use meridian_server::store::Store;
use meridian_server::store::instances::{Instance, InstanceFilter, InstanceMatch, InstancePage, InstanceSort};
use meridian_server::store::network::{ListSort, ListSpec, ListValue, Network, NewPort, PortFilter};

fn instance(id: &str, name: &str, project: &str) -> Instance {
    Instance {
        name: name.into(),
        hostname: name.into(),
        project_id: project.into(),
        flavor_id: "1".into(),
        flavor: "{}".into(),
        reservation_id: format!("r-{name}"),
        ..common::instance(id)
    }
}

fn page(sort: InstanceSort, desc: bool, marker: Option<&str>, limit: Option<i64>) -> InstancePage<'_> {
    InstancePage { sort, desc, marker, limit }
}

fn ids<T>(rows: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    rows.iter().map(|r| id(r).to_string()).collect()
}

async fn instance_pages(store: &Store, name: &str) {
    // Names whose byte order differs from a locale's ("B" < "a" < "b").
    let names = ["b", "B", "a", "c", "A"];
    for (k, n) in names.iter().enumerate() {
        store.create_instance(&instance(&format!("i{k}"), n, "p1"), None).await.expect("create");
    }
    store.create_instance(&instance("other", "z", "p2"), None).await.expect("create");
    let f = InstanceFilter { project_id: Some("p1".into()), ..Default::default() };
    let none = InstanceMatch::default();
    let all =
        store.list_instances_page(&f, &none, &page(InstanceSort::DisplayName, false, None, None)).await.expect("list");
    let got: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(got, ["A", "B", "a", "b", "c"], "{name}: bytewise");
    // Walk pages of two from markers, both directions, against the whole list.
    for desc in [false, true] {
        for sort in [InstanceSort::DisplayName, InstanceSort::CreatedAt, InstanceSort::Uuid, InstanceSort::Host] {
            let whole = store.list_instances_page(&f, &none, &page(sort, desc, None, None)).await.expect("list");
            let mut walked = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let p = store
                    .list_instances_page(&f, &none, &page(sort, desc, marker.as_deref(), Some(2)))
                    .await
                    .expect("page");
                walked.extend(ids(&p, |i| &i.id));
                match p.last() {
                    Some(l) if p.len() == 2 => marker = Some(l.id.clone()),
                    _ => break,
                }
            }
            assert_eq!(walked, ids(&whole, |i| &i.id), "{name}: {sort:?} desc={desc}");
        }
    }
    // Filters apply to the marker too: another project's instance is no marker here.
    let err = store.list_instances_page(&f, &none, &page(InstanceSort::CreatedAt, true, Some("other"), Some(2))).await;
    assert!(err.is_err(), "{name}");
    let m = InstanceMatch { reservation_id: Some("r-c".into()), ..Default::default() };
    let got = store.list_instances_page(&f, &m, &page(InstanceSort::CreatedAt, true, None, None)).await.expect("list");
    assert_eq!(ids(&got, |i| &i.id), ["i3"], "{name}");
}

async fn network_pages(store: &Store, name: &str) {
    let mut nets = Vec::new();
    for (k, n) in ["b", "B", "a", "c", "A", "b"].iter().enumerate() {
        let mut net = Network::new("p1");
        net.name = n.to_string();
        net.shared = i64::from(k % 2 == 0);
        nets.push(store.create_networks(vec![net]).await.expect("network").remove(0));
    }
    let by_name = |asc: bool, marker: Option<String>, limit: Option<i64>, reverse: bool| ListSpec {
        filters: Vec::new(),
        since: None,
        sorts: vec![
            ListSort { expr: "name", text: true, asc },
            ListSort { expr: "shared", text: false, asc: !asc },
            ListSort { expr: "id", text: true, asc: true },
        ],
        marker,
        limit,
        reverse,
    };
    let whole = store.list_networks_page(None, &by_name(true, None, None, false)).await.expect("list").expect("page");
    let names: Vec<&str> = whole.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["A", "B", "a", "b", "b", "c"], "{name}");
    let whole_ids = ids(&whole, |n| &n.id);
    for (k, m) in whole_ids.iter().enumerate() {
        let after = store
            .list_networks_page(None, &by_name(true, Some(m.clone()), Some(2), false))
            .await
            .expect("list")
            .expect("page");
        assert_eq!(
            ids(&after, |n| &n.id),
            whole_ids[k + 1..(k + 3).min(whole_ids.len())].to_vec(),
            "{name}: after {k}"
        );
        let before = store
            .list_networks_page(None, &by_name(true, Some(m.clone()), Some(2), true))
            .await
            .expect("list")
            .expect("page");
        assert_eq!(ids(&before, |n| &n.id), whole_ids[k.saturating_sub(2)..k].to_vec(), "{name}: before {k}");
    }
    let shared = ListSpec {
        filters: vec![
            ("shared", vec![ListValue::Int(1)]),
            ("name", vec![ListValue::Text("b".into()), ListValue::Text("a".into())]),
        ],
        ..by_name(false, None, None, false)
    };
    let got = store.list_networks_page(None, &shared).await.expect("list").expect("page");
    assert_eq!(ids(&got, |n| &n.id), [nets[0].id.clone(), nets[2].id.clone()], "{name}");
    assert!(
        store
            .list_networks_page(None, &by_name(true, Some("nope".into()), Some(2), false))
            .await
            .expect("list")
            .is_none()
    );
    // Visibility: another project sees only the shared ones, and no marker beyond them.
    let seen =
        store.list_networks_page(Some("p2"), &by_name(true, None, None, false)).await.expect("list").expect("page");
    assert_eq!(seen.len(), 3, "{name}");
    assert!(
        store
            .list_networks_page(Some("p2"), &by_name(true, Some(nets[1].id.clone()), Some(2), false))
            .await
            .expect("list")
            .is_none()
    );

    // Ports with their addresses.
    let sub = {
        let cidr: ipnet::IpNet = "10.40.0.0/24".parse().expect("cidr");
        store
            .create_subnets(vec![meridian_server::store::network::Subnet::new("p1", &nets[0].id, &cidr)])
            .await
            .expect("subnet")
            .remove(0)
    };
    for _ in 0..3 {
        store.create_port(NewPort::new("p1", &nets[0].id)).await.expect("port");
    }
    let natural = ListSpec {
        sorts: vec![
            ListSort { expr: "created_at", text: true, asc: true },
            ListSort { expr: "id", text: true, asc: true },
        ],
        limit: Some(2),
        ..Default::default()
    };
    let f = PortFilter { visible_to: Some("p1".into()), ..Default::default() };
    let first = store.list_ports_page(&f, &natural).await.expect("list").expect("page");
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|p| p.fixed_ips.len() == 1 && p.fixed_ips[0].subnet_id == sub.id), "{name}");
    let rest = ListSpec { marker: Some(first[1].id.clone()), ..natural };
    let rest = store.list_ports_page(&f, &rest).await.expect("list").expect("page");
    assert_eq!(rest.len(), 1, "{name}");
    let all = store.list_ports(&f).await.expect("all");
    assert_eq!([ids(&first, |p| &p.id), ids(&rest, |p| &p.id)].concat(), ids(&all, |p| &p.id), "{name}");
}

#[tokio::test]
async fn lists_page_in_sql_on_every_backend() {
    for ts in common::stores().await {
        instance_pages(&ts.store, ts.name).await;
        network_pages(&ts.store, ts.name).await;
        ts.drop_db().await;
    }
}
