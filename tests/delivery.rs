//! Delivery engine against a scripted SMTP server over TCP: greylisting, hard bounces, a 421
//! mid-session, a connection dropped after DATA, a stalled server; unsubscribe after enqueue;
//! pause/resume; `retry --failed`. Every test runs on SQLite, and on PostgreSQL when
//! `HERALD_TEST_POSTGRES_URL` is set (e.g. `postgres://postgres@127.0.0.1:55433/postgres`).

mod support;

use std::time::Duration;

use herald::domain::{DeliveryState, UnsubscribeToken};
use herald::store::deliveries::AttemptListing;
use herald::store::subscribers::ConsentContext;
use support::engine::{Backend, Fixture, TestDb, test_config};
use support::smtp_server::{Reply, Script, TestSmtpServer};
use tokio_util::sync::CancellationToken;

crate::on_each_backend!(
    hourly_cap_holds_across_engine_runs,
    scripted_outcomes,
    pause_stops_and_resume_finishes,
    retry_failed_after_fix_and_expiry,
    a_throttled_connection_does_not_hold_up_the_end
);

/// Attempts other than the scripted `421` that closes a connection after 5 messages: which
/// message meets it depends on scheduling, so it is counted separately.
fn without_421(attempts: &[AttemptListing]) -> Vec<&AttemptListing> {
    attempts.iter().filter(|a| a.code != Some(421)).collect()
}

fn message_id(m: &support::smtp_server::ReceivedMessage) -> String {
    m.header("Message-ID")
        .expect("every message has a Message-ID")
}

async fn scripted_outcomes(backend: Backend) {
    let grey451 = "grey451@example.net";
    let grey450 = "grey450@example.net";
    let hard = ["hard1@example.net", "hard2@example.net"];
    let dropped = "dropped@example.net";
    let stalled = "stalled@example.net";
    let leaver = "leaver@example.net";
    let readers: Vec<String> = (0..24)
        .map(|n| format!("reader{n:02}@example.net"))
        .collect();

    let server = TestSmtpServer::start(
        Script::new()
            .rcpt(grey451, [Reply::code(451, "4.7.1 Greylisted, try again"), Reply::ok()])
            .rcpt(grey450, [Reply::code(450, "4.2.0 Recipient address rejected: Greylisted, see http://postgrey.example/"), Reply::ok()])
            .rcpt_where(|a| a.starts_with("hard"), [Reply::code(550, "5.1.1 <hard@example.net>: User unknown")])
            .drop_after_data_for(dropped, 1)
            .stall_for(stalled, Duration::from_secs(3))
            .close_with_421_after(5),
    )
    .await;
    let mut config = test_config("", &server.url());
    config.smtp.timeout = herald::config::HumanDuration(Duration::from_secs(1));
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    let mut everyone: Vec<String> = vec![
        grey451.into(),
        grey450.into(),
        hard[0].into(),
        hard[1].into(),
        dropped.into(),
        stalled.into(),
        leaver.into(),
    ];
    everyone.extend(readers.iter().cloned());
    let ids = fx.add_confirmed(&everyone).await;
    let leaver_id = ids[6];

    assert_eq!(fx.send(&fx.issue).await, everyone.len() as u64);
    // Unsubscribes after enqueue: the delivery must be skipped, nothing sent.
    let ctx = ConsentContext {
        source: "test".into(),
        ..Default::default()
    };
    fx.app
        .unsubscribe(UnsubscribeToken::new(leaver_id, fx.app.newsletter.id), ctx)
        .await
        .expect("unsubscribe");

    fx.run_until_complete(fx.issue.id, Duration::from_secs(90))
        .await;
    // The stalled message is accepted by the server 3 s after the client gave up on it.
    let stalled_copies = server
        .wait_for_messages(everyone.len() - 3 + 1, Duration::from_secs(5))
        .await;
    let deliveries = fx.deliveries(fx.issue.id).await;
    assert_eq!(deliveries.len(), everyone.len());

    let mut report = Vec::new();
    for email in &everyone {
        let (d, attempts) = &deliveries[email];
        let codes: Vec<Option<i64>> = attempts.iter().map(|a| a.code).collect();
        report.push(format!(
            "{email}: {} attempts={} codes={codes:?} reason={:?}",
            d.state, d.attempts, d.failure_reason
        ));
        assert_eq!(
            d.attempts as usize,
            attempts.len(),
            "{email}: attempts counter and history agree"
        );
    }
    eprintln!("{}", report.join("\n"));

    // Greylisted: sent on the second attempt; the deferral is recorded with its codes.
    for (addr, code, enhanced) in [(grey451, 451, "4.7.1"), (grey450, 450, "4.2.0")] {
        let (d, attempts) = &deliveries[addr];
        let a = without_421(attempts);
        assert_eq!(d.state, DeliveryState::Sent, "{addr}");
        assert_eq!(a.len(), 2, "{addr}: {attempts:?}");
        assert_eq!(
            (a[0].code, a[0].enhanced.as_deref(), a[0].outcome.as_str()),
            (Some(code), Some(enhanced), "transient"),
            "{addr}"
        );
        assert_eq!(
            (a[1].code, a[1].outcome.as_str()),
            (Some(250), "sent"),
            "{addr}"
        );
        assert_eq!(server.messages_to(addr).len(), 1, "{addr}");
    }
    // Hard bounces: failed once, bounced and suppressed.
    for addr in hard {
        let (d, attempts) = &deliveries[addr];
        let a = without_421(attempts);
        assert_eq!(
            (d.state.as_str(), d.failure_reason.as_deref()),
            ("failed", Some("hard_bounce")),
            "{addr}"
        );
        assert_eq!(a.len(), 1, "{addr}: {attempts:?}");
        assert_eq!(
            (a[0].code, a[0].enhanced.as_deref(), a[0].outcome.as_str()),
            (Some(550), Some("5.1.1"), "hard_bounce")
        );
        assert_eq!(
            (d.last_code, d.last_enhanced.as_deref()),
            (Some(550), Some("5.1.1"))
        );
        assert_eq!(fx.subscription_state(addr).await, "bounced", "{addr}");
        assert!(fx.is_suppressed(addr).await, "{addr} is suppressed");
        assert!(server.messages_to(addr).is_empty(), "{addr}");
    }
    // Dropped after DATA: a network failure, then the same bytes again, accepted.
    {
        let (d, attempts) = &deliveries[dropped];
        let a = without_421(attempts);
        assert_eq!(d.state, DeliveryState::Sent);
        assert_eq!(a.len(), 2, "{attempts:?}");
        assert_eq!(
            (a[0].code, a[0].outcome.as_str()),
            (None, "transient"),
            "{:?}",
            a[0]
        );
        let lost: Vec<_> = server
            .dropped_messages()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r == dropped))
            .collect();
        let got = server.messages_to(dropped);
        assert_eq!((lost.len(), got.len()), (1, 1));
        assert_eq!(
            message_id(&lost[0]),
            message_id(&got[0]),
            "same Message-ID on the retry"
        );
        assert!(
            lost[0].data == got[0].data,
            "the retry sends byte-identical data"
        );
    }
    // Stalled past smtp.timeout: a timeout, then a retry; the server kept the first copy too.
    {
        let (d, attempts) = &deliveries[stalled];
        let a = without_421(attempts);
        assert_eq!(d.state, DeliveryState::Sent);
        assert_eq!(a.len(), 2, "{attempts:?}");
        assert_eq!(
            (a[0].code, a[0].outcome.as_str()),
            (None, "transient"),
            "{:?}",
            a[0]
        );
        assert!(
            a[0].reply
                .as_deref()
                .unwrap_or("")
                .to_lowercase()
                .contains("time"),
            "{:?}",
            a[0]
        );
        let copies = server.messages_to(stalled);
        assert_eq!(
            copies.len(),
            2,
            "the stalled copy and the retry ({} messages in all)",
            stalled_copies.len()
        );
        assert_eq!(message_id(&copies[0]), message_id(&copies[1]));
        assert!(copies[0].data == copies[1].data, "byte-identical retry");
    }
    // Unsubscribed after enqueue: skipped, never attempted.
    {
        let (d, attempts) = &deliveries[leaver];
        assert_eq!(
            (
                d.state.as_str(),
                d.failure_reason.as_deref(),
                attempts.len()
            ),
            ("skipped", Some("unsubscribed"), 0)
        );
        assert!(server.messages_to(leaver).is_empty());
    }
    for addr in &readers {
        let (d, attempts) = &deliveries[addr];
        let a = without_421(attempts);
        assert_eq!(
            (d.state.as_str(), a.len()),
            ("sent", 1),
            "{addr}: {attempts:?}"
        );
        assert_eq!(a[0].code, Some(250));
        assert_eq!(server.messages_to(addr).len(), 1, "{addr}");
    }
    // The 421 mid-session: recorded as a throttle, retried, never a failure.
    let throttled: Vec<&AttemptListing> = deliveries
        .values()
        .flat_map(|(_, a)| a)
        .filter(|a| a.code == Some(421))
        .collect();
    assert!(
        !throttled.is_empty(),
        "some connection met the scripted 421"
    );
    for a in &throttled {
        assert_eq!(
            (a.enhanced.as_deref(), a.outcome.as_str()),
            (Some("4.7.0"), "throttle"),
            "{a:?}"
        );
    }
    eprintln!("{} attempts met the 421", throttled.len());
    // Message-IDs are per recipient.
    let mut ids: Vec<String> = server.messages().iter().map(message_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        everyone.len() - 3,
        "one Message-ID per recipient"
    );

    let issue = fx.issue(fx.issue.id).await;
    assert_eq!(issue.status, "sent");
    let counts: serde_json::Value =
        serde_json::from_str(issue.final_counts.as_deref().expect("final counts")).expect("json");
    assert_eq!(counts["sent"], (everyone.len() - 3) as i64, "{counts}");
    assert_eq!(counts["failed"], 2, "{counts}");
    assert_eq!(counts["skipped"], 1, "{counts}");
    assert_eq!(counts["reasons"]["hard_bounce"], 2, "{counts}");
    assert_eq!(counts["reasons"]["unsubscribed"], 1, "{counts}");

    // The next issue is not sent to the hard-bounced addresses (nor the leaver).
    let before = server.message_count();
    let next = fx.compose_next_issue("A second week of news").await;
    assert_eq!(fx.send(&next).await, everyone.len() as u64 - 3);
    fx.run_until_complete(next.id, Duration::from_secs(90))
        .await;
    let second: Vec<_> = server.messages().into_iter().skip(before).collect();
    assert_eq!(second.len(), everyone.len() - 3);
    for m in &second {
        let to = &m.rcpt_to[0];
        assert!(
            !hard.contains(&to.as_str()) && to != leaver,
            "issue 2 went to {to}"
        );
        assert!(message_id(m).starts_with("<issue-2."), "{}", message_id(m));
    }
    let next_deliveries = fx.deliveries(next.id).await;
    assert!(
        hard.iter().all(|h| !next_deliveries.contains_key(*h)),
        "hard bounces are not enqueued again"
    );
    assert_eq!(fx.issue(next.id).await.status, "sent");
}

async fn pause_stops_and_resume_finishes(backend: Backend) {
    let n = 150;
    let server = TestSmtpServer::start(Script::new()).await;
    let mut config = test_config("", &server.url());
    config.smtp.rate = 50.0; // 3 s in all: room to pause in the middle
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    let emails: Vec<String> = (0..n).map(|i| format!("r{i:03}@example.net")).collect();
    fx.add_confirmed(&emails).await;
    fx.send(&fx.issue).await;

    let engine = herald::delivery::engine::Engine::new(
        fx.app.clone(),
        herald::delivery::engine::EngineOptions::from_app(&fx.app).unwrap(),
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(engine.run(
        herald::delivery::engine::RunUntil::Shutdown,
        shutdown.clone(),
    ));

    server.wait_for_messages(30, Duration::from_secs(20)).await;
    let issue = fx.issue(fx.issue.id).await;
    fx.app.pause_issue(&issue).await.expect("pause");
    let at_pause = server.message_count();
    // In-flight messages may finish; then nothing more is sent.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let settled = server.message_count();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let later = server.message_count();
    eprintln!("paused at {at_pause} messages, {settled} after 1.5 s, {later} after 3.5 s");
    assert_eq!(settled, later, "nothing is sent while paused");
    assert!(
        later < n,
        "pause stopped the send before the end ({later} of {n})"
    );
    assert!(
        later - at_pause <= 4 + 50 / 2,
        "only in-flight messages finish after pause ({at_pause} → {later})"
    );
    assert_eq!(fx.issue(fx.issue.id).await.status, "paused");
    let counts = fx.store.delivery_counts(fx.issue.id).await.unwrap();
    assert_eq!(
        counts.get(herald::domain::DeliveryState::Sent) as usize,
        later,
        "{counts:?}"
    );

    fx.app
        .resume_issue(&fx.issue(fx.issue.id).await)
        .await
        .expect("resume");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fx.issue(fx.issue.id).await.status != "sent" {
        assert!(
            std::time::Instant::now() < deadline,
            "resumed issue did not complete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    run.await.unwrap().expect("engine");
    assert_eq!(server.message_count(), n);
    for e in &emails {
        assert_eq!(
            server.messages_to(e).len(),
            1,
            "{e} receives exactly one message"
        );
    }
}

async fn retry_failed_after_fix_and_expiry(backend: Backend) {
    let perm = "perm@example.net";
    let expire = "expire@example.net";
    let ok = "ok@example.net";
    // `perm` is refused permanently once, then the "fixed" relay accepts it; `expire` is
    // deferred on every attempt until the retry window (2 s) closes.
    let server = TestSmtpServer::start(
        Script::new()
            .rcpt(
                perm,
                [Reply::code(554, "5.0.0 Transaction failed"), Reply::ok()],
            )
            .rcpt(
                expire,
                [Reply::code(451, "4.3.0 Local error in processing")],
            ),
    )
    .await;
    let mut config = test_config("", &server.url());
    config.delivery.give_up_after = herald::config::HumanDuration(Duration::from_secs(2));
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    fx.add_confirmed(&[perm.into(), expire.into(), ok.into()])
        .await;
    fx.send(&fx.issue).await;
    fx.run_until_complete(fx.issue.id, Duration::from_secs(60))
        .await;

    let d = fx.deliveries(fx.issue.id).await;
    let (p, pa) = &d[perm];
    assert_eq!(
        (p.state.as_str(), p.failure_reason.as_deref(), pa.len()),
        ("failed", Some("permanent"), 1)
    );
    assert_eq!(
        (pa[0].code, pa[0].enhanced.as_deref()),
        (Some(554), Some("5.0.0"))
    );
    let (e, ea) = &d[expire];
    assert_eq!(
        (e.state.as_str(), e.failure_reason.as_deref()),
        ("failed", Some("expired")),
        "{ea:?}"
    );
    assert!(
        ea.len() >= 2
            && ea
                .iter()
                .all(|a| a.code == Some(451) && a.outcome == "transient"),
        "{ea:?}"
    );
    assert_eq!(d[ok].0.state, DeliveryState::Sent);
    let issue = fx.issue(fx.issue.id).await;
    assert_eq!(issue.status, "sent");
    let counts: serde_json::Value =
        serde_json::from_str(issue.final_counts.as_deref().unwrap()).unwrap();
    assert_eq!(
        (
            counts["failed"].as_i64(),
            counts["reasons"]["expired"].as_i64(),
            counts["reasons"]["permanent"].as_i64()
        ),
        (Some(2), Some(1), Some(1)),
        "{counts}"
    );
    assert!(
        !fx.is_suppressed(perm).await && !fx.is_suppressed(expire).await,
        "no bounce, no suppression"
    );

    // `herald retry --failed` after the relay is fixed.
    let requeued = fx.app.retry_issue(&issue, true).await.expect("retry");
    assert_eq!(requeued, 2);
    assert_eq!(fx.issue(fx.issue.id).await.status, "sending");
    fx.run_until_complete(fx.issue.id, Duration::from_secs(60))
        .await;
    let d = fx.deliveries(fx.issue.id).await;
    let (p, pa) = &d[perm];
    assert_eq!((p.state.as_str(), pa.len()), ("sent", 2), "{pa:?}");
    assert_eq!(pa[1].code, Some(250));
    assert_eq!(server.messages_to(perm).len(), 1);
    assert_eq!(d[expire].0.state, DeliveryState::Failed);
    assert_eq!(
        server.messages_to(ok).len(),
        1,
        "the retry does not resend to those already sent"
    );
    assert_eq!(fx.issue(fx.issue.id).await.status, "sent");
}

/// `smtp.rate_per_hour` is counted in the database, so it holds across
/// restarts (and processes): a second engine run sends nothing more.
async fn hourly_cap_holds_across_engine_runs(backend: Backend) {
    let server = TestSmtpServer::start(Script::new()).await;
    let db = TestDb::new(backend).await;
    let mut config = test_config(&db.url, &server.url());
    config.smtp.rate_per_hour = 3;
    let fx = Fixture::new(db, config).await;
    let emails: Vec<String> = (0..5).map(|i| format!("capped{i}@example.org")).collect();
    fx.add_confirmed(&emails).await;
    fx.send(&fx.issue).await;
    for _ in 0..2 {
        let engine = herald::delivery::engine::Engine::new(
            fx.app.clone(),
            herald::delivery::engine::EngineOptions::from_app(&fx.app).unwrap(),
        );
        let stop = CancellationToken::new();
        let run =
            tokio::spawn(engine.run(herald::delivery::engine::RunUntil::Shutdown, stop.clone()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.cancel();
        run.await.unwrap().unwrap();
    }
    assert_eq!(server.messages().len(), 3, "the hourly cap allows three");
    let counts = fx.store.delivery_counts(fx.issue.id).await.unwrap();
    assert_eq!(counts.get(herald::domain::DeliveryState::Sent), 3);
    assert_eq!(
        counts.get(herald::domain::DeliveryState::Queued),
        2,
        "the rest wait, unclaimed: {counts:?}"
    );
}

/// A `421` slows down the connection that got it (5 s, doubling) before it takes another
/// job; another connection sends the retry meanwhile, and once the issue is complete the run
/// ends without sitting the pause out. (It used to sleep after the result, so the run could
/// not end before the pause did: at least 5 s here.)
async fn a_throttled_connection_does_not_hold_up_the_end(backend: Backend) {
    let slowed = "slowed@example.net";
    let server = TestSmtpServer::start(Script::new().rcpt(
        slowed,
        [
            Reply::code(421, "4.7.0 Too many messages, slow down"),
            Reply::ok(),
        ],
    ))
    .await;
    let mut config = test_config("", &server.url());
    config.smtp.concurrency = 2;
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    fx.add_confirmed(&[slowed.into(), "other@example.net".into()])
        .await;
    fx.send(&fx.issue).await;
    let started = std::time::Instant::now();
    fx.run_until_complete(fx.issue.id, Duration::from_secs(60))
        .await;
    let took = started.elapsed();
    eprintln!("complete after {took:.1?}");
    let d = fx.deliveries(fx.issue.id).await;
    let outcomes: Vec<&str> = d[slowed].1.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["throttle", "sent"]);
    assert_eq!(server.messages_to(slowed).len(), 1);
    // The retry waits 1 s (± jitter) and a poll; the pause would be 5 s.
    assert!(
        took < Duration::from_millis(4500),
        "the run waited for the throttled connection: {took:?}"
    );
}
