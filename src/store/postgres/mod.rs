//! The PostgreSQL backend: one database that any number of deskboot nodes
//! share, each serving its phones from its own caches.
//!
//! [`Backend`] is synchronous and called from the server's async workers
//! and its blocking threads alike, while the driver is async: the backend
//! owns a small runtime of its own that runs the connection pool and the
//! listening connection, and a call hands its future there and waits for
//! the answer, which always comes within a bounded time ([`READ_TIMEOUT`]):
//! a lost database never holds a phone's request.
//!
//! Phones' reads of one record (a device, its users, settings, layouts,
//! templates, last good files, sightings) go through the node's
//! [`cache::ReadCache`], so a file served from the render cache costs no
//! round trip. Every change, in the transaction that makes it, notifies the
//! other nodes of what it changed; they forget those records and count the
//! change into the store's generation ([`Backend::outside_changes`]), so
//! their render caches render again. A node whose listening connection was
//! lost may have missed some: it forgets everything when it is back.
//!
//! A phone's first ask would make its render read its device, users,
//! sighting and last good files one round trip after another on a render
//! thread; `ahead` fetches them all in one statement while the request
//! waits without holding a thread. Last good files leave the cache when
//! read: they are read about once per process.
//!
//! `write` turns a change into its statements (a statement per run of
//! records of one kind, so an import is not a round trip per record), `listen` hears the other nodes, `schema`
//! creates and migrates the tables, `connect` reads the URL.
//!
//! While the database is unreachable the backend is [`StoreState::Failed`]:
//! reads answer from the cache, or fail at once with
//! [`StoreError::Unavailable`] (the phone gets "busy"); [`Backend::recover`]
//! and the listening connection notice when it answers again.

mod ahead;
mod cache;
mod connect;
mod listen;
mod schema;
pub mod test_cluster;
mod write;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::audit::AuditEntry;
use super::{Backend, Change, Counted, LastGoodFile, StoreError, StoreState, TemplateHistory};
use crate::domain::mac::Mac;
use crate::domain::progress::{Report, Stage};
use crate::domain::records::{
    ApiToken, Device, Discovered, LastGood, Layout, Settings, Sighting, User, UserId,
};
use cache::{Cached, Kind, ReadCache, Stale};
pub use connect::ConnectError;
use connect::Target;
use write::{INSERT_AUDIT, Write, audit_rows, last_good_key, last_of_each, stale_after};

/// How long a read may take, connecting included, before it is answered
/// with [`StoreError::Unavailable`]: a phone waits no longer.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a batch of what phones did may take.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an administrator's change may take: an import or a restore of
/// tens of thousands of records is one transaction.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(600);
/// Connections to the database per node: phones' reads mostly hit the
/// cache, so a few serve a storm; more would only crowd the database
/// when many nodes share it.
const POOL_SIZE: usize = 8;
/// Threads of the backend's own runtime: they only wait on the network.
const RUNTIME_THREADS: usize = 2;
/// The channel every node notifies its changes on.
const CHANNEL: &str = "deskboot_changes";

/// The store in a PostgreSQL database.
pub struct PostgresBackend {
    shared: Arc<Shared>,
    /// Where calls run: [`PostgresBackend::runtime`]'s.
    handle: tokio::runtime::Handle,
    /// The backend's own runtime (taken only on drop).
    runtime: Option<tokio::runtime::Runtime>,
}

/// What the calls and the listening task share.
struct Shared {
    pool: Pool,
    target: Target,
    /// This node, in its notifications: it need not hear its own.
    node: String,
    cache: ReadCache,
    /// Changed only by [`Shared::enter`], which logs each change once.
    state: Mutex<StoreState>,
    /// Changes other nodes made, and reconnections of the listening
    /// connection (which may have missed some).
    outside: AtomicU64,
    /// How many times the node started afresh.
    afresh: AtomicU64,
    /// Users and devices, as last counted.
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    users: usize,
    devices: usize,
    /// Whether a change may have moved them since.
    fresh: bool,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(code) if !is_connection_lost(code) => StoreError::Database(e.to_string()),
            _ => StoreError::Unavailable(format!("the database is unreachable: {e}")),
        }
    }
}

/// Whether a server error means the database went away (it shut down,
/// or cannot take connections), rather than refusing one statement.
fn is_connection_lost(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(format!("the database is unreachable: {other}")),
        }
    }
}

/// A statement's parameter, owned: the statement runs on the backend's runtime.
type Param = Box<dyn ToSql + Send + Sync>;

fn text(value: impl Into<String>) -> Param {
    Box::new(value.into())
}

/// A user id as the database keeps it (`bigint`).
fn user_key(id: UserId) -> Param {
    Box::new(id as i64)
}

/// The parameters as the driver takes them.
fn borrowed(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

impl PostgresBackend {
    /// Opens the database at `url` (`postgres://…`), and creates or
    /// migrates its tables. Refused if the database cannot be reached.
    pub fn open(url: &str) -> Result<PostgresBackend, StoreError> {
        let target = Target::from_url(url).map_err(|e| StoreError::Database(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("deskboot-postgres")
            .enable_all()
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot start the database's threads: {e}"))
            })?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &target.tls {
            Some(tls) => Manager::from_config(target.config.clone(), tls.clone(), manager_config),
            None => Manager::from_config(target.config.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(READ_TIMEOUT))
            .create_timeout(Some(READ_TIMEOUT))
            .recycle_timeout(Some(READ_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let shared = Arc::new(Shared {
            pool,
            target,
            node: format!("{:016x}", rand::random::<u64>()),
            cache: ReadCache::default(),
            state: Mutex::new(StoreState::Ok),
            outside: AtomicU64::new(0),
            afresh: AtomicU64::new(0),
            counts: Mutex::new(Counts::default()),
        });
        let backend = PostgresBackend {
            shared,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        };
        // A migration may rewrite every table: it gets a change's time.
        backend.call(CHANGE_TIMEOUT, |db| async move {
            let mut client = db.client().await?;
            schema::migrate(&mut client).await
        })?;
        // A node serves phones only once it hears other nodes' changes:
        // what it cached before then could go stale unheard.
        let (listening, heard) = std::sync::mpsc::channel();
        backend
            .handle
            .spawn(listen::listen(backend.shared.clone(), listening));
        if heard.recv_timeout(READ_TIMEOUT).is_err() {
            tracing::warn!("not yet listening for other nodes' changes; going on");
        }
        Ok(backend)
    }

    /// Runs `op` on the backend's runtime and waits for its answer, at
    /// most `limit`.
    fn call<T, F>(
        &self,
        limit: Duration,
        op: impl FnOnce(Arc<Shared>) -> F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        self.call_reporting(limit, &crate::domain::progress::silent, |db, _| op(db))
    }

    /// [`PostgresBackend::call`], telling `report` of the progress `op`
    /// sends. The answer moves the backend's state: failed when the
    /// database did not answer, ok when it did.
    fn call_reporting<T, F>(
        &self,
        limit: Duration,
        report: Report<'_>,
        op: impl FnOnce(Arc<Shared>, Progress<T>) -> F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (events, answers) = std::sync::mpsc::channel();
        let work = op(self.shared.clone(), Progress(events.clone()));
        self.handle.spawn(async move {
            let answer = tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "the database did not answer within {} s",
                    limit.as_secs()
                )))
            });
            let _ = events.send(Event::Done(answer));
        });
        let answer = loop {
            match answers.recv() {
                Ok(Event::Wrote(done, total)) => report(Stage::Writing, done, total),
                Ok(Event::Done(answer)) => break answer,
                Err(_) => {
                    break Err(StoreError::Unavailable(
                        "the database's threads have stopped".into(),
                    ));
                }
            }
        };
        // Any other answer came from the database: it is reachable, and a
        // read need not wait for the next probe to be let through.
        match &answer {
            Err(StoreError::Unavailable(cause)) => self.shared.enter(StoreState::Failed, cause),
            _ => self.shared.enter(StoreState::Ok, "the database answered"),
        }
        answer
    }

    /// Refuses at once while the database is known lost: a phone's read
    /// the cache cannot answer must not wait for a connection to time out.
    fn reachable(&self) -> Result<(), StoreError> {
        match self.state() {
            StoreState::Failed => Err(StoreError::Unavailable(
                "the database is unreachable; the server retries by itself".into(),
            )),
            _ => Ok(()),
        }
    }

    /// One record of a phone's read, through the cache.
    fn record<T: DeserializeOwned>(
        &self,
        kind: Kind,
        key: String,
        sql: String,
        params: Vec<Param>,
    ) -> Result<Option<T>, StoreError> {
        let epoch = self.shared.cache.epoch();
        let cached = match self.shared.cache.get(kind, &key) {
            Some(hit) => hit,
            None => {
                let found = self.read_one(sql, params)?;
                self.shared.cache.fill(epoch, kind, key, found.clone());
                found
            }
        };
        cached.map(|doc| decode(kind.name(), &doc)).transpose()
    }

    /// The one record (its JSON) a query finds, from the database.
    fn read_one(&self, sql: String, params: Vec<Param>) -> Result<Cached, StoreError> {
        self.reachable()?;
        let found = self.call(READ_TIMEOUT, |db| async move {
            let client = db.client().await?;
            let statement = client.prepare_cached(&sql).await?;
            let row = client.query_opt(&statement, &borrowed(&params)).await?;
            Ok(row.map(|row| row.get::<_, String>(0)))
        })?;
        Ok(found.map(Arc::from))
    }

    /// One record kept in `table` under a text `column`, through the cache.
    fn by_key<T: DeserializeOwned>(
        &self,
        kind: Kind,
        (table, column): (&str, &str),
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let sql = format!("SELECT doc::text FROM {table} WHERE {column} = $1");
        self.record(kind, key.to_string(), sql, vec![text(key)])
    }

    /// The records (`doc`) a query finds for any of `keys` (its `$1`).
    fn any_of<T: DeserializeOwned>(
        &self,
        table: &'static str,
        sql: String,
        keys: Vec<String>,
    ) -> Result<Vec<T>, StoreError> {
        self.reachable()?;
        let rows = self.call(CHANGE_TIMEOUT, move |db| async move {
            let client = db.client().await?;
            Ok(client.query(&sql, &[&keys]).await?)
        })?;
        rows.iter().map(|row| decode(table, row.get(0))).collect()
    }

    /// The rows a query lists.
    fn listed(&self, sql: &'static str) -> Result<Vec<Row>, StoreError> {
        self.reachable()?;
        self.call(READ_TIMEOUT, |db| async move {
            let client = db.client().await?;
            let statement = client.prepare_cached(sql).await?;
            Ok(client.query(&statement, &[]).await?)
        })
    }

    /// Every record a query lists as `key, doc`.
    fn keyed<T: DeserializeOwned>(
        &self,
        table: &'static str,
        sql: &'static str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        self.listed(sql)?
            .iter()
            .map(|row| Ok((row.get(0), decode(table, row.get(1))?)))
            .collect()
    }

    /// Every record a query lists as `doc`.
    fn all<T: DeserializeOwned>(
        &self,
        table: &'static str,
        sql: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        self.listed(sql)?
            .iter()
            .map(|row| decode(table, row.get(0)))
            .collect()
    }

    /// One value a statement answers (a sequence's next, a size).
    fn scalar<T>(&self, sql: &'static str) -> Result<T, StoreError>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a> + Send + 'static,
    {
        self.call(READ_TIMEOUT, |db| async move {
            let client = db.client().await?;
            let statement = client.prepare_cached(sql).await?;
            Ok(client.query_one(&statement, &[]).await?.get(0))
        })
    }

    /// `count` numbers from `generator` (a sequence's or a function's
    /// next), in one statement, in increasing order.
    fn numbers(&self, generator: &'static str, count: usize) -> Result<Vec<u64>, StoreError> {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let sql = format!("SELECT {generator} FROM generate_series(1, $1::bigint) ORDER BY 1");
        self.call(CHANGE_TIMEOUT, move |db| async move {
            let client = db.client().await?;
            let rows = client.query(&sql, &[&count]).await?;
            Ok(rows.iter().map(|row| row.get::<_, i64>(0) as u64).collect())
        })
    }

    /// Runs one statement of a batch, which also notifies `stale`.
    fn batch(
        &self,
        sql: &'static str,
        params: Vec<Param>,
        stale: &[Stale],
    ) -> Result<(), StoreError> {
        let told = self.shared.notification(false, stale);
        self.call(BATCH_TIMEOUT, |db| async move {
            let client = db.client().await?;
            let statement = client.prepare_cached(sql).await?;
            let mut params = params;
            params.push(text(CHANNEL));
            params.push(text(told));
            client.execute(&statement, &borrowed(&params)).await?;
            Ok(())
        })
    }

    fn counts(&self) -> (usize, usize) {
        let known = {
            let counts = lock(&self.shared.counts);
            (counts.fresh || self.state() == StoreState::Failed)
                .then_some((counts.users, counts.devices))
        };
        if let Some(known) = known {
            return known;
        }
        let counted = self.call(READ_TIMEOUT, |db| async move {
            let client = db.client().await?;
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM devices)",
                    &[],
                )
                .await?;
            Ok((row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize))
        });
        let mut counts = lock(&self.shared.counts);
        if let Ok((users, devices)) = counted {
            *counts = Counts {
                users,
                devices,
                fresh: true,
            };
        }
        (counts.users, counts.devices)
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        // Dropped by an async task, too (the server's shutdown): a runtime
        // may only be dropped there without waiting for its tasks.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What a call sends back to the waiting thread.
enum Event<T> {
    /// Records written so far, of all.
    Wrote(usize, usize),
    /// The answer.
    Done(Result<T, StoreError>),
}

/// Tells the waiting thread how far a change has got.
struct Progress<T>(std::sync::mpsc::Sender<Event<T>>);

impl<T> Progress<T> {
    fn wrote(&self, done: usize, total: usize) {
        let _ = self.0.send(Event::Wrote(done, total));
    }
}

impl Shared {
    /// A connection from the pool.
    async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Moves to `state`, logging the move (once: a state entered again says nothing).
    fn enter(&self, state: StoreState, cause: &str) {
        let mut current = lock(&self.state);
        if *current == state {
            return;
        }
        *current = state;
        match state {
            StoreState::Failed => {
                tracing::error!(
                    state = state.name(),
                    cause,
                    "the database is unreachable: phones seen before are served from memory, others are answered busy; retrying"
                )
            }
            _ => tracing::info!(state = state.name(), cause, "the database answers again"),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks is whole after each statement.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backend for PostgresBackend {
    fn state(&self) -> StoreState {
        *lock(&self.shared.state)
    }

    fn recover(&self) -> StoreState {
        if self.state() == StoreState::Ok {
            return StoreState::Ok;
        }
        // Its answer, or its silence, moves the state.
        let _ = self.scalar::<i32>("SELECT 1");
        self.state()
    }

    fn reopens(&self) -> u64 {
        self.shared.afresh.load(Ordering::SeqCst)
    }

    fn outside_changes(&self) -> u64 {
        self.shared.outside.load(Ordering::SeqCst)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn read_ahead(&self, mac: Mac, sighting: bool) -> BoxFuture<'_, ()> {
        let cached = self.shared.cache.get(Kind::Device, &mac.to_string());
        if cached.is_some() || self.state() == StoreState::Failed {
            return Box::pin(std::future::ready(()));
        }
        let epoch = self.shared.cache.epoch();
        let shared = self.shared.clone();
        let (done, finished) = tokio::sync::oneshot::channel();
        self.handle.spawn(async move {
            // A failure is the render's own reads' to meet and report.
            if let Ok(Ok(found)) =
                tokio::time::timeout(READ_TIMEOUT, ahead::fetch(&shared, mac, sighting)).await
            {
                shared.cache.fill_all(epoch, found);
            }
            let _ = done.send(());
        });
        Box::pin(async move {
            let _ = finished.await;
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        // A committed transaction is durable already.
        Box::pin(std::future::ready(Ok(())))
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn apply(
        &self,
        changes: &[Change],
        entries: &[AuditEntry],
        report: Report<'_>,
    ) -> Result<(), StoreError> {
        let writes = Write::all(changes);
        let total = writes.iter().map(Write::len).sum();
        let stale: Vec<Stale> = changes.iter().flat_map(stale_after).collect();
        let told = self.shared.notification(true, &stale);
        let (audit_ids, audit_docs) = audit_rows(entries);
        self.call_reporting(CHANGE_TIMEOUT, report, |db, progress| async move {
            let mut client = db.client().await?;
            let mut tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::WRITER_LOCK])
                .await?;
            let mut done = 0;
            for write in &writes {
                write.run(&mut tx).await?;
                done += write.len();
                progress.wrote(done, total);
            }
            tx.execute(INSERT_AUDIT, &[&audit_ids, &audit_docs]).await?;
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &told])
                .await?;
            tx.commit().await?;
            Ok(())
        })?;
        self.shared.cache.invalidate(&stale);
        lock(&self.shared.counts).fresh = false;
        Ok(())
    }

    fn start_afresh(&self) -> Result<(), StoreError> {
        self.shared.cache.clear();
        lock(&self.shared.counts).fresh = false;
        self.shared.afresh.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn record_action(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let (ids, docs) = audit_rows(std::slice::from_ref(entry));
        self.call(BATCH_TIMEOUT, |db| async move {
            let client = db.client().await?;
            client.execute(INSERT_AUDIT, &[&ids, &docs]).await?;
            Ok(())
        })
    }

    fn new_audit_ids(&self, count: usize) -> Result<Vec<u64>, StoreError> {
        self.numbers("nextval('audit_ids')", count)
    }

    fn next_user_id(&self) -> Result<UserId, StoreError> {
        Ok(self.scalar::<i64>("SELECT deskboot_next_user_id()")? as UserId)
    }

    fn next_user_ids(&self, count: usize) -> Result<Vec<UserId>, StoreError> {
        self.numbers("deskboot_next_user_id()", count)
    }

    fn count(&self, counted: Counted) -> usize {
        let (users, devices) = self.counts();
        match counted {
            Counted::Users => users,
            Counted::Devices => devices,
        }
    }

    fn size_on_disk(&self) -> u64 {
        if self.reachable().is_err() {
            return 0;
        }
        self.scalar::<i64>("SELECT pg_database_size(current_database())")
            .map_or(0, |size| size.max(0) as u64)
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        self.all("users", "SELECT doc::text FROM users ORDER BY id")
    }

    fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.record(
            Kind::User,
            id.to_string(),
            "SELECT doc::text FROM users WHERE id = $1".into(),
            vec![user_key(id)],
        )
    }

    fn user_by(&self, field: &str, value: &str) -> Result<Option<User>, StoreError> {
        let Some(column) = user_column(field) else {
            return Ok(None);
        };
        self.record(
            Kind::UserBy,
            format!("{field}\t{value}"),
            format!("SELECT doc::text FROM users WHERE {column} = $1"),
            vec![text(value)],
        )
    }

    fn users_by(&self, field: &str, values: &[String]) -> Result<Vec<User>, StoreError> {
        let Some(column) = user_column(field) else {
            return Ok(Vec::new());
        };
        let sql = format!("SELECT doc::text FROM users WHERE {column} = ANY($1)");
        self.any_of("users", sql, values.to_vec())
    }

    fn devices_of(&self, macs: &[Mac]) -> Result<Vec<Device>, StoreError> {
        let macs = macs.iter().map(Mac::to_string).collect();
        let sql = "SELECT doc::text FROM devices WHERE mac = ANY($1)".to_string();
        self.any_of("devices", sql, macs)
    }

    fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.all(
            "devices",
            "SELECT doc::text FROM devices ORDER BY mac COLLATE \"C\"",
        )
    }

    fn device(&self, mac: Mac) -> Result<Option<Device>, StoreError> {
        self.by_key(Kind::Device, ("devices", "mac"), &mac.to_string())
    }

    fn settings(&self, scope: &str) -> Result<Option<Settings>, StoreError> {
        self.by_key(Kind::Settings, ("settings", "scope"), scope)
    }

    fn all_settings(&self) -> Result<Vec<(String, Settings)>, StoreError> {
        self.keyed(
            "settings",
            "SELECT scope, doc::text FROM settings ORDER BY scope COLLATE \"C\"",
        )
    }

    fn layout(&self, name: &str) -> Result<Option<Layout>, StoreError> {
        self.by_key(Kind::Layout, ("layouts", "name"), name)
    }

    fn layouts(&self) -> Result<Vec<Layout>, StoreError> {
        self.all(
            "layouts",
            "SELECT doc::text FROM layouts ORDER BY name COLLATE \"C\"",
        )
    }

    fn template(&self, key: &str) -> Result<Option<TemplateHistory>, StoreError> {
        self.by_key(Kind::Template, ("templates", "key"), key)
    }

    fn templates(&self) -> Result<Vec<(String, TemplateHistory)>, StoreError> {
        self.keyed(
            "templates",
            "SELECT key, doc::text FROM templates ORDER BY key COLLATE \"C\"",
        )
    }

    fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.all("audit", "SELECT doc::text FROM audit ORDER BY id")
    }

    fn recent_audit(&self, count: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        self.reachable()?;
        let rows = self.call(READ_TIMEOUT, move |db| async move {
            let client = db.client().await?;
            let sql = "SELECT doc::text FROM audit ORDER BY id DESC LIMIT $1";
            Ok(client.query(sql, &[&limit]).await?)
        })?;
        rows.iter().map(|row| decode("audit", row.get(0))).collect()
    }

    fn sighting(&self, mac: Mac) -> Result<Option<Sighting>, StoreError> {
        self.by_key(Kind::Sighting, ("sightings", "mac"), &mac.to_string())
    }

    fn record_sightings(&self, sightings: &[(Mac, Sighting)]) -> Result<(), StoreError> {
        let written: Vec<(String, String)> = last_of_each(sightings, |(mac, _)| *mac)
            .into_iter()
            .map(|(mac, sighting)| (mac.to_string(), encode(sighting)))
            .collect();
        let stale: Vec<Stale> = written
            .iter()
            .map(|(mac, _)| Stale::One(Kind::Sighting, mac.clone()))
            .collect();
        let (macs, docs): (Vec<String>, Vec<String>) = written.iter().cloned().unzip();
        self.batch(
            "WITH written AS (INSERT INTO sightings (mac, doc) \
             SELECT mac, doc::json FROM UNNEST($1::text[], $2::text[]) AS t(mac, doc) \
             ON CONFLICT (mac) DO UPDATE SET doc = EXCLUDED.doc) \
             SELECT pg_notify($3, $4)",
            vec![Box::new(macs), Box::new(docs)],
            &stale,
        )?;
        for (mac, doc) in written {
            self.shared
                .cache
                .update(Kind::Sighting, mac, Some(Arc::from(doc)));
        }
        Ok(())
    }

    fn token(&self, name: &str) -> Result<Option<ApiToken>, StoreError> {
        self.by_key(Kind::Token, ("tokens", "name"), name)
    }

    fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.all(
            "tokens",
            "SELECT doc::text FROM tokens ORDER BY name COLLATE \"C\"",
        )
    }

    fn last_good(&self, mac: Mac, file: &str) -> Result<Option<LastGood>, StoreError> {
        // Read once per file and process, or when a render fails: a body,
        // or the mark that there is none, is not worth its memory in the
        // cache beyond the read it was fetched ahead for.
        let cache = &self.shared.cache;
        let found = match cache.take(Kind::LastGood, &last_good_key(mac, file)) {
            Some(found) => found,
            None if cache.take(Kind::LastGoodListed, &mac.to_string()).is_some() => None,
            None => self.read_one(
                "SELECT doc::text FROM last_good WHERE mac = $1 AND file = $2".into(),
                vec![text(mac.to_string()), text(file)],
            )?,
        };
        found.map(|doc| decode("last_good", &doc)).transpose()
    }

    fn record_last_good(&self, files: &[((Mac, String), LastGood)]) -> Result<(), StoreError> {
        let kept = last_of_each(files, |(key, _)| key.clone());
        let stale: Vec<Stale> = kept
            .iter()
            .map(|((mac, file), _)| Stale::One(Kind::LastGood, last_good_key(*mac, file)))
            .collect();
        let macs: Vec<String> = kept.iter().map(|((mac, _), _)| mac.to_string()).collect();
        let names: Vec<String> = kept.iter().map(|((_, file), _)| file.clone()).collect();
        let docs: Vec<String> = kept.iter().map(|(_, good)| encode(good)).collect();
        // A device deleted since it was rendered keeps no file: its
        // passwords go with it (and the foreign key refuses it anyway).
        self.batch(
            "WITH written AS (INSERT INTO last_good (mac, file, doc) \
             SELECT mac, file, doc::json FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(mac, file, doc) \
             WHERE EXISTS (SELECT 1 FROM devices WHERE devices.mac = t.mac) \
             ON CONFLICT (mac, file) DO UPDATE SET doc = EXCLUDED.doc) \
             SELECT pg_notify($4, $5)",
            vec![Box::new(macs), Box::new(names), Box::new(docs)],
            &stale,
        )?;
        self.shared.cache.invalidate(&stale);
        Ok(())
    }

    fn record_discovered(&self, found: &[Discovered]) -> Result<(), StoreError> {
        let found: Vec<Discovered> = found.to_vec();
        self.call(BATCH_TIMEOUT, |db| async move {
            let macs: Vec<String> = found.iter().map(|d| d.mac.to_string()).collect();
            let mut client = db.client().await?;
            let tx = client.transaction().await?;
            // Under the writers' lock: a phone adopted meanwhile is a device.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::WRITER_LOCK])
                .await?;
            let devices: Vec<String> = tx
                .query("SELECT mac FROM devices WHERE mac = ANY($1)", &[&macs])
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            let mut known: HashMap<String, Discovered> = HashMap::new();
            for row in tx
                .query(
                    "SELECT mac, doc::text FROM discovered WHERE mac = ANY($1)",
                    &[&macs],
                )
                .await?
            {
                known.insert(row.get(0), decode("discovered", row.get(1))?);
            }
            // Merged in order: a MAC twice in a batch counts twice.
            let mut merged: HashMap<String, Discovered> = HashMap::new();
            for (found, mac) in found.iter().zip(macs) {
                if devices.contains(&mac) {
                    continue;
                }
                let old = merged.remove(&mac).or_else(|| known.remove(&mac));
                merged.insert(mac, found.merged_with(old));
            }
            let (keys, docs): (Vec<String>, Vec<String>) = merged
                .iter()
                .map(|(mac, merged)| (mac.clone(), encode(merged)))
                .unzip();
            tx.execute(
                "INSERT INTO discovered (mac, doc) \
                 SELECT mac, doc::json FROM UNNEST($1::text[], $2::text[]) AS t(mac, doc) \
                 ON CONFLICT (mac) DO UPDATE SET doc = EXCLUDED.doc",
                &[&keys, &docs],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn discovered(&self) -> Result<Vec<Discovered>, StoreError> {
        self.all(
            "discovered",
            "SELECT doc::text FROM discovered ORDER BY mac COLLATE \"C\"",
        )
    }

    fn discovered_mac(&self, mac: Mac) -> Result<Option<Discovered>, StoreError> {
        let mac = mac.to_string();
        self.reachable()?;
        let doc: Option<String> = self.call(READ_TIMEOUT, |db| async move {
            let client = db.client().await?;
            let row = client
                .query_opt("SELECT doc::text FROM discovered WHERE mac = $1", &[&mac])
                .await?;
            Ok(row.map(|row| row.get(0)))
        })?;
        doc.map(|doc| decode("discovered", &doc)).transpose()
    }

    fn forget_discovered(&self, macs: &[Mac]) -> Result<(), StoreError> {
        let macs: Vec<String> = macs.iter().map(Mac::to_string).collect();
        self.call(BATCH_TIMEOUT, |db| async move {
            let client = db.client().await?;
            client
                .execute("DELETE FROM discovered WHERE mac = ANY($1)", &[&macs])
                .await?;
            Ok(())
        })
    }

    fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_string();
        self.reachable()?;
        self.call(READ_TIMEOUT, |db| async move {
            let client = db.client().await?;
            let row = client
                .query_opt("SELECT value FROM meta WHERE name = $1", &[&name])
                .await?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let (name, value) = (name.to_string(), value.to_vec());
        self.call(BATCH_TIMEOUT, |db| async move {
            let client = db.client().await?;
            client
                .execute(
                    "INSERT INTO meta (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    &[&name, &value],
                )
                .await?;
            Ok(())
        })
    }

    fn claim_meta(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (name, value) = (name.to_string(), value.to_vec());
        self.call(BATCH_TIMEOUT, |db| async move {
            let client = db.client().await?;
            // A no-op update makes RETURNING give the row a conflict kept.
            let row = client
                .query_one(
                    "INSERT INTO meta (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = meta.value RETURNING value",
                    &[&name, &value],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    fn sightings(&self) -> Result<Vec<(Mac, Sighting)>, StoreError> {
        self.listed("SELECT mac, doc::text FROM sightings ORDER BY mac COLLATE \"C\"")?
            .iter()
            .map(|row| {
                Ok((
                    stored_mac("sightings", row.get(0))?,
                    decode("sightings", row.get(1))?,
                ))
            })
            .collect()
    }

    fn all_last_good(&self) -> Result<Vec<LastGoodFile>, StoreError> {
        self.listed(
            "SELECT mac, file, doc::text FROM last_good ORDER BY mac COLLATE \"C\", file COLLATE \"C\"",
        )?
        .iter()
        .map(|row| {
            let mac = stored_mac("last_good", row.get(0))?;
            Ok(((mac, row.get(1)), decode("last_good", row.get(2))?))
        })
        .collect()
    }

    fn last_user_id(&self) -> Result<UserId, StoreError> {
        let last = self
            .scalar::<i64>("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM user_ids")?;
        Ok(last.max(0) as UserId)
    }

    fn skip_user_ids_to(&self, last: UserId) -> Result<(), StoreError> {
        let last = i64::try_from(last).map_err(|_| {
            StoreError::Database(format!("user id {last} is beyond the database's ids"))
        })?;
        self.call(BATCH_TIMEOUT, move |db| async move {
            let client = db.client().await?;
            // setval takes no 0, and must never move the counter back.
            client
                .execute(
                    "SELECT setval('user_ids', $1) FROM user_ids \
                     WHERE $1 > CASE WHEN is_called THEN last_value ELSE 0 END",
                    &[&last],
                )
                .await?;
            Ok(())
        })
    }
}

/// The column of a user's unique `field`, for the fields that have one.
fn user_column(field: &str) -> Option<&'static str> {
    match field {
        "extension" => Some("extension"),
        "sip.username" => Some("sip_username"),
        "email" => Some("email"),
        _ => None,
    }
}

fn encode<T: Serialize>(value: &T) -> String {
    // Our records are plain structs with string keys: serialising cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// A MAC as a table keeps it.
fn stored_mac(table: &'static str, text: &str) -> Result<Mac, StoreError> {
    text.parse().map_err(|e| StoreError::Corrupt {
        tree: table,
        message: format!("MAC {text}: {e}"),
    })
}

fn decode<T: DeserializeOwned>(table: &'static str, doc: &str) -> Result<T, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt {
        tree: table,
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::suite;
    use test_cluster::TestCluster;

    #[test]
    fn the_store_suite_passes_on_postgres() {
        let cluster = TestCluster::shared();
        suite::run(|| {
            Store::on(Box::new(
                PostgresBackend::open(&cluster.database()).unwrap(),
            ))
        });
    }

    #[test]
    fn a_read_ahead_gives_what_the_reads_give() {
        let url = TestCluster::shared().database();
        let writer = Store::on(Box::new(PostgresBackend::open(&url).unwrap()));
        let ada = suite::create(&writer, suite::user("300")).unwrap();
        let mac: Mac = "001565aa0300".parse().unwrap();
        let mut phone = suite::device("001565aa0300");
        phone.lines.push(crate::domain::records::LineAssignment {
            user: ada.id,
            label: None,
        });
        let put = Change::PutDevice {
            new: phone.clone(),
            old: None,
        };
        suite::change(&writer, |_| Ok::<_, StoreError>((vec![put], ()))).unwrap();
        let good = LastGood {
            users: vec![ada.id],
            body: "account.1.user_name = u300".into(),
        };
        let file = "001565aa0300.cfg".to_string();
        writer
            .record_last_good(&[((mac, file.clone()), good.clone())])
            .unwrap();

        let reader = Store::on(Box::new(PostgresBackend::open(&url).unwrap()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(reader.read_ahead(mac, true));
        runtime.block_on(reader.read_ahead("001565aa0399".parse().unwrap(), true));
        assert_eq!(reader.device(mac).unwrap(), Some(phone));
        assert_eq!(reader.user(ada.id).unwrap(), Some(ada));
        assert_eq!(reader.sighting(mac).unwrap(), None);
        assert_eq!(reader.last_good(mac, "other.cfg").unwrap(), None);
        // Taken from the cache by the first read, from the database after.
        assert_eq!(reader.last_good(mac, &file).unwrap(), Some(good.clone()));
        assert_eq!(reader.last_good(mac, &file).unwrap(), Some(good));
        assert_eq!(
            reader.device("001565aa0399".parse().unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let url = TestCluster::shared().database();
        drop(PostgresBackend::open(&url).unwrap());
        TestCluster::shared().sql(&url, "UPDATE deskboot_schema SET version = 99");
        let err = PostgresBackend::open(&url).err().unwrap();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_change_on_one_node_reaches_the_other_nodes_cache() {
        let url = TestCluster::shared().database();
        let (a, b) = (
            Store::on(Box::new(PostgresBackend::open(&url).unwrap())),
            Store::on(Box::new(PostgresBackend::open(&url).unwrap())),
        );
        let mac: Mac = "001565aabbcc".parse().unwrap();
        assert_eq!(b.device(mac).unwrap(), None);
        let before = b.generation();
        let put = Change::PutDevice {
            new: suite::device("001565aabbcc"),
            old: None,
        };
        suite::change(&a, |_| Ok::<_, StoreError>((vec![put], ()))).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while b.generation() == before {
            assert!(std::time::Instant::now() < deadline, "node b heard nothing");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(b.device(mac).unwrap().is_some());
    }
}
