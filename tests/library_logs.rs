//! Library diagnostics stay off the user's terminal: a statement slower
//! than sqlx's alert threshold is logged at DEBUG, never at WARN (the
//! CLI's default filter shows WARN). Runs a real slow statement on the
//! store's own pool, on SQLite and on PostgreSQL when configured, and
//! records every event the process emits.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use support::app::{Backend, TestApp};
use tracing_subscriber::layer::SubscriberExt;

crate::on_each_backend!(a_slow_statement_is_logged_at_debug_not_warn);

/// (level, every field of the event as text) of every event in this process.
type Events = Arc<Mutex<Vec<(tracing::Level, String)>>>;

fn recorded() -> &'static Events {
    static EVENTS: OnceLock<Events> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let events = Events::default();
        // Global, not per thread: sqlx logs SQLite statements from its own
        // worker thread.
        let subscriber = tracing_subscriber::registry().with(Recorder(events.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        events
    })
}

struct Recorder(Events);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut fields = Fields(format!("target={} ", event.metadata().target()));
        event.record(&mut fields);
        if let Ok(mut events) = self.0.lock() {
            events.push((*event.metadata().level(), fields.0));
        }
    }
}

async fn a_slow_statement_is_logged_at_debug_not_warn(backend: Backend) {
    let events = recorded();
    let t = TestApp::spawn(backend).await;
    // A marker in the SQL tells this test's statement from the other backend's.
    let marker = format!("slow_marker_{}", uuid_like());
    let threshold = herald::store::SLOW_STATEMENT;
    // SQLite has no sleep: count further until one run is clearly slow
    // (the machine's speed is unknown); PostgreSQL sleeps.
    let mut n: i64 = 2_000_000;
    loop {
        let sql = match &t.db {
            herald::store::Db::Sqlite(_) => format!(
                "WITH RECURSIVE {marker}(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM {marker} WHERE x < {n}) SELECT COUNT(*) FROM {marker}"
            ),
            herald::store::Db::Postgres(_) => {
                format!("SELECT COUNT(*) FROM (SELECT pg_sleep(1.5)) AS {marker}")
            }
        };
        let started = Instant::now();
        let _: i64 = herald::with_pool!(&t.db, |p| sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(p)
            .await
            .expect("slow statement"));
        if started.elapsed() >= threshold + Duration::from_millis(200) {
            break;
        }
        n *= 2;
        assert!(
            n < 1 << 40,
            "could not make a statement slower than {threshold:?}"
        );
    }

    let ours: Vec<(tracing::Level, String)> = events
        .lock()
        .expect("events")
        .iter()
        .filter(|(_, fields)| fields.contains(&marker))
        .cloned()
        .collect();
    assert!(
        ours.iter()
            .any(|(level, f)| *level == tracing::Level::DEBUG && f.contains("slow statement")),
        "sqlx reports the slow statement at DEBUG: {ours:#?}"
    );
    assert!(
        ours.iter().all(|(level, _)| *level > tracing::Level::INFO),
        "nothing about the statement at INFO or above: {ours:#?}"
    );
}

fn uuid_like() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}
