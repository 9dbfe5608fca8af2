//! What the engine writes back for a batch of outcomes, field by field, on
//! both backends: SQLite writes the batch as one JSON parameter
//! (`store::deliveries::record_results`), PostgreSQL as VALUES lists; both
//! must leave the same rows. Replies with quotes, backslashes and non-ASCII
//! text come back byte for byte, and a delivered message ends a subscriber's
//! run of soft bounces.

mod support;

use std::time::Duration;

use herald::domain::DeliveryState;
use herald::store::Db;
use support::engine::{Backend, Fixture, TestDb, test_config};
use support::smtp_server::{Reply, Script, TestSmtpServer};

crate::on_each_backend!(outcomes_are_written_field_by_field);

async fn soft_bounces(store: &Db, subscriber_id: i64) -> i64 {
    herald::with_pool!(store, |p| sqlx::query_scalar(
        "SELECT soft_bounces FROM subscriptions WHERE subscriber_id = $1"
    )
    .bind(subscriber_id)
    .fetch_one(p)
    .await
    .expect("soft_bounces"))
}

async fn outcomes_are_written_field_by_field(backend: Backend) {
    let refused = "refused@example.net";
    // JSON and SQL both have opinions about these characters.
    let reply_text = r#"5.7.1 "quoted" \ back\slash; ünïcödé ‘policy’ {not: json} ' --"#;
    let server =
        TestSmtpServer::start(Script::new().rcpt(refused, [Reply::code(550, reply_text)])).await;
    let fx = Fixture::new(TestDb::new(backend).await, test_config("", &server.url())).await;
    let readers: Vec<String> = (0..6).map(|n| format!("r{n}@example.net")).collect();
    let mut everyone = readers.clone();
    everyone.push(refused.into());
    let ids = fx.add_confirmed(&everyone).await;
    // Two readers come into this issue with a run of soft bounces behind them.
    for id in &ids[..2] {
        herald::with_pool!(&fx.store, |p| sqlx::query(
            "UPDATE subscriptions SET soft_bounces = 2 WHERE subscriber_id = $1"
        )
        .bind(*id)
        .execute(p)
        .await
        .expect("set soft_bounces")
        .rows_affected());
    }
    let refused_id = ids[6];
    herald::with_pool!(&fx.store, |p| sqlx::query(
        "UPDATE subscriptions SET soft_bounces = 1 WHERE subscriber_id = $1"
    )
    .bind(refused_id)
    .execute(p)
    .await
    .expect("set soft_bounces")
    .rows_affected());

    let before = herald::domain::now_ms();
    assert_eq!(fx.send(&fx.issue).await, everyone.len() as u64);
    fx.run_until_complete(fx.issue.id, Duration::from_secs(60))
        .await;
    let after = herald::domain::now_ms();

    let deliveries = fx.deliveries(fx.issue.id).await;
    assert_eq!(deliveries.len(), everyone.len());
    for (n, email) in readers.iter().enumerate() {
        let (d, attempts) = &deliveries[email];
        assert_eq!(d.state, DeliveryState::Sent, "{email}: {d:?}");
        assert_eq!(d.attempts, 1, "{email}");
        assert_eq!(d.last_code, Some(250), "{email}");
        assert_eq!(d.failure_reason, None, "{email}");
        let sent_at = d.sent_at.expect("sent_at is set");
        assert!((before..=after).contains(&sent_at), "{email}: {sent_at}");
        assert_eq!(attempts.len(), 1, "{email}: {attempts:?}");
        let a = &attempts[0];
        assert_eq!((a.code, a.outcome.as_str()), (Some(250), "sent"), "{email}");
        assert_eq!(a.reply.as_deref(), d.last_reply.as_deref(), "{email}");
        assert!((before..=after).contains(&a.at), "{email}: {}", a.at);
        assert!(a.duration_ms >= 0, "{email}");
        assert_eq!(a.worker_id, attempts[0].worker_id);
        assert!(!a.worker_id.is_empty(), "{email}");
        assert_eq!(
            soft_bounces(&fx.store, ids[n]).await,
            0,
            "{email}: delivered, so the run of soft bounces is over"
        );
    }

    let (d, attempts) = &deliveries[refused];
    assert_eq!(d.state, DeliveryState::Failed, "{d:?}");
    assert_eq!(d.failure_reason.as_deref(), Some("policy"));
    assert_eq!(d.sent_at, None);
    assert_eq!(d.last_code, Some(550));
    assert_eq!(d.last_enhanced.as_deref(), Some("5.7.1"));
    let last_reply = d.last_reply.as_deref().unwrap_or_default();
    assert!(
        last_reply.starts_with("550 ") && last_reply.contains(reply_text),
        "the reply comes back byte for byte: {last_reply:?}"
    );
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].reply, d.last_reply);
    assert_eq!(attempts[0].enhanced.as_deref(), Some("5.7.1"));
    assert_eq!(
        soft_bounces(&fx.store, refused_id).await,
        1,
        "a policy refusal neither counts as nor ends a soft bounce"
    );
}
