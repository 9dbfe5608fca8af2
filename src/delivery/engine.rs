//! The delivery engine: claim due deliveries with a lease, send each over a
//! worker's own long-lived connection, write outcomes back in batches.
//!
//! ```text
//! claimer ──jobs (bounded)──▶ N workers ──results (bounded)──▶ flusher ──▶ db
//!    ▲ lease, SKIP LOCKED        │ recheck, personalise, pace, send, classify
//!    └──── completion check ◀────┴───────────────────────────── batch write
//! ```
//! Shutdown: the claimer stops, each worker finishes the message it is
//! sending (a worker waiting on the pacer stops waiting), the flusher writes
//! what it has, and claims not yet sent are handed back (`release_claims`),
//! so a restart resumes exactly there.
//!
//! Supervision: a database error in the claimer or the flusher is logged and
//! retried with capped exponential backoff (`Outage`), reported to
//! `/readyz`, and only after `delivery.max_outage` ends the run with an
//! error, so that the process exits non-zero and its supervisor restarts it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::classify::{Verdict, classify};
use super::policy::{PauseCause, recipient_effect};
use super::relay_watch::RelayWatch;
use super::retry::RetryPolicy;
use crate::app::App;
use crate::content::millis_to_fixed;
use crate::domain::{
    DeliveryState, IssueStatus, Millis, SubscriptionState, ms_to_datetime, now_ms,
};
use crate::mail::{MailConnection, SendFailure, SmtpReply};
use crate::readiness::{ComponentState, Readiness};
use crate::render::{MessageTemplate, Recipient};
use crate::store::deliveries::{AttemptRecord, ClaimedDelivery, DeliveryResult, RecipientEffect};
use crate::store::{Newsletter, StoreError};
use crate::subscribers::millis;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot prepare issue {issue_id} for sending: {message}")]
    Prepare { issue_id: i64, message: String },
    #[error(
        "delivery gave up: the database has failed for {lasted} (delivery.max_outage = {max}); last error: {last}. \
         Check that the database is reachable; Herald exits so that its supervisor (systemd, Kubernetes) restarts it"
    )]
    Outage {
        lasted: String,
        max: String,
        last: String,
    },
    #[error(
        "stopping: {results} delivery outcomes could not be written within {}s ({last}); \
         those deliveries stay claimed until their lease (delivery.lease) lapses, then are sent again",
        SHUTDOWN_FLUSH_GRACE.as_secs()
    )]
    UnflushedAtShutdown { results: usize, last: String },
}

#[derive(Clone)]
pub struct EngineOptions {
    pub worker_id: String,
    pub concurrency: usize,
    pub batch_size: i64,
    pub lease: Duration,
    pub flush_interval: Duration,
    pub poll_interval: Duration,
    /// Messages per second for this process; 0 = unlimited.
    pub rate: f64,
    pub rate_per_hour: u64,
    pub rate_per_day: u64,
    pub retry: RetryPolicy,
    /// How long database errors are retried before the run ends with an error.
    pub max_outage: Duration,
    /// How long the relay may give no answer before the issue pauses.
    pub relay_down_pause_after: Duration,
}

impl EngineOptions {
    pub fn from_app(app: &App) -> Result<EngineOptions, EngineError> {
        let c = &app.config;
        Ok(EngineOptions {
            worker_id: worker_id(),
            concurrency: c.smtp.concurrency,
            batch_size: i64::from(c.delivery.batch_size),
            lease: c.delivery.lease.0,
            flush_interval: c.delivery.flush_interval.0,
            poll_interval: Duration::from_millis(500),
            rate: c.smtp.rate,
            rate_per_hour: c.smtp.rate_per_hour,
            rate_per_day: c.smtp.rate_per_day,
            retry: RetryPolicy {
                schedule: c.delivery.retry_schedule.steps().to_vec(),
                give_up_after: c.delivery.give_up_after.0,
                jitter: 0.1,
            },
            max_outage: c.delivery.max_outage.0,
            relay_down_pause_after: c.delivery.relay_down_pause_after.0,
        })
    }
}

/// A name unique to this process, recorded on claims and attempts.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "herald".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// When the engine stops by itself.
#[derive(Debug, Clone, Copy)]
pub enum RunUntil {
    /// Until shutdown (`herald serve`).
    Shutdown,
    /// Until this issue has no open delivery, or shutdown (`herald send --wait`).
    IssueComplete(i64),
}

/// One issue ready to personalise: rendered and prepared once.
struct PreparedIssue {
    template: MessageTemplate,
    newsletter: Arc<Newsletter>,
    number: i64,
    envelope_from: String,
    mailto: String,
    from_domain: String,
}

/// A claim on its way to a worker, with its standing as read by the claim.
struct Job {
    delivery: ClaimedDelivery,
    read_at: Instant,
}

/// How many jobs a worker takes from the queue at once, and so reads again
/// in one `delivery_details` query when their reading has grown stale.
const READ_AHEAD: usize = 8;

/// How old a worker's reading of a claim may be when its message goes to
/// SMTP; older ones are read again first. This is the bound on how long a
/// pause, a cancel or an unsubscribe takes to stop messages not yet handed
/// to SMTP (plus the message each connection has in hand).
pub const RECHECK_AFTER: Duration = Duration::from_millis(100);

/// The first wait of a claimer whose queue is empty while its own last
/// messages are still going out (see `Round::Draining`).
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// How long a stopping engine tries to hand its unsent claims back.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping engine retries writing outcomes through an outage.
const SHUTDOWN_FLUSH_GRACE: Duration = Duration::from_secs(20);

/// The name the engine reports under in `Readiness`.
pub const READINESS_COMPONENT: &str = "delivery";

pub struct Engine {
    app: App,
    opts: EngineOptions,
    prepared: Mutex<HashMap<i64, Arc<PreparedIssue>>>,
    /// Deliveries this process holds (queued for a worker or being sent).
    /// If renewal lags and a lease lapses, the claim query can return one of
    /// them again; it must not be handed to a second worker. Only these
    /// leases are renewed.
    held: Mutex<HashSet<i64>>,
    /// Set when this process may have claims in the database it no longer
    /// holds (a hand-back failed, or a claim's reply was lost in an outage):
    /// the claimer then hands back every claim of this worker not in `held`,
    /// retrying with its backoff until the database answers.
    orphans: AtomicBool,
    pacer: Pacer,
    readiness: Readiness,
    relay: RelayWatch,
    /// Cancelled once the claimer is done: a worker waiting out a throttle stops waiting,
    /// so a run whose work is over ends at once.
    claiming_over: CancellationToken,
}

/// What one round of the claimer did.
enum Round {
    /// Claimed some deliveries and queued them for the workers.
    Claimed,
    /// Nothing due: wait a poll interval.
    Idle,
    /// Nothing due, but this process still has messages going out: look
    /// again soon, so that `send --wait` ends within a few milliseconds of
    /// the last result rather than up to a poll interval later.
    Draining,
    /// The run is over (shutdown, the awaited issue is complete, no workers).
    Done,
}

impl Engine {
    pub fn new(app: App, opts: EngineOptions) -> Arc<Engine> {
        let pacer = Pacer::new(opts.rate);
        let readiness = app.readiness.clone();
        let relay_name = match app.config.smtp.url.endpoint() {
            Some(e) => e.describe(),
            None => format!("(file outbox {})", app.config.smtp.outbox_dir.display()),
        };
        let relay = RelayWatch::new(relay_name, opts.relay_down_pause_after);
        Arc::new(Engine {
            app,
            opts,
            prepared: Mutex::new(HashMap::new()),
            held: Mutex::new(HashSet::new()),
            orphans: AtomicBool::new(false),
            pacer,
            readiness,
            relay,
            claiming_over: CancellationToken::new(),
        })
    }

    pub fn worker_id(&self) -> &str {
        &self.opts.worker_id
    }

    fn report(&self, state: ComponentState) {
        self.readiness.report(READINESS_COMPONENT, state);
    }

    /// Runs until `until` is met or `shutdown` fires; always leaves no
    /// claim of this process behind (unless the database is gone for good,
    /// and then the leases lapse once this process has exited).
    pub async fn run(
        self: Arc<Self>,
        until: RunUntil,
        shutdown: CancellationToken,
    ) -> Result<(), EngineError> {
        self.report(ComponentState::Starting);
        let concurrency = self.opts.concurrency.max(1);
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(concurrency * READ_AHEAD);
        let jobs_rx = Arc::new(tokio::sync::Mutex::new(jobs_rx));
        let (results_tx, results_rx) =
            // Small on purpose: a result in here is not written yet, so a
            // crash loses its record (the message is sent again). The flusher
            // takes from it even while writing, so workers rarely wait on it.
            mpsc::channel::<DeliveryResult>(concurrency);
        let stop_workers = shutdown.child_token();

        // The claimer and the workers stop on shutdown, and when the flusher
        // gives up: a message sent now could not be recorded, and would be
        // sent again by whoever claims it next.
        let stop_claiming = shutdown.child_token();
        let flusher = {
            let engine = self.clone();
            let stop = [stop_claiming.clone(), stop_workers.clone()];
            let shutdown_seen = shutdown.clone();
            tokio::spawn(async move {
                let flushed = engine.flush_results(results_rx, shutdown_seen).await;
                if flushed.is_err() {
                    stop.iter().for_each(CancellationToken::cancel);
                }
                flushed
            })
        };
        let stop_renewing = CancellationToken::new();
        let renewer = tokio::spawn(self.clone().renew_leases(stop_renewing.clone()));
        let mut workers = Vec::with_capacity(concurrency);
        for n in 0..concurrency {
            workers.push(tokio::spawn(self.clone().work(
                n,
                jobs_rx.clone(),
                results_tx.clone(),
                stop_workers.clone(),
            )));
        }
        drop(results_tx);
        let claimed = self.clone().claim_loop(until, jobs_tx, stop_claiming).await;
        self.claiming_over.cancel();
        if claimed.is_err() {
            // The claimer gave up: workers stop too rather than work through
            // their queue against a database that is not there.
            stop_workers.cancel();
        }
        for w in workers {
            let _ = w.await;
        }
        let flushed = flusher.await.unwrap_or(Ok(()));
        stop_renewing.cancel();
        let _ = renewer.await;
        // Bounded: with the database gone the leases lapse anyway, and a
        // stopping process must not hang on it.
        let released = tokio::time::timeout(
            RELEASE_TIMEOUT,
            self.app.db.release_claims(&self.opts.worker_id, now_ms()),
        )
        .await
        .unwrap_or(Err(StoreError::TimedOut(RELEASE_TIMEOUT)));
        match &released {
            Ok(n) if *n > 0 => {
                tracing::info!(released = n, "handed back deliveries claimed but not sent")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "could not hand back unsent claims; their leases lapse and another process takes them")
            }
        }
        let outcome = claimed
            .and(flushed)
            .and(released.map(|_| ()).map_err(Into::into));
        self.report(match &outcome {
            Ok(()) => ComponentState::Stopped,
            Err(e) => ComponentState::Failed(e.to_string()),
        });
        outcome
    }

    /// Claims batches until the run is over. A database error does not end
    /// it: the round is retried with backoff until `delivery.max_outage`.
    async fn claim_loop(
        self: Arc<Self>,
        until: RunUntil,
        jobs: mpsc::Sender<Job>,
        shutdown: CancellationToken,
    ) -> Result<(), EngineError> {
        let mut outage = Outage::new(self.opts.max_outage);
        let mut last_completion_check = Instant::now() - Duration::from_secs(60);
        // Doubles while draining (a stuck connection can hold a message for
        // its whole timeout), up to the poll interval.
        let mut drain_wait = DRAIN_POLL;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            // A round waiting on an unresponsive database is abandoned on
            // shutdown; whatever it claimed is handed back when the run ends.
            let round = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                round = self.claim_round(until, &jobs, &shutdown, &mut last_completion_check) => round,
            };
            let pause = match round {
                Ok(round) => {
                    if outage.recovered() {
                        tracing::info!("the database answers again; delivery continues");
                    }
                    self.report(ComponentState::Running);
                    match round {
                        Round::Claimed => {
                            drain_wait = DRAIN_POLL;
                            continue;
                        }
                        Round::Idle => self.opts.poll_interval,
                        Round::Draining => {
                            let wait = drain_wait;
                            drain_wait = (drain_wait * 2).min(self.opts.poll_interval);
                            wait
                        }
                        Round::Done => return Ok(()),
                    }
                }
                Err(e) => {
                    // Whatever this round claimed may be lost with its reply.
                    self.orphans.store(true, Ordering::SeqCst);
                    match outage.failed(&e) {
                        Ok(wait) => {
                            tracing::warn!(error = %e, retry_in = ?wait, "delivery: database error; retrying");
                            self.report(ComponentState::Degraded(format!(
                                "database error, retrying: {e}"
                            )));
                            wait
                        }
                        Err(gave_up) => {
                            tracing::error!(error = %gave_up, "delivery stops");
                            return Err(gave_up);
                        }
                    }
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn claim_round(
        &self,
        until: RunUntil,
        jobs: &mpsc::Sender<Job>,
        shutdown: &CancellationToken,
        last_completion_check: &mut Instant,
    ) -> Result<Round, EngineError> {
        let db = &self.app.db;
        if self.orphans.load(Ordering::SeqCst) {
            // Reset before reading `held`: a worker that loses a claim after
            // this sets the flag again for the next round.
            self.orphans.store(false, Ordering::SeqCst);
            let keep: Vec<i64> = self.held_ids();
            let now = now_ms();
            match db
                .release_all_but(&self.opts.worker_id, &keep, now, now)
                .await
            {
                Ok(n) if n > 0 => {
                    tracing::info!(
                        released = n,
                        "handed back claims this process no longer held"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    self.orphans.store(true, Ordering::SeqCst);
                    return Err(e.into());
                }
            }
        }
        let limit = self.opts.batch_size.min(self.window_allowance().await?);
        // Taken before the claim reads the deliveries, so the age a worker sees is never less
        // than the reading's.
        let read_at = Instant::now();
        let now = now_ms();
        let claimed = if limit > 0 {
            db.claim_due_deliveries(
                &self.opts.worker_id,
                now,
                now + millis(self.opts.lease),
                limit,
            )
            .await?
        } else {
            Vec::new()
        };
        if claimed.is_empty() {
            if !self
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                // Check completion as soon as the last of them is written.
                *last_completion_check = Instant::now() - self.opts.poll_interval;
                return Ok(Round::Draining);
            }
            if last_completion_check.elapsed() >= self.opts.poll_interval {
                for issue_id in db.sending_issue_ids().await? {
                    if db.complete_issue_if_done(issue_id, now_ms()).await? {
                        tracing::info!(issue_id, "issue delivered: no delivery left open");
                    }
                }
                // The completion check above has just marked the issue
                // `sent` if nothing is open; anything but `sending` ends the wait.
                if let RunUntil::IssueComplete(issue_id) = until
                    && db.issue_status(issue_id).await? != IssueStatus::Sending
                {
                    return Ok(Round::Done);
                }
                *last_completion_check = Instant::now();
            }
            return Ok(Round::Idle);
        }
        for delivery in claimed {
            if !self.hold(delivery.id) {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Round::Done),
                sent = jobs.send(Job { delivery, read_at }) => if sent.is_err() { return Ok(Round::Done) },
            }
        }
        Ok(Round::Claimed)
    }

    /// Keeps this worker's claims alive: a batch waiting in the queue may take
    /// longer than the lease to send, and an expired claim is claimed again
    /// (by another process, or by this one) and sent twice. Only a dead
    /// process's claims expire, and claims this process lost track of.
    async fn renew_leases(self: Arc<Self>, stop: CancellationToken) {
        let every = (self.opts.lease / 3).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let held: Vec<i64> = self.held_ids();
            if held.is_empty() {
                continue;
            }
            if let Err(e) = self
                .app
                .db
                .renew_claims(
                    &self.opts.worker_id,
                    &held,
                    now_ms() + millis(self.opts.lease),
                )
                .await
            {
                tracing::warn!(error = %e, "could not renew delivery leases");
            }
        }
    }

    /// How many more messages the hourly/daily caps allow now (all processes).
    async fn window_allowance(&self) -> Result<i64, StoreError> {
        let mut allowance = i64::MAX;
        for (cap, window) in [
            (self.opts.rate_per_hour, 3_600_000),
            (self.opts.rate_per_day, 86_400_000),
        ] {
            if cap > 0 {
                let sent = self.app.db.sent_in_window(now_ms() - window).await?;
                allowance = allowance.min(cap as i64 - sent);
            }
        }
        Ok(allowance.max(0))
    }

    async fn work(
        self: Arc<Self>,
        n: usize,
        jobs: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
        results: mpsc::Sender<DeliveryResult>,
        stop: CancellationToken,
    ) {
        let mut conn: Option<MailConnection> = None;
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut throttle = Duration::ZERO;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_rng(&mut rand::rng());
        // Claims taken from the queue, in claim order, and when the oldest
        // reading among them was made.
        let mut ready: VecDeque<ClaimedDelivery> = VecDeque::with_capacity(READ_AHEAD);
        let mut read_at = Instant::now();
        loop {
            // A worker with nothing in hand takes the next few jobs, as the claimer read them;
            // they are read again, after the pacer and the relay gate, only if that reading is
            // too old by the time they would go out.
            if ready.is_empty() {
                let taken = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    taken = take_jobs(&jobs) => taken,
                };
                let Some(oldest) = taken.first().map(|j| j.read_at) else {
                    break;
                };
                read_at = taken.iter().map(|j| j.read_at).fold(oldest, Instant::min);
                ready.extend(taken.into_iter().map(|j| j.delivery));
            }
            // With a slow rate the wait is long (1/rate seconds per message and
            // worker): shutdown must not sit it out.
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = self.pacer.wait() => {}
            }
            // Until the relay has taken a message, one attempt at a time (`RelayWatch`). Held
            // until the outcome is observed and any pause written; a worker that waited for
            // it reads its claims again, so that it sees the issue paused by the one before.
            let gate = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                gate = self.relay.enter() => gate,
            };
            if gate.is_some() || read_at.elapsed() > RECHECK_AFTER {
                let ids = ready.drain(..).map(|d| d.id).collect();
                read_at = Instant::now();
                match self.read_again(ids, &stop).await {
                    Ok(Some(read)) => ready = read,
                    Ok(None) => break,
                    Err(()) => {
                        tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
                        continue;
                    }
                }
            }
            let Some(d) = ready.pop_front() else {
                continue;
            };
            let delivery_id = d.id;
            let held = Held(&self.held, delivery_id);
            let result = match self.deliver(d, &mut conn, &mut buf, &mut rng).await {
                // Not sent: no longer ours (another worker holds the claim
                // now), or shutdown came while pacing (the claim is handed
                // back with the others when the run ends).
                Ok(None) => continue,
                Ok(Some((result, verdict))) => {
                    if verdict.is_some_and(|v| v.slows_connection()) {
                        throttle =
                            (throttle * 2).clamp(Duration::from_secs(5), Duration::from_secs(300));
                        tracing::warn!(worker = n, pause = ?throttle, reply = ?result.attempt.as_ref().map(|a| &a.reply), "the server asks us to slow down; this connection pauses");
                    } else if verdict == Some(Verdict::Sent) {
                        throttle = Duration::ZERO;
                    }
                    result
                }
                Err(e) => {
                    // Hand the claim back: soon after a database error (the
                    // delivery itself is fine), in a minute otherwise.
                    tracing::error!(worker = n, error = %e, "could not attempt a delivery");
                    let now = now_ms();
                    let due = match e {
                        EngineError::Store(_) => now + 2_000,
                        _ => now + 60_000,
                    };
                    if let Err(e) = self
                        .app
                        .db
                        .release_claim(delivery_id, &self.opts.worker_id, due, now)
                        .await
                    {
                        // No longer held, so no longer renewed: the claimer
                        // hands it back once the database answers (or its
                        // lease lapses), never kept alive forever.
                        drop(held);
                        self.orphans.store(true, Ordering::SeqCst);
                        tracing::warn!(worker = n, error = %e, "could not hand the claim back yet; it is handed back once the database answers");
                    }
                    tokio::select! { _ = stop.cancelled() => break, _ = tokio::time::sleep(Duration::from_secs(1)) => {} }
                    continue;
                }
            };
            // Still held until the flusher has written the outcome.
            std::mem::forget(held);
            if results.send(result).await.is_err() {
                break;
            }
            drop(gate);
            // The pause a throttling server asked for comes before taking the next job: what
            // this connection read ahead goes back to the queue so that a connection not asked
            // to slow down sends it meanwhile, and the pause is cut short when the run is over,
            // so that the end of `send --wait` never sits it out.
            if !throttle.is_zero() {
                self.hand_back_read_ahead(&mut ready).await;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = self.claiming_over.cancelled() => {}
                    _ = tokio::time::sleep(throttle) => {}
                }
            }
        }
        if let Some(c) = conn {
            c.close().await;
        }
    }

    /// Reads the standing of `ids` (claims this worker holds) again, in one
    /// query: an unsubscribe or a pause must stop every message not yet
    /// handed to SMTP, and a claim whose lease ran out may belong to another
    /// worker by now. `Ok(None)`: stop came (nothing was sent; the claims
    /// are handed back when the run ends). `Err(())`: the database failed;
    /// the claims were handed back (or flagged as orphans).
    async fn read_again(
        &self,
        ids: Vec<i64>,
        stop: &CancellationToken,
    ) -> Result<Option<VecDeque<ClaimedDelivery>>, ()> {
        // Nothing has gone to SMTP yet, so a read stuck on an unresponsive
        // database is abandoned on shutdown (the claims are handed back).
        let read = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(None),
            read = self.app.db.delivery_details(&ids) => read,
        };
        match read {
            Ok(mut details) => {
                let order: HashMap<i64, usize> =
                    ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
                details.sort_by_key(|d| order.get(&d.id).copied().unwrap_or(usize::MAX));
                // A claim whose row is gone is no longer held.
                if details.len() < ids.len() {
                    let found: HashSet<i64> = details.iter().map(|d| d.id).collect();
                    let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                    for id in ids.iter().filter(|id| !found.contains(id)) {
                        held.remove(id);
                    }
                }
                Ok(Some(details.into()))
            }
            Err(e) => {
                // Hand the claims back, soon: the deliveries themselves are fine.
                tracing::error!(error = %e, claims = ids.len(), "could not read deliveries before sending");
                let now = now_ms();
                let released = self
                    .app
                    .db
                    .release_claims_by_id(&self.opts.worker_id, &ids, now + 2_000, now)
                    .await;
                let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                for id in &ids {
                    held.remove(id);
                }
                if let Err(e) = released {
                    // No longer held, so no longer renewed: the claimer
                    // hands them back once the database answers (or their
                    // leases lapse), never kept alive forever.
                    self.orphans.store(true, Ordering::SeqCst);
                    tracing::warn!(error = %e, "could not hand the claims back yet; they are handed back once the database answers");
                }
                Err(())
            }
        }
    }

    /// Before a connection pauses: the claims it read ahead go back to the
    /// queue (due now) for the other connections, rather than wait out the pause.
    async fn hand_back_read_ahead(&self, ready: &mut VecDeque<ClaimedDelivery>) {
        if ready.is_empty() {
            return;
        }
        let ids: Vec<i64> = ready.drain(..).map(|d| d.id).collect();
        let now = now_ms();
        let released = self
            .app
            .db
            .release_claims_by_id(&self.opts.worker_id, &ids, now, now)
            .await;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for id in &ids {
            held.remove(id);
        }
        if released.is_err() {
            // Handed back by the claimer once the database answers.
            self.orphans.store(true, Ordering::SeqCst);
        }
    }

    /// Attempts one delivery, read just before (by the claim or `read_again`); returns the
    /// outcome to record and the verdict (None for a skip or a hand-back),
    /// or None when the claim is no longer ours.
    async fn deliver(
        &self,
        d: ClaimedDelivery,
        conn: &mut Option<MailConnection>,
        buf: &mut Vec<u8>,
        rng: &mut impl rand::Rng,
    ) -> Result<Option<(DeliveryResult, Option<Verdict>)>, EngineError> {
        if d.state != DeliveryState::Sending
            || d.worker_id.as_deref() != Some(self.opts.worker_id.as_str())
        {
            tracing::warn!(delivery = d.id, state = %d.state, "claim lost (lease expired); not sending");
            return Ok(None);
        }
        match d.issue_status {
            IssueStatus::Sending => {}
            IssueStatus::Cancelled => {
                return Ok(Some((
                    self.result(
                        &d,
                        DeliveryState::Cancelled,
                        None,
                        None,
                        Some("cancelled".into()),
                        RecipientEffect::None,
                    ),
                    None,
                )));
            }
            // Paused (or otherwise stopped): hand the claim back untouched.
            IssueStatus::Paused
            | IssueStatus::Draft
            | IssueStatus::Scheduled
            | IssueStatus::Sent => {
                return Ok(Some((self.hand_back(&d), None)));
            }
        }
        if let Some(reason) = skip_reason(&d) {
            return Ok(Some((
                self.result(
                    &d,
                    DeliveryState::Skipped,
                    None,
                    None,
                    Some(reason.into()),
                    RecipientEffect::None,
                ),
                None,
            )));
        }
        let issue = self.prepared(d.issue_id).await?;
        let message_id = format!(
            "<issue-{}.{}@{}>",
            issue.number,
            self.app.secret.subscriber_tag(d.subscriber_id),
            issue.from_domain
        );
        let unsubscribe_url = self
            .app
            .unsubscribe_url(d.subscriber_id, issue.newsletter.id);
        buf.clear();
        issue.template.personalise_into(
            &Recipient {
                to: &d.email,
                name: d.name.as_deref(),
                message_id: &message_id,
                unsubscribe_url: &unsubscribe_url,
                unsubscribe_mailto: Some(&issue.mailto),
            },
            buf,
        );
        let bytes: &[u8] = buf;
        // The VERP return path (bounce.domain), the same on every attempt.
        let verp = self.app.verp_address(crate::domain::BounceTag::Delivery {
            issue_id: d.issue_id,
            subscriber_id: d.subscriber_id,
        });
        let envelope_from = verp.as_deref().unwrap_or(&issue.envelope_from);
        let started = Instant::now();
        let attempt_at = now_ms();
        let outcome = match conn {
            Some(c) => c.send_raw(envelope_from, &d.email, bytes).await,
            None => match self.app.mailer.connect().await {
                Ok(c) => {
                    conn.insert(c)
                        .send_raw(envelope_from, &d.email, bytes)
                        .await
                }
                Err(e) => Err(e),
            },
        };
        let verdict = classify(&outcome);
        // The reply's text often quotes the address: at info only its code.
        let code = match &outcome {
            Ok(r) => Some(r.code),
            Err(e) => e.reply().map(|r| r.code),
        };
        tracing::info!(issue = issue.number, newsletter = issue.newsletter.id, delivery = d.id, subscriber = d.subscriber_id, to = %crate::domain::email::RedactedAddress(&d.email), verdict = verdict.as_str(), code, took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), "delivery attempt");
        if let Some(cause) = self.relay.observe(d.issue_id, verdict, &outcome) {
            self.pause_issue(d.issue_id, issue.number, &cause).await;
        }
        if verdict.hands_delivery_back() {
            // The relay refused us, not this recipient: nothing is held against the delivery
            // (attempt count, retry window); the reply is kept in the issue's pause reason.
            return Ok(Some((self.hand_back(&d), Some(verdict))));
        }
        let attempt = attempt_record(
            &outcome,
            verdict,
            attempt_at,
            started.elapsed(),
            &self.opts.worker_id,
        );
        let first = d.first_attempt_at.unwrap_or(attempt_at);
        let (state, next, reason) = if verdict == Verdict::Sent {
            (DeliveryState::Sent, None, None)
        } else if verdict.is_final() {
            if verdict == Verdict::MessageDefect {
                tracing::error!(reply = %attempt.reply, "the server refused the message itself; check the issue's headers and content");
            }
            (DeliveryState::Failed, None, Some(verdict.as_str()))
        } else {
            let failed_attempts = u32::try_from(d.attempts + 1).unwrap_or(u32::MAX);
            match self.opts.retry.next_attempt(
                failed_attempts,
                ms_to_datetime(first),
                Utc::now(),
                rng,
            ) {
                Some(at) => (DeliveryState::RetryWait, Some(at.timestamp_millis()), None),
                None => (DeliveryState::Failed, None, Some("expired")),
            }
        };
        let retries_expired = state == DeliveryState::Failed && !verdict.is_final();
        let effect = recipient_effect(verdict, retries_expired);
        Ok(Some((
            self.result(
                &d,
                state,
                Some(attempt),
                next,
                reason.map(str::to_owned),
                effect,
            ),
            Some(verdict),
        )))
    }

    /// The delivery back to the queue untouched, due at once (its issue's status decides
    /// when it is claimed again).
    fn hand_back(&self, d: &ClaimedDelivery) -> DeliveryResult {
        let state = if d.attempts == 0 {
            DeliveryState::Queued
        } else {
            DeliveryState::RetryWait
        };
        self.result(d, state, None, Some(now_ms()), None, RecipientEffect::None)
    }

    /// Pauses an issue with the reason; the first pause wins, the others change nothing.
    async fn pause_issue(&self, issue_id: i64, number: i64, cause: &PauseCause) {
        let reason = cause.reason(number);
        match self.app.db.pause_issue_with_reason(issue_id, &reason).await {
            Ok(true) => tracing::error!(issue = number, %reason, "issue paused"),
            Ok(false) => {}
            Err(e) => {
                // The next outcome with the same cause tries again.
                tracing::error!(issue = number, error = %e, %reason, "could not pause the issue")
            }
        }
    }

    fn result(
        &self,
        d: &ClaimedDelivery,
        state: DeliveryState,
        attempt: Option<AttemptRecord>,
        next_attempt_at: Option<Millis>,
        failure_reason: Option<String>,
        effect: RecipientEffect,
    ) -> DeliveryResult {
        DeliveryResult {
            delivery_id: d.id,
            subscriber_id: d.subscriber_id,
            newsletter_id: d.newsletter_id,
            email: d.email.clone(),
            state,
            attempt,
            next_attempt_at,
            failure_reason,
            effect,
        }
    }

    async fn prepared(&self, issue_id: i64) -> Result<Arc<PreparedIssue>, EngineError> {
        if let Some(p) = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&issue_id)
        {
            return Ok(p.clone());
        }
        let issue = self.app.db.issue_by_id(issue_id).await?;
        let newsletter = Arc::new(self.app.db.newsletter_by_id(issue.newsletter_id).await?);
        // The Date header is the moment sending began: fixed, so retries are byte-identical.
        let date = millis_to_fixed(issue.send_started_at.unwrap_or(issue.created_at));
        let headers = self.app.message_headers(&newsletter, &issue, date, false);
        let template = MessageTemplate::prepare(&App::rendered(&issue), &headers).map_err(|e| {
            EngineError::Prepare {
                issue_id,
                message: e.to_string(),
            }
        })?;
        let prepared = Arc::new(PreparedIssue {
            template,
            number: issue.number,
            envelope_from: self.app.envelope_from(&newsletter),
            mailto: self.app.unsubscribe_mailto(&newsletter),
            from_domain: newsletter.from().address.domain().to_owned(),
            newsletter,
        });
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(issue_id, prepared.clone());
        Ok(prepared)
    }

    /// Writes results as a group commit: as soon as a result is waiting
    /// and the previous write is done, it writes what has gathered, after at
    /// most `flush_interval` of waiting for more (up to `batch_size`). While
    /// a batch is being written the next one gathers, so workers do not wait
    /// on the database. A result accepted by the relay but not yet written
    /// is sent again after a crash; this keeps that window to one write plus
    /// `flush_interval` (it was a fixed 200 ms). A batch that cannot be
    /// written is retried until `delivery.max_outage`; it is never dropped
    /// while the process lives.
    async fn flush_results(
        self: Arc<Self>,
        mut results: mpsc::Receiver<DeliveryResult>,
        shutdown: CancellationToken,
    ) -> Result<(), EngineError> {
        let max = usize::try_from(self.opts.batch_size).unwrap_or(1).max(1);
        let mut gathering: Vec<DeliveryResult> = Vec::with_capacity(max);
        let mut closed = false;
        loop {
            if gathering.is_empty() {
                if closed {
                    return Ok(());
                }
                match results.recv().await {
                    Some(r) => gathering.push(r),
                    None => return Ok(()),
                }
            }
            if !closed && gathering.len() < max {
                let window = tokio::time::sleep(self.opts.flush_interval);
                tokio::pin!(window);
                while gathering.len() < max {
                    tokio::select! {
                        biased;
                        r = results.recv() => match r {
                            Some(r) => gathering.push(r),
                            None => { closed = true; break }
                        },
                        _ = &mut window => break,
                    }
                }
            }
            let batch = std::mem::replace(&mut gathering, Vec::with_capacity(max));
            {
                let write = self.write_batch(&batch, &shutdown);
                tokio::pin!(write);
                loop {
                    tokio::select! {
                        biased;
                        written = &mut write => { written?; break }
                        r = results.recv(), if !closed && gathering.len() < max => match r {
                            Some(r) => gathering.push(r),
                            None => closed = true,
                        },
                    }
                }
            }
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            for r in &batch {
                held.remove(&r.delivery_id);
            }
        }
    }

    /// Writes one batch, retrying through a database outage. Once shutdown
    /// is requested the outage budget shrinks to `SHUTDOWN_FLUSH_GRACE`: a
    /// service manager kills a process that takes longer to stop, and then
    /// nothing at all would be handed back.
    #[tracing::instrument(name = "engine.batch", skip_all, fields(results = batch.len()))]
    async fn write_batch(
        &self,
        batch: &[DeliveryResult],
        shutdown: &CancellationToken,
    ) -> Result<(), EngineError> {
        let mut outage = Outage::new(self.opts.max_outage);
        let mut stopping_since: Option<Instant> = None;
        loop {
            match self.app.db.record_results(batch, now_ms()).await {
                Ok(()) => {
                    self.app.metrics.delivery_results(batch);
                    if outage.recovered() {
                        tracing::info!(
                            results = batch.len(),
                            "delivery results written after a database outage"
                        );
                    }
                    return Ok(());
                }
                Err(e) => {
                    let e = EngineError::from(e);
                    let mut wait = outage.failed(&e)?;
                    if shutdown.is_cancelled() {
                        let stopping = stopping_since.get_or_insert_with(Instant::now);
                        if stopping.elapsed() >= SHUTDOWN_FLUSH_GRACE {
                            return Err(EngineError::UnflushedAtShutdown {
                                results: batch.len(),
                                last: e.to_string(),
                            });
                        }
                        wait = wait.min(Duration::from_secs(1));
                    }
                    tracing::warn!(error = %e, results = batch.len(), retry_in = ?wait, "writing delivery results failed; retrying");
                    self.report(ComponentState::Degraded(format!(
                        "cannot write delivery results, retrying: {e}"
                    )));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// The next job, waiting for it, and up to [`READ_AHEAD`] in all of those
/// already queued behind it; empty when the queue is closed.
async fn take_jobs(jobs: &tokio::sync::Mutex<mpsc::Receiver<Job>>) -> Vec<Job> {
    let mut rx = jobs.lock().await;
    let Some(first) = rx.recv().await else {
        return Vec::new();
    };
    let mut taken = Vec::with_capacity(READ_AHEAD);
    taken.push(first);
    while taken.len() < READ_AHEAD {
        match rx.try_recv() {
            Ok(job) => taken.push(job),
            Err(_) => break,
        }
    }
    taken
}

/// Capped exponential backoff through a run of database errors, and the
/// point where it stops trying: `max_outage` after the first error.
struct Outage {
    since: Option<Instant>,
    wait: Duration,
    max: Duration,
}

impl Outage {
    const FIRST_WAIT: Duration = Duration::from_millis(500);
    const MAX_WAIT: Duration = Duration::from_secs(30);

    fn new(max: Duration) -> Outage {
        Outage {
            since: None,
            wait: Outage::FIRST_WAIT,
            max,
        }
    }

    /// After an error: how long to wait before trying again, or the error
    /// that ends the run once the errors have lasted `max`.
    fn failed(&mut self, error: &EngineError) -> Result<Duration, EngineError> {
        let since = *self.since.get_or_insert_with(Instant::now);
        let lasted = since.elapsed();
        if lasted >= self.max {
            return Err(EngineError::Outage {
                lasted: humantime::format_duration(Duration::from_secs(lasted.as_secs()))
                    .to_string(),
                max: humantime::format_duration(self.max).to_string(),
                last: error.to_string(),
            });
        }
        let wait = self.wait.min(self.max - lasted);
        self.wait = (self.wait * 2).min(Outage::MAX_WAIT);
        Ok(wait)
    }

    /// After a success; true if it ended a run of errors.
    fn recovered(&mut self) -> bool {
        self.wait = Outage::FIRST_WAIT;
        self.since.take().is_some()
    }
}

fn skip_reason(d: &ClaimedDelivery) -> Option<&'static str> {
    if d.suppressed > 0 {
        return Some("suppressed");
    }
    match d.subscription_state {
        SubscriptionState::Confirmed => None,
        SubscriptionState::Bounced => Some("bounced"),
        SubscriptionState::Complained => Some("complained"),
        SubscriptionState::Pending | SubscriptionState::Unsubscribed => Some("unsubscribed"),
    }
}

fn attempt_record(
    outcome: &Result<SmtpReply, SendFailure>,
    verdict: Verdict,
    at: Millis,
    took: Duration,
    worker: &str,
) -> AttemptRecord {
    let (code, enhanced, reply) = match outcome {
        Ok(r) => (
            Some(i64::from(r.code)),
            r.enhanced.map(|e| e.to_string()),
            r.text.clone(),
        ),
        Err(e) => match e.reply() {
            Some(r) => (
                Some(i64::from(r.code)),
                r.enhanced.map(|e| e.to_string()),
                format!("{} {}", r.code, r.text),
            ),
            None => (None, None, e.to_string()),
        },
    };
    AttemptRecord {
        at,
        duration_ms: i64::try_from(took.as_millis()).unwrap_or(i64::MAX),
        code,
        enhanced,
        reply: reply.chars().take(1000).collect(),
        outcome: verdict.as_str().to_owned(),
        worker_id: worker.to_owned(),
    }
}

/// Spaces messages evenly to honour `smtp.rate` (messages per second).
struct Pacer {
    interval: Option<Duration>,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
        Pacer {
            interval,
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let mut next = self.next.lock().await;
        let now = tokio::time::Instant::now();
        if *next > now {
            tokio::time::sleep_until(*next).await;
        }
        *next = (*next).max(now) + interval;
    }
}

impl Engine {
    /// A snapshot of the deliveries this process holds.
    fn held_ids(&self) -> Vec<i64> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Marks a claimed delivery as held here; false if it already is.
    fn hold(&self, delivery_id: i64) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(delivery_id)
    }
}

/// Releases a held delivery id when the worker is done with it, whatever path it leaves by.
struct Held<'a>(&'a Mutex<HashSet<i64>>, i64);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_error() -> EngineError {
        EngineError::Store(StoreError::TimedOut(Duration::from_secs(1)))
    }

    #[test]
    fn outage_backs_off_exponentially_up_to_a_cap_and_resets() {
        let mut o = Outage::new(Duration::from_secs(3600));
        let waits: Vec<Duration> = (0..9).map(|_| o.failed(&db_error()).unwrap()).collect();
        let ms: Vec<u128> = waits.iter().map(|w| w.as_millis()).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert!(o.recovered(), "a success ends the outage");
        assert!(!o.recovered(), "and only once");
        assert_eq!(o.failed(&db_error()).unwrap(), Outage::FIRST_WAIT);
    }

    #[test]
    fn outage_gives_up_after_max_with_a_message_naming_the_key() {
        let mut o = Outage::new(Duration::ZERO);
        let e = o.failed(&db_error()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("delivery.max_outage"), "{text}");
        assert!(text.contains("did not answer within 1s"), "{text}");
    }
}
