//! The public subscription lifecycle through real HTTP and real SMTP:
//! double opt-in, one-click unsubscribe (RFC 8058), resubscribe, and the
//! form's protections (honeypot, rate limits, no enumeration).
//! Each scenario runs on SQLite, and on PostgreSQL when
//! `HERALD_TEST_POSTGRES_URL` is set.

mod support;

use std::time::Duration;

use herald::config::HumanDuration;
use herald::domain::SubscriptionState::{Confirmed, Pending, Unsubscribed};
use support::app::{Backend, TestApp, USER_AGENT, mime_parts};

crate::on_each_backend!(
    double_opt_in_from_form_to_confirmed,
    confirmation_links_that_do_not_work,
    short_ttl_expires,
    one_click_unsubscribe_urlencoded_and_multipart,
    forged_unsubscribe_token_changes_nothing,
    honeypot_and_rate_limits_answer_the_same_and_send_nothing,
    responses_do_not_reveal_whether_an_address_is_known,
    resubscribe_after_unsubscribe_needs_a_fresh_confirmation,
    json_subscribe_and_invalid_addresses,
    suppressed_address_can_come_back_only_by_confirming,
);

const CHECK_INBOX: &str = "Check your inbox";

async fn double_opt_in_from_form_to_confirmed(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let email = "ada@example.org";
    let typed_name = "Buy cheap pills at spam.example";

    let page = t.post_subscribe_form(email, Some(typed_name)).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(CHECK_INBOX), "{}", page.body);
    // The request is processed after the answer; the mail marks its end.
    let mail = t.confirmation_mail(email).await;
    assert_eq!(t.subscription_state(email).await, Some(Pending));
    assert!(
        !t.is_sendable(email).await,
        "a pending address is not sendable"
    );

    // The confirmation mail, as received over SMTP.
    assert_eq!(mail.rcpt_to, vec![email.to_owned()]);
    assert_eq!(mail.mail_from, "digest@news.herald.test");
    let from = mail.header("From").expect("From");
    assert!(from.contains("<digest@news.herald.test>"), "From: {from}");
    assert_eq!(mail.header("To").as_deref(), Some(email));
    let date = mail.header("Date").expect("Date");
    chrono::DateTime::parse_from_rfc2822(&date).unwrap_or_else(|e| panic!("Date {date:?}: {e}"));
    let message_id = mail.header("Message-ID").expect("Message-ID");
    assert!(
        message_id.starts_with('<') && message_id.ends_with('>') && message_id.contains('@'),
        "{message_id}"
    );
    assert!(
        mail.header("Subject")
            .is_some_and(|s| s.contains("Confirm"))
    );
    let content_type = mail.header("Content-Type").expect("Content-Type");
    assert!(
        content_type.starts_with("multipart/alternative"),
        "{content_type}"
    );
    let parts = mime_parts(&mail);
    let types: Vec<&str> = parts
        .iter()
        .map(|(ct, _)| ct.split(';').next().unwrap_or(""))
        .collect();
    assert_eq!(types, ["text/plain", "text/html"], "text first, then HTML");
    // Nothing the requester typed (other than the address) is in the mail.
    assert!(!mail.data_str().contains("spam.example"));
    for (_, body) in &parts {
        assert!(
            !body.contains("spam.example") && !body.contains("cheap pills"),
            "user text leaked into the mail:\n{body}"
        );
    }
    let link = t.confirmation_link(&mail);
    assert!(
        parts[1].1.contains(&link),
        "the HTML part carries the same link"
    );

    // GET (a link scanner, or the person) only shows the button.
    let page = t.get(&link).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<button") && page.body.contains("Confirm"),
        "{}",
        page.body
    );
    assert!(page.body.contains("method=\"post\""));
    assert_eq!(
        t.subscription_state(email).await,
        Some(Pending),
        "GET must not confirm"
    );
    assert_eq!(t.consent_kinds(email).await, ["request"]);

    // POST confirms and records who did it.
    let page = t.post_form(&link, &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("You are subscribed"), "{}", page.body);
    assert_eq!(t.subscription_state(email).await, Some(Confirmed));
    assert!(t.is_sendable(email).await);
    let events = t.consent_events(email).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["request", "confirm"]);
    for event in &events {
        assert_eq!(event.ip.as_deref(), Some("127.0.0.1"), "{event:?}");
        assert_eq!(event.user_agent.as_deref(), Some(USER_AGENT), "{event:?}");
    }
    assert_eq!(events[0].source, "web-form");
    assert_eq!(
        events[0].consent_text_version.as_deref(),
        Some("subscribe-form-v1")
    );

    // Pressing Confirm again is harmless.
    let page = t.post_form(&link, &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("You are subscribed"));
    assert_eq!(t.subscription_state(email).await, Some(Confirmed));
    assert_eq!(t.consent_kinds(email).await, ["request", "confirm"]);
    assert_eq!(
        t.settled_mail_count(email).await,
        1,
        "only the confirmation mail"
    );
}

async fn confirmation_links_that_do_not_work(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let email = "grace@example.org";
    t.post_subscribe_form(email, None).await;
    let link = t.confirmation_link(&t.confirmation_mail(email).await);

    // Tampered: one character changed; and plain garbage.
    let last = link.chars().last().unwrap();
    let tampered = format!(
        "{}{}",
        &link[..link.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    for bad in [tampered.clone(), t.url("/confirm/not-a-token")] {
        let page = t.get(&bad).await;
        assert_eq!(page.status, 404, "{bad}");
        assert!(
            page.body.contains("This link does not work"),
            "{}",
            page.body
        );
        assert!(
            page.body.contains("Send me a new link") && page.body.contains("action=\"/subscribe\""),
            "offers a new link"
        );
        let page = t.post_form(&bad, &[]).await;
        assert_eq!(page.status, 404);
        assert!(page.body.contains("Send me a new link"));
    }
    assert_eq!(t.subscription_state(email).await, Some(Pending));
    assert_eq!(t.consent_kinds(email).await, ["request"]);

    // Expired: age the token in the database.
    assert_eq!(
        t.exec("UPDATE confirmation_tokens SET expires_at = 1")
            .await,
        1
    );
    let page = t.get(&link).await;
    assert_eq!(page.status, 410);
    assert!(
        page.body.contains("This link has expired") && page.body.contains("Send me a new link"),
        "{}",
        page.body
    );
    let page = t.post_form(&link, &[]).await;
    assert_eq!(page.status, 410);
    assert!(page.body.contains("This link has expired"));
    assert_eq!(t.subscription_state(email).await, Some(Pending));
    assert_eq!(t.consent_kinds(email).await, ["request"]);
}

/// A configured TTL that has run out by the time the person clicks.
async fn short_ttl_expires(backend: Backend) {
    let t = TestApp::spawn_with(backend, |c| {
        c.subscribe.confirm_ttl = HumanDuration(Duration::from_millis(1))
    })
    .await;
    let email = "late@example.org";
    t.post_subscribe_form(email, None).await;
    let link = t.confirmation_link(&t.confirmation_mail(email).await);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let page = t.post_form(&link, &[]).await;
    assert_eq!(page.status, 410, "{}", page.body);
    assert_eq!(t.subscription_state(email).await, Some(Pending));
}

async fn one_click_unsubscribe_urlencoded_and_multipart(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let (form_user, multipart_user) = ("form@example.org", "multi@example.org");
    t.subscribe_and_confirm(form_user).await;
    t.add_confirmed(multipart_user).await;

    // GET never unsubscribes: it shows a button that POSTs.
    let url = t.unsubscribe_url_for(form_user).await;
    assert!(url.starts_with(&t.url("/unsubscribe/")), "{url}");
    let page = t.get(&url).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<button") && page.body.contains("Unsubscribe"));
    assert_eq!(
        t.subscription_state(form_user).await,
        Some(Confirmed),
        "GET must not unsubscribe"
    );

    // application/x-www-form-urlencoded (Gmail's sample).
    let page = t
        .post_form(&url, &[("List-Unsubscribe", "One-Click")])
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("location"), None, "RFC 8058: no redirect");
    assert_eq!(t.subscription_state(form_user).await, Some(Unsubscribed));
    assert!(!t.is_sendable(form_user).await);
    let last = t.consent_events(form_user).await.pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.method.as_deref()),
        ("unsubscribe", Some("one-click"))
    );

    // A repeated POST is answered the same and records nothing more.
    let page = t
        .post_form(&url, &[("List-Unsubscribe", "One-Click")])
        .await;
    assert_eq!(page.status, 200);
    let unsubscribes = t
        .consent_kinds(form_user)
        .await
        .iter()
        .filter(|k| *k == "unsubscribe")
        .count();
    assert_eq!(unsubscribes, 1);

    // multipart/form-data (what RFC 8058 says receivers SHOULD send).
    let url = t.unsubscribe_url_for(multipart_user).await;
    let page = t
        .post_multipart(&url, &[("List-Unsubscribe", "One-Click")])
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("location"), None);
    assert_eq!(
        t.subscription_state(multipart_user).await,
        Some(Unsubscribed)
    );
    let last = t.consent_events(multipart_user).await.pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.method.as_deref()),
        ("unsubscribe", Some("one-click"))
    );
}

async fn forged_unsubscribe_token_changes_nothing(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let (victim, attacker) = ("victim@example.org", "attacker@example.org");
    t.add_confirmed(victim).await;
    t.add_confirmed(attacker).await;
    let victim_id = t.subscriber_id(victim).await.unwrap();
    let attacker_id = t.subscriber_id(attacker).await.unwrap();

    // The attacker's own valid MAC with the victim's id; a mangled MAC; garbage.
    let own = t.unsubscribe_url_for(attacker).await;
    let swapped = own.replacen(
        &format!("/unsubscribe/{attacker_id}."),
        &format!("/unsubscribe/{victim_id}."),
        1,
    );
    assert_ne!(swapped, own);
    let victim_url = t.unsubscribe_url_for(victim).await;
    let flipped = if victim_url.ends_with('x') { 'y' } else { 'x' };
    let mangled = format!("{}{flipped}", &victim_url[..victim_url.len() - 1]);
    for forged in [swapped, mangled, t.url("/unsubscribe/1.1.AAAA")] {
        let page = t
            .post_form(&forged, &[("List-Unsubscribe", "One-Click")])
            .await;
        assert!(
            (400..500).contains(&page.status),
            "{forged}: {}",
            page.status
        );
        let page = t.get(&forged).await;
        assert!(
            (400..500).contains(&page.status),
            "{forged}: {}",
            page.status
        );
    }
    assert_eq!(t.subscription_state(victim).await, Some(Confirmed));
    assert_eq!(t.subscription_state(attacker).await, Some(Confirmed));
    assert!(
        !t.consent_kinds(victim)
            .await
            .iter()
            .any(|k| k == "unsubscribe")
    );
}

async fn honeypot_and_rate_limits_answer_the_same_and_send_nothing(backend: Backend) {
    let t = TestApp::spawn_with(backend, |c| c.subscribe.per_ip_per_hour = 3).await;
    let normal = t.post_subscribe_form("first@example.org", None).await;
    assert_eq!(normal.status, 200);

    // Honeypot filled: same answer, nothing stored, no mail.
    let bot = "bot@example.org";
    let page = t
        .post_form(
            &t.url("/subscribe"),
            &[
                ("email", bot),
                ("name", "Bot"),
                ("website", "http://spam.example"),
            ],
        )
        .await;
    assert_eq!((page.status, &page.body), (normal.status, &normal.body));
    assert_eq!(t.subscriber_id(bot).await, None);

    // The same address again within resend_interval: same answer, no second mail.
    let page = t.post_subscribe_form("first@example.org", None).await;
    assert_eq!((page.status, &page.body), (normal.status, &normal.body));

    // Per-IP limit (3 per hour; the honeypot post is not counted): the
    // fourth request is answered the same and neither stored nor mailed.
    t.post_subscribe_form("third@example.org", None).await;
    let limited = "fourth@example.org";
    let page = t.post_subscribe_form(limited, None).await;
    assert_eq!((page.status, &page.body), (normal.status, &normal.body));
    assert_eq!(t.subscriber_id(limited).await, None);

    t.nth_mail_to("third@example.org", 1).await;
    assert_eq!(t.settled_mail_count("first@example.org").await, 1);
    assert_eq!(t.smtp.messages_to(bot).len(), 0);
    assert_eq!(t.smtp.messages_to(limited).len(), 0);
    assert_eq!(t.smtp.messages().len(), 2);
}

async fn responses_do_not_reveal_whether_an_address_is_known(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let (pending, confirmed, unsubscribed) = (
        "pending@example.org",
        "confirmed@example.org",
        "unsub@example.org",
    );
    t.post_subscribe_form(pending, None).await;
    t.confirmation_mail(pending).await;
    t.add_confirmed(confirmed).await;
    t.add_confirmed(unsubscribed).await;
    let url = t.unsubscribe_url_for(unsubscribed).await;
    t.post_form(&url, &[("List-Unsubscribe", "One-Click")])
        .await;
    assert_eq!(t.subscription_state(unsubscribed).await, Some(Unsubscribed));

    let mut form_answers = Vec::new();
    let mut json_answers = Vec::new();
    for email in ["new@example.org", pending, confirmed, unsubscribed] {
        let page = t.post_subscribe_form(email, None).await;
        form_answers.push((page.status, page.body));
        let page = t
            .post_subscribe_json(serde_json::json!({ "email": email }))
            .await;
        json_answers.push((page.status, page.body));
    }
    assert_eq!(form_answers[0].0, 200);
    assert!(
        form_answers.iter().all(|a| *a == form_answers[0]),
        "form answers differ: {form_answers:#?}"
    );
    assert_eq!(json_answers[0].0, 202);
    assert!(
        json_answers.iter().all(|a| *a == json_answers[0]),
        "JSON answers differ: {json_answers:#?}"
    );
    assert_eq!(
        t.subscription_state(confirmed).await,
        Some(Confirmed),
        "a confirmed address stays confirmed"
    );
    assert_eq!(
        t.subscription_state(unsubscribed).await,
        Some(Unsubscribed),
        "asking is not confirming"
    );
}

async fn resubscribe_after_unsubscribe_needs_a_fresh_confirmation(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let email = "comeback@example.org";
    let first_link = t.subscribe_and_confirm(email).await;
    let url = t.unsubscribe_url_for(email).await;
    t.post_form(&url, &[("List-Unsubscribe", "One-Click")])
        .await;
    assert_eq!(t.subscription_state(email).await, Some(Unsubscribed));

    // The old confirmation link must not undo the unsubscribe.
    let page = t.post_form(&first_link, &[]).await;
    assert_eq!(page.status, 404);
    assert_eq!(t.subscription_state(email).await, Some(Unsubscribed));

    // Straight away (within resend_interval of the first mail) the person
    // subscribes again: their own unsubscribe reopened the window.
    let page = t.post_subscribe_form(email, None).await;
    assert_eq!(page.status, 200);
    let mail = t.nth_mail_to(email, 2).await;
    assert_eq!(
        t.subscription_state(email).await,
        Some(Unsubscribed),
        "asking again is not consent yet"
    );
    assert!(!t.is_sendable(email).await);

    let link = t.confirmation_link(&mail);
    assert_ne!(link, first_link);
    t.get(&link).await;
    assert_eq!(
        t.subscription_state(email).await,
        Some(Unsubscribed),
        "GET must not confirm"
    );
    let page = t.post_form(&link, &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(t.subscription_state(email).await, Some(Confirmed));
    assert!(t.is_sendable(email).await);
    assert_eq!(
        t.consent_kinds(email).await,
        [
            "request",
            "confirm",
            "unsubscribe",
            "request",
            "resubscribe"
        ]
    );
}

async fn json_subscribe_and_invalid_addresses(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let email = "api@example.org";
    let page = t
        .post_subscribe_json(serde_json::json!({ "email": email, "name": "Api User" }))
        .await;
    assert_eq!(page.status, 202, "{}", page.body);
    let body: serde_json::Value = serde_json::from_str(&page.body).expect("JSON answer");
    assert_eq!(body["status"], "check_your_inbox");
    let mail = t.confirmation_mail(email).await;
    assert!(!mail.data_str().contains("Api User"));
    assert_eq!(t.subscription_state(email).await, Some(Pending));

    let page = t
        .post_subscribe_json(serde_json::json!({ "email": "not-an-address" }))
        .await;
    assert_eq!(page.status, 422);
    let body: serde_json::Value = serde_json::from_str(&page.body).expect("JSON answer");
    assert_eq!(body["field"], "email");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("valid email address")),
        "{body}"
    );

    let page = t.post_subscribe_form("two@@example.org", None).await;
    assert_eq!(page.status, 422);
    assert!(
        page.body.contains("Please enter a valid email address"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("value=\"two@@example.org\""),
        "the form keeps what was typed"
    );
    assert_eq!(t.count("SELECT COUNT(*) FROM subscribers").await, 1);
    assert_eq!(t.settled_mail_count(email).await, 1);
    assert_eq!(t.smtp.messages().len(), 1);
}

async fn suppressed_address_can_come_back_only_by_confirming(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let email = "bounced-once@example.org";
    t.db.suppress(&TestApp::email(email), "manual", herald::domain::now_ms())
        .await
        .unwrap();
    assert!(t.is_suppressed(email).await);

    let page = t.post_subscribe_form(email, None).await;
    assert_eq!(page.status, 200);
    let link = t.confirmation_link(&t.confirmation_mail(email).await);
    assert!(
        t.is_suppressed(email).await,
        "asking does not lift the suppression"
    );
    assert!(!t.is_sendable(email).await);

    t.post_form(&link, &[]).await;
    assert_eq!(t.subscription_state(email).await, Some(Confirmed));
    assert!(
        !t.is_suppressed(email).await,
        "confirming lifts the suppression"
    );
    assert!(t.is_sendable(email).await);
}
