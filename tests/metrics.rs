//! `GET /metrics` over real HTTP after a real send through the test SMTP
//! server: the counters equal the delivery table, the state gauges equal
//! the database, and the counts are refused to anyone not local (a
//! forwarding header never makes a request local).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use herald::content::ComposeOptions;
use support::app::{Backend, TestApp};
use support::engine::{add_confirmed, run_until_complete, sample_digest};
use support::smtp_server::{Reply, Script};

const TOKEN: &str = "metrics-token-for-the-tests-0123456789";

/// The value of the sample `name{labels}` (labels exactly as written), or None.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

async fn scrape(t: &TestApp) -> String {
    let page = t.get(&t.url("/metrics")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        page.header("content-type")
    );
    page.body
}

async fn grouped(t: &TestApp, sql: &'static str) -> BTreeMap<String, i64> {
    let rows: Vec<(String, i64)> = herald::store::with_pool!(&t.db, |p| {
        sqlx::query_as(sql).fetch_all(p).await.expect(sql)
    });
    rows.into_iter().collect()
}

async fn counters_match_the_delivery_table(backend: Backend) {
    let t = TestApp::spawn_with(backend, |c| {
        c.delivery.retry_schedule = "1s".parse().expect("retry schedule");
    })
    .await;
    let mut emails: Vec<String> = (0..8).map(|n| format!("reader{n}@metrics.test")).collect();
    emails.push("gone@metrics.test".into());
    emails.push("blocked@metrics.test".into());
    emails.push("later1@metrics.test".into());
    emails.push("later2@metrics.test".into());
    t.smtp.set_script(
        Script::new()
            .rcpt(
                "gone@metrics.test",
                [Reply::code(550, "5.1.1 no such user")],
            )
            .rcpt(
                "blocked@metrics.test",
                [Reply::code(554, "5.7.1 rejected by policy")],
            )
            // Greylisted once, then taken: one retry each.
            .rcpt(
                "later1@metrics.test",
                [Reply::code(451, "4.3.0 try again later"), Reply::ok()],
            )
            .rcpt(
                "later2@metrics.test",
                [Reply::code(451, "4.3.0 try again later"), Reply::ok()],
            ),
    );
    add_confirmed(&t.app, &t.db, t.dir.path(), &emails).await;
    // One reader signs up through the form (a confirmation mail) and leaves by one click.
    t.subscribe_and_confirm("leaver@metrics.test").await;
    let unsubscribe = t.unsubscribe_url_for("leaver@metrics.test").await;
    let page = t
        .post_form(&unsubscribe, &[("List-Unsubscribe", "One-Click")])
        .await;
    assert_eq!(page.status, 200, "{}", page.body);

    t.app
        .import_items_file(&t.app.newsletter, &sample_digest(), true)
        .await
        .expect("import items");
    let issue = t
        .app
        .compose_issue(&t.app.newsletter, ComposeOptions::default())
        .await
        .expect("compose");
    t.app.send_issue(&issue).await.expect("send");
    run_until_complete(&t.app, &t.db, issue.id, Duration::from_secs(60)).await;

    let text = scrape(&t).await;

    let sent = t
        .count("SELECT COUNT(*) FROM deliveries WHERE state = 'sent'")
        .await;
    assert_eq!(sent, 10, "8 readers and the two greylisted ones");
    assert_eq!(
        value(&text, "herald_messages_sent_total{transport=\"smtp\"}"),
        sent as f64
    );
    let failed = grouped(
        &t,
        "SELECT failure_reason, COUNT(*) FROM deliveries WHERE state = 'failed' GROUP BY failure_reason",
    )
    .await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    for (reason, n) in &failed {
        let series =
            format!("herald_messages_failed_total{{transport=\"smtp\",reason=\"{reason}\"}}");
        assert_eq!(value(&text, &series), *n as f64, "{series}");
    }
    let retried = t
        .count("SELECT COUNT(*) FROM delivery_attempts WHERE outcome = 'transient'")
        .await;
    assert_eq!(retried, 2);
    assert_eq!(
        value(
            &text,
            "herald_messages_retried_total{transport=\"smtp\",reason=\"transient\"}"
        ),
        retried as f64
    );
    let attempts = t.count("SELECT COUNT(*) FROM delivery_attempts").await;
    assert_eq!(
        value(
            &text,
            "herald_smtp_attempt_duration_seconds_count{transport=\"smtp\"}"
        ),
        attempts as f64
    );

    // The gauges, every state, equal a grouped count of the tables.
    let deliveries = grouped(&t, "SELECT state, COUNT(*) FROM deliveries GROUP BY state").await;
    for state in herald::domain::DeliveryState::ALL {
        let n = deliveries.get(state.as_str()).copied().unwrap_or(0);
        let series = format!("herald_deliveries{{state=\"{}\"}}", state.as_str());
        assert_eq!(value(&text, &series), n as f64, "{series}");
    }
    let subscriptions = grouped(
        &t,
        "SELECT state, COUNT(*) FROM subscriptions GROUP BY state",
    )
    .await;
    assert_eq!(subscriptions.get("bounced"), Some(&1), "{subscriptions:?}");
    for state in herald::domain::SubscriptionState::ALL {
        let n = subscriptions.get(state.as_str()).copied().unwrap_or(0);
        let series = format!("herald_subscriptions{{state=\"{}\"}}", state.as_str());
        assert_eq!(value(&text, &series), n as f64, "{series}");
    }

    assert_eq!(value(&text, "herald_confirmations_sent_total"), 1.0);
    assert_eq!(
        value(&text, "herald_unsubscribes_total{method=\"one-click\"}"),
        1.0
    );
    // Requests by route template, never by the raw path with its token.
    assert_eq!(
        value(
            &text,
            "herald_http_requests_total{method=\"POST\",route=\"/unsubscribe/{token}\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "herald_http_requests_total{method=\"POST\",route=\"/confirm/{token}\",status=\"200\"}"
        ),
        1.0
    );
    let token = unsubscribe.rsplit('/').next().expect("token");
    assert!(!text.contains(token), "a token in the metrics");
    assert!(!text.contains("metrics.test"), "an address in the metrics");

    // The scrape itself is counted on the next one.
    let again = scrape(&t).await;
    assert!(
        sample(
            &again,
            "herald_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{again}"
    );
}

async fn metrics_are_not_for_the_public(backend: Backend) {
    let t = TestApp::spawn_with(backend, |c| {
        c.http.trusted_proxies = "127.0.0.1".parse::<herald::web::Cidr>().map_or_else(
            |e| panic!("{e}"),
            |cidr| herald::web::TrustedProxies::new(vec![cidr]),
        );
        c.http.metrics_token = TOKEN.into();
    })
    .await;
    let get = |headers: &[(&str, &str)]| {
        let mut req = t.client.get(t.url("/metrics"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    // A loopback scraper without a proxy in between: yes.
    let r = get(&[]).await.expect("GET");
    assert_eq!(r.status(), 200);
    // The trusted proxy (loopback here) relaying a public client: no.
    let r = get(&[("x-forwarded-for", "203.0.113.9")])
        .await
        .expect("GET");
    assert_eq!(r.status(), 403);
    let body = r.text().await.expect("body");
    assert!(body.contains("http.metrics_token"), "{body}");
    // A client naming localhost in its own forwarding header: still no.
    let r = get(&[("x-forwarded-for", "127.0.0.1")]).await.expect("GET");
    assert_eq!(r.status(), 403);
    let r = get(&[("forwarded", "for=127.0.0.1")]).await.expect("GET");
    assert_eq!(r.status(), 403);
    // The token opens it through the proxy; a wrong one does not, not even locally.
    let bearer = format!("Bearer {TOKEN}");
    let r = get(&[
        ("x-forwarded-for", "203.0.113.9"),
        ("authorization", &bearer),
    ])
    .await
    .expect("GET");
    assert_eq!(r.status(), 200);
    let r = get(&[("authorization", "Bearer not-the-token-not-the-token")])
        .await
        .expect("GET");
    assert_eq!(r.status(), 403);

    // A real non-loopback peer: the same app served on this machine's other address.
    let Some(ip) = non_loopback_ip() else {
        eprintln!("skipped the non-loopback peer: this machine has no other address");
        return;
    };
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(herald::web::serve(t.app.clone(), listener, async move {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}/metrics");
    let r = t.client.get(&url).send().await.expect("GET");
    assert_eq!(r.status(), 403, "a remote peer without the token");
    let r = t
        .client
        .get(&url)
        .header("x-forwarded-for", "127.0.0.1")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        r.status(),
        403,
        "a remote peer claiming to forward localhost"
    );
    let r = t
        .client
        .get(&url)
        .header("authorization", &bearer)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "a remote peer with the token");
    let _ = stop.send(());
    let _ = server.await;
}

/// An address of this machine that is not loopback (a UDP "connect" sends nothing).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

on_each_backend!(
    counters_match_the_delivery_table,
    metrics_are_not_for_the_public
);
