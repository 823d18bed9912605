//! Glance's tables: images (with free-form properties as a JSON object), their tags and
//! their members.
//!
//! Listing follows Glance's rules (`glance.db.sqlalchemy.api._select_images_query`): a regular
//! caller sees public and community images, its own images, and shared images it is a member of
//! (with the requested member status, `accepted` by default); without a `visibility` filter,
//! community images are listed only for their owner. Admins see everything that matches. The
//! SQL does visibility and column filters; ordering, properties and keyset pagination are done
//! here in Rust so that NULL ordering and collation are identical on SQLite and PostgreSQL.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::identity::{conflict, found};
use super::sql::Sql;
use super::{Store, StoreError, StoreResult, now};

#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    pub status: String,
    pub visibility: String,
    pub protected: i64,
    pub os_hidden: i64,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub owner: Option<String>,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    pub min_ram: i64,
    pub min_disk: i64,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    /// JSON object of free-form properties.
    pub properties: String,
    pub created_at: String,
    pub updated_at: String,
    /// Sorted; loaded from `image_tags`.
    #[sqlx(skip)]
    pub tags: Vec<String>,
}

impl Image {
    pub fn properties_map(&self) -> Map<String, Value> {
        serde_json::from_str(&self.properties).unwrap_or_default()
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Member {
    pub image_id: String,
    pub member: String,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

/// What an upload computed, stored when the image becomes active.
#[derive(Debug, Clone, Default)]
pub struct ImageData {
    pub size: i64,
    pub checksum: String,
    pub os_hash_algo: String,
    pub os_hash_value: String,
    pub virtual_size: Option<i64>,
}

/// A column filter. Column names and operators are `'static` strings chosen by the caller's
/// code (never by the request), so they are safe to splice into SQL.
#[derive(Debug, Clone)]
pub enum Filter {
    /// `col IN (values)`; one value is plain equality.
    TextIn(&'static str, Vec<String>),
    /// `col <op> value` on an integer column (`=`, `>=`, `<=`, ...).
    Int(&'static str, &'static str, i64),
    /// `col <op> value` on a timestamp column; `value` in the stored format.
    Time(&'static str, &'static str, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    Status,
    ContainerFormat,
    DiskFormat,
    Size,
    Id,
    CreatedAt,
    UpdatedAt,
}

impl SortKey {
    pub fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "name" => SortKey::Name,
            "status" => SortKey::Status,
            "container_format" => SortKey::ContainerFormat,
            "disk_format" => SortKey::DiskFormat,
            "size" => SortKey::Size,
            "id" => SortKey::Id,
            "created_at" => SortKey::CreatedAt,
            "updated_at" => SortKey::UpdatedAt,
            _ => return None,
        })
    }

    /// NULLs first when ascending, as MySQL (Glance's reference database) orders them.
    fn compare(self, a: &Image, b: &Image) -> Ordering {
        match self {
            SortKey::Name => a.name.cmp(&b.name),
            SortKey::Status => a.status.cmp(&b.status),
            SortKey::ContainerFormat => a.container_format.cmp(&b.container_format),
            SortKey::DiskFormat => a.disk_format.cmp(&b.disk_format),
            SortKey::Size => a.size.cmp(&b.size),
            SortKey::Id => a.id.cmp(&b.id),
            SortKey::CreatedAt => a.created_at.cmp(&b.created_at),
            SortKey::UpdatedAt => a.updated_at.cmp(&b.updated_at),
        }
    }
}

/// One image listing request, already validated.
#[derive(Debug, Clone)]
pub struct ImageQuery {
    /// The caller's project (None only for unscoped callers).
    pub project_id: Option<String>,
    pub is_admin: bool,
    /// None: Glance's default set; Some("all"); or one visibility.
    pub visibility: Option<String>,
    /// `accepted` (default), `pending`, `rejected` or `all`.
    pub member_status: String,
    pub filters: Vec<Filter>,
    /// Every tag must be present.
    pub tags: Vec<String>,
    /// Free-form property equality filters.
    pub properties: Vec<(String, String)>,
    /// Sort keys with `desc` flags; `created_at` and `id` are appended as tie-breakers.
    pub sort: Vec<(SortKey, bool)>,
    pub marker: Option<String>,
    pub limit: usize,
}

impl Default for ImageQuery {
    fn default() -> Self {
        ImageQuery {
            project_id: None,
            is_admin: false,
            visibility: None,
            member_status: "accepted".into(),
            filters: Vec::new(),
            tags: Vec::new(),
            properties: Vec::new(),
            sort: Vec::new(),
            marker: None,
            limit: 25,
        }
    }
}

/// A page of images and whether more follow it.
#[derive(Debug, Clone)]
pub struct ImagePage {
    pub images: Vec<Image>,
    pub more: bool,
}

const IMAGE_COLS: &str = "id, name, status, visibility, protected, os_hidden, checksum, os_hash_algo, \
     os_hash_value, owner, size, virtual_size, min_ram, min_disk, disk_format, container_format, \
     properties, created_at, updated_at";
const MEMBER_COLS: &str = "image_id, member, status, created_at, updated_at";

async fn tags_of(conn: &mut sqlx::AnyConnection, id: &str) -> StoreResult<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT tag FROM image_tags WHERE image_id = $1 ORDER BY tag")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?)
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("No image found with ID {id}"))
}

impl Store {
    // ---- images ----

    pub async fn create_image(&self, img: &Image) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO images ({IMAGE_COLS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        ))
        .bind(&img.id)
        .bind(img.name.as_deref())
        .bind(&img.status)
        .bind(&img.visibility)
        .bind(img.protected)
        .bind(img.os_hidden)
        .bind(img.checksum.as_deref())
        .bind(img.os_hash_algo.as_deref())
        .bind(img.os_hash_value.as_deref())
        .bind(img.owner.as_deref())
        .bind(img.size)
        .bind(img.virtual_size)
        .bind(img.min_ram)
        .bind(img.min_disk)
        .bind(img.disk_format.as_deref())
        .bind(img.container_format.as_deref())
        .bind(&img.properties)
        .bind(&img.created_at)
        .bind(&img.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("Image ID {} already exists!", img.id)))?;
        for tag in &img.tags {
            sqlx::query("INSERT INTO image_tags (image_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&img.id)
                .bind(tag)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_image(&self, id: &str) -> StoreResult<Image> {
        // Both reads on one connection: with SQLite's single connection, taking it once
        // instead of twice.
        let mut conn = self.conn().await?;
        let mut img: Image = sqlx::query_as(&format!("SELECT {IMAGE_COLS} FROM images WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| not_found(id))?;
        img.tags = tags_of(&mut conn, id).await?;
        Ok(img)
    }

    pub async fn image_tags(&self, id: &str) -> StoreResult<Vec<String>> {
        tags_of(&mut *self.conn().await?, id).await
    }

    /// Saves the user-editable attributes, properties and tags (never status or data fields,
    /// which uploads change concurrently). Formats only change while the image is queued.
    pub async fn update_image(&self, img: &Image) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE images SET name = $2, visibility = $3, protected = $4, os_hidden = $5, min_ram = $6, \
             min_disk = $7, owner = $8, properties = $9, updated_at = $10, \
             disk_format = CASE WHEN status = 'queued' THEN $11 ELSE disk_format END, \
             container_format = CASE WHEN status = 'queued' THEN $12 ELSE container_format END \
             WHERE id = $1",
        )
        .bind(&img.id)
        .bind(img.name.as_deref())
        .bind(&img.visibility)
        .bind(img.protected)
        .bind(img.os_hidden)
        .bind(img.min_ram)
        .bind(img.min_disk)
        .bind(img.owner.as_deref())
        .bind(&img.properties)
        .bind(now())
        .bind(img.disk_format.as_deref())
        .bind(img.container_format.as_deref())
        .execute(&mut *tx)
        .await?;
        found(done.rows_affected(), || format!("No image found with ID {}", img.id))?;
        sqlx::query("DELETE FROM image_tags WHERE image_id = $1").bind(&img.id).execute(&mut *tx).await?;
        for tag in &img.tags {
            sqlx::query("INSERT INTO image_tags (image_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&img.id)
                .bind(tag)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_image(&self, id: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM images WHERE id = $1").bind(id).execute(&mut *self.conn().await?).await?;
        if done.rows_affected() == 0 { Err(not_found(id)) } else { Ok(()) }
    }

    /// Moves the image from status `from` to `to` if (and only if) it is in `from`; going back
    /// to `queued` clears the data fields, as Glance does. Returns whether it moved.
    pub async fn set_image_status(&self, id: &str, from: &str, to: &str) -> StoreResult<bool> {
        let sql = if to == "queued" {
            "UPDATE images SET status = $3, updated_at = $4, size = NULL, virtual_size = NULL, \
             checksum = NULL, os_hash_algo = NULL, os_hash_value = NULL WHERE id = $1 AND status = $2"
        } else {
            "UPDATE images SET status = $3, updated_at = $4 WHERE id = $1 AND status = $2"
        };
        let done = sqlx::query(sql).bind(id).bind(from).bind(to).bind(now()).execute(&mut *self.conn().await?).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records uploaded data and activates the image, if it is still `saving`. Returns whether
    /// it did (false: deleted or reset during the upload).
    pub async fn finish_upload(&self, id: &str, data: &ImageData) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE images SET status = 'active', size = $2, checksum = $3, os_hash_algo = $4, \
             os_hash_value = $5, virtual_size = $6, updated_at = $7 WHERE id = $1 AND status = 'saving'",
        )
        .bind(id)
        .bind(data.size)
        .bind(&data.checksum)
        .bind(&data.os_hash_algo)
        .bind(&data.os_hash_value)
        .bind(data.virtual_size)
        .bind(now())
        .execute(&mut *self.conn().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Adds a tag (idempotent).
    pub async fn add_image_tag(&self, id: &str, tag: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE images SET updated_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        sqlx::query("INSERT INTO image_tags (image_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a tag; NotFound when the image does not carry it.
    pub async fn remove_image_tag(&self, id: &str, tag: &str) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM image_tags WHERE image_id = $1 AND tag = $2")
            .bind(id)
            .bind(tag)
            .execute(&mut *tx)
            .await?;
        found(done.rows_affected(), || format!("Tag {tag} not found on image {id}."))?;
        sqlx::query("UPDATE images SET updated_at = $2 WHERE id = $1").bind(id).bind(now()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a caller in `project_id` (admin or not) may see the image at all: Glance's
    /// `is_image_visible`, where any membership (whatever its status) grants visibility.
    pub async fn image_visible_to(&self, img: &Image, project_id: Option<&str>, is_admin: bool) -> StoreResult<bool> {
        if is_admin || img.owner.is_none() || img.visibility == "public" || img.visibility == "community" {
            return Ok(true);
        }
        let Some(pid) = project_id else {
            return Ok(false);
        };
        if img.owner.as_deref() == Some(pid) {
            return Ok(true);
        }
        if img.visibility == "shared" {
            return Ok(self.image_member(&img.id, pid).await?.is_some());
        }
        Ok(false)
    }

    /// Visible images matching `q`, ordered, one page after the marker.
    pub async fn list_images(&self, q: &ImageQuery) -> StoreResult<ImagePage> {
        let mut sql = Sql::default();
        sql.push(&format!("SELECT {IMAGE_COLS} FROM images i WHERE 1 = 1"));
        let project = q.project_id.as_deref();
        // Which visibilities are listed.
        match q.visibility.as_deref() {
            Some("all") => {}
            Some(v) => {
                sql.push(" AND i.visibility = ").text(v);
            }
            None => match project {
                Some(p) => {
                    sql.push(" AND (i.visibility <> 'community' OR i.owner = ").text(p).push(")");
                }
                None => {
                    sql.push(" AND i.visibility <> 'community'");
                }
            },
        }
        // What a regular caller may see at all.
        if !q.is_admin {
            sql.push(" AND (i.visibility IN ('public', 'community')");
            if let Some(p) = project {
                sql.push(" OR i.owner = ").text(p);
                sql.push(" OR (i.visibility = 'shared' AND EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = i.id AND m.member = ")
                    .text(p);
                if q.member_status != "all" {
                    sql.push(" AND m.status = ").text(q.member_status.clone());
                }
                sql.push("))");
            }
            sql.push(")");
        }
        for f in &q.filters {
            match f {
                Filter::TextIn(col, values) => {
                    if values.is_empty() {
                        sql.push(" AND 1 = 0");
                        continue;
                    }
                    sql.push(&format!(" AND i.{col} IN ("));
                    for (n, v) in values.iter().enumerate() {
                        if n > 0 {
                            sql.push(", ");
                        }
                        sql.text(v.clone());
                    }
                    sql.push(")");
                }
                Filter::Int(col, op, v) => {
                    sql.push(&format!(" AND i.{col} {op} ")).int(*v);
                }
                Filter::Time(col, op, v) => {
                    sql.push(&format!(" AND i.{col} {op} ")).text(v.clone());
                }
            }
        }
        for tag in &q.tags {
            sql.push(" AND EXISTS (SELECT 1 FROM image_tags t WHERE t.image_id = i.id AND t.tag = ")
                .text(tag.clone())
                .push(")");
        }
        let mut images: Vec<Image> = sql.query_as().fetch_all(&mut *self.conn().await?).await?;
        if !q.properties.is_empty() {
            images.retain(|img| {
                let props = img.properties_map();
                q.properties.iter().all(|(k, v)| props.get(k).and_then(Value::as_str) == Some(v.as_str()))
            });
        }
        let sort = full_sort(&q.sort);
        let order = |a: &Image, b: &Image| {
            for (key, desc) in &sort {
                let o = key.compare(a, b);
                if o != Ordering::Equal {
                    return if *desc { o.reverse() } else { o };
                }
            }
            Ordering::Equal
        };
        images.sort_by(order);
        if let Some(marker) = &q.marker {
            let m = match self.get_image(marker).await {
                Ok(m) if self.image_visible_to(&m, project, q.is_admin).await? => m,
                Ok(_) | Err(StoreError::NotFound(_)) => return Err(not_found(marker)),
                Err(e) => return Err(e),
            };
            // Keyset: everything strictly after the marker in this order.
            let start = images.partition_point(|i| order(i, &m) != Ordering::Greater);
            images.drain(..start);
        }
        let more = images.len() > q.limit;
        images.truncate(q.limit);
        self.load_tags(&mut images).await?;
        Ok(ImagePage { images, more })
    }

    async fn load_tags(&self, images: &mut [Image]) -> StoreResult<()> {
        for chunk in images.chunks_mut(500) {
            let mut sql = Sql::default();
            sql.push("SELECT image_id, tag FROM image_tags WHERE image_id IN (");
            sql.texts(chunk.iter().map(|img| img.id.as_str()));
            sql.push(") ORDER BY image_id, tag");
            let rows: Vec<(String, String)> = sql.query_as().fetch_all(&mut *self.conn().await?).await?;
            for img in chunk.iter_mut() {
                img.tags = rows.iter().filter(|(i, _)| *i == img.id).map(|(_, t)| t.clone()).collect();
            }
        }
        Ok(())
    }

    // ---- members ----

    pub async fn add_image_member(&self, image_id: &str, member: &str) -> StoreResult<Member> {
        let ts = now();
        sqlx::query(&format!("INSERT INTO image_members ({MEMBER_COLS}) VALUES ($1, $2, 'pending', $3, $3)"))
            .bind(image_id)
            .bind(member)
            .bind(&ts)
            .execute(&mut *self.conn().await?)
            .await
            .map_err(|e| conflict(e, format!("Member {member} is duplicated for image {image_id}")))?;
        Ok(Member {
            image_id: image_id.into(),
            member: member.into(),
            status: "pending".into(),
            created_at: ts.clone(),
            updated_at: ts,
        })
    }

    pub async fn image_member(&self, image_id: &str, member: &str) -> StoreResult<Option<Member>> {
        Ok(sqlx::query_as(&format!("SELECT {MEMBER_COLS} FROM image_members WHERE image_id = $1 AND member = $2"))
            .bind(image_id)
            .bind(member)
            .fetch_optional(&mut *self.conn().await?)
            .await?)
    }

    pub async fn list_image_members(&self, image_id: &str) -> StoreResult<Vec<Member>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {MEMBER_COLS} FROM image_members WHERE image_id = $1 ORDER BY created_at, member"
        ))
        .bind(image_id)
        .fetch_all(&mut *self.conn().await?)
        .await?)
    }

    pub async fn count_image_members(&self, image_id: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM image_members WHERE image_id = $1")
            .bind(image_id)
            .fetch_one(&mut *self.conn().await?)
            .await?)
    }

    pub async fn set_image_member_status(&self, image_id: &str, member: &str, status: &str) -> StoreResult<Member> {
        let done =
            sqlx::query("UPDATE image_members SET status = $3, updated_at = $4 WHERE image_id = $1 AND member = $2")
                .bind(image_id)
                .bind(member)
                .bind(status)
                .bind(now())
                .execute(&mut *self.conn().await?)
                .await?;
        found(done.rows_affected(), || member_not_found(image_id, member))?;
        self.image_member(image_id, member)
            .await?
            .ok_or_else(|| StoreError::NotFound(member_not_found(image_id, member)))
    }

    pub async fn remove_image_member(&self, image_id: &str, member: &str) -> StoreResult<()> {
        let done = sqlx::query("DELETE FROM image_members WHERE image_id = $1 AND member = $2")
            .bind(image_id)
            .bind(member)
            .execute(&mut *self.conn().await?)
            .await?;
        found(done.rows_affected(), || member_not_found(image_id, member))
    }
}

pub fn member_not_found(image_id: &str, member: &str) -> String {
    format!("{member} not found in the member list of the image {image_id}.")
}

/// The requested sort plus Glance's tie-breakers (`created_at`, then `id`), which take the
/// direction of the last requested key (default descending).
fn full_sort(requested: &[(SortKey, bool)]) -> Vec<(SortKey, bool)> {
    let mut sort = if requested.is_empty() { vec![(SortKey::CreatedAt, true)] } else { requested.to_vec() };
    let default_desc = sort.last().map(|(_, d)| *d).unwrap_or(true);
    for key in [SortKey::CreatedAt, SortKey::Id] {
        if !sort.iter().any(|(k, _)| *k == key) {
            sort.push((key, default_desc));
        }
    }
    sort
}
