//! Operational counters, recorded where each event happens and read by
//! `GET /metrics` (`web::metrics`). One registry per `App`, so two Herald
//! instances in one process (the tests) never mix their counts.
//!
//! Label values come from closed sets (verdicts, states, route templates,
//! a few methods): never an address, a token or a raw path, so the number
//! of series stays bounded whatever clients send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::{DeliveryState, SubscriptionState};
use crate::store::deliveries::DeliveryResult;

/// How Herald hands messages over: to an SMTP relay, or as files into
/// `smtp.outbox_dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Smtp,
    File,
}

impl Transport {
    pub fn of(config: &crate::config::Config) -> Transport {
        match config.smtp.url.endpoint() {
            Some(_) => Transport::Smtp,
            None => Transport::File,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Smtp => "smtp",
            Transport::File => "file",
        }
    }
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// A label value from a fixed vocabulary of the code (`Verdict::as_str`,
/// a state's spelling, a route template): `'static`, so nothing a client
/// or a relay sends can become a label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Word(&'static str);

impl EncodeLabelValue for Word {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabel {
    transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    transport: Transport,
    reason: Word,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: Word,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabel {
    method: Word,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FiringLabels {
    kind: Word,
    outcome: Word,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    method: Word,
    /// A route template of the router, or `unmatched`: a closed set too.
    route: String,
    status: u16,
}

/// What a scheduler step ended in, for `herald_schedule_firings_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firing {
    /// A slot of the cron schedule reached this final state.
    Slot(crate::domain::RunState),
    /// A one-off `send --at` reached this final state.
    OneOff(crate::domain::OneOffState),
}

/// Counts of each state, read from the database at scrape time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    pub deliveries: Vec<(DeliveryState, i64)>,
    pub subscriptions: Vec<(SubscriptionState, i64)>,
}

/// Every counter and gauge `GET /metrics` shows.
pub struct Metrics {
    registry: Registry,
    transport: Transport,
    /// This instance's series of `messages_sent` and of the attempt
    /// histogram: its transport never changes, so they are looked up once
    /// here rather than in the family for every result.
    sent: Counter,
    failed: Family<ReasonLabels, Counter>,
    retried: Family<ReasonLabels, Counter>,
    smtp_seconds: Histogram,
    confirmations: Counter,
    unsubscribes: Family<MethodLabel, Counter>,
    firings: Family<FiringLabels, Counter>,
    http: Family<HttpLabels, Counter>,
    deliveries: Family<StateLabel, Gauge>,
    subscriptions: Family<StateLabel, Gauge>,
    /// When the two gauges above were last read from the database. Held
    /// across the read, so a burst of scrapes waits for one query instead
    /// of each sending its own.
    state_read: tokio::sync::Mutex<Option<Instant>>,
}

/// A scrape storm costs the database one pair of grouped counts per this
/// long; Prometheus scrapes every 15 s or more, so it never sees it.
pub const STATE_CACHE: Duration = Duration::from_secs(5);

impl Metrics {
    pub fn new(transport: Transport) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("herald");
        let sent = Family::<TransportLabel, Counter>::default();
        registry.register(
            "messages_sent",
            "Messages the relay accepted (or files written), by transport",
            sent.clone(),
        );
        let failed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "messages_failed",
            "Deliveries that failed for good, by transport and reason (the reply's class)",
            failed.clone(),
        );
        let retried = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "messages_retried",
            "Attempts that failed temporarily and were scheduled again, by transport and reason",
            retried.clone(),
        );
        let smtp_seconds = Family::<TransportLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        registry.register(
            "smtp_attempt_duration_seconds",
            "Time of one delivery attempt, from handing the message over to the reply",
            smtp_seconds.clone(),
        );
        let confirmations = Counter::default();
        registry.register(
            "confirmations_sent",
            "Double opt-in confirmation mails handed to the transport",
            confirmations.clone(),
        );
        let unsubscribes = Family::<MethodLabel, Counter>::default();
        registry.register(
            "unsubscribes",
            "Subscriptions ended by the reader or an editor, by method",
            unsubscribes.clone(),
        );
        let firings = Family::<FiringLabels, Counter>::default();
        registry.register(
            "schedule_firings",
            "Scheduled sends that reached a final state, by kind (slot, one_off) and outcome",
            firings.clone(),
        );
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            http.clone(),
        );
        let deliveries = Family::<StateLabel, Gauge>::default();
        registry.register(
            "deliveries",
            "Deliveries in each state (queued, sending and retry_wait are the queue)",
            deliveries.clone(),
        );
        let subscriptions = Family::<StateLabel, Gauge>::default();
        registry.register(
            "subscriptions",
            "Subscriptions in each state",
            subscriptions.clone(),
        );
        // Created now, so `messages_sent` shows 0 from the start: a
        // dashboard needs the series to exist.
        let label = TransportLabel { transport };
        let sent = sent.get_or_create(&label).clone();
        let smtp_seconds = smtp_seconds.get_or_create(&label).clone();
        Arc::new(Metrics {
            registry,
            transport,
            sent,
            failed,
            retried,
            smtp_seconds,
            confirmations,
            unsubscribes,
            firings,
            http,
            deliveries,
            subscriptions,
            state_read: tokio::sync::Mutex::new(None),
        })
    }

    /// Counts a batch of delivery results once it is written, so the
    /// counters move with the delivery table.
    pub fn delivery_results(&self, batch: &[DeliveryResult]) {
        let transport = self.transport;
        for r in batch {
            let Some(attempt) = &r.attempt else {
                // A skip, a cancellation or a hand-back: no message went out.
                continue;
            };
            let seconds = Duration::from_millis(u64::try_from(attempt.duration_ms).unwrap_or(0));
            self.smtp_seconds.observe(seconds.as_secs_f64());
            match r.state {
                DeliveryState::Sent => {
                    self.sent.inc();
                }
                DeliveryState::Failed => {
                    let reason = r
                        .failure_reason
                        .as_deref()
                        .unwrap_or(attempt.outcome.as_str());
                    self.failed
                        .get_or_create(&ReasonLabels {
                            transport,
                            reason: Word(reason_word(reason)),
                        })
                        .inc();
                }
                DeliveryState::RetryWait => {
                    self.retried
                        .get_or_create(&ReasonLabels {
                            transport,
                            reason: Word(reason_word(&attempt.outcome)),
                        })
                        .inc();
                }
                _ => {}
            }
        }
    }

    pub fn confirmation_sent(&self) {
        self.confirmations.inc();
    }

    /// `method` is the consent record's (`one-click`, `web-page`, `admin`…).
    pub fn unsubscribed(&self, method: Option<&str>) {
        let method = match method {
            Some("one-click") => "one-click",
            Some("web-page") => "web-page",
            Some("admin") => "admin",
            Some("csv") => "csv",
            Some("api") => "api",
            Some(_) => "other",
            None => "unknown",
        };
        self.unsubscribes
            .get_or_create(&MethodLabel {
                method: Word(method),
            })
            .inc();
    }

    pub fn firing(&self, firing: Firing) {
        let (kind, outcome) = match firing {
            Firing::Slot(s) => ("slot", s.as_str()),
            Firing::OneOff(s) => ("one_off", s.as_str()),
        };
        self.firings
            .get_or_create(&FiringLabels {
                kind: Word(kind),
                outcome: Word(outcome),
            })
            .inc();
    }

    /// `route` is the matched route template (`/archive/{slug}`), or
    /// `"unmatched"`: never the raw path.
    pub fn http_request(&self, method: &axum::http::Method, route: &str, status: u16) {
        let method = match method.as_str() {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            "OPTIONS" => "OPTIONS",
            _ => "other",
        };
        self.http
            .get_or_create(&HttpLabels {
                method: Word(method),
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// Whether the state gauges are older than [`STATE_CACHE`]; if so,
    /// `refresh` reads them (one call at a time) and they are set.
    pub async fn refresh_states<F, E>(&self, refresh: F) -> Result<(), E>
    where
        F: AsyncFnOnce() -> Result<StateCounts, E>,
    {
        let mut read = self.state_read.lock().await;
        if read.is_some_and(|at| at.elapsed() < STATE_CACHE) {
            return Ok(());
        }
        let counts = refresh().await?;
        // Every state, so one nobody is in shows 0 rather than no series
        // (or the last value).
        for s in DeliveryState::ALL {
            let n = counts
                .deliveries
                .iter()
                .find(|(state, _)| state == s)
                .map_or(0, |(_, n)| *n);
            self.deliveries
                .get_or_create(&StateLabel {
                    state: Word(s.as_str()),
                })
                .set(n);
        }
        for s in SubscriptionState::ALL {
            let n = counts
                .subscriptions
                .iter()
                .find(|(state, _)| state == s)
                .map_or(0, |(_, n)| *n);
            self.subscriptions
                .get_or_create(&StateLabel {
                    state: Word(s.as_str()),
                })
                .set(n);
        }
        *read = Some(Instant::now());
        Ok(())
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl crate::app::App {
    /// The `GET /metrics` body: the counters, and the state gauges read
    /// from the database at most once per [`STATE_CACHE`].
    pub async fn metrics_text(&self) -> Result<String, crate::store::StoreError> {
        self.metrics
            .refresh_states(async || self.db.state_counts().await)
            .await?;
        Ok(self.metrics.encode())
    }
}

/// The reason label of a failure: a verdict's spelling, or one of the
/// engine's own reasons; anything else (never expected) is `other`.
fn reason_word(reason: &str) -> &'static str {
    crate::delivery::classify::Verdict::ALL
        .iter()
        .map(|v| v.as_str())
        .chain(["expired", "cancelled"])
        .find(|w| *w == reason)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::deliveries::{AttemptRecord, RecipientEffect};

    fn result(state: DeliveryState, outcome: &str, reason: Option<&str>) -> DeliveryResult {
        DeliveryResult {
            delivery_id: 1,
            subscriber_id: 1,
            newsletter_id: 1,
            email: "ann@example.org".into(),
            state,
            attempt: Some(AttemptRecord {
                at: 0,
                duration_ms: 12,
                code: Some(250),
                enhanced: None,
                reply: "250 ok ann@example.org".into(),
                outcome: outcome.into(),
                worker_id: "w".into(),
            }),
            next_attempt_at: None,
            failure_reason: reason.map(str::to_owned),
            effect: RecipientEffect::None,
        }
    }

    #[test]
    fn results_count_by_reason_and_never_show_the_address() {
        let m = Metrics::new(Transport::Smtp);
        m.delivery_results(&[
            result(DeliveryState::Sent, "sent", None),
            result(DeliveryState::Sent, "sent", None),
            result(DeliveryState::Failed, "hard_bounce", Some("hard_bounce")),
            result(DeliveryState::Failed, "transient", Some("expired")),
            result(DeliveryState::RetryWait, "transient", None),
            result(DeliveryState::Failed, "sent", Some("something new")),
        ]);
        let text = m.encode();
        assert!(
            text.contains("herald_messages_sent_total{transport=\"smtp\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "herald_messages_failed_total{transport=\"smtp\",reason=\"hard_bounce\"} 1"
            )
        );
        assert!(
            text.contains("herald_messages_failed_total{transport=\"smtp\",reason=\"expired\"} 1")
        );
        assert!(
            text.contains("herald_messages_failed_total{transport=\"smtp\",reason=\"other\"} 1")
        );
        assert!(
            text.contains(
                "herald_messages_retried_total{transport=\"smtp\",reason=\"transient\"} 1"
            )
        );
        assert!(text.contains("herald_smtp_attempt_duration_seconds_count{transport=\"smtp\"} 6"));
        assert!(!text.contains("example.org"));
    }

    #[test]
    fn unknown_methods_do_not_become_labels() {
        let m = Metrics::new(Transport::File);
        m.unsubscribed(Some("one-click"));
        m.unsubscribed(Some("<script>"));
        m.http_request(&axum::http::Method::GET, "/archive/{slug}", 200);
        let weird = axum::http::Method::from_bytes(b"BREW").unwrap();
        m.http_request(&weird, "unmatched", 404);
        let text = m.encode();
        assert!(text.contains("herald_unsubscribes_total{method=\"one-click\"} 1"));
        assert!(text.contains("herald_unsubscribes_total{method=\"other\"} 1"));
        assert!(text.contains(
            "herald_http_requests_total{method=\"GET\",route=\"/archive/{slug}\",status=\"200\"} 1"
        ));
        assert!(text.contains("method=\"other\",route=\"unmatched\",status=\"404\""));
        assert!(!text.contains("<script>") && !text.contains("BREW"));
    }

    #[tokio::test]
    async fn state_gauges_show_every_state_and_are_cached() {
        let m = Metrics::new(Transport::Smtp);
        let mut reads = 0;
        for _ in 0..3 {
            m.refresh_states(async || {
                reads += 1;
                Ok::<_, ()>(StateCounts {
                    deliveries: vec![(DeliveryState::Queued, 7)],
                    subscriptions: vec![(SubscriptionState::Confirmed, 3)],
                })
            })
            .await
            .unwrap();
        }
        assert_eq!(reads, 1, "a burst of scrapes reads the database once");
        let text = m.encode();
        assert!(
            text.contains("herald_deliveries{state=\"queued\"} 7"),
            "{text}"
        );
        assert!(text.contains("herald_deliveries{state=\"sent\"} 0"));
        assert!(text.contains("herald_subscriptions{state=\"confirmed\"} 3"));
        assert!(text.contains("herald_subscriptions{state=\"pending\"} 0"));
    }
}
