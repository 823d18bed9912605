//! What every Neutron resource shares: fault conversion, request bodies and attribute
//! converters (Neutron's messages), policy refusals, and list processing — filters on any
//! attribute (repeated keys OR together), tag filters, `sort_key`/`sort_dir`, `limit`/`marker`/
//! `page_reverse` with `{resource}_links`, and `fields` selection.

use std::cmp::Ordering;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::auth::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Query, parse_bool};
use crate::state::AppState;
use crate::store::network::{ListSort, ListSpec, ListValue, NetError};

pub(crate) type JsonResult = ApiResult<axum::Json<Value>>;
pub(crate) type Obj = Map<String, Value>;

impl From<NetError> for ApiError {
    fn from(err: NetError) -> Self {
        match err {
            NetError::Fault { status, kind, message } => {
                ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), message).kind(kind)
            }
            NetError::Store(e) => e.into(),
        }
    }
}

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message).kind("HTTPBadRequest")
}

/// `Invalid input for {attr}. Reason: {why}.` (Neutron's attribute validation failure).
pub(crate) fn invalid(attr: &str, why: impl std::fmt::Display) -> ApiError {
    bad(format!("Invalid input for {attr}. Reason: {why}."))
}

/// A policy refusal, as Neutron words and types it.
pub(crate) fn deny(action: &str) -> ApiError {
    ApiError::policy(action).kind("PolicyNotAuthorized")
}

/// Writing a resource: member (or admin) role, and the resource's project (admins: any).
pub(crate) fn check_write(ctx: &Ctx, owners: &[&str], action: &str) -> ApiResult<()> {
    ctx.require_member(action).map_err(|_| deny(action))?;
    if owners.iter().any(|o| ctx.owns(o)) { Ok(()) } else { Err(deny(action)) }
}

/// Neutron prints times to the second with a `Z`: `2016-03-08T20:19:41Z`.
pub(crate) fn time(stored: &str) -> String {
    match stored.get(..19) {
        Some(s) => format!("{s}Z"),
        None => stored.to_string(),
    }
}

/// Attribute kinds, for typed filters and sorting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Bool,
    Int,
    List,
    /// Structured (objects, lists of objects): neither filterable nor sortable.
    Dict,
}

/// A resource's attribute map: what exists, what POST and PUT may set.
pub(crate) struct Schema {
    pub singular: &'static str,
    pub plural: &'static str,
    /// "Network", for not-found messages.
    pub title: &'static str,
    pub not_found: &'static str,
    pub attrs: &'static [(&'static str, Kind)],
    pub post: &'static [&'static str],
    pub put: &'static [&'static str],
}

impl Schema {
    pub fn kind(&self, attr: &str) -> Option<Kind> {
        self.attrs.iter().find(|a| a.0 == attr).map(|a| a.1)
    }
    pub fn not_found(&self, id: &str) -> ApiError {
        ApiError::not_found(format!("{} {id} could not be found.", self.title)).kind(self.not_found)
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// The objects of a create request and whether it was a bulk (`{"networks": [...]}`) one.
pub(crate) fn create_items(body: &Value, s: &Schema) -> ApiResult<(Vec<Obj>, bool)> {
    let o = body.as_object().ok_or_else(|| bad("Body contains invalid data"))?;
    if let Some(list) = o.get(s.plural) {
        let arr = list.as_array().ok_or_else(|| bad(format!("Invalid input for {}: a list is required.", s.plural)))?;
        if arr.is_empty() {
            return Err(bad("Resources required"));
        }
        let items = arr
            .iter()
            .map(|v| {
                v.as_object()
                    .cloned()
                    .ok_or_else(|| bad(format!("Invalid input for {}: objects are required.", s.plural)))
            })
            .collect::<ApiResult<Vec<_>>>()?;
        return Ok((items, true));
    }
    match o.get(s.singular) {
        Some(Value::Object(m)) => Ok((vec![m.clone()], false)),
        Some(_) => Err(bad(format!("Invalid input for {}: an object is required.", s.singular))),
        None => Err(bad(format!("Unable to find '{}' in request body", s.singular))),
    }
}

/// The object of an update request (`{"network": {...}}`).
pub(crate) fn update_item(body: &Value, s: &Schema) -> ApiResult<Obj> {
    match body.as_object().and_then(|o| o.get(s.singular)) {
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(bad(format!("Invalid input for {}: an object is required.", s.singular))),
        None => Err(bad(format!("Unable to find '{}' in request body", s.singular))),
    }
}

fn unknown_keys(m: &Obj, s: &Schema) -> ApiResult<()> {
    let unknown: Vec<&str> = m.keys().filter(|k| s.kind(k).is_none()).map(String::as_str).collect();
    if unknown.is_empty() { Ok(()) } else { Err(bad(format!("Unrecognized attribute(s) '{}'", unknown.join(", ")))) }
}

pub(crate) fn check_post(m: &Obj, s: &Schema) -> ApiResult<()> {
    unknown_keys(m, s)?;
    match m.keys().find(|k| !s.post.contains(&k.as_str())) {
        Some(k) => Err(bad(format!("Attribute '{k}' not allowed in POST"))),
        None => Ok(()),
    }
}

pub(crate) fn check_put(m: &Obj, s: &Schema) -> ApiResult<()> {
    unknown_keys(m, s)?;
    match m.keys().find(|k| !s.put.contains(&k.as_str())) {
        Some(k) => Err(bad(format!("Cannot update read-only attribute {k}"))),
        None => Ok(()),
    }
}

/// How Neutron quotes a rejected value.
pub(crate) fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// A string attribute of at most `max` characters.
pub(crate) fn string(m: &Obj, key: &str, max: usize) -> ApiResult<Option<String>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s.chars().count() > max => {
            Err(invalid(key, format!("'{s}' exceeds maximum length of {max}")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(invalid(key, format!("'{}' is not a valid string", shown(v)))),
    }
}

pub(crate) fn to_bool(key: &str, v: &Value) -> ApiResult<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_i64() == Some(0) => Ok(false),
        Value::Number(n) if n.as_i64() == Some(1) => Ok(true),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(invalid(key, format!("'{s}' cannot be converted to boolean"))),
        },
        other => Err(invalid(key, format!("'{}' cannot be converted to boolean", shown(other)))),
    }
}

pub(crate) fn boolean(m: &Obj, key: &str) -> ApiResult<Option<bool>> {
    m.get(key).map(|v| to_bool(key, v)).transpose()
}

pub(crate) fn to_int(key: &str, v: &Value) -> ApiResult<i64> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| invalid(key, format!("'{n}' is not an integer"))),
        Value::String(s) => s.trim().parse().map_err(|_| invalid(key, format!("'{s}' is not an integer"))),
        other => Err(invalid(key, format!("'{}' is not an integer", shown(other)))),
    }
}

pub(crate) fn integer(m: &Obj, key: &str) -> ApiResult<Option<i64>> {
    m.get(key).map(|v| to_int(key, v)).transpose()
}

/// A list of strings (each at most 255 characters).
pub(crate) fn str_list(m: &Obj, key: &str) -> ApiResult<Option<Vec<String>>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) if s.chars().count() <= 255 => Ok(s.clone()),
                other => Err(invalid(key, format!("'{}' is not a valid string", shown(other)))),
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some),
        Some(v) => Err(invalid(key, format!("'{}' is not a list", shown(v)))),
    }
}

/// The project a create request is for: `project_id`/`tenant_id` (another project: admins
/// only), else the caller's.
pub(crate) fn owner(ctx: &Ctx, m: &Obj, action: &str) -> ApiResult<String> {
    let p = string(m, "project_id", 255)?;
    let t = string(m, "tenant_id", 255)?;
    if let (Some(a), Some(b)) = (&p, &t)
        && a != b
    {
        return Err(bad("'project_id' and 'tenant_id' do not match"));
    }
    let mine = ctx.project_id()?;
    match p.or(t) {
        Some(x) if x != mine => {
            if !ctx.is_admin() {
                return Err(deny(action));
            }
            Ok(x)
        }
        _ => Ok(mine.to_string()),
    }
}

/// A 201 with `{"network": …}` or, for a bulk request, `{"networks": [...]}`.
pub(crate) fn created(s: &Schema, items: Vec<Value>, bulk: bool) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let body = if bulk {
        json!({ s.plural: items })
    } else {
        json!({ s.singular: items.into_iter().next().unwrap_or(Value::Null) })
    };
    Ok((StatusCode::CREATED, axum::Json(body)))
}

// ---------------------------------------------------------------------------------------------
// Lists

const PAGING: [&str; 7] = ["fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse", "changed_since"];
const TAG_FILTERS: [&str; 4] = ["tags", "tags-any", "not-tags", "not-tags-any"];

/// Keeps only the requested `fields` (all when none are given).
pub(crate) fn select_fields(mut o: Obj, q: &Query) -> Value {
    let fields: Vec<&str> = q.all("fields").into_iter().filter(|f| !f.is_empty()).collect();
    if !fields.is_empty() {
        o.retain(|k, _| fields.contains(&k.as_str()));
    }
    Value::Object(o)
}

/// One attribute filter: the attribute, its kind and the accepted values.
struct Filter {
    attr: String,
    kind: Kind,
    values: Vec<Value>,
}

fn parse_filters(s: &Schema, q: &Query, handled: &[&str]) -> ApiResult<Vec<Filter>> {
    let mut out: Vec<Filter> = Vec::new();
    for (k, v) in &q.0 {
        let k = k.as_str();
        if PAGING.contains(&k) || TAG_FILTERS.contains(&k) || handled.contains(&k) {
            continue;
        }
        let kind = match s.kind(k) {
            Some(Kind::Dict) | None => {
                return Err(bad(format!("{k} is invalid attribute for filtering")));
            }
            Some(kind) => kind,
        };
        if v.is_empty() {
            continue;
        }
        let value = match kind {
            Kind::Bool => {
                Value::Bool(parse_bool(v).ok_or_else(|| invalid(k, format!("'{v}' cannot be converted to boolean")))?)
            }
            Kind::Int => {
                Value::from(v.trim().parse::<i64>().map_err(|_| invalid(k, format!("'{v}' is not an integer")))?)
            }
            _ => Value::String(v.clone()),
        };
        match out.iter_mut().find(|f| f.attr == k) {
            Some(f) => f.values.push(value),
            None => out.push(Filter { attr: k.to_string(), kind, values: vec![value] }),
        }
    }
    Ok(out)
}

fn matches(o: &Obj, filters: &[Filter]) -> bool {
    filters.iter().all(|f| match (f.kind, o.get(&f.attr)) {
        (_, None) => false,
        (Kind::List, Some(Value::Array(a))) => f.values.iter().any(|v| a.contains(v)),
        (_, Some(x)) => f.values.contains(x),
    })
}

/// `tags`, `tags-any`, `not-tags`, `not-tags-any` (comma-separated, repeatable).
fn tag_match(o: &Obj, q: &Query) -> bool {
    let tags: Vec<&str> = o
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let wanted = |key: &str| -> Vec<String> {
        q.all(key).iter().flat_map(|v| v.split(',')).filter(|t| !t.is_empty()).map(str::to_string).collect()
    };
    let has = |t: &String| tags.contains(&t.as_str());
    let all = wanted("tags");
    let any = wanted("tags-any");
    let not_all = wanted("not-tags");
    let not_any = wanted("not-tags-any");
    (all.is_empty() || all.iter().all(has))
        && (any.is_empty() || any.iter().any(has))
        && (not_all.is_empty() || !not_all.iter().all(has))
        && (not_any.is_empty() || !not_any.iter().any(has))
}

/// Neutron's emulated comparison: null sorts first.
fn cmp_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => Ordering::Equal,
        (None | Some(Value::Null), _) => Ordering::Less,
        (_, None | Some(Value::Null)) => Ordering::Greater,
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

fn parse_sorts(s: &Schema, q: &Query) -> ApiResult<Vec<(String, bool)>> {
    let keys: Vec<&str> = q.all("sort_key").into_iter().filter(|k| !k.is_empty()).collect();
    let dirs: Vec<&str> = q.all("sort_dir").into_iter().filter(|k| !k.is_empty()).collect();
    if keys.len() != dirs.len() {
        return Err(bad("The number of sort_keys and sort_dirs must be same"));
    }
    let absent: Vec<String> = keys
        .iter()
        .filter(|k| !matches!(s.kind(k), Some(Kind::Str | Kind::Bool | Kind::Int)))
        .map(|k| format!("'{k}'"))
        .collect();
    if !absent.is_empty() {
        return Err(bad(format!("[{}] is invalid attribute for sort_keys", absent.join(", "))));
    }
    let invalid_dirs: Vec<String> =
        dirs.iter().filter(|d| **d != "asc" && **d != "desc").map(|d| format!("'{d}'")).collect();
    if !invalid_dirs.is_empty() {
        return Err(bad(format!(
            "[{}] is invalid value for sort_dirs, valid value is 'asc' and 'desc'",
            invalid_dirs.join(", ")
        )));
    }
    Ok(keys.iter().zip(dirs.iter()).map(|(k, d)| (k.to_string(), *d == "asc")).collect())
}

fn page_link(state: &AppState, s: &Schema, q: &Query, marker: Option<&str>, previous: bool) -> Value {
    let mut params: Vec<(String, String)> =
        q.0.iter().filter(|(k, _)| k != "marker" && k != "page_reverse").cloned().collect();
    if let Some(m) = marker {
        params.push(("marker".into(), m.to_string()));
    }
    if previous {
        params.push(("page_reverse".into(), "True".into()));
    }
    let qs = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    // The collection's path: `security_groups` are at `security-groups`.
    let href = format!("{}?{qs}", state.url(&format!("network/v2.0/{}", s.plural.replace('_', "-"))));
    json!({"rel": if previous { "previous" } else { "next" }, "href": href})
}

/// A parsed list request: what both the SQL and the in-memory path apply.
pub(crate) struct ListRequest {
    filters: Vec<Filter>,
    /// The sort keys with `id` last; empty when the list keeps its natural order (no
    /// `sort_key`, no `limit` from the caller).
    sorts: Vec<(String, bool)>,
    /// The page size: the caller's `limit` capped by `pagination_max_limit`, or that maximum
    /// when the caller gave none; 0 for no limit.
    limit: usize,
    /// Whether the caller asked for a page (`limit`): then links come with every page, as
    /// Neutron's; with only the server's maximum, when a page is full (more may follow).
    explicit: bool,
    reverse: bool,
    marker: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    tags: bool,
}

/// Parses and checks a list request (Neutron's messages, in Neutron's order).
pub(crate) fn list_request(state: &AppState, s: &Schema, q: &Query, handled: &[&str]) -> ApiResult<ListRequest> {
    let filters = parse_filters(s, q, handled)?;
    let mut sorts = parse_sorts(s, q)?;
    let asked = match q.get("limit").filter(|l| !l.is_empty()) {
        None => 0,
        Some(l) => l
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad(format!("Limit must be an integer 0 or greater and not '{l}'")))?,
    };
    let asked = usize::try_from(asked).unwrap_or(usize::MAX);
    // Neutron's get_limit_and_marker: min(max, limit) or max.
    let max = usize::try_from(state.cfg.pagination_max_limit).unwrap_or(0);
    let limit = if max > 0 && (asked == 0 || asked > max) { max } else { asked };
    if (!sorts.is_empty() || asked > 0) && !sorts.iter().any(|(k, _)| k == "id") {
        sorts.push(("id".into(), true));
    }
    let since = match q.get("changed_since").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&chrono::Utc))
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc()))
                .map_err(|_| invalid("changed_since", format!("'{v}' is not a valid time")))?,
        ),
    };
    Ok(ListRequest {
        filters,
        sorts,
        limit,
        explicit: asked > 0,
        reverse: limit > 0 && q.get("page_reverse").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        marker: q.get("marker").filter(|m| !m.is_empty() && limit > 0).map(str::to_string),
        since,
        tags: TAG_FILTERS.iter().any(|k| q.all(k).iter().any(|v| !v.is_empty())),
    })
}

/// An attribute kept in a column, so lists can filter and sort on it in SQL.
pub(crate) struct Column {
    pub attr: &'static str,
    /// The column, or an expression over columns that compares as the attribute does.
    pub expr: &'static str,
    /// Whether a filter on the attribute can be an `IN` on `expr` (times are shown rounded,
    /// so they sort in SQL but are filtered in memory).
    pub filter: bool,
}

impl ListRequest {
    /// The request as SQL, when every filter and sort key is one of `columns` (no tag filters);
    /// `None` otherwise: then the whole visible list is filtered and paged in memory.
    pub(crate) fn sql(&self, s: &Schema, columns: &[Column]) -> Option<ListSpec> {
        if self.tags {
            return None;
        }
        let column = |attr: &str| columns.iter().find(|c| c.attr == attr);
        let mut filters = Vec::new();
        for f in &self.filters {
            let c = column(&f.attr).filter(|c| c.filter)?;
            let values = f
                .values
                .iter()
                .map(|v| match v {
                    Value::Bool(b) => Some(ListValue::Int(i64::from(*b))),
                    Value::Number(n) => n.as_i64().map(ListValue::Int),
                    Value::String(t) => Some(ListValue::Text(t.clone())),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            filters.push((c.expr, values));
        }
        let sorts = if self.sorts.is_empty() {
            // The natural order, as the store lists: oldest first.
            vec![ListSort { expr: "created_at", text: true, asc: true }, ListSort { expr: "id", text: true, asc: true }]
        } else {
            self.sorts
                .iter()
                .map(|(k, asc)| {
                    let c = column(k)?;
                    Some(ListSort { expr: c.expr, text: s.kind(k) == Some(Kind::Str), asc: *asc })
                })
                .collect::<Option<Vec<_>>>()?
        };
        Some(ListSpec {
            filters,
            since: self.since.map(crate::store::fmt_time),
            sorts,
            marker: self.marker.clone(),
            limit: (self.limit > 0).then(|| i64::try_from(self.limit).unwrap_or(i64::MAX)),
            reverse: self.reverse,
        })
    }

    /// The answer when the store did not find the marker among what the caller sees.
    pub(crate) fn marker_not_found(&self, s: &Schema) -> ApiError {
        s.not_found(self.marker.as_deref().unwrap_or_default())
    }

    /// `{plural: [...], plural_links: [...]}` for a page (already filtered, sorted and cut).
    pub(crate) fn respond(&self, state: &AppState, s: &Schema, q: &Query, page: Vec<Obj>) -> JsonResult {
        let mut links = Vec::new();
        if self.limit > 0 && (self.explicit || page.len() >= self.limit) {
            let id_of = |o: Option<&Obj>| o.and_then(|o| o.get("id")).and_then(Value::as_str).map(str::to_string);
            let first = id_of(page.first());
            let last = id_of(page.last());
            // Neutron's get_pagination_links.
            if page.len() >= self.limit || self.reverse {
                links.push(page_link(state, s, q, last.as_deref(), false));
            }
            if page.len() >= self.limit || !self.reverse {
                links.push(page_link(state, s, q, first.as_deref(), true));
            }
        }
        let out: Vec<Value> = page.into_iter().map(|o| select_fields(o, q)).collect();
        let mut body = json!({ s.plural: out });
        if !links.is_empty() {
            body[format!("{}_links", s.plural)] = Value::Array(links);
        }
        Ok(axum::Json(body))
    }
}

/// Filters, sorts, paginates and projects `items` (all the caller may see, oldest first) into
/// `{plural: [...], plural_links: [...]}`. `handled` names query keys the caller applied itself.
pub(crate) fn list(state: &AppState, s: &Schema, q: &Query, items: Vec<Obj>, handled: &[&str]) -> JsonResult {
    let req = list_request(state, s, q, handled)?;
    list_in_memory(state, s, q, &req, items)
}

/// [`list`] for a parsed request.
pub(crate) fn list_in_memory(
    state: &AppState,
    s: &Schema,
    q: &Query,
    req: &ListRequest,
    mut items: Vec<Obj>,
) -> JsonResult {
    if !req.sorts.is_empty() {
        items.sort_by(|a, b| {
            for (k, asc) in &req.sorts {
                let o = cmp_values(a.get(k), b.get(k));
                if o != Ordering::Equal {
                    return if *asc { o } else { o.reverse() };
                }
            }
            Ordering::Equal
        });
    }
    let changed = |o: &Obj| {
        req.since.is_none_or(|t| {
            o.get("updated_at").and_then(Value::as_str).and_then(crate::store::parse_time).is_some_and(|u| u >= t)
        })
    };
    let keep = |o: &Obj| matches(o, &req.filters) && tag_match(o, q) && changed(o);
    let limit = req.limit;
    let page: Vec<Obj> = if limit == 0 {
        items.into_iter().filter(keep).collect()
    } else {
        let pos = match &req.marker {
            Some(m) => Some(
                items
                    .iter()
                    .position(|o| o.get("id").and_then(Value::as_str) == Some(m.as_str()))
                    .ok_or_else(|| s.not_found(m))?,
            ),
            None => None,
        };
        if req.reverse {
            let end = pos.unwrap_or(items.len());
            let before: Vec<Obj> = items.into_iter().take(end).filter(keep).collect();
            let skip = before.len().saturating_sub(limit);
            before.into_iter().skip(skip).collect()
        } else {
            let start = pos.map_or(0, |p| p + 1);
            items.into_iter().skip(start).filter(keep).take(limit).collect()
        }
    };
    req.respond(state, s, q, page)
}
