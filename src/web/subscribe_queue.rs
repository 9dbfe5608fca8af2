//! The state-dependent half of a subscribe request, done after answering.
//!
//! Whether an address is new, pending, confirmed or suppressed decides how
//! much database work and whether a mail follows; doing it before the answer
//! made the answer's timing tell the states apart. The handler validates the
//! input, hands the rest to this queue and answers at once.
//!
//! Bounded both ways: at most `CAPACITY` requests wait and `WORKERS` run;
//! when the queue is full the request is dropped with a WARN line (a flood
//! must neither delay answers nor grow memory). Workers stop when every
//! sender is gone (the router dropped) and the queue is empty.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::app::App;
use crate::domain::{EmailAddress, UnsubscribeToken};
use crate::store::Newsletter;
use crate::store::subscribers::ConsentContext;
use crate::subscribers::{SubscribeOutcome, SubscribeRequest};

const CAPACITY: usize = 1024;
/// Each worker sends its confirmation mail itself (with the service's
/// retries), so this also bounds simultaneous confirmation SMTP sessions.
const WORKERS: usize = 4;

#[derive(Debug)]
pub enum SubscribeJob {
    /// The form or the JSON API.
    Subscribe {
        email: EmailAddress,
        name: Option<String>,
        newsletter: Arc<Newsletter>,
        context: ConsentContext,
    },
    /// "Subscribe again" on the unsubscribe page (the token is verified).
    Resubscribe {
        token: UnsubscribeToken,
        context: ConsentContext,
    },
}

#[derive(Clone)]
pub struct SubscribeQueue {
    tx: mpsc::Sender<SubscribeJob>,
}

/// The running workers; [`QueueWorkers::finish`] waits for the backlog.
pub struct QueueWorkers {
    handles: Vec<JoinHandle<()>>,
    /// Keeps the queue open (senders are refused only when it is full)
    /// even if every worker has died.
    _rx: Arc<Mutex<mpsc::Receiver<SubscribeJob>>>,
}

impl SubscribeQueue {
    /// Starts the workers; must run inside a Tokio runtime.
    pub fn start(app: App) -> (SubscribeQueue, QueueWorkers) {
        SubscribeQueue::start_with(app, CAPACITY, WORKERS)
    }

    fn start_with(app: App, capacity: usize, workers: usize) -> (SubscribeQueue, QueueWorkers) {
        let (tx, rx) = mpsc::channel(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let handles = (0..workers)
            .map(|_| tokio::spawn(work(app.clone(), rx.clone())))
            .collect();
        (SubscribeQueue { tx }, QueueWorkers { handles, _rx: rx })
    }

    /// Queues the job without waiting; a full queue drops it (logged).
    /// False when dropped.
    pub fn submit(&self, job: SubscribeJob) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    capacity = self.tx.max_capacity(),
                    "subscribe queue full: request dropped (no consent recorded, no mail sent)"
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!("subscribe queue closed (shutting down): request dropped");
                false
            }
        }
    }
}

impl QueueWorkers {
    /// Waits up to `limit` for queued requests to be done (call after the
    /// router, and so every sender, is dropped).
    pub async fn finish(self, limit: Duration) {
        let all = futures::future::join_all(self.handles);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(
                ?limit,
                "subscribe requests still queued at shutdown were not processed"
            );
        }
    }
}

async fn work(app: App, rx: Arc<Mutex<mpsc::Receiver<SubscribeJob>>>) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = rx.lock().await.recv().await;
        let Some(job) = job else { return };
        // In a task of its own so that a panic loses one request, not a
        // worker; awaited, so concurrency stays bounded by WORKERS.
        let app = app.clone();
        if let Err(e) = tokio::spawn(async move { process(&app, job).await }).await {
            tracing::error!(error = %e, "subscribe request failed");
        }
    }
}

#[tracing::instrument(skip_all, fields(ip = tracing::field::Empty))]
async fn process(app: &App, job: SubscribeJob) {
    let outcome = match job {
        SubscribeJob::Subscribe {
            email,
            name,
            newsletter,
            context,
        } => {
            record_ip(&context);
            app.request_subscription(SubscribeRequest {
                email: &email,
                name: name.as_deref(),
                newsletter: &newsletter,
                context,
            })
            .await
            .map(Some)
        }
        SubscribeJob::Resubscribe { token, context } => {
            record_ip(&context);
            app.request_resubscription(token, context).await
        }
    };
    match outcome {
        Ok(Some(SubscribeOutcome::ConfirmationSent(mail))) => {
            app.send_confirmation(&mail).await;
        }
        Ok(Some(other)) => tracing::info!(outcome = ?other, "no confirmation mail"),
        Ok(None) => tracing::info!("subscriber erased since the link was sent; nothing to do"),
        Err(e) => tracing::error!(error = %e, "subscribe request failed"),
    }
}

fn record_ip(context: &ConsentContext) {
    if let Some(ip) = &context.ip {
        tracing::Span::current().record("ip", ip.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    async fn app(dir: &std::path::Path) -> App {
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}", dir.join("q.db").display());
        config.smtp.outbox_dir = dir.join("outbox");
        App::open(config).await.unwrap()
    }

    fn job(app: &App, n: usize) -> SubscribeJob {
        SubscribeJob::Subscribe {
            email: EmailAddress::parse(&format!("q{n}@example.org")).unwrap(),
            name: None,
            newsletter: app.newsletter.clone(),
            context: ConsentContext::default(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting_and_workers_drain_it() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path()).await;
        // No workers yet: the queue fills and then refuses at once.
        let (queue, idle) = SubscribeQueue::start_with(app.clone(), 2, 0);
        let accepted: Vec<bool> = (0..4).map(|n| queue.submit(job(&app, n))).collect();
        assert_eq!(accepted, [true, true, false, false]);
        drop((queue, idle));

        let (queue, workers) = SubscribeQueue::start_with(app.clone(), 8, 2);
        for n in 0..5 {
            assert!(queue.submit(job(&app, n)));
        }
        drop(queue);
        workers.finish(Duration::from_secs(30)).await;
        for n in 0..5 {
            let email = EmailAddress::parse(&format!("q{n}@example.org")).unwrap();
            assert!(
                app.subscriber_profile(&email).await.unwrap().is_some(),
                "queued request {n} was processed before the workers stopped"
            );
        }
    }
}
