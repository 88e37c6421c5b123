//! The PostgreSQL schema of [`super::PgMetaStore`], as numbered migrations applied at start.
//!
//! Migrations run in one transaction that first takes a transaction-level advisory lock, so several
//! instances starting together apply each migration exactly once (the others wait, then find nothing to
//! do), and a failed migration leaves the database as it was. The version reached is recorded in
//! `entrepot_schema`. A migration, once released, is never edited: changes go in a new one. Text that
//! is listed in order (`tags`, repository names, digests) uses the `"C"` collation, so listings are in
//! byte order whatever the database's locale, as the OCI API and the SQLite backend order them.

use crate::Result;

/// Advisory lock key (namespace, id) of the migration run; see `super::LockSpace`.
const MIGRATION_LOCK: (i32, i32) = (super::NS_GLOBAL, 1);

/// The migrations, in order; version N is `MIGRATIONS[N - 1]`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: repositories, blobs, links, manifests and their references, tags, upload sessions, outbox.
    r#"
CREATE TABLE repositories (
    name TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE blobs (
    digest TEXT COLLATE "C" PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE repo_blobs (
    repo TEXT COLLATE "C" NOT NULL,
    digest TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs (digest);
CREATE INDEX repo_blobs_repo_created ON repo_blobs (repo, created_at);
CREATE TABLE manifests (
    repo TEXT COLLATE "C" NOT NULL,
    digest TEXT COLLATE "C" NOT NULL,
    media_type TEXT NOT NULL,
    content BYTEA NOT NULL,
    artifact_type TEXT,
    subject TEXT COLLATE "C",
    annotations TEXT,
    created_at BIGINT NOT NULL,
    pushed_at BIGINT NOT NULL,
    PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_subject ON manifests (repo, subject);
CREATE TABLE manifest_refs (
    repo TEXT COLLATE "C" NOT NULL,
    digest TEXT COLLATE "C" NOT NULL,
    target TEXT COLLATE "C" NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (repo, digest, kind, target)
);
CREATE INDEX manifest_refs_target ON manifest_refs (target);
CREATE TABLE tags (
    repo TEXT COLLATE "C" NOT NULL,
    tag TEXT COLLATE "C" NOT NULL,
    digest TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo, tag)
);
CREATE INDEX tags_digest ON tags (repo, digest);
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    byte_offset BIGINT NOT NULL,
    hash_state BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX uploads_updated ON uploads (updated_at);
CREATE TABLE event_outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint TEXT COLLATE "C" NOT NULL,
    event_id TEXT NOT NULL,
    body BYTEA NOT NULL,
    failed BOOLEAN NOT NULL DEFAULT FALSE,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error TEXT,
    created_ms BIGINT NOT NULL
);
CREATE INDEX event_outbox_queue ON event_outbox (endpoint, failed, seq);
"#,
    // 2: settings shared by every instance (the fleet-wide read-only switch); `updated_at` in unix seconds.
    r#"
CREATE TABLE settings (
    key TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
"#,
];

/// Applies the migrations `client`'s database lacks; returns the version reached.
pub(crate) async fn migrate(client: &mut tokio_postgres::Client) -> Result<i32> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS entrepot_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)",
    )
    .await?;
    let current: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM entrepot_schema", &[]).await?.get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(crate::MetaError::Db(format!(
            "the database schema is at version {current}, newer than this entrepot knows ({known}): upgrade entrepot"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO entrepot_schema (version, applied_at) VALUES ($1, now())", &[&version]).await?;
        tracing::info!(version, "applied a metadata schema migration");
    }
    tx.commit().await?;
    Ok(known)
}
