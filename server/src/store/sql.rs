//! Dynamic SQL with `$n` placeholders (portable between SQLite and PostgreSQL), for queries
//! whose shape depends on the request (filters, `IN` lists).

enum Arg {
    Text(String),
    Int(i64),
}

/// A statement built piece by piece, with its arguments.
#[derive(Default)]
pub(crate) struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(crate) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }
    pub(crate) fn text(&mut self, v: impl Into<String>) -> &mut Self {
        self.args.push(Arg::Text(v.into()));
        let n = self.args.len();
        self.text.push_str(&format!("${n}"));
        self
    }
    /// Placeholders for each value, comma-separated (the inside of an `IN (…)`).
    pub(crate) fn texts<'a>(&mut self, values: impl IntoIterator<Item = &'a str>) -> &mut Self {
        for (n, v) in values.into_iter().enumerate() {
            if n > 0 {
                self.push(", ");
            }
            self.text(v);
        }
        self
    }
    pub(crate) fn int(&mut self, v: i64) -> &mut Self {
        self.args.push(Arg::Int(v));
        let n = self.args.len();
        self.text.push_str(&format!("${n}"));
        self
    }
    pub(crate) fn query_as<'q, T>(&'q self) -> sqlx::query::QueryAs<'q, sqlx::Any, T, sqlx::any::AnyArguments<'q>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        let mut q = sqlx::query_as::<_, T>(&self.text);
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
    /// The statement for `execute`, or for rows read by position (`sqlx::Row::try_get`).
    pub(crate) fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for a in &self.args {
            q = match a {
                Arg::Text(s) => q.bind(s.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
}
