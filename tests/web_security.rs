//! The public web server under attack and behind a proxy, through real HTTP:
//! security headers on every kind of answer, `http.trusted_proxies`, errors
//! in the client's format (JSON or HTML), the dropped-name notice, and
//! subscribe answers that neither wait for nor depend on the address's state.
//! Each scenario runs on SQLite, and on PostgreSQL when
//! `HERALD_TEST_POSTGRES_URL` is set.

mod support;

use std::path::Path;
use std::time::Duration;

use herald::config::Config;
use herald::domain::SubscriptionState::{Confirmed, Pending, Unsubscribed};
use herald::web::TrustedProxies;
use sqlx::Connection;
use support::app::{Backend, TestApp, text_part};

crate::on_each_backend!(
    security_headers_on_every_kind_of_answer,
    forwarded_addresses_count_only_from_a_trusted_proxy,
    spoofed_forwarding_headers_are_ignored_by_default,
    json_clients_get_json_errors,
    a_bad_name_is_dropped_and_the_answer_says_so,
    answers_are_identical_for_every_address_state,
    subscribe_answers_without_waiting_for_the_database,
    internal_errors_are_logged_not_shown,
);

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/emails/samples/week-2024-18.md"
);

/// A response, read whole (status, headers, body).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    async fn of(request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("HTTP request");
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body"),
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn assert_json_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert!(
            self.header("content-type").starts_with("application/json"),
            "{:?}",
            self.headers
        );
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() > 10),
            "a message that says what was wrong: {body}"
        );
    }
}

fn with_proxies(list: &[&str]) -> impl FnOnce(&mut Config) {
    let parsed = TrustedProxies::new(list.iter().map(|s| s.parse().unwrap()).collect());
    move |c: &mut Config| c.http.trusted_proxies = parsed
}

async fn security_headers_on_every_kind_of_answer(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let nl = t.app.newsletter.clone();
    t.app
        .import_items_file(&nl, Path::new(SAMPLE), true)
        .await
        .unwrap();
    let issue = t.app.compose_issue(&nl, Default::default()).await.unwrap();
    t.app.send_issue(&issue).await.unwrap();

    let c = &t.client;
    let cases = [
        (
            "form page",
            Answer::of(c.get(t.url("/subscribe"))).await,
            200,
        ),
        ("redirect", Answer::of(c.get(t.url("/"))).await, 303),
        ("404", Answer::of(c.get(t.url("/no/such/page"))).await, 404),
        ("405", Answer::of(c.delete(t.url("/subscribe"))).await, 405),
        (
            "POST answer",
            Answer::of(
                c.post(t.url("/subscribe"))
                    .form(&[("email", "h@example.org")]),
            )
            .await,
            200,
        ),
        (
            "422 form",
            Answer::of(c.post(t.url("/subscribe")).form(&[("email", "nope")])).await,
            422,
        ),
        (
            "400 JSON",
            Answer::of(
                c.post(t.url("/subscribe"))
                    .header("content-type", "application/json")
                    .body("{"),
            )
            .await,
            400,
        ),
        (
            "bad confirmation link",
            Answer::of(c.get(t.url("/confirm/not-a-token"))).await,
            404,
        ),
        (
            "forged unsubscribe link",
            Answer::of(c.post(t.url("/unsubscribe/1.1.AAAA"))).await,
            404,
        ),
        ("archive", Answer::of(c.get(t.url("/archive"))).await, 200),
        (
            "archived issue",
            Answer::of(c.get(t.url(&format!("/archive/{}", issue.slug)))).await,
            200,
        ),
        (
            "unknown issue",
            Answer::of(c.get(t.url("/archive/nothing-here"))).await,
            404,
        ),
    ];
    for (what, answer, status) in &cases {
        assert_eq!(answer.status, *status, "{what}: {}", answer.body);
        let csp = answer.header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{what}: CSP {csp:?}");
        }
        assert!(!csp.contains("script-src"), "{what}: no script anywhere");
        assert_eq!(answer.header("x-frame-options"), "DENY", "{what}");
        assert_eq!(answer.header("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(answer.header("referrer-policy"), "no-referrer", "{what}");
    }
    // Our pages' only style is allowed by hash; the email rendering needs
    // inline styles and remote images, and gets them only there.
    let page_csp = cases[0].1.header("content-security-policy");
    assert!(page_csp.contains("style-src 'sha256-"), "{page_csp}");
    assert!(!page_csp.contains("unsafe-inline") && !page_csp.contains("img-src"));
    let issue_csp = cases[10].1.header("content-security-policy");
    assert!(
        issue_csp.contains("style-src 'unsafe-inline'") && issue_csp.contains("img-src https:"),
        "{issue_csp}"
    );
    // The archive index lists the issue from its summary row.
    assert!(
        cases[9]
            .1
            .body
            .contains(&format!("/archive/{}", issue.slug))
    );
    // Framework answers come with our page, not text/plain.
    for i in [2, 3] {
        assert!(
            cases[i].1.header("content-type").starts_with("text/html"),
            "{}",
            cases[i].0
        );
    }
}

async fn forwarded_addresses_count_only_from_a_trusted_proxy(backend: Backend) {
    let t = TestApp::spawn_with(backend, |c| {
        with_proxies(&["127.0.0.1/32"])(c);
        c.subscribe.per_ip_per_hour = 2;
    })
    .await;
    let post = |email: &str, header: (&'static str, &'static str)| {
        t.client
            .post(t.url("/subscribe"))
            .header(header.0, header.1)
            .form(&[("email", email)])
    };
    // The proxy appends the real client after whatever the client wrote.
    let spoofed_then_real = ("x-forwarded-for", "192.0.2.1, 203.0.113.7");
    for email in ["p1@example.org", "p2@example.org"] {
        assert_eq!(Answer::of(post(email, spoofed_then_real)).await.status, 200);
    }
    let limited = Answer::of(post("p3@example.org", spoofed_then_real)).await;
    assert_eq!(limited.status, 200, "limited, answered the same");
    // Another client behind the same proxy has its own quota.
    let other = ("forwarded", "for=\"[2001:db8:cafe::17]:4711\";proto=https");
    Answer::of(post("p4@example.org", other)).await;

    let mail = t.confirmation_mail("p1@example.org").await;
    assert!(
        text_part(&mail).contains("from the address 203.0.113.7 "),
        "the mail names the client, not the proxy:\n{}",
        text_part(&mail)
    );
    t.confirmation_mail("p2@example.org").await;
    t.confirmation_mail("p4@example.org").await;
    let events = t.consent_events("p1@example.org").await;
    assert_eq!(events[0].ip.as_deref(), Some("203.0.113.7"), "{events:?}");
    let events = t.consent_events("p4@example.org").await;
    assert_eq!(events[0].ip.as_deref(), Some("2001:db8:cafe::17"));
    assert_eq!(t.subscriber_id("p3@example.org").await, None);

    // Garbage from the trusted proxy: the proxy itself is the client.
    Answer::of(post(
        "p5@example.org",
        ("x-forwarded-for", "not-an-address"),
    ))
    .await;
    t.confirmation_mail("p5@example.org").await;
    let events = t.consent_events("p5@example.org").await;
    assert_eq!(events[0].ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(t.settled_mail_count("p3@example.org").await, 0);
}

async fn spoofed_forwarding_headers_are_ignored_by_default(backend: Backend) {
    // Trusted proxies configured, but not the peer the requests come from.
    let t = TestApp::spawn_with(backend, |c| {
        with_proxies(&["10.0.0.0/8", "::1/128"])(c);
        c.subscribe.per_ip_per_hour = 2;
    })
    .await;
    let spoofs = [
        ("x-forwarded-for", "203.0.113.1"),
        ("forwarded", "for=203.0.113.2"),
        ("x-forwarded-for", "203.0.113.3"),
    ];
    let emails = ["s1@example.org", "s2@example.org", "s3@example.org"];
    for (email, (name, value)) in emails.iter().zip(spoofs) {
        let a = Answer::of(
            t.client
                .post(t.url("/subscribe"))
                .header(name, value)
                .form(&[("email", *email)]),
        )
        .await;
        assert_eq!(a.status, 200);
    }
    t.confirmation_mail("s1@example.org").await;
    t.confirmation_mail("s2@example.org").await;
    for email in &emails[..2] {
        let events = t.consent_events(email).await;
        assert_eq!(events[0].ip.as_deref(), Some("127.0.0.1"), "{events:?}");
    }
    assert_eq!(
        t.subscriber_id("s3@example.org").await,
        None,
        "a new header value is not a new quota"
    );
    assert_eq!(t.settled_mail_count("s3@example.org").await, 0);
}

async fn json_clients_get_json_errors(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let c = &t.client;
    let json_post = |content_type: &'static str, body: String| {
        c.post(t.url("/subscribe"))
            .header("content-type", content_type)
            .body(body)
    };

    Answer::of(json_post("application/json", "{\"email\": ".into()))
        .await
        .assert_json_error(400, "invalid_json");
    Answer::of(json_post("application/json", "{\"email\": 5}".into()))
        .await
        .assert_json_error(422, "invalid_field");
    let missing = Answer::of(json_post("application/json", "{}".into())).await;
    missing.assert_json_error(422, "invalid_email");
    assert_eq!(missing.json()["field"], "email", "the old fields stay");

    // Any case, with parameters.
    let ok = Answer::of(json_post(
        "APPLICATION/JSON; charset=utf-8",
        r#"{"email": "Upper@Example.org"}"#.into(),
    ))
    .await;
    assert_eq!(ok.status, 202, "{}", ok.body);
    assert_eq!(ok.json()["status"], "check_your_inbox");
    t.confirmation_mail("Upper@example.org").await;

    // Too large: a clean 413, in JSON for JSON, as a page for the form.
    let big = format!(
        r#"{{"email": "big@example.org", "name": "{}"}}"#,
        "x".repeat(70_000)
    );
    Answer::of(json_post("application/json", big))
        .await
        .assert_json_error(413, "payload_too_large");
    let big_form = Answer::of(
        c.post(t.url("/subscribe"))
            .form(&[("email", "big@example.org"), ("name", &"x".repeat(70_000))]),
    )
    .await;
    assert_eq!(big_form.status, 413);
    assert!(big_form.header("content-type").starts_with("text/html"));
    assert!(big_form.body.contains("larger than"), "{}", big_form.body);

    // Wrong content type; framework 404 and 405 for a client that asks JSON.
    Answer::of(
        c.post(t.url("/subscribe"))
            .header("accept", "application/json")
            .header("content-type", "text/plain")
            .body("email=a@example.org"),
    )
    .await
    .assert_json_error(415, "unsupported_media_type");
    Answer::of(
        c.get(t.url("/nowhere"))
            .header("accept", "application/json"),
    )
    .await
    .assert_json_error(404, "not_found");
    Answer::of(
        c.delete(t.url("/subscribe"))
            .header("accept", "application/json"),
    )
    .await
    .assert_json_error(405, "method_not_allowed");
    Answer::of(
        c.post(t.url("/n/no-such-newsletter/subscribe"))
            .json(&serde_json::json!({"email": "x@example.org"})),
    )
    .await
    .assert_json_error(404, "not_found");
    assert_eq!(t.subscriber_id("big@example.org").await, None);
    assert_eq!(t.subscriber_id("x@example.org").await, None);
}

async fn a_bad_name_is_dropped_and_the_answer_says_so(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let injected = "Eve\r\nBcc: everyone@example.org";
    let long = "n".repeat(201);
    t.add_confirmed("known@example.org").await;

    let mut answers = Vec::new();
    for (email, name) in [
        ("crlf@example.org", injected),
        ("known@example.org", injected),
        ("nul@example.org", "Nul\0Byte"),
        ("long@example.org", long.as_str()),
    ] {
        let page = t.post_subscribe_form(email, Some(name)).await;
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains("We did not keep the name you entered")
                && page.body.contains("200 characters"),
            "{}",
            page.body
        );
        answers.push(page.body);
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "the notice is the same for a known and a new address"
    );
    let fine = t
        .post_subscribe_form("fine@example.org", Some("Fine Name"))
        .await;
    assert!(!fine.body.contains("did not keep"));

    for email in ["crlf@example.org", "nul@example.org", "long@example.org"] {
        t.confirmation_mail(email).await;
        assert_eq!(t.subscription_state(email).await, Some(Pending), "{email}");
        assert_eq!(
            t.count(&format!(
                "SELECT COUNT(*) FROM subscribers WHERE email = '{email}' AND name IS NULL"
            ))
            .await,
            1,
            "{email} subscribed without the name"
        );
    }
    t.confirmation_mail("fine@example.org").await;
    assert_eq!(
        t.count("SELECT COUNT(*) FROM subscribers WHERE name = 'Fine Name'")
            .await,
        1
    );

    let page = t
        .post_subscribe_json(serde_json::json!({"email": "api@example.org", "name": injected}))
        .await;
    assert_eq!(page.status, 202);
    let body: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert!(
        body["name_not_kept"]
            .as_str()
            .is_some_and(|m| m.contains("single line")),
        "{body}"
    );
    let page = t
        .post_subscribe_json(serde_json::json!({"email": "api2@example.org", "name": "Ok"}))
        .await;
    let body: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert!(body.get("name_not_kept").is_none(), "{body}");
}

async fn answers_are_identical_for_every_address_state(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let (pending, confirmed, unsubscribed, suppressed) = (
        "pending@example.org",
        "confirmed@example.org",
        "unsub@example.org",
        "suppressed@example.org",
    );
    t.post_subscribe_form(pending, None).await;
    t.confirmation_mail(pending).await;
    t.add_confirmed(confirmed).await;
    t.add_confirmed(unsubscribed).await;
    let url = t.unsubscribe_url_for(unsubscribed).await;
    t.post_form(&url, &[("List-Unsubscribe", "One-Click")])
        .await;
    assert_eq!(t.subscription_state(unsubscribed).await, Some(Unsubscribed));
    t.db.suppress(
        &TestApp::email(suppressed),
        "manual",
        herald::domain::now_ms(),
    )
    .await
    .unwrap();

    let states = [
        "new@example.org",
        pending,
        confirmed,
        unsubscribed,
        suppressed,
    ];
    let mut form = Vec::new();
    let mut json = Vec::new();
    for email in states {
        let page = t.post_subscribe_form(email, None).await;
        form.push((page.status, page.body));
        let page = t
            .post_subscribe_json(serde_json::json!({ "email": email }))
            .await;
        json.push((page.status, page.body));
    }
    assert_eq!(form[0].0, 200);
    assert!(form.iter().all(|a| *a == form[0]), "{form:#?}");
    assert_eq!(json[0].0, 202);
    assert!(json.iter().all(|a| *a == json[0]), "{json:#?}");
    t.confirmation_mail("new@example.org").await;
    assert_eq!(t.subscription_state(confirmed).await, Some(Confirmed));
    assert_eq!(t.subscription_state(unsubscribed).await, Some(Unsubscribed));
}

/// Holds the database's write lock (SQLite) or an exclusive lock on the
/// subscribers table (PostgreSQL) from a connection of its own, so any
/// request that touched subscribers would wait until it is released.
enum DbLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl DbLock {
    async fn take(t: &TestApp) -> DbLock {
        if t.database_url.starts_with("sqlite") {
            let mut conn = sqlx::SqliteConnection::connect(&t.database_url)
                .await
                .expect("second SQLite connection");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .expect("BEGIN IMMEDIATE");
            DbLock::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(&t.database_url)
                .await
                .expect("second PostgreSQL connection");
            sqlx::query("BEGIN")
                .execute(&mut conn)
                .await
                .expect("BEGIN");
            sqlx::query("LOCK TABLE subscribers IN ACCESS EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .expect("LOCK TABLE");
            DbLock::Postgres(conn)
        }
    }

    async fn release(self) {
        match self {
            DbLock::Sqlite(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.expect("COMMIT");
            }
            DbLock::Postgres(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.expect("COMMIT");
            }
        }
    }
}

/// The structural half of "same answer in time": the handler answers
/// without doing the state-dependent work at all, so nothing the database
/// knows about an address can change how long the answer takes.
async fn subscribe_answers_without_waiting_for_the_database(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let (new, confirmed) = ("blocked-new@example.org", "blocked-known@example.org");
    t.add_confirmed(confirmed).await;
    let reference = t.post_subscribe_form("warm@example.org", None).await;
    t.confirmation_mail("warm@example.org").await;

    let lock = DbLock::take(&t).await;
    // Generous: the answer takes milliseconds; waiting for the lock would
    // take until it is released (PostgreSQL) or SQLite's 30 s busy timeout.
    let limit = Duration::from_secs(15);
    for email in [new, confirmed] {
        let page = tokio::time::timeout(limit, t.post_subscribe_form(email, None))
            .await
            .unwrap_or_else(|_| panic!("{email}: no answer while the database was locked"));
        assert_eq!(
            (page.status, &page.body),
            (reference.status, &reference.body)
        );
        let page = tokio::time::timeout(
            limit,
            t.post_subscribe_json(serde_json::json!({ "email": email })),
        )
        .await
        .unwrap_or_else(|_| panic!("{email}: no JSON answer while the database was locked"));
        assert_eq!(page.status, 202);
    }
    assert!(
        t.smtp.messages_to(new).is_empty(),
        "the work waits for the lock"
    );
    lock.release().await;

    // The queued work then runs: the new address gets its mail, the
    // confirmed one nothing, and neither answer waited for that.
    t.confirmation_mail(new).await;
    assert_eq!(t.subscription_state(new).await, Some(Pending));
    assert_eq!(t.subscription_state(confirmed).await, Some(Confirmed));
    assert_eq!(t.settled_mail_count(confirmed).await, 0);
}

/// A database failure is a 500 with a generic message and a reference to
/// the log line, never the cause (SQL, table names) itself.
async fn internal_errors_are_logged_not_shown(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    t.exec("ALTER TABLE issues RENAME TO issues_moved_away")
        .await;
    let page = Answer::of(t.client.get(t.url("/archive"))).await;
    assert_eq!(page.status, 500, "{}", page.body);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(
        page.body.contains("Something went wrong") && page.body.contains("(reference "),
        "{}",
        page.body
    );
    let json = Answer::of(
        t.client
            .get(t.url("/archive"))
            .header("accept", "application/json"),
    )
    .await;
    json.assert_json_error(500, "internal");
    for body in [&page.body, &json.body] {
        let lower = body.to_lowercase();
        assert!(
            !lower.contains("issues") && !lower.contains("select") && !lower.contains("sql"),
            "the cause leaked: {body}"
        );
    }
    assert_eq!(page.header("x-frame-options"), "DENY");
}
