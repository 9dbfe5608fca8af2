//! Turning a send result into a delivery verdict (RFC 5321 reply codes, RFC 3463 enhanced codes)
//! and deciding whose fault it is (`../shared/notes/real-relays.md`): the recipient's address,
//! the recipient's server's policy, the message, the sender's volume, or the relay's
//! configuration. The stage matters: a 4.7.1 at RCPT is one recipient's greylisting, a 4xx at
//! the greeting or at MAIL FROM is the whole connection's.

use crate::mail::{SendFailure, SmtpReply, SmtpStage};

/// What a send outcome means for the delivery and for the recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Accepted (2xx).
    Sent,
    /// Temporary trouble for this recipient or this attempt (other 4xx, greylisting, network,
    /// timeout, TLS): retry on schedule; the connection keeps its pace.
    Transient,
    /// Rate / reputation limiting of the sender (421, 432, 4.7.0, 4.7.28, any 4xx at the
    /// greeting or MAIL FROM): this connection slows down and the delivery is retried; never
    /// the recipient's fault.
    Throttle,
    /// Mailbox full or disabled (x.2.1, x.2.2): retry; counts towards the soft-bounce threshold.
    SoftBounce,
    /// The address or domain does not exist (5.1.x, "user unknown"): suppress the recipient.
    HardBounce,
    /// The recipient's server refused it by policy (a 5.7.x at RCPT: "Recipient rejected by
    /// local policy", a block list): fail the delivery without suppressing the address. Many
    /// in a row across recipients pause the issue (`policy::PolicyStreak`).
    Policy,
    /// The message itself was refused (5.6.x, 552 / 5.3.4 too big, 5.7.x about headers or
    /// content, larger than the relay's SIZE): fail it; every recipient would get the same
    /// answer, so the issue pauses.
    MessageDefect,
    /// The relay refuses every message of ours whoever the recipient (our login was refused,
    /// authentication required, its certificate is not trusted, no common AUTH mechanism, a
    /// 5xx before any recipient was named): the delivery goes back untouched and the issue
    /// pauses at once, so no retry storm locks the account.
    RelayConfig,
    /// Any other permanent failure.
    Permanent,
}

impl Verdict {
    /// Every verdict, for tables and tests.
    pub const ALL: &'static [Verdict] = &[
        Verdict::Sent,
        Verdict::Transient,
        Verdict::Throttle,
        Verdict::SoftBounce,
        Verdict::HardBounce,
        Verdict::Policy,
        Verdict::MessageDefect,
        Verdict::RelayConfig,
        Verdict::Permanent,
    ];

    /// True when the delivery should not be retried.
    ///
    /// `SoftBounce` is **not** final: it is retried like `Transient`; if retries expire, the
    /// caller records the soft bounce against the recipient's threshold. `RelayConfig` is not
    /// final either: the delivery was never the problem and waits for the resume.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Verdict::Sent
                | Verdict::HardBounce
                | Verdict::Policy
                | Verdict::MessageDefect
                | Verdict::Permanent
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

    /// True when the recipient had nothing to do with it and the attempt is not held against
    /// the delivery: it goes back to the queue as if never attempted.
    pub fn hands_delivery_back(&self) -> bool {
        matches!(self, Verdict::RelayConfig)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Sent => "sent",
            Verdict::Transient => "transient",
            Verdict::Throttle => "throttle",
            Verdict::SoftBounce => "soft_bounce",
            Verdict::HardBounce => "hard_bounce",
            Verdict::Policy => "policy",
            Verdict::MessageDefect => "message_defect",
            Verdict::RelayConfig => "relay_config",
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
        // An accepted message never carries a failure; a 2xx is all it can be.
        Ok(reply) => classify_reply(SmtpStage::Data, reply),
        Err(SendFailure::Rejected { stage, reply }) => classify_reply(*stage, reply),
        Err(SendFailure::Network(_) | SendFailure::Timeout(_) | SendFailure::Tls(_)) => {
            Verdict::Transient
        }
        // A full disk or a permission problem in the outbox is worth retrying.
        Err(SendFailure::Io(_)) => Verdict::Transient,
        // An address lettre cannot parse will never work.
        Err(SendFailure::InvalidAddress(_)) => Verdict::Permanent,
        Err(SendFailure::CertificateUntrusted(_) | SendFailure::NoAuthMechanism(_)) => {
            Verdict::RelayConfig
        }
        Err(SendFailure::TooBigForRelay { .. }) => Verdict::MessageDefect,
        Err(SendFailure::NeedsSmtpUtf8(_)) => Verdict::Permanent,
        // Signing fails only for want of resources (a signing thread that died): retry.
        Err(SendFailure::Signing(_)) => Verdict::Transient,
    }
}

/// True when no SMTP reply came at all (refused connection, reset, timeout): the relay may be
/// down. Any reply, even a refusal, shows it is up.
pub fn relay_unreachable(result: &Result<SmtpReply, SendFailure>) -> bool {
    matches!(
        result,
        Err(SendFailure::Network(_) | SendFailure::Timeout(_))
    )
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

/// Text about the sender's volume or reputation: the connection should slow down.
const RATE_TEXT: &[&str] = &[
    "rate limit",
    "rate-limit",
    "ratelimit",
    "too many",
    "slow down",
    "reputation",
    "unsolicited",
    "spam",
    "blocked",
    "blacklist",
    "blocklist",
    "throttl",
];

/// Text of a permanent refusal by the receiving side's policy.
const POLICY_TEXT: &[&str] = &[
    "policy",
    "spam",
    "blocked",
    "blacklist",
    "blocklist",
    "reputation",
    "unsolicited",
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

/// Text saying the relay wants us to log in (or to log in differently).
const AUTH_TEXT: &[&str] = &[
    "authentication required",
    "authentication is required",
    "auth required",
    "relay access denied",
    "relaying denied",
    "relay not permitted",
];

const GREYLIST_TEXT: &[&str] = &["greylist", "graylist", "grey-list", "gray-list"];

fn classify_reply(stage: SmtpStage, reply: &SmtpReply) -> Verdict {
    let code = reply.code;
    let text = reply.text.to_ascii_lowercase();
    let class = code / 100;
    if class == 2 {
        return Verdict::Sent;
    }
    let enhanced = reply.enhanced.map(|e| (e.class, e.subject, e.detail));
    let is_size = code == 552 || matches!(enhanced, Some((_, 3, 4)));
    // The relay itself refuses us, whoever the recipient: a refused login (535 5.7.8, 534,
    // 538 at AUTH), "530 5.7.0 Authentication required" at any stage, relaying denied.
    if class == 5
        && (stage == SmtpStage::Auth
            || code == 530
            || matches!(enhanced, Some((5, 7, 8 | 9)))
            || has_any(&text, AUTH_TEXT))
    {
        return Verdict::RelayConfig;
    }
    // Greylisting (RFC 6647) is an ordinary deferral, whatever code the server picks.
    if class == 4 && has_any(&text, GREYLIST_TEXT) {
        return Verdict::Transient;
    }
    match stage {
        // Before any recipient is named, a reply is about us, not about a recipient: a 4xx
        // slows the connection, a 5xx (other than the size of the message, announced with
        // SIZE= on MAIL FROM) refuses every message we would send.
        SmtpStage::Connect
        | SmtpStage::Greeting
        | SmtpStage::Ehlo
        | SmtpStage::Auth
        | SmtpStage::MailFrom => {
            return match class {
                4 => Verdict::Throttle,
                _ if is_size && stage == SmtpStage::MailFrom => Verdict::MessageDefect,
                _ => Verdict::RelayConfig,
            };
        }
        SmtpStage::RcptTo | SmtpStage::Data => {}
    }
    if code == 421 || code == 432 {
        return Verdict::Throttle;
    }
    if let Some(e) = enhanced {
        match e {
            // 5.1.7 / 5.1.8: the *sender's* address is bad; not the recipient's fault.
            (5, 1, 7 | 8) => return Verdict::Permanent,
            (5, 1, _) => return Verdict::HardBounce,
            (_, 2, 1 | 2) => return Verdict::SoftBounce,
            (_, 3, 4) => return Verdict::MessageDefect,
            (5, 6, _) => return Verdict::MessageDefect,
            (5, 7, _) if has_any(&text, MESSAGE_TEXT) => return Verdict::MessageDefect,
            // A 5xx is never retried: the recipient's server has decided.
            (5, 7, _) => return Verdict::Policy,
            // 4.7.0 (generic) and 4.7.28 (Gmail's rate limit) are about our volume.
            (4, 7, 0 | 28) => return Verdict::Throttle,
            (4, 7, _) if has_any(&text, RATE_TEXT) => return Verdict::Throttle,
            // Any other 4.7.x at RCPT (4.7.1 greylisting or a policy deferral) concerns this
            // recipient only: retry it later, the others go on at full pace.
            (4, 7, _) => return Verdict::Transient,
            _ => {}
        }
    }
    match class {
        4 if has_any(&text, RATE_TEXT) => Verdict::Throttle,
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
        5 if has_any(&text, POLICY_TEXT) => Verdict::Policy,
        _ => Verdict::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    fn at(stage: SmtpStage, code: u16, text: &str) -> Result<SmtpReply, SendFailure> {
        Err(SendFailure::Rejected {
            stage,
            reply: SmtpReply::new(code, text),
        })
    }

    fn rejected(code: u16, text: &str) -> Result<SmtpReply, SendFailure> {
        at(SmtpStage::RcptTo, code, text)
    }

    #[test]
    fn classification_table() {
        use SmtpStage::{Auth, Connect, Data, Ehlo, Greeting, MailFrom};
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
            // The sender's volume: the connection slows down.
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
            (rejected(450, "4.7.0 Try again later"), Throttle),
            (
                rejected(432, "4.3.2 Concurrent connections limit exceeded"),
                Throttle,
            ),
            (
                rejected(451, "4.7.1 Try again later: low IP reputation"),
                Throttle,
            ),
            (
                rejected(451, "too many connections from your IP, slow down"),
                Throttle,
            ),
            (at(Greeting, 421, "4.3.2 Service not available"), Throttle),
            (at(Connect, 450, "Try again later"), Throttle),
            (at(MailFrom, 451, "4.3.0 Try again later"), Throttle),
            (at(MailFrom, 450, "4.7.1 Sender rate exceeded"), Throttle),
            (
                at(Auth, 454, "4.7.0 Temporary authentication failure"),
                Throttle,
            ),
            // One recipient's deferral (greylisting, a per-recipient 4.7.1): only it waits.
            (
                rejected(
                    450,
                    "4.2.0 Recipient address rejected: Greylisted, see http://postgrey.example/",
                ),
                Transient,
            ),
            (rejected(451, "4.7.1 Greylisted, try again"), Transient),
            (
                rejected(
                    450,
                    "4.7.1 <grey@test.example>: Recipient address rejected: Greylisted",
                ),
                Transient,
            ),
            (
                rejected(
                    450,
                    "4.7.1 <a@test.example>: Recipient address rejected: Policy",
                ),
                Transient,
            ),
            (rejected(451, "4.3.0 Local error in processing"), Transient),
            (rejected(452, "Insufficient system storage"), Transient),
            // A 5xx from the recipient's server's policy: fail, never retry, never suppress.
            (
                rejected(550, "5.7.1 Recipient rejected by local policy"),
                Policy,
            ),
            (
                rejected(
                    554,
                    "5.7.1 <p@test.example>: Recipient address rejected: Access denied",
                ),
                Policy,
            ),
            (
                rejected(554, "5.7.1 Message rejected due to spam policy"),
                Policy,
            ),
            (
                rejected(
                    550,
                    "5.7.1 Service unavailable; client host blocked using Spamhaus",
                ),
                Policy,
            ),
            (
                rejected(
                    550,
                    "5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy",
                ),
                Policy,
            ),
            (at(Data, 554, "5.7.1 Rejected by policy"), Policy),
            (rejected(550, "Rejected by policy"), Policy),
            // The message itself.
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
            (
                at(Data, 552, "5.3.4 Message size exceeds fixed limit"),
                MessageDefect,
            ),
            (
                at(MailFrom, 552, "5.3.4 Message size exceeds fixed limit"),
                MessageDefect,
            ),
            (rejected(552, "Message too large"), MessageDefect),
            (
                Err(SendFailure::TooBigForRelay {
                    size: 30_000_000,
                    limit: 10_240_000,
                }),
                MessageDefect,
            ),
            // The relay's configuration (or ours): pause at once.
            (
                at(
                    Auth,
                    535,
                    "5.7.8 Error: authentication failed: bad credentials",
                ),
                RelayConfig,
            ),
            (
                at(Auth, 534, "5.7.9 Please log in with your web browser"),
                RelayConfig,
            ),
            (
                at(
                    Auth,
                    538,
                    "5.7.11 Encryption required for requested authentication mechanism",
                ),
                RelayConfig,
            ),
            (
                at(Auth, 504, "5.5.4 Unrecognized authentication type"),
                RelayConfig,
            ),
            (
                at(MailFrom, 530, "5.7.0 Authentication required"),
                RelayConfig,
            ),
            (rejected(530, "5.7.0 Authentication required"), RelayConfig),
            (at(Data, 530, "5.7.0 Authentication required"), RelayConfig),
            (
                at(MailFrom, 530, "5.7.0 Must issue a STARTTLS command first"),
                RelayConfig,
            ),
            (
                rejected(554, "5.7.1 <a@example.org>: Relay access denied"),
                RelayConfig,
            ),
            (
                at(
                    MailFrom,
                    553,
                    "5.1.8 <digest@x.test>: Sender address rejected: Domain not found",
                ),
                RelayConfig,
            ),
            (at(Greeting, 554, "5.7.1 No SMTP service here"), RelayConfig),
            (at(Ehlo, 550, "5.7.1 Client host rejected"), RelayConfig),
            (
                Err(SendFailure::CertificateUntrusted(
                    "invalid peer certificate: UnknownIssuer".into(),
                )),
                RelayConfig,
            ),
            (
                Err(SendFailure::NoAuthMechanism(
                    "the server offers AUTH only after STARTTLS".into(),
                )),
                RelayConfig,
            ),
            // Everything else.
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
        let mut wrong = Vec::new();
        for (result, want) in &rows {
            let got = classify(result);
            if got != *want {
                wrong.push(format!("{result:?}: got {got}, want {want}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn verdict_properties() {
        for v in [Sent, HardBounce, Policy, MessageDefect, Permanent] {
            assert!(v.is_final(), "{v}");
        }
        for v in [Transient, Throttle, SoftBounce, RelayConfig] {
            assert!(!v.is_final(), "{v}");
        }
        let all = Verdict::ALL;
        assert_eq!(all.len(), 9);
        assert_eq!(all.iter().filter(|v| v.suppresses_recipient()).count(), 1);
        assert!(HardBounce.suppresses_recipient());
        assert_eq!(all.iter().filter(|v| v.counts_as_soft_bounce()).count(), 1);
        assert_eq!(all.iter().filter(|v| v.slows_connection()).count(), 1);
        assert_eq!(all.iter().filter(|v| v.hands_delivery_back()).count(), 1);
        assert!(RelayConfig.hands_delivery_back());
        assert_eq!(SoftBounce.as_str(), "soft_bounce");
        assert_eq!(MessageDefect.to_string(), "message_defect");
        assert_eq!(Policy.as_str(), "policy");
        assert_eq!(RelayConfig.as_str(), "relay_config");
    }

    #[test]
    fn only_silence_means_the_relay_may_be_down() {
        assert!(relay_unreachable(&Err(SendFailure::Network(
            "connect: Connection refused".into()
        ))));
        assert!(relay_unreachable(&Err(SendFailure::Timeout(
            SmtpStage::Connect
        ))));
        assert!(!relay_unreachable(&at(SmtpStage::Greeting, 421, "busy")));
        assert!(!relay_unreachable(&Err(SendFailure::CertificateUntrusted(
            "UnknownIssuer".into()
        ))));
    }
}
