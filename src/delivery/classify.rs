//! Turning a send result into a delivery verdict (RFC 5321 reply codes, RFC 3463 enhanced codes).

use crate::mail::{SendFailure, SmtpReply};

/// What a send outcome means for the delivery and for the recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Accepted (2xx).
    Sent,
    /// Temporary trouble (other 4xx, greylisting, network, timeout, TLS): retry on schedule.
    Transient,
    /// Policy / reputation / rate limiting (421, 432, 4.7.x, 5.7.x): slow down or pause the
    /// destination and retry; never the recipient's fault.
    Throttle,
    /// Mailbox full or disabled (x.2.1, x.2.2): retry; counts towards the soft-bounce threshold.
    SoftBounce,
    /// The address or domain does not exist (5.1.x, "user unknown"): suppress the recipient.
    HardBounce,
    /// The message itself was refused (5.6.x, 5.3.4 too big, 5.7.x about headers/content):
    /// alert, don't blame the recipient.
    MessageDefect,
    /// Any other permanent failure.
    Permanent,
}

impl Verdict {
    /// True when the delivery should not be retried.
    ///
    /// `SoftBounce` is **not** final: it is retried like `Transient`; if retries expire, the
    /// caller records the soft bounce against the recipient's threshold.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Verdict::Sent | Verdict::HardBounce | Verdict::MessageDefect | Verdict::Permanent
        )
    }

    /// True only for `HardBounce`: the address should be suppressed at once.
    pub fn suppresses_recipient(&self) -> bool {
        matches!(self, Verdict::HardBounce)
    }

    /// True only for `SoftBounce`: when its retries expire, it counts
    /// towards the recipient's soft-bounce limit.
    pub fn counts_as_soft_bounce(&self) -> bool {
        matches!(self, Verdict::SoftBounce)
    }

    /// True only for `Throttle`: the server asks this connection to slow down.
    pub fn slows_connection(&self) -> bool {
        matches!(self, Verdict::Throttle)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Sent => "sent",
            Verdict::Transient => "transient",
            Verdict::Throttle => "throttle",
            Verdict::SoftBounce => "soft_bounce",
            Verdict::HardBounce => "hard_bounce",
            Verdict::MessageDefect => "message_defect",
            Verdict::Permanent => "permanent",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies the result of one send attempt.
pub fn classify(result: &Result<SmtpReply, SendFailure>) -> Verdict {
    match result {
        Ok(reply) => classify_reply(reply),
        Err(SendFailure::Rejected { reply, .. }) => classify_reply(reply),
        Err(SendFailure::Network(_) | SendFailure::Timeout(_) | SendFailure::Tls(_)) => {
            Verdict::Transient
        }
        // A full disk or a permission problem in the outbox is worth retrying.
        Err(SendFailure::Io(_)) => Verdict::Transient,
        // An address lettre cannot parse will never work.
        Err(SendFailure::InvalidAddress(_)) => Verdict::Permanent,
        // Placeholders until relay-level failures get their own verdict (issue #9).
        Err(SendFailure::CertificateUntrusted(_) | SendFailure::NoAuthMechanism(_)) => {
            Verdict::Transient
        }
        Err(SendFailure::TooBigForRelay { .. }) => Verdict::MessageDefect,
        // Signing fails only for want of resources (a signing thread that died): retry.
        Err(SendFailure::Signing(_)) => Verdict::Transient,
    }
}

fn has_any(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| text.contains(n))
}

/// Text saying the message itself (not the sender or recipient) is the problem.
const MESSAGE_TEXT: &[&str] = &[
    "message-id",
    "message id",
    "header",
    "content",
    "attachment",
    "malformed",
    "rfc 5322",
    "rfc5322",
    "rfc 2822",
    "too large",
    "too big",
    "size limit",
];

/// Text about sender reputation, spam policy or rate limits.
const THROTTLE_TEXT: &[&str] = &[
    "rate limit",
    "rate-limit",
    "ratelimit",
    "too many",
    "reputation",
    "unsolicited",
    "spam",
    "blocked",
    "blacklist",
    "blocklist",
    "throttl",
    "policy",
];

/// Text saying the mailbox does not exist.
const UNKNOWN_USER_TEXT: &[&str] = &[
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "mailbox unavailable",
    "mailbox not found",
    "does not exist",
    "doesn't exist",
    "unknown recipient",
    "recipient unknown",
    "invalid recipient",
    "recipient address rejected",
];

fn classify_reply(reply: &SmtpReply) -> Verdict {
    let code = reply.code;
    let text = reply.text.to_ascii_lowercase();
    if (200..300).contains(&code) {
        return Verdict::Sent;
    }
    // Greylisting (RFC 6647) is an ordinary deferral, whatever code the server picks.
    if code / 100 == 4 && has_any(&text, &["greylist", "graylist", "grey-list", "gray-list"]) {
        return Verdict::Transient;
    }
    if code == 421 || code == 432 {
        return Verdict::Throttle;
    }
    if let Some(e) = reply.enhanced {
        match (e.class, e.subject, e.detail) {
            // 5.1.7 / 5.1.8: the *sender's* address is bad; not the recipient's fault.
            (5, 1, 7 | 8) => return Verdict::Permanent,
            (5, 1, _) => return Verdict::HardBounce,
            (_, 2, 1 | 2) => return Verdict::SoftBounce,
            (_, 3, 4) => return Verdict::MessageDefect,
            (5, 6, _) => return Verdict::MessageDefect,
            (_, 7, _) if has_any(&text, MESSAGE_TEXT) => return Verdict::MessageDefect,
            (_, 7, _) => return Verdict::Throttle,
            _ => {}
        }
    }
    match code / 100 {
        4 if has_any(&text, THROTTLE_TEXT) => Verdict::Throttle,
        4 => Verdict::Transient,
        5 if matches!(code, 550 | 551 | 553) && has_any(&text, UNKNOWN_USER_TEXT) => {
            Verdict::HardBounce
        }
        5 if code == 552 && has_any(&text, &["quota", "mailbox full", "storage"]) => {
            Verdict::SoftBounce
        }
        5 if code == 552 || has_any(&text, &["message-id", "message header", "too large"]) => {
            Verdict::MessageDefect
        }
        5 if has_any(&text, THROTTLE_TEXT) => Verdict::Throttle,
        _ => Verdict::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::SmtpStage;
    use Verdict::*;

    fn rejected(code: u16, text: &str) -> Result<SmtpReply, SendFailure> {
        Err(SendFailure::Rejected {
            stage: SmtpStage::RcptTo,
            reply: SmtpReply::new(code, text),
        })
    }

    #[test]
    fn classification_table() {
        let rows: Vec<(Result<SmtpReply, SendFailure>, Verdict)> = vec![
            (Ok(SmtpReply::new(250, "2.0.0 Ok: queued as ABC")), Sent),
            (
                Ok(SmtpReply::new(251, "User not local; will forward")),
                Sent,
            ),
            (
                rejected(
                    550,
                    "5.1.1 The email account that you tried to reach does not exist",
                ),
                HardBounce,
            ),
            (
                rejected(550, "5.1.2 Bad destination system address"),
                HardBounce,
            ),
            (
                rejected(556, "5.1.10 Recipient address has null MX"),
                HardBounce,
            ),
            (rejected(550, "User unknown"), HardBounce),
            (
                rejected(550, "Requested action not taken: mailbox unavailable"),
                HardBounce,
            ),
            (rejected(553, "sorry, no such user here"), HardBounce),
            (
                rejected(
                    452,
                    "4.2.2 The email account that you tried to reach is over quota",
                ),
                SoftBounce,
            ),
            (rejected(552, "5.2.2 Mailbox full"), SoftBounce),
            (
                rejected(
                    450,
                    "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages",
                ),
                SoftBounce,
            ),
            (rejected(421, "4.7.0 Too many messages, closing"), Throttle),
            (rejected(421, "Service not available"), Throttle),
            (
                rejected(
                    421,
                    "4.7.28 Our system has detected an unusual rate of unsolicited mail. To protect our users from spam, mail has been temporarily rate limited.",
                ),
                Throttle,
            ),
            (rejected(450, "4.7.28 temporarily rate limited"), Throttle),
            (
                rejected(432, "4.3.2 Concurrent connections limit exceeded"),
                Throttle,
            ),
            (
                rejected(451, "4.7.1 Try again later: low IP reputation"),
                Throttle,
            ),
            (
                rejected(554, "5.7.1 Message rejected due to spam policy"),
                Throttle,
            ),
            (
                rejected(
                    550,
                    "5.7.1 Service unavailable; client host blocked using Spamhaus",
                ),
                Throttle,
            ),
            (
                rejected(
                    550,
                    "5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy",
                ),
                Throttle,
            ),
            (
                rejected(451, "too many connections from your IP, slow down"),
                Throttle,
            ),
            (
                rejected(554, "5.7.1 Message rejected: invalid Message-ID header"),
                MessageDefect,
            ),
            (
                rejected(550, "5.7.1 Message content rejected"),
                MessageDefect,
            ),
            (
                rejected(554, "5.6.0 Invalid RFC 5322 message"),
                MessageDefect,
            ),
            (
                rejected(552, "5.3.4 Message size exceeds fixed limit"),
                MessageDefect,
            ),
            (rejected(552, "Message too large"), MessageDefect),
            (
                rejected(
                    450,
                    "4.2.0 Recipient address rejected: Greylisted, see http://postgrey.example/",
                ),
                Transient,
            ),
            (rejected(451, "4.7.1 Greylisted, try again"), Transient),
            (rejected(451, "4.3.0 Local error in processing"), Transient),
            (rejected(452, "Insufficient system storage"), Transient),
            (rejected(554, "Transaction failed"), Permanent),
            (
                rejected(550, "5.4.1 Recipient address rejected: Access denied"),
                HardBounce,
            ),
            (rejected(503, "5.5.1 Bad sequence of commands"), Permanent),
            (
                rejected(553, "5.1.8 Sender address rejected: Domain not found"),
                Permanent,
            ),
            (
                Err(SendFailure::Network("connection reset".into())),
                Transient,
            ),
            (Err(SendFailure::Timeout(SmtpStage::Data)), Transient),
            (Err(SendFailure::Tls("handshake failed".into())), Transient),
            (Err(SendFailure::Io("disk full".into())), Transient),
            (Err(SendFailure::InvalidAddress("a@".into())), Permanent),
        ];
        for (result, want) in rows {
            assert_eq!(classify(&result), want, "{result:?}");
        }
    }

    #[test]
    fn verdict_properties() {
        for v in [Sent, HardBounce, MessageDefect, Permanent] {
            assert!(v.is_final(), "{v}");
        }
        for v in [Transient, Throttle, SoftBounce] {
            assert!(!v.is_final(), "{v}");
        }
        let all = [
            Sent,
            Transient,
            Throttle,
            SoftBounce,
            HardBounce,
            MessageDefect,
            Permanent,
        ];
        assert_eq!(all.iter().filter(|v| v.suppresses_recipient()).count(), 1);
        assert!(HardBounce.suppresses_recipient());
        assert_eq!(all.iter().filter(|v| v.counts_as_soft_bounce()).count(), 1);
        assert_eq!(all.iter().filter(|v| v.slows_connection()).count(), 1);
        assert_eq!(SoftBounce.as_str(), "soft_bounce");
        assert_eq!(MessageDefect.to_string(), "message_defect");
    }
}
