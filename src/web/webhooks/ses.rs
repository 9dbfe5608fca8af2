//! Amazon SES bounce and complaint notifications, delivered by SNS.
//!
//! Authentication, as documented in "Verifying the signatures of Amazon SNS
//! messages" (<https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html>):
//! - `TopicArn` must be `webhooks.ses_topic_arn` (checked first, so a
//!   stranger's message never makes Herald fetch anything);
//! - the signing certificate is fetched over HTTPS (rustls, web PKI roots:
//!   that is what ties it to Amazon) and only from
//!   `https://sns.<region>.amazonaws.com/….pem` — or, in tests, from
//!   `webhooks.ses_cert_url_prefix`; it is cached (bounded) by URL;
//! - `Signature` (base64) is RSA PKCS#1 v1.5 over the documented canonical
//!   string ("Key\nvalue\n" for Message, MessageId, Subject if present,
//!   Timestamp, TopicArn, Type of a notification; Message, MessageId,
//!   SubscribeURL, Timestamp, Token, TopicArn, Type of a (un)subscribe
//!   confirmation), with SHA-1 for `SignatureVersion` 1 and SHA-256 for 2;
//! - `Timestamp` must be within `webhooks.max_age`.
//!
//! A `SubscriptionConfirmation` is answered by fetching its `SubscribeURL`
//! (same host rule) once its signature verifies. A `Notification`'s
//! `Message` is SES's notification JSON
//! (<https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html>):
//! `notificationType` (or `eventType` for event publishing) Bounce or
//! Complaint, `bounce.bounceType` Permanent/Transient/Undetermined with
//! `bouncedRecipients[].status/diagnosticCode`, `complaint.complainedRecipients`
//! and `complaintFeedbackType`, and `mail.source` (the envelope sender:
//! Herald's VERP address), `mail.headers`/`commonHeaders.messageId`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, RsaParameters,
    UnparsedPublicKey,
};
use axum::body::Bytes;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::{
    Event, MAX_ID, MAX_TEXT, Received, WebhookError, bounded, check_age, enhanced_status,
    enhanced_status_in, message_id, text_field,
};
use crate::bounce::{DsnAction, OriginalMessage, RecipientStatus, Report};
use crate::config::WebhooksConfig;
use crate::domain::ReportKind;

/// Signing certificates kept at once (SNS uses one per region, rotated rarely).
const MAX_CERTS: usize = 16;
/// A PEM certificate is about 2 KB.
const MAX_CERT_BYTES: usize = 64 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many certificate or SubscribeURL fetches at once.
const MAX_FETCHES: usize = 4;

pub(super) struct SnsVerifier {
    /// `None` if the TLS client could not be built (logged; SES answers 503).
    client: Option<reqwest::Client>,
    /// Certificate URL → the certificate's SubjectPublicKeyInfo (DER).
    certs: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    fetches: Semaphore,
}

impl SnsVerifier {
    pub(super) fn new(config: &WebhooksConfig) -> SnsVerifier {
        let client = reqwest::Client::builder()
            // A redirect could lead anywhere: the URL rule is the trust.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .https_only(config.ses_cert_url_prefix.is_empty())
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build();
        let client = match client {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "no HTTPS client for SNS certificates; SES webhooks will answer 503");
                None
            }
        };
        SnsVerifier {
            client,
            certs: Mutex::new(HashMap::new()),
            fetches: Semaphore::new(MAX_FETCHES),
        }
    }

    pub(super) async fn receive(
        &self,
        config: &WebhooksConfig,
        body: &Bytes,
        now: DateTime<Utc>,
        max_age: Duration,
    ) -> Result<Received, WebhookError> {
        let msg: SnsMessage = serde_json::from_slice(body).map_err(|e| {
            WebhookError::malformed(format!("the body is not an Amazon SNS message ({e})"))
        })?;
        if msg.topic_arn != config.ses_topic_arn {
            return Err(WebhookError::Forbidden(format!(
                "the message is from SNS topic {:?}, not webhooks.ses_topic_arn; nothing was recorded",
                bounded(&msg.topic_arn, MAX_ID)
            )));
        }
        let algorithm = match msg.signature_version.as_deref() {
            Some("1") => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Some("2") => &RSA_PKCS1_2048_8192_SHA256,
            other => {
                return Err(WebhookError::Forbidden(format!(
                    "SignatureVersion {:?} is not 1 or 2; nothing was recorded",
                    other.map(|v| bounded(v, 8))
                )));
            }
        };
        let canonical = msg.canonical()?;
        let signed_at = DateTime::parse_from_rfc3339(&msg.timestamp)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                WebhookError::malformed(format!(
                    "Timestamp {:?} is not an ISO 8601 time",
                    bounded(&msg.timestamp, 40)
                ))
            })?;
        let cert_url = allowed_url(&msg.signing_cert_url, config, true).ok_or_else(|| {
            WebhookError::Forbidden(format!(
                "SigningCertURL {:?} is not an https://sns.<region>.amazonaws.com/….pem address; nothing was recorded",
                bounded(&msg.signing_cert_url, MAX_ID)
            ))
        })?;
        let signature = STANDARD
            .decode(msg.signature.trim())
            .map_err(|_| bad_signature())?;
        let spki = self.public_key(&cert_url).await?;
        verify(algorithm, &spki, canonical.as_bytes(), &signature)?;
        check_age(signed_at, now, max_age)?;
        match msg.kind.as_str() {
            "SubscriptionConfirmation" => {
                let url = msg
                    .subscribe_url
                    .as_deref()
                    .and_then(|u| allowed_url(u, config, false))
                    .ok_or_else(|| {
                        WebhookError::Forbidden(
                            "the SubscribeURL is not an https://sns.<region>.amazonaws.com/ address; the subscription was not confirmed".into(),
                        )
                    })?;
                self.confirm(&url).await?;
                tracing::info!(topic = %msg.topic_arn, "SNS subscription confirmed");
                Ok(Received::Handled("subscription confirmed"))
            }
            "UnsubscribeConfirmation" => {
                tracing::warn!(topic = %msg.topic_arn, "SNS says Herald was unsubscribed from the SES topic: bounces and complaints from SES no longer arrive");
                Ok(Received::Handled("unsubscribe confirmation noted"))
            }
            "Notification" => notification(&msg, body),
            _ => Err(WebhookError::malformed("unknown SNS message Type")),
        }
    }

    /// The SubjectPublicKeyInfo of the certificate at `url`, from the cache
    /// or fetched once.
    async fn public_key(&self, url: &reqwest::Url) -> Result<Arc<Vec<u8>>, WebhookError> {
        if let Some(key) = self
            .certs
            .lock()
            .ok()
            .and_then(|c| c.get(url.as_str()).cloned())
        {
            return Ok(key);
        }
        let pem = self.fetch(url, MAX_CERT_BYTES).await?;
        let der = CertificateDer::from_pem_slice(&pem).map_err(|_| {
            WebhookError::Forbidden(
                "the SigningCertURL does not hold a PEM certificate; nothing was recorded".into(),
            )
        })?;
        let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| {
            WebhookError::Forbidden(format!(
                "the SNS signing certificate cannot be read ({e}); nothing was recorded"
            ))
        })?;
        let spki = Arc::new(cert.subject_public_key_info().as_ref().to_vec());
        if let Ok(mut certs) = self.certs.lock() {
            if certs.len() >= MAX_CERTS {
                certs.clear();
            }
            certs.insert(url.as_str().to_owned(), spki.clone());
        }
        Ok(spki)
    }

    async fn confirm(&self, url: &reqwest::Url) -> Result<(), WebhookError> {
        self.fetch(url, MAX_CERT_BYTES).await.map(drop)
    }

    /// GET `url`, refusing answers other than 2xx and bodies over `limit`.
    /// A failure is `Unavailable`: SNS sends the message again.
    async fn fetch(&self, url: &reqwest::Url, limit: usize) -> Result<Vec<u8>, WebhookError> {
        let unavailable = |why: String| {
            tracing::warn!(url = %url, error = %why, "SNS fetch failed");
            WebhookError::Unavailable(format!(
                "could not fetch {url} from Amazon SNS now ({why}); nothing was recorded, send it again later"
            ))
        };
        let Some(client) = &self.client else {
            return Err(unavailable("no HTTPS client".into()));
        };
        let _permit = self
            .fetches
            .acquire()
            .await
            .map_err(|_| unavailable("shutting down".into()))?;
        let mut response = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(e.to_string()))?
        {
            if body.len() + chunk.len() > limit {
                return Err(WebhookError::Forbidden(format!(
                    "{url} answered more than {} KiB; nothing was recorded",
                    limit / 1024
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn bad_signature() -> WebhookError {
    WebhookError::Forbidden(
        "the SNS message signature does not verify with its signing certificate; nothing was recorded".into(),
    )
}

fn verify(
    algorithm: &'static RsaParameters,
    spki: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), WebhookError> {
    UnparsedPublicKey::new(algorithm, spki)
        .verify(message, signature)
        .map_err(|_| bad_signature())
}

/// `url` if SNS may send Herald there: `https://sns.<region>.amazonaws.com`
/// (or `.amazonaws.com.cn`) on the default port, a `.pem` path for a
/// certificate; or anything under the test prefix when one is configured.
fn allowed_url(url: &str, config: &WebhooksConfig, certificate: bool) -> Option<reqwest::Url> {
    let parsed = reqwest::Url::parse(url.trim()).ok()?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return None;
    }
    let prefix = &config.ses_cert_url_prefix;
    if !prefix.is_empty() {
        return parsed
            .as_str()
            .starts_with(prefix.as_str())
            .then_some(parsed);
    }
    let host = parsed.host_str()?;
    let region = host.strip_prefix("sns.").and_then(|h| {
        h.strip_suffix(".amazonaws.com")
            .or_else(|| h.strip_suffix(".amazonaws.com.cn"))
    })?;
    let region_ok = !region.is_empty()
        && region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok = parsed.scheme() == "https"
        && parsed.port().is_none()
        && region_ok
        && (!certificate || parsed.path().ends_with(".pem"));
    ok.then_some(parsed)
}

#[derive(Deserialize)]
struct SnsMessage {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "MessageId")]
    message_id: String,
    #[serde(rename = "TopicArn")]
    topic_arn: String,
    #[serde(rename = "Subject", default)]
    subject: Option<String>,
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "Timestamp")]
    timestamp: String,
    #[serde(rename = "SignatureVersion", default)]
    signature_version: Option<String>,
    #[serde(rename = "Signature")]
    signature: String,
    #[serde(rename = "SigningCertURL")]
    signing_cert_url: String,
    #[serde(rename = "SubscribeURL", default)]
    subscribe_url: Option<String>,
    #[serde(rename = "Token", default)]
    token: Option<String>,
}

impl SnsMessage {
    /// The string SNS signed, per message type.
    fn canonical(&self) -> Result<String, WebhookError> {
        let mut out = String::new();
        let mut field = |key: &str, value: &str| {
            out.push_str(key);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        };
        let missing = |key: &str| {
            WebhookError::malformed(format!("the SNS {} has no {key}", bounded(&self.kind, 40)))
        };
        match self.kind.as_str() {
            "Notification" => {
                field("Message", &self.message);
                field("MessageId", &self.message_id);
                if let Some(subject) = &self.subject {
                    field("Subject", subject);
                }
                field("Timestamp", &self.timestamp);
                field("TopicArn", &self.topic_arn);
                field("Type", &self.kind);
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                let subscribe_url = self
                    .subscribe_url
                    .as_deref()
                    .ok_or_else(|| missing("SubscribeURL"))?;
                let token = self.token.as_deref().ok_or_else(|| missing("Token"))?;
                field("Message", &self.message);
                field("MessageId", &self.message_id);
                field("SubscribeURL", subscribe_url);
                field("Timestamp", &self.timestamp);
                field("Token", token);
                field("TopicArn", &self.topic_arn);
                field("Type", &self.kind);
            }
            other => {
                return Err(WebhookError::malformed(format!(
                    "SNS message Type {:?} is not Notification, SubscriptionConfirmation or UnsubscribeConfirmation",
                    bounded(other, 40)
                )));
            }
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesNotification {
    #[serde(default)]
    notification_type: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    bounce: Option<SesBounce>,
    #[serde(default)]
    complaint: Option<SesComplaint>,
    #[serde(default)]
    mail: Option<SesMail>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesBounce {
    #[serde(default)]
    bounce_type: Option<String>,
    #[serde(default)]
    bounce_sub_type: Option<String>,
    #[serde(default)]
    bounced_recipients: Vec<SesRecipient>,
    #[serde(default)]
    feedback_id: Option<String>,
    #[serde(rename = "reportingMTA", default)]
    reporting_mta: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesRecipient {
    email_address: String,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    diagnostic_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesComplaint {
    #[serde(default)]
    complained_recipients: Vec<SesRecipient>,
    #[serde(default)]
    complaint_feedback_type: Option<String>,
    #[serde(default)]
    feedback_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesMail {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    headers: Vec<SesHeader>,
    #[serde(default)]
    common_headers: Option<SesCommonHeaders>,
}

#[derive(Deserialize)]
struct SesHeader {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SesCommonHeaders {
    #[serde(default)]
    message_id: Option<String>,
}

/// More recipients than this in one notification is not SES.
const MAX_RECIPIENTS: usize = 100;

fn notification(msg: &SnsMessage, raw: &Bytes) -> Result<Received, WebhookError> {
    let n: SesNotification = serde_json::from_str(&msg.message).map_err(|e| {
        WebhookError::malformed(format!(
            "the SNS Message is not an SES notification's JSON ({e})"
        ))
    })?;
    let kind = n.notification_type.as_deref().or(n.event_type.as_deref());
    let (kind, recipients, feedback_type, event_id, summary) = match (kind, n.bounce, n.complaint) {
        (Some("Bounce"), Some(b), _) => {
            let bounce_type = b.bounce_type.as_deref().unwrap_or("Undetermined");
            let sub_type = b.bounce_sub_type.as_deref().unwrap_or("");
            let recipients = b
                .bounced_recipients
                .iter()
                .take(MAX_RECIPIENTS)
                .map(|r| bounced(r, bounce_type, sub_type, b.reporting_mta.as_deref()))
                .collect::<Vec<_>>();
            let summary = format!("SES {bounce_type} bounce ({sub_type})");
            (ReportKind::Bounce, recipients, None, b.feedback_id, summary)
        }
        (Some("Complaint"), _, Some(c)) => {
            let recipients = c
                .complained_recipients
                .iter()
                .take(MAX_RECIPIENTS)
                .map(|r| RecipientStatus {
                    address: bounded(&r.email_address, MAX_ID),
                    action: DsnAction::Delivered,
                    status: None,
                    diagnostic: None,
                    remote_mta: None,
                })
                .collect::<Vec<_>>();
            let feedback = text_field(c.complaint_feedback_type.as_deref(), 64);
            let summary = format!(
                "SES complaint ({})",
                feedback.as_deref().unwrap_or("no feedback type")
            );
            (
                ReportKind::Complaint,
                recipients,
                feedback.or(Some("abuse".into())),
                c.feedback_id,
                summary,
            )
        }
        (Some("Bounce" | "Complaint"), _, _) => {
            return Err(WebhookError::malformed(
                "an SES Bounce or Complaint notification without its bounce or complaint object",
            ));
        }
        // Delivery, Send, Reject, Open, Click, …: nothing to record.
        _ => return Ok(Received::Handled("ignored: not a bounce or complaint")),
    };
    if recipients.is_empty() || recipients.iter().any(|r| r.address.is_empty()) {
        return Err(WebhookError::malformed(
            "an SES notification without its recipients' addresses",
        ));
    }
    let mail = n.mail;
    let header = |name: &str| {
        mail.as_ref().and_then(|m| {
            m.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str())
        })
    };
    let message_id_text = header("Message-ID").map(str::to_owned).or_else(|| {
        mail.as_ref()
            .and_then(|m| m.common_headers.as_ref())
            .and_then(|h| h.message_id.clone())
    });
    let original = OriginalMessage {
        return_paths: mail
            .as_ref()
            .and_then(|m| text_field(m.source.as_deref(), MAX_ID))
            .into_iter()
            .collect(),
        message_id: message_id_text.as_deref().and_then(message_id),
        test_copy: header("X-Herald-Test").is_some_and(|v| v.trim() == "1"),
    };
    let report = Report {
        kind,
        recipients,
        original,
        feedback_type,
        provider_event_id: text_field(event_id.as_deref(), MAX_ID)
            .or_else(|| text_field(Some(&msg.message_id), MAX_ID)),
        summary: Some(bounded(&summary, MAX_TEXT)),
    };
    Ok(Received::Events(vec![Event {
        report,
        raw: raw.to_vec(),
    }]))
}

fn bounced(
    r: &SesRecipient,
    bounce_type: &str,
    sub_type: &str,
    reporting_mta: Option<&str>,
) -> RecipientStatus {
    let diagnostic = text_field(r.diagnostic_code.as_deref(), MAX_TEXT);
    let given = r
        .status
        .as_deref()
        .and_then(enhanced_status)
        .or_else(|| diagnostic.as_deref().and_then(enhanced_status_in));
    // Without a code, SES's classification stands in for one.
    let status = given.or_else(|| match (bounce_type, sub_type) {
        ("Permanent", "General" | "NoEmail" | "Suppressed" | "OnAccountSuppressionList") => {
            Some("5.1.1".to_owned())
        }
        ("Permanent", _) => Some("5.0.0".to_owned()),
        ("Transient", "MailboxFull") => Some("4.2.2".to_owned()),
        ("Transient", "MessageTooLarge") => Some("5.3.4".to_owned()),
        ("Transient", _) => Some("4.0.0".to_owned()),
        _ => None,
    });
    let action = match r.action.as_deref() {
        Some("delayed") => DsnAction::Delayed,
        Some("delivered") => DsnAction::Delivered,
        Some("relayed") => DsnAction::Relayed,
        Some("expanded") => DsnAction::Expanded,
        _ => DsnAction::Failed,
    };
    RecipientStatus {
        address: bounded(&r.email_address, MAX_ID),
        action,
        status,
        diagnostic,
        remote_mta: reporting_mta
            .map(|m| m.trim_start_matches("dsn;").trim_start_matches("dns;"))
            .and_then(|m| text_field(Some(m), MAX_ID)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: &str) -> WebhooksConfig {
        WebhooksConfig {
            ses_topic_arn: "arn:aws:sns:eu-west-1:123456789012:bounces".into(),
            ses_cert_url_prefix: prefix.into(),
            ..Default::default()
        }
    }

    #[test]
    fn certificates_come_only_from_sns_hosts() {
        let c = config("");
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        ] {
            assert!(allowed_url(ok, &c, true).is_some(), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.test/x.pem",
            "https://evil.test/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://user@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://s3.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "not a url",
        ] {
            assert!(allowed_url(bad, &c, true).is_none(), "{bad}");
        }
        assert!(
            allowed_url(
                "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
                &c,
                false
            )
            .is_some()
        );
        let t = config("http://127.0.0.1:9/");
        assert!(allowed_url("http://127.0.0.1:9/cert.pem", &t, true).is_some());
        assert!(allowed_url("http://127.0.0.1:10/cert.pem", &t, true).is_none());
        assert!(
            allowed_url("https://sns.us-east-1.amazonaws.com/x.pem", &t, true).is_none(),
            "the test prefix replaces the rule"
        );
    }

    #[test]
    fn bounce_classification_fills_in_missing_codes() {
        let r = SesRecipient {
            email_address: "a@x.test".into(),
            action: None,
            status: None,
            diagnostic_code: Some("smtp; 550 5.1.1 user unknown".into()),
        };
        assert_eq!(
            bounced(&r, "Transient", "General", None).status.as_deref(),
            Some("5.1.1")
        );
        let r = SesRecipient {
            diagnostic_code: None,
            ..r
        };
        assert_eq!(
            bounced(&r, "Permanent", "NoEmail", None).status.as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            bounced(&r, "Transient", "MailboxFull", None)
                .status
                .as_deref(),
            Some("4.2.2")
        );
        assert_eq!(
            bounced(&r, "Undetermined", "Undetermined", None).status,
            None
        );
    }
}
