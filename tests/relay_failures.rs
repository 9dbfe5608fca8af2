//! Replies that blame the relay, the message or the recipients' servers, not one recipient
//! (issue #9, section 4), against the scripted SMTP server over TCP and the real binary:
//! a relay that wants authentication pauses the issue after one attempt and `resume` sends
//! everyone exactly once; a refused message fails once and pauses; policy refusals fail
//! without suppressing, and a long run of them pauses; greylisting delays only its
//! recipients; an unreachable relay pauses the issue after `delivery.relay_down_pause_after`;
//! the API shows the reason; other issues keep going while one is paused.
//! Every test runs on SQLite, and on PostgreSQL when `HERALD_TEST_POSTGRES_URL` is set.

mod support;

use std::collections::HashMap;
use std::process::Output;
use std::time::{Duration, Instant};

use herald::config::HumanDuration;
use herald::delivery::policy::POLICY_STREAK_PAUSE;
use herald::domain::DeliveryState;
use support::api::Api;
use support::app::TestApp;
use support::engine::{Backend, Fixture, TestDb, test_config};
use support::smtp_server::{Reply, Script, TestSmtpServer};
use tokio_util::sync::CancellationToken;

crate::on_each_backend!(
    auth_required_pauses_at_once_and_resume_sends_everyone_once,
    a_refused_message_fails_once_and_pauses_the_issue,
    policy_refusals_fail_without_suppressing_and_a_run_of_them_pauses,
    greylisting_delays_only_its_recipients,
    an_unreachable_relay_pauses_the_issue_after_the_bound,
    the_api_shows_why_an_issue_paused,
    other_issues_keep_going_while_one_is_paused,
);

fn readers(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}{i:02}@example.net"))
        .collect()
}

/// Runs the real `herald` against the fixture's database and `server`.
async fn herald(
    fx: &Fixture,
    server: &TestSmtpServer,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    fx.herald(&server.url(), args, env).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mail_from_commands(server: &TestSmtpServer) -> usize {
    server
        .commands()
        .iter()
        .filter(|(_, c)| c.to_ascii_uppercase().starts_with("MAIL FROM"))
        .count()
}

fn data_commands(server: &TestSmtpServer) -> usize {
    server
        .commands()
        .iter()
        .filter(|(_, c)| c.eq_ignore_ascii_case("DATA"))
        .count()
}

fn states(
    deliveries: &HashMap<
        String,
        (
            herald::store::deliveries::DeliveryListing,
            Vec<herald::store::deliveries::AttemptListing>,
        ),
    >,
) -> HashMap<DeliveryState, usize> {
    let mut by = HashMap::new();
    for (d, _) in deliveries.values() {
        *by.entry(d.state).or_insert(0) += 1;
    }
    by
}

/// `530 5.7.0 Authentication required` at MAIL FROM: one attempt, the issue paused with the
/// reason, nothing held against the recipients; after the fix, `resume` and everyone gets
/// exactly one message.
async fn auth_required_pauses_at_once_and_resume_sends_everyone_once(backend: Backend) {
    let server = TestSmtpServer::start(
        Script::new().mail_reply([Reply::code(530, "5.7.0 Authentication required")]),
    )
    .await;
    let fx = Fixture::new(TestDb::new(backend).await, test_config("", &server.url())).await;
    let emails = readers("auth", 12);
    fx.add_confirmed(&emails).await;

    let started = Instant::now();
    let out = herald(&fx, &server, &["send", "1", "--wait"], &[]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!(
        "send --wait took {:.1?}\n{stdout}\n{stderr}",
        started.elapsed()
    );
    assert_ne!(out.status.code(), Some(0), "a paused send is not a success");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("issue #1 was paused") && stderr.contains("requires authentication"),
        "{stderr}"
    );
    assert!(
        stderr.contains("530 5.7.0 Authentication required"),
        "{stderr}"
    );
    assert!(stderr.contains("herald resume 1"), "{stderr}");
    assert_eq!(
        mail_from_commands(&server),
        1,
        "one attempt, not one per connection: {:?}",
        server.commands()
    );
    assert_eq!(server.message_count(), 0);

    let issue = fx.issue(fx.issue.id).await;
    assert_eq!(issue.status.to_string(), "paused");
    let reason = issue.pause_reason.clone().expect("a pause reason");
    assert!(reason.contains("smtp.url"), "{reason}");
    // The recipients are not at fault: nothing counted, nothing recorded against them.
    let deliveries = fx.deliveries(fx.issue.id).await;
    for (email, (d, attempts)) in &deliveries {
        assert_eq!(
            (
                d.state,
                d.attempts,
                attempts.len(),
                d.failure_reason.as_deref()
            ),
            (DeliveryState::Queued, 0, 0, None),
            "{email}"
        );
    }

    let status = herald(&fx, &server, &["status", "1"], &[]).await;
    let shown = text(&status.stdout);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(shown.contains("paused: 0 sent, 12 not sent yet"), "{shown}");
    assert!(shown.contains(&reason), "{shown}");
    let json = herald(&fx, &server, &["status", "1", "--json"], &[]).await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status --json");
    assert_eq!(json["status"], "paused", "{json}");
    assert_eq!(
        json["pause_reason"].as_str(),
        Some(reason.as_str()),
        "{json}"
    );

    let listing = herald(&fx, &server, &["deliveries", "1"], &[]).await;
    let listing = text(&listing.stdout);
    assert!(
        listing.starts_with(&format!("issue #1 is paused: {reason}")),
        "{listing}"
    );

    // Nothing is retried while paused: a second `send --wait` refuses at once.
    let again = herald(&fx, &server, &["send", "1", "--wait"], &[]).await;
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("herald resume"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(mail_from_commands(&server), 1, "still one attempt");

    // The relay's configuration is fixed; resume goes on where it stopped.
    server.set_script(Script::new());
    let resumed = herald(&fx, &server, &["resume", "1"], &[]).await;
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(
        fx.issue(fx.issue.id).await.pause_reason,
        None,
        "resume clears the reason"
    );
    let out = herald(&fx, &server, &["send", "1", "--wait"], &[]).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("finished: 12 sent"),
        "{}",
        text(&out.stdout)
    );
    for e in &emails {
        assert_eq!(
            server.messages_to(e).len(),
            1,
            "{e} gets exactly one message"
        );
    }
    let deliveries = fx.deliveries(fx.issue.id).await;
    for (email, (d, attempts)) in &deliveries {
        assert_eq!(
            (d.state, attempts.len()),
            (DeliveryState::Sent, 1),
            "{email}"
        );
    }
    let json = herald(&fx, &server, &["status", "1", "--json"], &[]).await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status --json");
    assert_eq!(json["status"], "sent", "{json}");
    assert!(json["pause_reason"].is_null(), "{json}");
}

/// `552 5.3.4` after DATA: the message itself is refused. The first recipient fails, the
/// issue pauses, nobody else is attempted.
async fn a_refused_message_fails_once_and_pauses_the_issue(backend: Backend) {
    let server = TestSmtpServer::start(Script::new().data_reply_where(
        |_| true,
        [Reply::code(552, "5.3.4 Message size exceeds fixed limit")],
    ))
    .await;
    let fx = Fixture::new(TestDb::new(backend).await, test_config("", &server.url())).await;
    fx.add_confirmed(&readers("big", 20)).await;
    fx.send(&fx.issue).await;
    // Ends when the issue is no longer sending.
    fx.run_until_complete(fx.issue.id, Duration::from_secs(60))
        .await;

    let issue = fx.issue(fx.issue.id).await;
    assert_eq!(issue.status.to_string(), "paused");
    let reason = issue.pause_reason.expect("a pause reason");
    assert!(
        reason.contains("refused the message itself: 552 5.3.4 Message size exceeds fixed limit")
            && reason.contains("every recipient would get the same answer")
            && reason.contains("herald resume 1"),
        "{reason}"
    );
    assert_eq!(
        data_commands(&server),
        1,
        "the message went over the wire once"
    );
    let deliveries = fx.deliveries(fx.issue.id).await;
    let by = states(&deliveries);
    assert_eq!(by.get(&DeliveryState::Failed), Some(&1), "{by:?}");
    assert_eq!(by.get(&DeliveryState::Queued), Some(&19), "{by:?}");
    let (failed, attempts) = deliveries
        .values()
        .find(|(d, _)| d.state == DeliveryState::Failed)
        .expect("one failed");
    assert_eq!(failed.failure_reason.as_deref(), Some("message_defect"));
    assert_eq!(attempts.len(), 1);
    assert!(
        !fx.is_suppressed(&failed.email).await,
        "the recipient is not at fault"
    );
}

/// `550 5.7.1` at RCPT for 3 of 20: those fail with reason `policy`, stay subscribed and
/// unsuppressed, the others are sent. Then a relay that refuses everyone by policy: the
/// issue pauses after `POLICY_STREAK_PAUSE` recipients.
async fn policy_refusals_fail_without_suppressing_and_a_run_of_them_pauses(backend: Backend) {
    let refused = [
        "policy00@example.net",
        "policy07@example.net",
        "policy13@example.net",
    ];
    let server = TestSmtpServer::start(Script::new().rcpt_where(
        move |a| refused.iter().any(|r| r.eq_ignore_ascii_case(a)),
        [Reply::code(550, "5.7.1 Recipient rejected by local policy")],
    ))
    .await;
    let fx = Fixture::new(TestDb::new(backend).await, test_config("", &server.url())).await;
    let emails = readers("policy", 20);
    fx.add_confirmed(&emails).await;
    fx.send(&fx.issue).await;
    fx.run_until_complete(fx.issue.id, Duration::from_secs(60))
        .await;

    let deliveries = fx.deliveries(fx.issue.id).await;
    for e in &emails {
        let (d, attempts) = &deliveries[e];
        if refused.contains(&e.as_str()) {
            assert_eq!(
                (d.state, d.failure_reason.as_deref(), attempts.len()),
                (DeliveryState::Failed, Some("policy"), 1),
                "{e}: never retried"
            );
            assert_eq!(attempts[0].outcome, "policy");
            assert!(!fx.is_suppressed(e).await, "{e} is not suppressed");
            assert_eq!(fx.subscription_state(e).await, "confirmed", "{e}");
        } else {
            assert_eq!((d.state, attempts.len()), (DeliveryState::Sent, 1), "{e}");
        }
    }
    let issue = fx.issue(fx.issue.id).await;
    assert_eq!(issue.status.to_string(), "sent");
    assert_eq!(issue.pause_reason, None);
    let out = herald(&fx, &server, &["status", "1"], &[]).await;
    assert!(
        text(&out.stdout).contains("finished: 17 sent, 3 failed"),
        "{}",
        text(&out.stdout)
    );

    // Everyone refused by policy: a reputation or relay problem, not 20 recipients.
    server.set_script(Script::new().rcpt_where(
        |_| true,
        [Reply::code(550, "5.7.1 Recipient rejected by local policy")],
    ));
    let next = fx.compose_next_issue("Another week").await;
    fx.send(&next).await;
    fx.run_until_complete(next.id, Duration::from_secs(60))
        .await;
    let issue = fx.issue(next.id).await;
    assert_eq!(issue.status.to_string(), "paused");
    let reason = issue.pause_reason.expect("a pause reason");
    assert!(
        reason.contains(&format!(
            "{POLICY_STREAK_PAUSE} recipients in a row were refused by policy"
        )) && reason.contains("550 5.7.1 Recipient rejected by local policy")
            && reason.contains("reputation or relay problem"),
        "{reason}"
    );
    let by = states(&fx.deliveries(next.id).await);
    assert_eq!(
        by.get(&DeliveryState::Failed).copied(),
        Some(POLICY_STREAK_PAUSE as usize),
        "{by:?}"
    );
    assert_eq!(
        by.get(&DeliveryState::Queued).copied(),
        Some(20 - POLICY_STREAK_PAUSE as usize),
        "the rest not attempted: {by:?}"
    );
    for e in &emails {
        assert!(!fx.is_suppressed(e).await, "{e}");
    }
}

/// A per-recipient `450 4.7.1` for 2 of 20 (one says "greylisted", one does not): only those
/// two wait; the connection keeps its pace and `send --wait` ends once they got through.
async fn greylisting_delays_only_its_recipients(backend: Backend) {
    let grey = ["grey03@example.net", "grey11@example.net"];
    let server = TestSmtpServer::start(
        Script::new()
            .rcpt(
                grey[0],
                [
                    Reply::code(450, "4.7.1 <grey03@example.net>: Recipient address rejected: Greylisted, try again later"),
                    Reply::ok(),
                ],
            )
            .rcpt(
                grey[1],
                [
                    Reply::code(450, "4.7.1 <grey11@example.net>: Recipient address rejected: Please try again later"),
                    Reply::ok(),
                ],
            ),
    )
    .await;
    let fx = Fixture::new(TestDb::new(backend).await, test_config("", &server.url())).await;
    let emails = readers("grey", 20);
    fx.add_confirmed(&emails).await;

    let started = Instant::now();
    let out = herald(
        &fx,
        &server,
        &["send", "1", "--wait"],
        &[("HERALD_DELIVERY_RETRY_SCHEDULE", "1s")],
    )
    .await;
    let took = started.elapsed();
    eprintln!("send --wait took {took:.1?}");
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Each greylisted recipient waits one retry (1 s + jitter); the old connection pause
    // (5 s, doubling) came on top of that, after the issue was done.
    assert!(took < Duration::from_secs(30), "send --wait took {took:?}");
    let deliveries = fx.deliveries(fx.issue.id).await;
    for e in &emails {
        let (d, attempts) = &deliveries[e];
        let outcomes: Vec<&str> = attempts.iter().map(|a| a.outcome.as_str()).collect();
        if grey.contains(&e.as_str()) {
            assert_eq!(outcomes, ["transient", "sent"], "{e}");
            assert_eq!(attempts[0].code, Some(450));
        } else {
            assert_eq!(outcomes, ["sent"], "{e}");
        }
        assert_eq!(d.state, DeliveryState::Sent, "{e}");
        assert_eq!(server.messages_to(e).len(), 1, "{e}");
    }

    // With a long retry schedule, the others are all delivered while the two wait.
    server.set_script(
        Script::new()
            .rcpt(
                grey[0],
                [Reply::code(450, "4.7.1 Greylisted, try again later")],
            )
            .rcpt(grey[1], [Reply::code(450, "4.7.1 Please try again later")]),
    );
    let next = fx.compose_next_issue("A greylisted week").await;
    fx.send(&next).await;
    let before = server.message_count();
    let engine = herald::delivery::engine::Engine::new(
        fx.app.clone(),
        herald::delivery::engine::EngineOptions::from_app(&fx.app).expect("options"),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(engine.run(herald::delivery::engine::RunUntil::Shutdown, stop.clone()));
    server
        .wait_for_messages(before + 18, Duration::from_secs(30))
        .await;
    // Let the outcomes be written.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let by = states(&fx.deliveries(next.id).await);
        if by.get(&DeliveryState::Sent) == Some(&18)
            && by.get(&DeliveryState::RetryWait) == Some(&2)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    run.await.expect("engine task").expect("engine run");
    let deliveries = fx.deliveries(next.id).await;
    for e in &emails {
        let (d, attempts) = &deliveries[e];
        let want = if grey.contains(&e.as_str()) {
            DeliveryState::RetryWait
        } else {
            DeliveryState::Sent
        };
        assert_eq!(d.state, want, "{e}: {attempts:?}");
        assert!(
            attempts.iter().all(|a| a.outcome != "throttle"),
            "{e}: {attempts:?}"
        );
    }
}

/// Nobody listens at the relay's address: deliveries are retried with backoff, and once the
/// relay has been unreachable for `delivery.relay_down_pause_after` the issue pauses.
async fn an_unreachable_relay_pauses_the_issue_after_the_bound(backend: Backend) {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut config = test_config("", &format!("smtp://{closed}"));
    config.delivery.relay_down_pause_after = HumanDuration(Duration::from_secs(2));
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    fx.add_confirmed(&readers("down", 5)).await;
    fx.send(&fx.issue).await;
    fx.run_until_complete(fx.issue.id, Duration::from_secs(60))
        .await;

    let issue = fx.issue(fx.issue.id).await;
    assert_eq!(issue.status.to_string(), "paused");
    let reason = issue.pause_reason.expect("a pause reason");
    assert!(
        reason.contains(&format!("relay smtp://{closed}")) && reason.contains("unreachable for"),
        "{reason}"
    );
    let by = states(&fx.deliveries(fx.issue.id).await);
    assert_eq!(by.get(&DeliveryState::Sent), None, "{by:?}");
    assert_eq!(
        by.get(&DeliveryState::Failed),
        None,
        "nobody failed for it: {by:?}"
    );
}

/// The API's issue and progress carry the engine's pause reason, and resume clears it.
async fn the_api_shows_why_an_issue_paused(backend: Backend) {
    let t = TestApp::spawn(backend).await;
    let api = Api::new(&t).await;
    api.item("A story", true).await;
    let issue = api.post("/issues", serde_json::json!({})).await.json();
    let issue_id = issue["id"].as_i64().expect("issue id");
    assert!(issue["pause_reason"].is_null(), "{issue}");
    for e in readers("api", 3) {
        t.add_confirmed(&e).await;
    }
    t.smtp
        .set_script(Script::new().mail_reply([Reply::code(530, "5.7.0 Authentication required")]));
    let sent = api.post_empty("/issues/1/send").await;
    assert_eq!(sent.status, 202, "{}", sent.text());
    let engine = herald::delivery::engine::Engine::new(
        t.app.clone(),
        herald::delivery::engine::EngineOptions::from_app(&t.app).expect("options"),
    );
    tokio::time::timeout(
        Duration::from_secs(60),
        engine.run(
            herald::delivery::engine::RunUntil::IssueComplete(issue_id),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the run ends when the issue pauses")
    .expect("engine run");

    let shown = api.get("/issues/1").await.json();
    assert_eq!(shown["status"], "paused", "{shown}");
    let reason = shown["pause_reason"]
        .as_str()
        .expect("a pause reason")
        .to_owned();
    assert!(
        reason.contains("requires authentication") && reason.contains("530 5.7.0"),
        "{reason}"
    );
    let progress = api.get("/issues/1/progress").await.json();
    assert_eq!(
        progress["pause_reason"].as_str(),
        Some(reason.as_str()),
        "{progress}"
    );
    assert_eq!(
        progress["summary"], "paused: 0 sent, 3 not sent yet",
        "{progress}"
    );
    let openapi = t.get(&t.url("/api/v1/openapi.json")).await.body;
    let openapi: serde_json::Value = serde_json::from_str(&openapi).expect("openapi json");
    let schemas = &openapi["components"]["schemas"];
    for schema in ["Issue", "Progress"] {
        assert!(
            schemas[schema]["properties"]["pause_reason"].is_object(),
            "{schema} documents pause_reason"
        );
    }

    let resumed = api.post_empty("/issues/1/resume").await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    let shown = api.get("/issues/1").await.json();
    assert_eq!(shown["status"], "sending", "{shown}");
    assert!(shown["pause_reason"].is_null(), "{shown}");
}

/// Like `herald serve`: one engine, two issues. The first is paused by a refused message;
/// the engine goes on and delivers the second in full, and the first stays paused.
async fn other_issues_keep_going_while_one_is_paused(backend: Backend) {
    let big = "big@example.net";
    let server = TestSmtpServer::start(Script::new().data_reply_for(
        big,
        [Reply::code(552, "5.3.4 Message size exceeds fixed limit")],
    ))
    .await;
    let fx = Fixture::new(TestDb::new(backend).await, test_config("", &server.url())).await;
    let ids = fx.add_confirmed(&[big.into()]).await;
    fx.send(&fx.issue).await;
    let engine = herald::delivery::engine::Engine::new(
        fx.app.clone(),
        herald::delivery::engine::EngineOptions::from_app(&fx.app).expect("options"),
    );
    let stop = CancellationToken::new();
    let run = tokio::spawn(engine.run(herald::delivery::engine::RunUntil::Shutdown, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while fx.issue(fx.issue.id).await.status != "paused" {
        assert!(Instant::now() < deadline, "issue 1 was not paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The refused reader leaves; the next issue goes to the others only.
    fx.app
        .unsubscribe(
            herald::domain::UnsubscribeToken::new(ids[0], fx.app.newsletter.id),
            herald::store::subscribers::ConsentContext {
                source: "test".into(),
                ..Default::default()
            },
        )
        .await
        .expect("unsubscribe");
    let emails = readers("going", 8);
    fx.add_confirmed(&emails).await;
    let next = fx.compose_next_issue("The week after").await;
    assert_eq!(fx.send(&next).await, 8);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fx.issue(next.id).await.status != "sent" {
        assert!(Instant::now() < deadline, "issue 2 was not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    run.await.expect("engine task").expect("engine run");
    for e in &emails {
        assert_eq!(server.messages_to(e).len(), 1, "{e}");
    }
    let first = fx.issue(fx.issue.id).await;
    assert_eq!(first.status.to_string(), "paused");
    assert!(first.pause_reason.is_some_and(|r| r.contains("552 5.3.4")));
}
