//! `App::apply_report`: match a report to the message Herald sent, record
//! it, and apply its effect on the delivery and the subscription.
//!
//! Matching, in order (the first key that names a message wins):
//! 1. a VERP address (`b-…@bounce.domain`) among `original.return_paths`
//!    whose token verifies; one at the bounce domain that does not verify is
//!    refused outright (forged, damaged, or another instance's);
//! 2. a test copy (`X-Herald-Test`, a `test.…` Message-ID): recorded, the
//!    list untouched;
//! 3. the original `Message-ID` `issue-N.{subscriber tag}@…`: the issue by
//!    number, the subscriber by a reported recipient whose tag matches;
//! 4. a reported recipient alone: that subscriber's latest delivery the
//!    relay accepted.
//!
//! Nothing matched: refused, nothing recorded. The effect follows the rules
//! of a reply during the SMTP session (`delivery::classify`,
//! `delivery::policy`), carried out by `store::bounces::record_report` in
//! one transaction with the report itself.

use super::{BounceError, DsnAction, RecipientStatus, Report, parse_report_async};
use crate::app::App;
use crate::delivery::policy;
use crate::delivery::{Verdict, classify};
use crate::domain::{
    BounceTag, EmailAddress, MatchedBy, Millis, ReportKind, ReportOutcome, ReportSource, now_ms,
};
use crate::mail::{SendFailure, SmtpReply, SmtpStage};
use crate::store::Newsletter;
use crate::store::bounces::{
    NewReport, Recorded, ReportAction, ReportCounts, ReportDetail, ReportListing, ReportTarget,
};
use crate::store::deliveries::RecipientEffect;

/// A report recorded (`bounce_reports.id`) and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub report_id: i64,
    pub effect: ReportEffect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportEffect {
    /// A hard bounce: the delivery is `bounced`, the subscription `bounced`,
    /// the address suppressed.
    Suppressed {
        issue_id: Option<i64>,
        subscriber_id: i64,
    },
    /// A soft bounce, counted toward the soft-bounce rule (`suppressed` when
    /// it was the one that reached it).
    SoftBounce {
        issue_id: Option<i64>,
        subscriber_id: i64,
        suppressed: bool,
    },
    /// A failure that does not blame the address (a policy refusal, the
    /// message refused): the delivery is `bounced`, the subscription stays.
    DeliveryFailed {
        issue_id: Option<i64>,
        subscriber_id: i64,
    },
    /// A complaint: the reader is unsubscribed and the address suppressed.
    Complaint {
        issue_id: Option<i64>,
        subscriber_id: i64,
    },
    /// About a test copy or a confirmation mail: recorded, the list unchanged.
    NotAboutTheList,
    /// An auto-reply, a delay notice or something unrecognised: recorded only.
    Ignored,
    /// An authentic VERP token whose delivery no longer exists (the reader
    /// was erased): recorded for people to look at.
    Unmatched,
    /// The same provider event was recorded before.
    Duplicate { report_id: i64 },
}

impl ReportEffect {
    /// One line for people (`herald bounces import`, logs).
    pub fn describe(&self) -> String {
        match self {
            ReportEffect::Suppressed { subscriber_id, .. } => {
                format!("hard bounce: subscriber {subscriber_id} bounced and suppressed")
            }
            ReportEffect::SoftBounce {
                subscriber_id,
                suppressed: true,
                ..
            } => format!(
                "soft bounce: subscriber {subscriber_id} reached the soft-bounce limit, bounced and suppressed"
            ),
            ReportEffect::SoftBounce { subscriber_id, .. } => {
                format!("soft bounce: counted for subscriber {subscriber_id}")
            }
            ReportEffect::DeliveryFailed { subscriber_id, .. } => format!(
                "delivery failed (not the address's fault): subscriber {subscriber_id} stays subscribed"
            ),
            ReportEffect::Complaint { subscriber_id, .. } => {
                format!("complaint: subscriber {subscriber_id} unsubscribed and suppressed")
            }
            ReportEffect::NotAboutTheList => {
                "about a test copy or confirmation mail: the list is unchanged".into()
            }
            ReportEffect::Ignored => "recorded only (auto-reply, delay or not a failure)".into(),
            ReportEffect::Unmatched => "recorded only (the delivery no longer exists)".into(),
            ReportEffect::Duplicate { report_id } => {
                format!("already recorded as report {report_id}: nothing applied again")
            }
        }
    }
}

/// Longest text kept per field: enough for any real diagnostic, bounded
/// whatever a sender writes.
const MAX_FIELD_CHARS: usize = 1000;

/// What a report was found to be about.
enum Match {
    /// A message sent to a subscriber (with its delivery, or only the
    /// subscriber when no accepted delivery exists).
    Target { target: ReportTarget, by: MatchedBy },
    /// A test copy or confirmation mail.
    NotAboutTheList {
        issue_id: Option<i64>,
        subscriber_id: Option<i64>,
        by: Option<MatchedBy>,
    },
    /// An authentic VERP token of a delivery that no longer exists.
    Gone,
}

impl App {
    /// The VERP return path of one message, when `bounce.domain` is set.
    pub fn verp_address(&self, tag: BounceTag) -> Option<String> {
        let domain = &self.config.bounce.domain;
        (!domain.is_empty()).then(|| tag.address(domain, &self.secret))
    }

    /// The envelope sender of one message: its VERP address with
    /// `bounce.domain`, else `smtp.envelope_from` (or the From address). The
    /// same on every attempt, as greylisting requires.
    pub fn return_path(&self, newsletter: &Newsletter, tag: BounceTag) -> String {
        self.verp_address(tag)
            .unwrap_or_else(|| self.envelope_from(newsletter))
    }

    /// Records `report` (with the raw message, kept for `bounce.keep_raw`)
    /// and applies its effect, in one transaction.
    pub async fn apply_report(
        &self,
        report: Report,
        source: ReportSource,
        raw: Option<&[u8]>,
    ) -> Result<Applied, BounceError> {
        let now = now_ms();
        let found = self.match_report(&report).await?;
        let (target_email, issue_id, subscriber_id, newsletter_id, delivery_id, by) = match &found {
            Match::Target { target, by } => (
                Some(target.email.as_str()),
                target.issue_id,
                Some(target.subscriber_id),
                target.newsletter_id,
                target.delivery_id,
                Some(*by),
            ),
            Match::NotAboutTheList {
                issue_id,
                subscriber_id,
                by,
            } => (None, *issue_id, *subscriber_id, None, None, *by),
            Match::Gone => (None, None, None, None, None, Some(MatchedBy::Verp)),
        };
        let status = pick_recipient(&report, target_email);
        let action = match &found {
            Match::Target { target, .. } if target.delivery_id.is_some() => decide(&report, status),
            Match::Target { .. } | Match::NotAboutTheList { .. } => {
                ReportAction::Record(ReportOutcome::NotAboutTheList)
            }
            Match::Gone => ReportAction::Record(ReportOutcome::Unmatched),
        };
        let keep = self.config.bounce.keep_raw.0;
        // An erased reader's address is not stored again by a late report.
        let erased = matches!(found, Match::Gone);
        let raw = raw.filter(|_| !keep.is_zero() && !erased);
        let status = status.filter(|_| !erased);
        let record = NewReport {
            received_at: now,
            source,
            kind: report.kind,
            matched_by: by,
            issue_id,
            subscriber_id,
            newsletter_id,
            delivery_id,
            recipient: status
                .map(|s| bounded(&s.address, MAX_FIELD_CHARS))
                .or_else(|| target_email.map(str::to_owned)),
            action: status.map(|s| action_text(s.action).to_owned()),
            status: status
                .and_then(|s| s.status.as_deref())
                .map(|s| bounded(s, 32)),
            diagnostic: status
                .and_then(|s| s.diagnostic.as_deref())
                .map(|s| bounded(s, MAX_FIELD_CHARS)),
            remote_mta: status
                .and_then(|s| s.remote_mta.as_deref())
                .map(|s| bounded(s, 255)),
            feedback_type: report.feedback_type.as_deref().map(|s| bounded(s, 64)),
            provider_event_id: report.provider_event_id.as_deref().map(|s| bounded(s, 255)),
            summary: report
                .summary
                .as_deref()
                .map(|s| bounded(s, MAX_FIELD_CHARS)),
            raw,
            raw_purge_at: raw.map(|_| now.saturating_add(millis(keep))),
        };
        let recorded = self.db.record_report(&record, action, now).await?;
        let (report_id, outcome) = match recorded {
            Recorded::Duplicate { id } => {
                return Ok(Applied {
                    report_id: id,
                    effect: ReportEffect::Duplicate { report_id: id },
                });
            }
            Recorded::New { id, outcome } => (id, outcome),
        };
        let effect = match (outcome, subscriber_id) {
            (ReportOutcome::Suppressed, Some(subscriber_id)) => ReportEffect::Suppressed {
                issue_id,
                subscriber_id,
            },
            (ReportOutcome::SoftBounce | ReportOutcome::SoftBounceLimit, Some(subscriber_id)) => {
                ReportEffect::SoftBounce {
                    issue_id,
                    subscriber_id,
                    suppressed: outcome == ReportOutcome::SoftBounceLimit,
                }
            }
            (ReportOutcome::DeliveryFailed, Some(subscriber_id)) => ReportEffect::DeliveryFailed {
                issue_id,
                subscriber_id,
            },
            (ReportOutcome::Complaint, Some(subscriber_id)) => ReportEffect::Complaint {
                issue_id,
                subscriber_id,
            },
            (ReportOutcome::NotAboutTheList, _) => ReportEffect::NotAboutTheList,
            (ReportOutcome::Unmatched, _) => ReportEffect::Unmatched,
            _ => ReportEffect::Ignored,
        };
        tracing::info!(
            report_id,
            %source,
            kind = %report.kind,
            effect = %outcome,
            issue_id,
            subscriber_id,
            "report recorded"
        );
        Ok(Applied { report_id, effect })
    }

    /// Parses a raw message that arrived by `source` and applies it.
    /// `envelope_rcpt` is the SMTP `RCPT TO` it arrived at (the VERP address),
    /// when known; it is the first key tried.
    pub async fn apply_raw_report(
        &self,
        raw: &[u8],
        source: ReportSource,
        envelope_rcpt: Option<&str>,
    ) -> Result<Applied, BounceError> {
        // Refuses anything over MAX_REPORT_BYTES before reading it.
        let mut report = parse_report_async(raw).await?;
        if let Some(rcpt) = envelope_rcpt {
            report.original.return_paths.insert(0, rcpt.to_owned());
        }
        self.apply_report(report, source, Some(raw)).await
    }

    /// Drops the raw messages of reports older than `bounce.keep_raw`.
    pub async fn purge_report_raw(&self) -> Result<u64, crate::store::StoreError> {
        let purged = self.db.purge_report_raw(now_ms()).await?;
        if purged > 0 {
            tracing::info!(purged, "raw report messages past bounce.keep_raw dropped");
        }
        Ok(purged)
    }

    /// The latest reports, newest first (`herald bounces list`); runs the
    /// purge of raw messages first, so what it shows is what is kept.
    pub async fn bounce_reports(
        &self,
        issue_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ReportListing>, crate::store::StoreError> {
        self.purge_report_raw().await?;
        self.db.list_reports(issue_id, limit).await
    }

    /// One report with its raw message when still kept (`herald bounces show`).
    pub async fn bounce_report(
        &self,
        report_id: i64,
    ) -> Result<Option<ReportDetail>, crate::store::StoreError> {
        self.db.report_by_id(report_id).await
    }

    /// Bounced after delivery and complaints of one issue.
    pub async fn issue_report_counts(
        &self,
        issue_id: i64,
    ) -> Result<ReportCounts, crate::store::StoreError> {
        Ok(self
            .db
            .report_counts(&[issue_id])
            .await?
            .remove(&issue_id)
            .unwrap_or_default())
    }

    async fn match_report(&self, report: &Report) -> Result<Match, BounceError> {
        if let Some(found) = self.match_verp(report).await? {
            return Ok(found);
        }
        let message_id = report.original.message_id.as_deref().map(str::trim);
        if report.original.test_copy || message_id.is_some_and(|m| m.starts_with("test.")) {
            return Ok(Match::NotAboutTheList {
                issue_id: None,
                subscriber_id: None,
                by: message_id.map(|_| MatchedBy::MessageId),
            });
        }
        let recipients: Vec<EmailAddress> = report
            .recipients
            .iter()
            .filter_map(|r| parse_address(&r.address))
            .collect();
        let ours = message_id.and_then(issue_message_id);
        if let Some((number, tag)) = ours.clone() {
            for address in &recipients {
                let targets = self
                    .db
                    .report_targets_by_issue_number(number, &address.canonical())
                    .await?;
                if let Some(target) = targets
                    .into_iter()
                    .find(|t| self.secret.subscriber_tag(t.subscriber_id) == tag)
                {
                    return Ok(Match::Target {
                        target,
                        by: MatchedBy::MessageId,
                    });
                }
            }
        }
        if let Some((number, tag)) = ours
            && let Some(target) = self.find_by_message_id_tag(number, tag).await?
        {
            return Ok(Match::Target {
                target,
                by: MatchedBy::MessageId,
            });
        }
        let confirmation = message_id.is_some_and(|m| m.starts_with("confirm."));
        for address in &recipients {
            if let Some(target) = self.db.report_target_by_email(&address.canonical()).await? {
                if confirmation || target.delivery_id.is_none() {
                    return Ok(Match::NotAboutTheList {
                        issue_id: None,
                        subscriber_id: Some(target.subscriber_id),
                        by: Some(MatchedBy::Recipient),
                    });
                }
                return Ok(Match::Target {
                    target,
                    by: MatchedBy::Recipient,
                });
            }
        }
        let named: Vec<&str> = report
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        Err(BounceError::Rejected(format!(
            "the report is about no message of this Herald: no valid VERP address{}, no Message-ID of an issue, and no subscriber {}; nothing was recorded",
            if self.config.bounce.domain.is_empty() {
                String::new()
            } else {
                format!(" (b-…@{})", self.config.bounce.domain)
            },
            if named.is_empty() {
                "named (the report names no recipient)".to_owned()
            } else {
                format!("with the address {}", bounded(&named.join(", "), 200))
            }
        )))
    }

    /// A Message-ID of ours whose recipient the report redacted (ARF
    /// reports often do): the issue's deliveries are searched for the
    /// subscriber whose tag it is. One HMAC per delivery (the key prepared
    /// once, `Secret::subscriber_tag_matcher`), on the blocking pool, and
    /// only for such reports.
    async fn find_by_message_id_tag(
        &self,
        number: i64,
        tag: String,
    ) -> Result<Option<ReportTarget>, BounceError> {
        let Some(is_tag) = self.secret.subscriber_tag_matcher(&tag) else {
            return Ok(None);
        };
        let candidates = self.db.accepted_deliveries_of_issue_number(number).await?;
        let found = tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .find(|(_, subscriber_id)| is_tag(*subscriber_id))
        })
        .await
        .map_err(|e| BounceError::Rejected(format!("matching the Message-ID failed: {e}")))?;
        Ok(match found {
            Some((issue_id, subscriber_id)) => {
                self.db
                    .report_target_by_ids(issue_id, subscriber_id)
                    .await?
            }
            None => None,
        })
    }

    /// Step 1: a VERP address at `bounce.domain`. `Ok(None)`: none there.
    async fn match_verp(&self, report: &Report) -> Result<Option<Match>, BounceError> {
        let domain = &self.config.bounce.domain;
        if domain.is_empty() {
            return Ok(None);
        }
        let mut forged: Option<&str> = None;
        let mut tag = None;
        for candidate in &report.original.return_paths {
            let Some((local, at)) = split_address(candidate) else {
                continue;
            };
            if !at.trim_end_matches('.').eq_ignore_ascii_case(domain) {
                continue;
            }
            match BounceTag::verify(local, &self.secret) {
                Some(t) => {
                    tag = Some(t);
                    break;
                }
                None if local.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("b-")) => {
                    forged.get_or_insert(candidate);
                }
                None => {}
            }
        }
        let Some(tag) = tag else {
            return match forged {
                Some(address) => Err(BounceError::Rejected(format!(
                    "the return path {} carries no valid token of this Herald (forged, damaged, or made with another security.secret); nothing was recorded",
                    bounded(address, 200)
                ))),
                None => Ok(None),
            };
        };
        Ok(Some(match tag {
            BounceTag::Delivery {
                issue_id,
                subscriber_id,
            } => match self
                .db
                .report_target_by_ids(issue_id, subscriber_id)
                .await?
            {
                Some(target) => Match::Target {
                    target,
                    by: MatchedBy::Verp,
                },
                None => Match::Gone,
            },
            BounceTag::TestCopy { issue_id } => Match::NotAboutTheList {
                issue_id: self.db.issue_exists(issue_id).await?.then_some(issue_id),
                subscriber_id: None,
                by: Some(MatchedBy::Verp),
            },
            BounceTag::Confirmation { subscriber_id, .. } => Match::NotAboutTheList {
                issue_id: None,
                subscriber_id: self
                    .db
                    .subscriber_exists(subscriber_id)
                    .await?
                    .then_some(subscriber_id),
                by: Some(MatchedBy::Verp),
            },
        }))
    }
}

/// How often `herald serve` drops raw report messages past `bounce.keep_raw`.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// `herald serve`'s purge of raw report messages, hourly until `shutdown`.
/// A failed round (the database away) is logged and tried again next hour:
/// a raw message kept a little longer harms nobody.
pub async fn purge_raw_periodically(app: App, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        if let Err(e) = app.purge_report_raw().await {
            tracing::warn!(error = %e, "could not drop raw report messages past bounce.keep_raw; trying again in an hour");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PURGE_EVERY) => {}
        }
    }
}

/// What a report does to a delivery the relay accepted, by the rules of a
/// reply during the SMTP session.
fn decide(report: &Report, status: Option<&RecipientStatus>) -> ReportAction {
    match report.kind {
        // RFC 6430: the reader said the message is *not* spam.
        ReportKind::Complaint
            if report
                .feedback_type
                .as_deref()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("not-spam")) =>
        {
            ReportAction::Record(ReportOutcome::Ignored)
        }
        ReportKind::Complaint => ReportAction::Complaint {
            reason: COMPLAINT_REASON,
        },
        ReportKind::Bounce => match status {
            Some(s) if s.action == DsnAction::Failed => failure_action(s),
            _ => ReportAction::Record(ReportOutcome::Ignored),
        },
        ReportKind::Delay | ReportKind::AutoReply | ReportKind::Unrecognised => {
            ReportAction::Record(ReportOutcome::Ignored)
        }
    }
}

/// The suppression reason of a complaint.
pub const COMPLAINT_REASON: &str = "complaint";

/// A failed recipient: classified as the same reply at RCPT would be. A
/// DSN's 4.x.x `failed` means the remote server retried and gave up, so it
/// counts as a soft bounce (x.7.x policy deferrals never count).
fn failure_action(s: &RecipientStatus) -> ReportAction {
    let reply = as_reply(s);
    let verdict = match classify(&Err(SendFailure::Rejected {
        stage: SmtpStage::RcptTo,
        reply: reply.clone(),
    })) {
        Verdict::Transient if reply.enhanced.is_none_or(|e| e.subject != 7) => Verdict::SoftBounce,
        v => v,
    };
    match policy::recipient_effect(verdict, true) {
        RecipientEffect::Suppress { reason } => ReportAction::HardBounce { reason },
        RecipientEffect::CountSoftBounce {
            suppress_at,
            reason,
        } => ReportAction::SoftBounce {
            suppress_at,
            reason,
        },
        RecipientEffect::Delivered => ReportAction::Record(ReportOutcome::Ignored),
        RecipientEffect::None => ReportAction::DeliveryFailed,
    }
}

/// The remote server's words as an SMTP reply: the code from
/// `Diagnostic-Code: smtp; 550 …` when it is there, else the status class;
/// the enhanced code from `Status` (the DSN's own field), else the text.
fn as_reply(s: &RecipientStatus) -> SmtpReply {
    let diagnostic = s.diagnostic.as_deref().unwrap_or("");
    // "smtp; 550 5.1.1 …" or "550-5.1.1 …"
    let text = diagnostic
        .split_once(';')
        .map_or(diagnostic, |(kind, rest)| {
            if kind.trim().eq_ignore_ascii_case("smtp")
                || kind.trim().eq_ignore_ascii_case("x-postfix")
            {
                rest
            } else {
                diagnostic
            }
        })
        .trim();
    let status = s
        .status
        .as_deref()
        .map(str::trim)
        .filter(|st| crate::mail::transport::EnhancedStatus::parse_prefix(st).is_some());
    let class = status
        .and_then(|st| st.bytes().next())
        .map(|b| u16::from(b - b'0'));
    let leading: Option<u16> = text
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
        .filter(|c| (200..600).contains(c));
    let code = match (leading, class) {
        (Some(c), Some(k)) if c / 100 == k => c,
        (_, Some(k)) => k * 100 + 50,
        (Some(c), None) => c,
        (None, None) => 550,
    };
    let words = text
        .get(3..)
        .filter(|_| leading.is_some())
        .unwrap_or(text)
        .trim_start_matches(['-', ' ']);
    // The enhanced code first, as a server writes it, so that it is parsed.
    let words = match status {
        Some(st) => {
            let rest = words.strip_prefix(st).unwrap_or(words).trim_start();
            format!("{st} {rest}")
        }
        None => words.to_owned(),
    };
    SmtpReply::new(code, words)
}

/// The recipient status the report row keeps: the one of the matched
/// subscriber, else the first failed one, else the first.
fn pick_recipient<'r>(report: &'r Report, email: Option<&str>) -> Option<&'r RecipientStatus> {
    let canonical = email.and_then(parse_address).map(|a| a.canonical());
    report
        .recipients
        .iter()
        .find(|r| {
            canonical.is_some() && parse_address(&r.address).map(|a| a.canonical()) == canonical
        })
        .or_else(|| {
            report
                .recipients
                .iter()
                .find(|r| r.action == DsnAction::Failed)
        })
        .or_else(|| report.recipients.first())
}

fn action_text(action: DsnAction) -> &'static str {
    match action {
        DsnAction::Failed => "failed",
        DsnAction::Delayed => "delayed",
        DsnAction::Delivered => "delivered",
        DsnAction::Relayed => "relayed",
        DsnAction::Expanded => "expanded",
    }
}

/// `issue-N.{tag}@domain` (the Message-ID of every issue delivery) → (N, tag).
fn issue_message_id(message_id: &str) -> Option<(i64, String)> {
    let id = message_id.trim_start_matches('<').trim_end_matches('>');
    let (local, _) = id.rsplit_once('@')?;
    let rest = local.strip_prefix("issue-")?;
    let (number, tag) = rest.split_once('.')?;
    let number: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let tag = tag.to_ascii_lowercase();
    (tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then_some((number, tag))
}

/// `local@domain` out of what a report holds (`<…>`, `rfc822;…`, spaces).
fn split_address(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let text = match text.split_once(';') {
        Some((kind, rest)) if kind.trim().eq_ignore_ascii_case("rfc822") => rest.trim(),
        _ => text,
    };
    let text = text.trim_start_matches('<').trim_end_matches('>').trim();
    let (local, domain) = text.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then_some((local, domain))
}

fn parse_address(text: &str) -> Option<EmailAddress> {
    let (local, domain) = split_address(text)?;
    EmailAddress::parse(&format!("{local}@{domain}")).ok()
}

/// Text from outside, cut to `max` characters with control characters
/// (terminal escapes among them) replaced, so it is safe to store and print.
fn bounded(text: &str, max: usize) -> String {
    text.trim()
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn millis(d: std::time::Duration) -> Millis {
    Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(status: Option<&str>, diagnostic: Option<&str>) -> RecipientStatus {
        RecipientStatus {
            address: "ann@example.org".into(),
            action: DsnAction::Failed,
            status: status.map(str::to_owned),
            diagnostic: diagnostic.map(str::to_owned),
            remote_mta: None,
        }
    }

    #[test]
    fn failures_follow_the_smtp_time_rules() {
        let hard = ReportAction::HardBounce {
            reason: policy::HARD_BOUNCE_REASON,
        };
        let soft = ReportAction::SoftBounce {
            suppress_at: policy::SOFT_BOUNCE_LIMIT,
            reason: policy::SOFT_BOUNCE_LIMIT_REASON,
        };
        let rows = [
            (
                Some("5.1.1"),
                Some("smtp; 550 5.1.1 <ann@example.org>: Recipient address rejected: User unknown"),
                hard,
            ),
            (Some("5.1.10"), None, hard),
            (
                None,
                Some("smtp; 550 5.1.1 The email account that you tried to reach does not exist"),
                hard,
            ),
            (None, Some("550 No such user here"), hard),
            (Some("5.2.2"), Some("smtp; 552 5.2.2 Mailbox full"), soft),
            (Some("4.2.2"), Some("smtp; 452 4.2.2 over quota"), soft),
            (Some("4.4.7"), Some("delivery time expired"), soft),
            (Some("5.2.1"), None, soft),
            (
                Some("5.7.1"),
                Some("smtp; 550 5.7.1 Message rejected by policy"),
                ReportAction::DeliveryFailed,
            ),
            (
                Some("4.7.1"),
                Some("smtp; 450 4.7.1 Client host rejected"),
                ReportAction::DeliveryFailed,
            ),
            (
                Some("5.7.26"),
                Some("smtp; 550 5.7.26 Unauthenticated email is not accepted"),
                ReportAction::DeliveryFailed,
            ),
            (
                Some("5.3.4"),
                Some("smtp; 552 5.3.4 Message too big"),
                ReportAction::DeliveryFailed,
            ),
            // 5.1.7/5.1.8 are about *our* sender address, not the reader.
            (
                Some("5.1.8"),
                Some("smtp; 553 5.1.8 Sender address rejected"),
                ReportAction::DeliveryFailed,
            ),
            (None, None, ReportAction::DeliveryFailed),
        ];
        for (status, diagnostic, want) in rows {
            assert_eq!(
                failure_action(&failed(status, diagnostic)),
                want,
                "{status:?} {diagnostic:?}"
            );
        }
    }

    #[test]
    fn only_failed_bounces_and_complaints_act() {
        let mut report = Report {
            kind: ReportKind::Bounce,
            recipients: vec![RecipientStatus {
                action: DsnAction::Delayed,
                ..failed(Some("4.4.1"), None)
            }],
            original: Default::default(),
            feedback_type: None,
            provider_event_id: None,
            summary: None,
        };
        assert_eq!(
            decide(&report, report.recipients.first()),
            ReportAction::Record(ReportOutcome::Ignored)
        );
        report.kind = ReportKind::Complaint;
        report.feedback_type = Some("abuse".into());
        assert_eq!(
            decide(&report, None),
            ReportAction::Complaint {
                reason: COMPLAINT_REASON
            }
        );
        report.feedback_type = Some("not-spam".into());
        assert_eq!(
            decide(&report, None),
            ReportAction::Record(ReportOutcome::Ignored)
        );
        for kind in [
            ReportKind::AutoReply,
            ReportKind::Delay,
            ReportKind::Unrecognised,
        ] {
            report.kind = kind;
            assert_eq!(
                decide(&report, report.recipients.first()),
                ReportAction::Record(ReportOutcome::Ignored)
            );
        }
    }

    #[test]
    fn message_ids_and_addresses_from_reports() {
        assert_eq!(
            issue_message_id("<issue-12.0123456789ABCDEF@example.org>"),
            Some((12, "0123456789abcdef".into()))
        );
        for bad in [
            "issue-0.0123456789abcdef@x",
            "issue-x.0123456789abcdef@x",
            "issue-1.0123@x",
            "test.1.abc@x",
            "issue-1.0123456789abcdef",
        ] {
            assert_eq!(issue_message_id(bad), None, "{bad}");
        }
        assert_eq!(
            split_address("rfc822; <B-D1-2-ABC@Bounces.Example.org>"),
            Some(("B-D1-2-ABC", "Bounces.Example.org"))
        );
        assert_eq!(split_address("postmaster"), None);
        assert_eq!(bounded("a\u{1b}[31mb\r\n", 10), "a [31mb");
    }
}
