//! The database's tables, created and migrated by deskboot at start.
//!
//! Each record kind is a table keyed by its natural key, the record itself
//! a `json` of the same serde JSON the sled backend stores, so records
//! round-trip exactly and tolerate new fields. `json`, not `jsonb`: the
//! database only hands records back whole, and `jsonb` would parse each
//! one into its binary form on the way in and print it again on the way
//! out: in a storm of first asks that was a third of the database's CPU.
//! Users' unique fields are columns too: the database refuses a
//! duplicate, whichever node wrote it.
//! `deskboot_schema` holds the version; a migration is one more entry in
//! [`MIGRATIONS`], run in order, each in the transaction that records it.

use deadpool_postgres::ClientWrapper;

use crate::store::StoreError;

/// What each schema version adds, version 1 first.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id bigint PRIMARY KEY,
    extension text NOT NULL UNIQUE,
    sip_username text NOT NULL UNIQUE,
    email text UNIQUE,
    doc jsonb NOT NULL
);
CREATE TABLE devices (mac text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE settings (scope text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE layouts (name text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE templates (key text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE tokens (name text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE audit (id bigint PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE sightings (mac text PRIMARY KEY, doc jsonb NOT NULL);
CREATE TABLE discovered (mac text PRIMARY KEY, doc jsonb NOT NULL);
-- A deleted phone's last good files hold its SIP passwords: they go with it.
CREATE TABLE last_good (
    mac text NOT NULL REFERENCES devices ON DELETE CASCADE,
    file text NOT NULL,
    doc jsonb NOT NULL,
    PRIMARY KEY (mac, file)
);
CREATE TABLE meta (name text PRIMARY KEY, value bytea NOT NULL);
CREATE SEQUENCE user_ids;
CREATE SEQUENCE audit_ids;
-- Users are numbered 1, 2, 3...; an id restored from a backup is skipped.
CREATE FUNCTION deskboot_next_user_id() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE candidate bigint;
BEGIN
    LOOP
        candidate := nextval('user_ids');
        IF NOT EXISTS (SELECT 1 FROM users WHERE id = candidate) THEN
            RETURN candidate;
        END IF;
    END LOOP;
END $$;
"#,
    r#"
ALTER TABLE users ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE devices ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE settings ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE layouts ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE templates ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE tokens ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE audit ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE sightings ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE discovered ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE last_good ALTER COLUMN doc TYPE json USING doc::json;
"#,
];

/// The newest schema this build knows.
pub(crate) fn newest() -> u32 {
    MIGRATIONS.len() as u32
}

/// The advisory lock every node's writer takes, in the transaction of each
/// change and each batch that must see the devices as they are: two nodes'
/// writers then take turns, as one node's do under its writer lock.
pub(crate) const WRITER_LOCK: i64 = 0x6465_736b_626f_6f74; // "deskboot"

/// Brings the database to the newest schema, refusing one newer than this
/// build knows. Nodes starting together take turns on [`WRITER_LOCK`].
pub(crate) async fn migrate(client: &mut ClientWrapper) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS deskboot_schema (version integer NOT NULL)")
        .await?;
    let found: Option<i32> = tx
        .query_one("SELECT max(version) FROM deskboot_schema", &[])
        .await?
        .get(0);
    let found = found.map_or(0, |v| v.max(0) as u32);
    if found > newest() {
        return Err(StoreError::NewerSchema {
            found,
            supported: newest(),
        });
    }
    for migration in &MIGRATIONS[found as usize..] {
        tx.batch_execute(migration).await?;
    }
    if found < newest() {
        tx.execute("DELETE FROM deskboot_schema", &[]).await?;
        tx.execute(
            "INSERT INTO deskboot_schema (version) VALUES ($1)",
            &[&(newest() as i32)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::mac::Mac;
    use crate::store::Store;
    use crate::store::postgres::PostgresBackend;
    use crate::store::postgres::test_cluster::TestCluster;
    use crate::store::suite;

    #[test]
    fn a_database_of_the_first_schema_keeps_its_records() {
        let cluster = TestCluster::shared();
        let url = cluster.database();
        let device = serde_json::to_string(&suite::device("001565aabbcc")).unwrap();
        cluster.sql(
            &url,
            &format!(
                "BEGIN; {} CREATE TABLE deskboot_schema (version integer NOT NULL); \
                 INSERT INTO deskboot_schema VALUES (1); \
                 INSERT INTO devices VALUES ('001565aabbcc', '{device}'::jsonb); COMMIT;",
                MIGRATIONS[0]
            ),
        );
        let store = Store::on(Box::new(PostgresBackend::open(&url).unwrap()));
        let mac: Mac = "001565aabbcc".parse().unwrap();
        assert_eq!(
            store.device(mac).unwrap(),
            Some(suite::device("001565aabbcc"))
        );
        let version = cluster.sql(&url, "SELECT max(version) FROM deskboot_schema");
        assert_eq!(version.trim(), newest().to_string());
    }
}
