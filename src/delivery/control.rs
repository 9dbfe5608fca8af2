//! What editors do to an issue's delivery: send, pause, resume, cancel,
//! retry, test copies; and what they look at: status.

use serde::Serialize;

use crate::app::App;
use crate::content::ContentError;
use crate::domain::{DeliveryState, IssueStatus, Millis, now_ms};
use crate::store::content::IssueRow;
use crate::store::deliveries::{AttemptListing, DeliveryCounts, DeliveryListing};
use crate::store::{Newsletter, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("issue #{number} is {status}; {hint}")]
    WrongStatus {
        number: i64,
        status: String,
        hint: &'static str,
    },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("test copy to {to} failed: {message}")]
    TestSend { to: String, message: String },
}

#[derive(Debug, Serialize)]
pub struct IssueStatusReport {
    pub number: i64,
    pub slug: String,
    pub status: String,
    /// What happened in words: "finished: 0 sent, 50 failed", "paused: 3 sent, 17 not sent yet".
    pub summary: String,
    /// Why the engine paused the issue, with what to do (None when an editor paused it).
    pub pause_reason: Option<String>,
    pub counts: DeliveryCounts,
    /// Messages per second over the last minute.
    pub rate_per_sec: f64,
    pub next_retry_at: Option<Millis>,
    /// (state, reply, count), most common first.
    pub top_replies: Vec<(DeliveryState, String, i64)>,
    pub final_counts: Option<serde_json::Value>,
}

impl App {
    /// Enqueues every confirmed subscriber (once) and marks the issue sending.
    pub async fn send_issue(&self, issue: &IssueRow) -> Result<u64, ControlError> {
        match issue.status {
            IssueStatus::Cancelled => {
                return Err(ControlError::WrongStatus {
                    number: issue.number,
                    status: issue.status.to_string(),
                    hint: "a cancelled issue is not sent again",
                });
            }
            IssueStatus::Paused => {
                return Err(ControlError::WrongStatus {
                    number: issue.number,
                    status: issue.status.to_string(),
                    hint: "run `herald resume` to continue it",
                });
            }
            IssueStatus::Draft
            | IssueStatus::Scheduled
            | IssueStatus::Sending
            | IssueStatus::Sent => {}
        }
        Ok(self
            .db
            .enqueue_issue(issue.id, issue.newsletter_id, now_ms())
            .await?)
    }

    pub async fn pause_issue(&self, issue: &IssueRow) -> Result<(), ControlError> {
        if !self
            .db
            .set_issue_status(issue.id, IssueStatus::Paused, &[IssueStatus::Sending])
            .await?
        {
            return Err(ControlError::WrongStatus {
                number: issue.number,
                status: issue.status.to_string(),
                hint: "only a sending issue can be paused",
            });
        }
        Ok(())
    }

    /// Resumes a paused issue (and forgets why the engine paused it).
    pub async fn resume_issue(&self, issue: &IssueRow) -> Result<(), ControlError> {
        if !self
            .db
            .set_issue_status(issue.id, IssueStatus::Sending, &[IssueStatus::Paused])
            .await?
        {
            return Err(ControlError::WrongStatus {
                number: issue.number,
                status: issue.status.to_string(),
                hint: "only a paused issue can be resumed",
            });
        }
        Ok(())
    }

    /// Stops an issue for good: nothing more is handed to SMTP.
    pub async fn cancel_issue(&self, issue: &IssueRow) -> Result<u64, ControlError> {
        if !self
            .db
            .set_issue_status(
                issue.id,
                IssueStatus::Cancelled,
                &[
                    IssueStatus::Draft,
                    IssueStatus::Scheduled,
                    IssueStatus::Sending,
                    IssueStatus::Paused,
                ],
            )
            .await?
        {
            return Err(ControlError::WrongStatus {
                number: issue.number,
                status: issue.status.to_string(),
                hint: "it can no longer be cancelled",
            });
        }
        Ok(self.db.cancel_open_deliveries(issue.id, now_ms()).await?)
    }

    /// Re-queues waiting retries now, and with `failed` the permanent
    /// failures too (after fixing, say, a wrong relay password).
    pub async fn retry_issue(&self, issue: &IssueRow, failed: bool) -> Result<u64, ControlError> {
        if issue.status == IssueStatus::Cancelled {
            return Err(ControlError::WrongStatus {
                number: issue.number,
                status: issue.status.to_string(),
                hint: "a cancelled issue is not retried",
            });
        }
        let n = self.db.requeue(issue.id, failed, now_ms()).await?;
        if n > 0 {
            self.db
                .set_issue_status(issue.id, IssueStatus::Sending, &[IssueStatus::Sent])
                .await?;
        }
        Ok(n)
    }

    pub async fn issue_status(&self, issue: &IssueRow) -> Result<IssueStatusReport, ControlError> {
        let issue = self.db.issue_by_id(issue.id).await?;
        let counts = self.db.delivery_counts(issue.id).await?;
        let now = now_ms();
        let recent = self.db.sent_since(issue.id, now - 60_000).await?;
        // Over the last minute, or since sending began if that was sooner.
        let window = issue
            .send_started_at
            .map(|s| (now - s).clamp(1_000, 60_000))
            .unwrap_or(60_000);
        Ok(IssueStatusReport {
            number: issue.number,
            slug: issue.slug.clone(),
            status: issue.status.to_string(),
            summary: status_summary(&issue, &counts),
            pause_reason: issue.pause_reason.clone(),
            rate_per_sec: recent as f64 * 1000.0 / window as f64,
            next_retry_at: self.db.next_retry_at(issue.id).await?,
            top_replies: self.db.top_failure_replies(issue.id, 5).await?,
            final_counts: issue
                .final_counts
                .as_deref()
                .and_then(|c| serde_json::from_str(c).ok()),
            counts,
        })
    }

    /// `herald issue test`: a "[TEST]" copy to each address; the list and
    /// the issue's state are untouched.
    pub async fn send_test_copies(
        &self,
        newsletter: &Newsletter,
        issue: &IssueRow,
        to: &[crate::domain::EmailAddress],
    ) -> Result<(), ControlError> {
        let from = self.return_path(
            newsletter,
            crate::domain::BounceTag::TestCopy { issue_id: issue.id },
        );
        for addr in to {
            let message = self.sample_message(newsletter, issue, addr.as_str(), true)?;
            self.mailer
                .send_one(&from, addr.as_str(), &message)
                .await
                .map_err(|e| ControlError::TestSend {
                    to: addr.to_string(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }
}

impl IssueStatusReport {
    pub fn failed(&self) -> i64 {
        self.counts.get(DeliveryState::Failed)
    }

    pub fn is_paused(&self) -> bool {
        self.status == IssueStatus::Paused.as_str()
    }
}

/// Where an issue stands, in words: what its status means with the counts behind it.
pub fn status_summary(issue: &IssueRow, counts: &DeliveryCounts) -> String {
    let sent = counts.get(DeliveryState::Sent);
    let failed = counts.get(DeliveryState::Failed);
    let skipped = counts.get(DeliveryState::Skipped);
    let cancelled = counts.get(DeliveryState::Cancelled);
    let retrying = counts.get(DeliveryState::RetryWait);
    let waiting = counts.get(DeliveryState::Queued) + counts.get(DeliveryState::Sending);
    let mut parts = vec![format!("{sent} sent")];
    let mut push = |n: i64, what: &str| {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    };
    push(failed, "failed");
    push(skipped, "skipped");
    let done = parts.join(", ");
    let n = issue.number;
    match issue.status {
        IssueStatus::Draft => "draft: not sent yet".to_owned(),
        IssueStatus::Scheduled => "scheduled: not sent yet".to_owned(),
        IssueStatus::Sending => {
            let mut open = Vec::new();
            if waiting > 0 {
                open.push(format!("{waiting} to go"));
            }
            if retrying > 0 {
                open.push(format!("{retrying} waiting to retry"));
            }
            if open.is_empty() {
                format!("sending: {done}")
            } else {
                format!("sending: {done}, {}", open.join(", "))
            }
        }
        IssueStatus::Paused => {
            let left = waiting + retrying;
            // The engine's reason (`pause_reason`) is shown beside this, not in it.
            match issue.pause_reason {
                Some(_) => format!("paused: {done}, {left} not sent yet"),
                None => format!(
                    "paused by an editor: {done}, {left} not sent yet; `herald resume {n}` goes on"
                ),
            }
        }
        IssueStatus::Sent => format!("finished: {done}"),
        IssueStatus::Cancelled => {
            format!("cancelled: {done} before it was cancelled, {cancelled} not sent")
        }
    }
}

/// One delivery with its attempt history, as `herald deliveries` lists it.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub delivery: DeliveryListing,
    pub attempts: Vec<AttemptListing>,
}

impl App {
    /// An issue's deliveries (optionally in one state, at most `limit`), each
    /// with its attempts, read in two queries whatever the count.
    pub async fn delivery_listing(
        &self,
        issue: &IssueRow,
        state: Option<DeliveryState>,
        limit: i64,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let rows = self.db.list_deliveries(issue.id, state, limit).await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut attempts = self.db.attempts_of(&ids).await?.into_iter().peekable();
        // Both come ordered by delivery id, so one pass pairs them.
        Ok(rows
            .into_iter()
            .map(|delivery| {
                let mut mine = Vec::new();
                while let Some(a) = attempts.next_if(|a| a.delivery_id <= delivery.id) {
                    if a.delivery_id == delivery.id {
                        mine.push(a);
                    }
                }
                DeliveryView {
                    delivery,
                    attempts: mine,
                }
            })
            .collect())
    }

    /// How many of an issue's deliveries are in each state.
    pub async fn delivery_counts(&self, issue: &IssueRow) -> Result<DeliveryCounts, StoreError> {
        self.db.delivery_counts(issue.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(status: IssueStatus, pause_reason: Option<&str>) -> IssueRow {
        IssueRow {
            id: 1,
            newsletter_id: 1,
            number: 4,
            slug: "week-4".into(),
            title: String::new(),
            subject: String::new(),
            preheader: String::new(),
            intro: String::new(),
            html: String::new(),
            text_body: String::new(),
            web_html: String::new(),
            status,
            created_at: 0,
            send_started_at: None,
            completed_at: None,
            final_counts: None,
            pause_reason: pause_reason.map(str::to_owned),
        }
    }

    fn counts(by: &[(DeliveryState, i64)]) -> DeliveryCounts {
        DeliveryCounts {
            by_state: by.iter().copied().collect(),
            total: by.iter().map(|(_, n)| n).sum(),
        }
    }

    #[test]
    fn every_end_state_says_what_happened() {
        use DeliveryState::*;
        let cases = [
            (
                issue(IssueStatus::Sent, None),
                counts(&[(Failed, 50)]),
                "finished: 0 sent, 50 failed",
            ),
            (
                issue(IssueStatus::Sent, None),
                counts(&[(Sent, 48), (Failed, 2)]),
                "finished: 48 sent, 2 failed",
            ),
            (
                issue(IssueStatus::Sent, None),
                counts(&[(Sent, 49), (Skipped, 1)]),
                "finished: 49 sent, 1 skipped",
            ),
            (
                issue(IssueStatus::Sending, None),
                counts(&[(Sent, 10), (Queued, 5), (Sending, 2), (RetryWait, 3)]),
                "sending: 10 sent, 7 to go, 3 waiting to retry",
            ),
            (
                issue(IssueStatus::Paused, Some("relay refuses")),
                counts(&[(Sent, 3), (Queued, 17)]),
                "paused: 3 sent, 17 not sent yet",
            ),
            (
                issue(IssueStatus::Paused, None),
                counts(&[(Sent, 3), (Queued, 17)]),
                "paused by an editor: 3 sent, 17 not sent yet; `herald resume 4` goes on",
            ),
            (
                issue(IssueStatus::Cancelled, None),
                counts(&[(Sent, 3), (Cancelled, 17)]),
                "cancelled: 3 sent before it was cancelled, 17 not sent",
            ),
            (
                issue(IssueStatus::Draft, None),
                counts(&[]),
                "draft: not sent yet",
            ),
        ];
        for (issue, counts, want) in cases {
            assert_eq!(status_summary(&issue, &counts), want);
        }
    }
}
