//! Hearing other nodes' changes: one connection per node listens on
//! [`CHANNEL`], and each notification names the node that made the change
//! and what it made stale in every other node's cache.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::{AsyncMessage, NoTls};

use super::cache::Stale;
use super::{CHANNEL, Shared, lock};
use crate::store::StoreState;

/// How soon the listening connection is tried again after it was lost.
const LISTEN_RETRY: Duration = Duration::from_millis(250);
/// PostgreSQL refuses a notification payload of 8000 bytes or more: past
/// this, a notification says "everything of these kinds changed".
const MAX_PAYLOAD: usize = 7000;

impl Shared {
    /// The payload telling other nodes what changed: this node, whether
    /// records changed (their caches render again), and what is stale.
    pub(super) fn notification(&self, records: bool, stale: &[Stale]) -> String {
        let mut payload = format!("{} {}", self.node, u8::from(records));
        for line in stale.iter().map(Stale::line) {
            payload.push('\n');
            payload.push_str(&line);
        }
        if payload.len() <= MAX_PAYLOAD {
            return payload;
        }
        let mut kinds: Vec<Stale> = Vec::new();
        for stale in stale {
            let every = match stale {
                Stale::One(kind, _) | Stale::Every(kind) => Stale::Every(*kind),
                Stale::All => Stale::All,
            };
            if !kinds.contains(&every) {
                kinds.push(every);
            }
        }
        self.notification(records, &kinds)
    }

    /// Another node's notification: forgets what it changed.
    fn heard(&self, payload: &str) {
        let mut lines = payload.lines();
        let Some((node, records)) = lines.next().and_then(|head| head.split_once(' ')) else {
            return;
        };
        if node == self.node {
            return;
        }
        let stale: Vec<Stale> = lines.map(Stale::from_line).collect();
        self.cache.invalidate(&stale);
        if records != "0" {
            lock(&self.counts).fresh = false;
            self.outside.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The listening connection listens: what was read before it did (at
    /// start, or before a lost connection came back) may have changed
    /// unheard, so everything is forgotten.
    fn listening_now(&self) {
        self.cache.clear();
        lock(&self.counts).fresh = false;
        self.outside.fetch_add(1, Ordering::SeqCst);
    }
}

/// Listens for other nodes' changes for as long as the backend lives,
/// connecting again whenever the connection is lost; says on `listening`
/// each time it listens.
pub(super) async fn listen(shared: Arc<Shared>, listening: Sender<()>) {
    loop {
        let ended = match &shared.target.tls {
            Some(tls) => match shared.target.config.connect(tls.clone()).await {
                Ok((client, connection)) => {
                    listen_on(&shared, &client, connection, &listening).await
                }
                Err(e) => Err(e),
            },
            None => match shared.target.config.connect(NoTls).await {
                Ok((client, connection)) => {
                    listen_on(&shared, &client, connection, &listening).await
                }
                Err(e) => Err(e),
            },
        };
        let cause = match ended {
            Ok(()) => "the database closed the connection".to_string(),
            Err(e) => e.to_string(),
        };
        shared.enter(StoreState::Failed, &cause);
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// Listens on one connection until it ends.
async fn listen_on<S, T>(
    shared: &Shared,
    client: &tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    now_listening: &Sender<()>,
) -> Result<(), tokio_postgres::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The connection must be polled for the LISTEN to be answered.
    let listen = format!("LISTEN {CHANNEL}");
    let listening = client.batch_execute(&listen);
    tokio::pin!(listening);
    loop {
        tokio::select! {
            done = &mut listening => { done?; break; }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => shared.heard(n.payload()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
    shared.listening_now();
    // Only the opening waits for it, once.
    let _ = now_listening.send(());
    shared.enter(StoreState::Ok, "listening for changes");
    while let Some(message) = messages.next().await {
        match message? {
            AsyncMessage::Notification(n) => shared.heard(n.payload()),
            _ => continue,
        }
    }
    Ok(())
}
