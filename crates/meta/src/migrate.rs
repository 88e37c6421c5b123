//! Moving an embedded registry's metadata (its SQLite database) into PostgreSQL — what
//! `entrepot migrate-meta` and the metadata step of `entrepot migrate` run.
//!
//! Every table of registry data is copied as it is — repositories, blobs, links, manifests with their
//! references, tags, upload sessions and the event outbox (keeping the outbox's sequence numbers, and
//! continuing after the highest one SQLite ever gave), but not the run-time `settings` (see `TABLES`) — from one read transaction of the source (a consistent snapshot even
//! if a server still writes to it) into one transaction of the target. The target must be empty; the
//! row counts of every table are compared before the target transaction commits, so a failed or
//! mismatched copy leaves the target as empty as it was. Never changes the source, never touches blob
//! bytes.

use std::path::Path;

use rusqlite::types::Value;
use tokio_postgres::types::ToSql;

use crate::{MetaError, PgMetaStore, Result, SqliteMetaStore};

/// How a column is read from SQLite and written to PostgreSQL.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    OptText,
    Int,
    Int4,
    Bytes,
    Bool,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// `OVERRIDING SYSTEM VALUE`: the target column is an identity column whose values are kept.
    identity: bool,
}

const TABLES: &[Table] = &[
    Table { name: "repositories", columns: &[("name", Kind::Text), ("created_at", Kind::Int)], identity: false },
    Table {
        name: "blobs",
        columns: &[("digest", Kind::Text), ("size", Kind::Int), ("created_at", Kind::Int)],
        identity: false,
    },
    Table {
        name: "repo_blobs",
        columns: &[("repo", Kind::Text), ("digest", Kind::Text), ("created_at", Kind::Int)],
        identity: false,
    },
    Table {
        name: "manifests",
        columns: &[
            ("repo", Kind::Text),
            ("digest", Kind::Text),
            ("media_type", Kind::Text),
            ("content", Kind::Bytes),
            ("artifact_type", Kind::OptText),
            ("subject", Kind::OptText),
            ("annotations", Kind::OptText),
            ("created_at", Kind::Int),
            ("pushed_at", Kind::Int),
        ],
        identity: false,
    },
    Table {
        name: "manifest_refs",
        columns: &[("repo", Kind::Text), ("digest", Kind::Text), ("target", Kind::Text), ("kind", Kind::Text)],
        identity: false,
    },
    Table {
        name: "tags",
        columns: &[("repo", Kind::Text), ("tag", Kind::Text), ("digest", Kind::Text), ("updated_at", Kind::Int)],
        identity: false,
    },
    Table {
        name: "uploads",
        columns: &[
            ("id", Kind::Text),
            ("repo", Kind::Text),
            ("algorithm", Kind::Text),
            ("byte_offset", Kind::Int),
            ("hash_state", Kind::Bytes),
            ("created_at", Kind::Int),
            ("updated_at", Kind::Int),
        ],
        identity: false,
    },
    Table {
        name: "event_outbox",
        columns: &[
            ("seq", Kind::Int),
            ("endpoint", Kind::Text),
            ("event_id", Kind::Text),
            ("body", Kind::Bytes),
            ("failed", Kind::Bool),
            ("attempts", Kind::Int4),
            ("next_attempt_ms", Kind::Int),
            ("last_error", Kind::OptText),
            ("created_ms", Kind::Int),
        ],
        identity: true,
    },
];

// The `settings` table (run-time switches such as the fleet-wide read-only mode) is deliberately not
// copied: it holds the operational state of the deployment being left, not registry data. An embedded
// registry is often put in read-only mode for the very migration; copying that switch would start the
// new fleet refusing every write for no reason its operators can see. The target keeps its own
// settings (normally none), and `already_migrated` / the emptiness check ignore them too.

/// Rows read per batch (bounded memory whatever the registry's size).
const BATCH: usize = 500;

/// Rows copied, per table, in the order they were copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub tables: Vec<(&'static str, u64)>,
}

impl MigrationReport {
    /// The count of `table`.
    pub fn count(&self, table: &str) -> u64 {
        self.tables.iter().find(|(t, _)| *t == table).map(|(_, n)| *n).unwrap_or(0)
    }
}

/// One value for PostgreSQL.
#[derive(Debug)]
enum Pg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Int4(i32),
    Bytes(Vec<u8>),
    Bool(bool),
}

impl Pg {
    fn from_sqlite(table: &str, column: &str, kind: Kind, v: Value) -> Result<Pg> {
        let bad = |v: &Value| MetaError::Corrupt(format!("{table}.{column}: unexpected value {v:?}"));
        Ok(match (kind, v) {
            (Kind::Text, Value::Text(s)) => Pg::Text(s),
            (Kind::OptText, Value::Text(s)) => Pg::OptText(Some(s)),
            (Kind::OptText, Value::Null) => Pg::OptText(None),
            (Kind::Int, Value::Integer(i)) => Pg::Int(i),
            (Kind::Int4, Value::Integer(i)) => Pg::Int4(i32::try_from(i).unwrap_or(i32::MAX)),
            (Kind::Bool, Value::Integer(i)) => Pg::Bool(i != 0),
            (Kind::Bytes, Value::Blob(b)) => Pg::Bytes(b),
            (Kind::Bytes, Value::Text(s)) => Pg::Bytes(s.into_bytes()),
            (_, v) => return Err(bad(&v)),
        })
    }

    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Pg::Text(s) => s,
            Pg::OptText(s) => s,
            Pg::Int(i) => i,
            Pg::Int4(i) => i,
            Pg::Bytes(b) => b,
            Pg::Bool(b) => b,
        }
    }
}

/// What the reading thread sends: a batch of rows of table `TABLES[i]`, or the end of the source with
/// its counts and the outbox's last sequence number.
enum Msg {
    Rows(usize, Vec<Vec<Pg>>),
    Done { counts: Vec<u64>, outbox_seq: Option<i64> },
}

fn read_source(path: &Path, tx: tokio::sync::mpsc::Sender<Result<Msg>>) {
    let result = (|| -> Result<()> {
        let mut conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // One read transaction: every table from the same snapshot.
        let snapshot = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
        let mut counts = Vec::new();
        for (i, table) in TABLES.iter().enumerate() {
            let cols: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
            let sql = format!("SELECT {} FROM {} ORDER BY rowid", cols.join(", "), table.name);
            let mut st = snapshot.prepare(&sql)?;
            let mut rows = st.query([])?;
            let mut batch = Vec::with_capacity(BATCH);
            let mut n = 0u64;
            while let Some(row) = rows.next()? {
                let mut values = Vec::with_capacity(cols.len());
                for (j, (col, kind)) in table.columns.iter().enumerate() {
                    values.push(Pg::from_sqlite(table.name, col, *kind, row.get::<_, Value>(j)?)?);
                }
                batch.push(values);
                n += 1;
                if batch.len() == BATCH && tx.blocking_send(Ok(Msg::Rows(i, std::mem::take(&mut batch)))).is_err() {
                    return Ok(());
                }
            }
            if !batch.is_empty() && tx.blocking_send(Ok(Msg::Rows(i, batch))).is_err() {
                return Ok(());
            }
            counts.push(n);
        }
        let outbox_seq: Option<i64> = snapshot
            .query_row(
                "SELECT MAX(v) FROM (SELECT seq AS v FROM sqlite_sequence WHERE name = 'event_outbox'
                                     UNION ALL SELECT MAX(seq) FROM event_outbox)",
                [],
                |r| r.get(0),
            )
            .or_else(|_| snapshot.query_row("SELECT MAX(seq) FROM event_outbox", [], |r| r.get(0)))?;
        let _ = tx.blocking_send(Ok(Msg::Done { counts, outbox_seq }));
        Ok(())
    })();
    if let Err(e) = result {
        let _ = tx.blocking_send(Err(e));
    }
}

/// Refuses (with [`MetaError::Precondition`]) when another connection has the SQLite database at
/// `sqlite` open — a running `entrepot serve` keeps it open for as long as it runs. Tries to take
/// SQLite's exclusive lock without waiting and gives it back at once; changes nothing.
pub fn ensure_not_in_use(sqlite: &Path) -> Result<()> {
    let conn = rusqlite::Connection::open_with_flags(sqlite, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    conn.busy_timeout(std::time::Duration::ZERO)?;
    // In WAL mode every open connection holds a shared lock on the database: an exclusive
    // locking-mode transaction succeeds only if nobody else has it open.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    match conn.execute_batch("BEGIN EXCLUSIVE; ROLLBACK;") {
        Ok(()) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            Err(MetaError::Precondition(format!(
                "{} is in use by another process (is `entrepot serve` still running on this data directory?): \
                 stop it first",
                sqlite.display()
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `target` already holds exactly what [`sqlite_to_postgres`] would copy from `sqlite`, judged
/// by the row count of every table: `Ok(None)` when the target is empty (nothing migrated yet),
/// `Ok(Some(counts))` when every count matches (a completed earlier migration, so there is nothing to
/// do), and [`MetaError::Precondition`] when the target holds other data (written since, or another
/// registry's). Reads only.
pub async fn already_migrated(sqlite: &Path, target: &PgMetaStore) -> Result<Option<MigrationReport>> {
    // Brings an older database's schema up to date first, as the copy would, so every table exists.
    drop(SqliteMetaStore::open(sqlite).await?);
    let path = sqlite.to_path_buf();
    let source: Vec<u64> = tokio::task::spawn_blocking(move || -> Result<Vec<u64>> {
        let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let tx = conn.unchecked_transaction()?;
        let mut counts = Vec::new();
        for t in TABLES {
            let n: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM {}", t.name), [], |r| r.get(0))?;
            counts.push(n.max(0) as u64);
        }
        Ok(counts)
    })
    .await
    .map_err(|e| MetaError::Db(e.to_string()))??;
    let c = target.conn().await?;
    let mut report = MigrationReport::default();
    let mut mismatch = Vec::new();
    let mut empty = true;
    for (t, n) in TABLES.iter().zip(source) {
        let there: i64 = c.client.query_one(&format!("SELECT COUNT(*) FROM {}", t.name), &[]).await?.try_get(0)?;
        let there = there.max(0) as u64;
        empty &= there == 0;
        if there != n {
            mismatch.push(format!("{}: {n} in the source, {there} in the target", t.name));
        }
        report.tables.push((t.name, n));
    }
    if empty {
        return Ok(None);
    }
    if !mismatch.is_empty() {
        return Err(MetaError::Precondition(format!(
            "the target database already holds registry metadata that differs from {} ({}); nothing was \
             changed — migrate into an empty database",
            sqlite.display(),
            mismatch.join(", ")
        )));
    }
    Ok(Some(report))
}

/// Copies the metadata of the SQLite database at `sqlite` into `target`, which must hold no registry
/// data. Applies the SQLite schema's own migrations to the source first (as opening it for serving
/// would). Verifies every table's row count before committing.
pub async fn sqlite_to_postgres(sqlite: &Path, target: &PgMetaStore) -> Result<MigrationReport> {
    if !sqlite.exists() {
        return Err(MetaError::Db(format!("{} does not exist", sqlite.display())));
    }
    // Brings an older database's schema up to date (idempotent), so every column exists.
    drop(SqliteMetaStore::open(sqlite).await?);

    let mut c = target.conn().await?;
    let tx = c.client.transaction().await?;
    // Two copies into the same database at once: the second waits, then finds it not empty.
    tx.execute("LOCK TABLE repositories IN EXCLUSIVE MODE", &[]).await?;
    let empty: bool = tx
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM repositories) AND NOT EXISTS (SELECT 1 FROM blobs)
                AND NOT EXISTS (SELECT 1 FROM repo_blobs) AND NOT EXISTS (SELECT 1 FROM manifests)
                AND NOT EXISTS (SELECT 1 FROM tags) AND NOT EXISTS (SELECT 1 FROM uploads)
                AND NOT EXISTS (SELECT 1 FROM event_outbox)",
            &[],
        )
        .await?
        .try_get(0)?;
    if !empty {
        return Err(MetaError::Precondition(
            "the target database already holds registry metadata; migrate into an empty database".into(),
        ));
    }
    let mut inserts = Vec::with_capacity(TABLES.len());
    for t in TABLES {
        let cols: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
        let params: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}){} VALUES ({})",
            t.name,
            cols.join(", "),
            if t.identity { " OVERRIDING SYSTEM VALUE" } else { "" },
            params.join(", ")
        );
        inserts.push(tx.prepare(&sql).await?);
    }

    let (send, mut recv) = tokio::sync::mpsc::channel::<Result<Msg>>(4);
    let path = sqlite.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || read_source(&path, send));
    let mut done = None;
    while let Some(msg) = recv.recv().await {
        match msg? {
            Msg::Rows(i, rows) => {
                for row in &rows {
                    let params: Vec<&(dyn ToSql + Sync)> = row.iter().map(Pg::as_sql).collect();
                    tx.execute(&inserts[i], &params).await?;
                }
            }
            Msg::Done { counts, outbox_seq } => done = Some((counts, outbox_seq)),
        }
    }
    reader.await.map_err(|e| MetaError::Db(e.to_string()))?;
    let Some((counts, outbox_seq)) = done else {
        return Err(MetaError::Db("the source database could not be read to the end".into()));
    };
    if let Some(seq) = outbox_seq.filter(|s| *s > 0) {
        tx.execute("SELECT setval(pg_get_serial_sequence('event_outbox', 'seq'), $1)", &[&seq]).await?;
    }
    let mut report = MigrationReport::default();
    for (t, n) in TABLES.iter().zip(counts) {
        let copied: i64 = tx.query_one(&format!("SELECT COUNT(*) FROM {}", t.name), &[]).await?.try_get(0)?;
        if copied.max(0) as u64 != n {
            return Err(MetaError::Db(format!(
                "table {}: {n} rows in the source but {copied} in the target; nothing was committed",
                t.name
            )));
        }
        report.tables.push((t.name, n));
    }
    tx.commit().await?;
    Ok(report)
}
