//! Glance's store on every backend: images, tags, members, status transitions and Glance's
//! listing rules (visibility, member status, filters, ordering, keyset pagination).

mod common;

use meridian_server::store::image::{Filter, Image, ImageData, ImageQuery, SortKey};
use meridian_server::store::{Store, StoreError};

fn image(id: &str, name: &str, owner: &str, visibility: &str, created_at: &str) -> Image {
    Image {
        id: id.into(),
        name: Some(name.into()),
        status: "queued".into(),
        visibility: visibility.into(),
        owner: Some(owner.into()),
        disk_format: Some("raw".into()),
        container_format: Some("bare".into()),
        properties: "{}".into(),
        created_at: created_at.into(),
        updated_at: created_at.into(),
        ..Default::default()
    }
}

fn ts(n: u32) -> String {
    format!("2024-01-01T00:00:{n:02}.000000Z")
}

async fn names(store: &Store, q: &ImageQuery) -> Vec<String> {
    let page = store.list_images(q).await.expect("list");
    page.images.into_iter().map(|i| i.name.unwrap_or_default()).collect()
}

fn as_project(p: &str) -> ImageQuery {
    ImageQuery { project_id: Some(p.into()), sort: vec![(SortKey::Name, false)], limit: 100, ..Default::default() }
}

async fn scenario(store: &Store, backend: &str) {
    // Project A owns one image of each visibility; the admin project owns a public one.
    let mut a_private = image("00000000-0000-0000-0000-00000000000a", "a-private", "A", "private", &ts(1));
    a_private.tags = vec!["linux".into(), "x86".into()];
    a_private.properties = r#"{"os_distro":"debian"}"#.into();
    store.create_image(&a_private).await.expect("create");
    store
        .create_image(&image("00000000-0000-0000-0000-00000000000b", "a-shared", "A", "shared", &ts(2)))
        .await
        .expect("create");
    store
        .create_image(&image("00000000-0000-0000-0000-00000000000c", "a-community", "A", "community", &ts(3)))
        .await
        .expect("create");
    store
        .create_image(&image("00000000-0000-0000-0000-00000000000d", "admin-public", "ADM", "public", &ts(4)))
        .await
        .expect("create");
    store
        .create_image(&image("00000000-0000-0000-0000-00000000000e", "b-private", "B", "private", &ts(5)))
        .await
        .expect("create");

    // Duplicate ids conflict.
    let dup = store.create_image(&image("00000000-0000-0000-0000-00000000000a", "x", "A", "private", &ts(9))).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{backend}: {dup:?}");

    let got = store.get_image("00000000-0000-0000-0000-00000000000a").await.expect("get");
    assert_eq!(got.tags, vec!["linux", "x86"], "{backend}");
    assert_eq!(got.properties_map()["os_distro"], "debian");
    assert!(got.size.is_none() && got.checksum.is_none());
    assert!(matches!(store.get_image("nope").await, Err(StoreError::NotFound(_))));

    // Visibility rules.
    let a = as_project("A");
    assert_eq!(names(store, &a).await, ["a-community", "a-private", "a-shared", "admin-public"], "{backend}");
    let b = as_project("B");
    assert_eq!(names(store, &b).await, ["admin-public", "b-private"], "{backend}: community only for its owner");
    let b_comm = ImageQuery { visibility: Some("community".into()), ..as_project("B") };
    assert_eq!(names(store, &b_comm).await, ["a-community"]);
    let admin = ImageQuery { is_admin: true, ..as_project("ADM") };
    assert_eq!(names(store, &admin).await, ["a-private", "a-shared", "admin-public", "b-private"]);
    let admin_all = ImageQuery { visibility: Some("all".into()), ..admin.clone() };
    assert_eq!(names(store, &admin_all).await.len(), 5);

    // Sharing with B: visible at once, listed by default only once accepted.
    let shared_id = "00000000-0000-0000-0000-00000000000b";
    let shared = store.get_image(shared_id).await.expect("get");
    assert!(!store.image_visible_to(&shared, Some("B"), false).await.expect("visible"));
    let m = store.add_image_member(shared_id, "B").await.expect("member");
    assert_eq!(m.status, "pending");
    assert!(matches!(store.add_image_member(shared_id, "B").await, Err(StoreError::Conflict(_))));
    assert!(store.image_visible_to(&shared, Some("B"), false).await.expect("visible"));
    assert!(!names(store, &b).await.contains(&"a-shared".to_string()));
    let pending = ImageQuery { member_status: "pending".into(), ..as_project("B") };
    assert!(names(store, &pending).await.contains(&"a-shared".to_string()));
    let m = store.set_image_member_status(shared_id, "B", "accepted").await.expect("accept");
    assert_eq!(m.status, "accepted");
    assert!(names(store, &b).await.contains(&"a-shared".to_string()), "{backend}");
    let b_shared = ImageQuery { visibility: Some("shared".into()), ..as_project("B") };
    assert_eq!(names(store, &b_shared).await, ["a-shared"]);
    // A private image is never listed for another project, even with a membership row.
    store.add_image_member("00000000-0000-0000-0000-00000000000a", "B").await.expect("member");
    store.set_image_member_status("00000000-0000-0000-0000-00000000000a", "B", "accepted").await.expect("accept");
    let b_everything = ImageQuery { visibility: Some("all".into()), member_status: "all".into(), ..as_project("B") };
    assert!(!names(store, &b_everything).await.contains(&"a-private".to_string()), "{backend}");
    let private = store.get_image("00000000-0000-0000-0000-00000000000a").await.expect("get");
    assert!(!store.image_visible_to(&private, Some("B"), false).await.expect("visible"));
    assert_eq!(store.list_image_members(shared_id).await.expect("members").len(), 1);
    assert!(matches!(store.set_image_member_status(shared_id, "C", "accepted").await, Err(StoreError::NotFound(_))));

    // Filters: columns, tags, properties, times.
    let q = ImageQuery {
        filters: vec![Filter::TextIn("name", vec!["a-private".into(), "a-shared".into()])],
        ..as_project("A")
    };
    assert_eq!(names(store, &q).await, ["a-private", "a-shared"]);
    let q = ImageQuery { tags: vec!["linux".into(), "x86".into()], ..as_project("A") };
    assert_eq!(names(store, &q).await, ["a-private"]);
    let q = ImageQuery { tags: vec!["linux".into(), "arm".into()], ..as_project("A") };
    assert!(names(store, &q).await.is_empty());
    let q = ImageQuery { properties: vec![("os_distro".into(), "debian".into())], ..as_project("A") };
    assert_eq!(names(store, &q).await, ["a-private"]);
    let q = ImageQuery { filters: vec![Filter::Time("created_at", ">=", ts(3))], ..as_project("A") };
    assert_eq!(names(store, &q).await, ["a-community", "admin-public"]);

    // Status transitions and upload results.
    let id = "00000000-0000-0000-0000-00000000000e";
    assert!(!store.finish_upload(id, &ImageData::default()).await.expect("finish"), "only from saving");
    assert!(store.set_image_status(id, "queued", "saving").await.expect("status"));
    assert!(!store.set_image_status(id, "queued", "saving").await.expect("status"), "not twice");
    let data = ImageData {
        size: 1234,
        checksum: "c".repeat(32),
        os_hash_algo: "sha512".into(),
        os_hash_value: "h".repeat(128),
        virtual_size: Some(1234),
    };
    assert!(store.finish_upload(id, &data).await.expect("finish"));
    let img = store.get_image(id).await.expect("get");
    assert_eq!((img.status.as_str(), img.size, img.virtual_size), ("active", Some(1234), Some(1234)));
    assert_eq!(img.os_hash_value.as_deref(), Some("h".repeat(128).as_str()));
    let q = ImageQuery { filters: vec![Filter::Int("size", ">=", 1000)], ..as_project("B") };
    assert_eq!(names(store, &q).await, ["b-private"]);
    // Formats are frozen outside queued; other fields update.
    let mut edit = img.clone();
    edit.name = Some("b-renamed".into());
    edit.disk_format = Some("qcow2".into());
    edit.min_ram = 256;
    edit.protected = 1;
    edit.tags = vec!["t1".into()];
    edit.properties = r#"{"k":"v"}"#.into();
    store.update_image(&edit).await.expect("update");
    let img = store.get_image(id).await.expect("get");
    assert_eq!(img.name.as_deref(), Some("b-renamed"));
    assert_eq!(img.disk_format.as_deref(), Some("raw"), "{backend}: formats frozen once active");
    assert_eq!((img.min_ram, img.protected), (256, 1));
    assert_eq!(img.tags, vec!["t1"]);
    assert_eq!(img.properties_map()["k"], "v");
    assert_eq!(img.size, Some(1234), "update never touches data fields");
    assert!(img.updated_at > img.created_at);
    // Back to queued clears the data fields.
    assert!(store.set_image_status(id, "active", "deactivated").await.expect("status"));
    assert!(!store.set_image_status(id, "saving", "queued").await.expect("status"));

    // Tags one by one.
    store.add_image_tag(id, "t2").await.expect("tag");
    store.add_image_tag(id, "t2").await.expect("idempotent");
    assert_eq!(store.image_tags(id).await.expect("tags"), vec!["t1", "t2"]);
    store.remove_image_tag(id, "t1").await.expect("untag");
    assert!(matches!(store.remove_image_tag(id, "t1").await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.add_image_tag("nope", "t").await, Err(StoreError::NotFound(_))));

    // Ordering and keyset pagination (default: newest first, id as tie-breaker).
    for n in 0..7u32 {
        let mut img =
            image(&format!("10000000-0000-0000-0000-00000000000{n}"), &format!("page-{n}"), "P", "private", &ts(20));
        img.size = Some(i64::from(n % 3));
        store.create_image(&img).await.expect("create");
    }
    let mut q = ImageQuery {
        project_id: Some("P".into()),
        filters: vec![Filter::TextIn("owner", vec!["P".into()])],
        limit: 3,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.list_images(&q).await.expect("page");
        seen.extend(page.images.iter().map(|i| i.id.clone()));
        if !page.more {
            assert!(page.images.len() <= 3);
            break;
        }
        q.marker = page.images.last().map(|i| i.id.clone());
    }
    let expected: Vec<String> = (0..7).rev().map(|n| format!("10000000-0000-0000-0000-00000000000{n}")).collect();
    assert_eq!(seen, expected, "{backend}: same created_at, so id descending");
    // By size ascending (ties broken by created_at then id, in the last key's direction).
    let q = ImageQuery {
        project_id: Some("P".into()),
        filters: vec![Filter::TextIn("owner", vec!["P".into()])],
        sort: vec![(SortKey::Size, false)],
        limit: 100,
        ..Default::default()
    };
    let sizes: Vec<Option<i64>> = store.list_images(&q).await.expect("list").images.iter().map(|i| i.size).collect();
    assert_eq!(sizes, [Some(0), Some(0), Some(0), Some(1), Some(1), Some(2), Some(2)]);
    // A marker in the middle of a multi-key order.
    let all = store.list_images(&q).await.expect("list").images;
    let after = ImageQuery { marker: Some(all[2].id.clone()), ..q.clone() };
    let rest: Vec<String> = store.list_images(&after).await.expect("list").images.into_iter().map(|i| i.id).collect();
    assert_eq!(rest, all[3..].iter().map(|i| i.id.clone()).collect::<Vec<_>>());
    // Unknown or invisible markers.
    let bad = ImageQuery { marker: Some("nope".into()), ..q.clone() };
    assert!(matches!(store.list_images(&bad).await, Err(StoreError::NotFound(_))));
    let invisible = ImageQuery { marker: Some("00000000-0000-0000-0000-00000000000e".into()), ..q.clone() };
    assert!(matches!(store.list_images(&invisible).await, Err(StoreError::NotFound(_))), "{backend}");

    // Deleting an image takes its tags and members with it.
    store.delete_image(shared_id).await.expect("delete");
    assert!(matches!(store.delete_image(shared_id).await, Err(StoreError::NotFound(_))));
    assert!(store.image_member(shared_id, "B").await.expect("member").is_none());
    assert!(store.list_image_members(shared_id).await.expect("members").is_empty());
    store.delete_image("00000000-0000-0000-0000-00000000000a").await.expect("delete");
    assert!(store.image_tags("00000000-0000-0000-0000-00000000000a").await.expect("tags").is_empty());
}

#[tokio::test]
async fn image_store_on_every_backend() {
    for ts in common::stores().await {
        scenario(&ts.store, ts.name).await;
        ts.drop_db().await;
    }
}
