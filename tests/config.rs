//! Configuration through the real `herald` binary: every numeric and
//! duration key set to 0, negative, huge and non-numeric (in `herald.toml`
//! and through `HERALD_*`) is refused at start with a message naming the
//! key, never a panic or an abort; short secrets, a CR/LF in the EHLO name
//! and passwords in bad URLs; an unreachable PostgreSQL fails fast; the
//! files `herald init` and `herald dkim generate` write are private.
//! Scenarios that open a database run on SQLite, and on PostgreSQL when
//! `HERALD_TEST_POSTGRES_URL` is set.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use support::engine::{Backend, Fixture, TestDb, test_config};
use support::smtp_server::{Reply, Script, TestSmtpServer};

crate::on_each_backend!(
    values_at_the_bounds_are_accepted,
    a_retry_wait_at_the_bound_lets_send_wait_finish,
    a_stored_from_that_is_not_a_mailbox_is_an_error_not_a_panic,
);

/// Generous: a debug binary on a busy two-core machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `herald ARGS` in `dir` with only `env` set (no inherited `HERALD_*`).
async fn herald(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("HERALD_LOG", "warn")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("herald {args:?} with {env:?} did not finish"))
        .expect("run herald")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit code 1 (an error, not 101 = panic, not a signal = abort) and a
/// message that names `key`.
fn assert_refused(out: &Output, key: &str, context: &str) -> String {
    let err = stderr(out);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{context}: panicked: {err}"
    );
    assert_eq!(out.status.code(), Some(1), "{context}: {err}");
    assert!(
        err.contains("invalid configuration") && err.contains(key),
        "{context}: the message should name {key}: {err}"
    );
    err
}

fn assert_ok(out: &Output, context: &str) {
    assert!(out.status.success(), "{context}: {}", stderr(out));
}

fn env_name(key: &str) -> String {
    format!("HERALD_{}", key.replace('.', "_").to_uppercase())
}

/// `[section]\nname = value`.
fn toml_line(key: &str, value: &str) -> String {
    let (section, name) = key.split_once('.').expect("section.key");
    format!("[{section}]\n{name} = {value}\n")
}

enum Kind {
    /// A whole number; `zero_ok` when 0 means "unlimited".
    Int {
        zero_ok: bool,
    },
    Float,
    Duration {
        zero_ok: bool,
    },
    Schedule,
}

const KEYS: &[(&str, Kind)] = &[
    ("database.max_connections", Kind::Int { zero_ok: false }),
    ("smtp.concurrency", Kind::Int { zero_ok: false }),
    ("smtp.rate_per_hour", Kind::Int { zero_ok: true }),
    ("smtp.rate_per_day", Kind::Int { zero_ok: true }),
    ("subscribe.per_ip_per_hour", Kind::Int { zero_ok: false }),
    ("delivery.batch_size", Kind::Int { zero_ok: false }),
    ("smtp.rate", Kind::Float),
    (
        "database.connect_timeout",
        Kind::Duration { zero_ok: false },
    ),
    ("smtp.timeout", Kind::Duration { zero_ok: false }),
    ("subscribe.confirm_ttl", Kind::Duration { zero_ok: false }),
    (
        "subscribe.resend_interval",
        Kind::Duration { zero_ok: true },
    ),
    ("delivery.give_up_after", Kind::Duration { zero_ok: false }),
    ("delivery.lease", Kind::Duration { zero_ok: false }),
    ("delivery.flush_interval", Kind::Duration { zero_ok: false }),
    ("delivery.max_outage", Kind::Duration { zero_ok: false }),
    (
        "delivery.relay_down_pause_after",
        Kind::Duration { zero_ok: false },
    ),
    ("delivery.retry_schedule", Kind::Schedule),
];

/// The same value written as a TOML literal and as an environment value.
type Spelling = (&'static str, &'static str);

/// The spellings that must be refused, and the zero that must be accepted
/// where 0 means "unlimited".
fn hostile_values(kind: &Kind) -> (Vec<Spelling>, Option<Spelling>) {
    match kind {
        Kind::Int { zero_ok } => {
            let zero = ("0", "0");
            let mut bad = vec![
                ("-1", "-1"),
                ("4000000000", "4000000000"),
                ("9223372036854775807", "99999999999999999999999"),
                ("\"many\"", "many"),
                ("1.5", "1.5"),
            ];
            if *zero_ok {
                (bad, Some(zero))
            } else {
                bad.push(zero);
                (bad, None)
            }
        }
        Kind::Float => (
            vec![
                ("-1", "-1"),
                ("1e-20", "1e-20"),
                ("1e300", "1e300"),
                ("nan", "NaN"),
                ("inf", "inf"),
                ("\"fast\"", "fast"),
            ],
            Some(("0", "0")),
        ),
        Kind::Duration { zero_ok } => {
            let zero = ("\"0s\"", "0s");
            let mut bad = vec![
                ("\"-5m\"", "-5m"),
                ("\"1000000y\"", "1000000y"),
                (
                    "\"99999999999999999999999999y\"",
                    "99999999999999999999999999y",
                ),
                ("\"soon\"", "soon"),
                ("5", "5"),
            ];
            if *zero_ok {
                (bad, Some(zero))
            } else {
                bad.push(zero);
                (bad, None)
            }
        }
        Kind::Schedule => (
            vec![
                ("\"0s\"", "0s"),
                ("\"5m,-1m\"", "5m,-1m"),
                ("\"5m,1000000y\"", "5m,1000000y"),
                ("\"\"", ""),
                ("\"later\"", "later"),
                ("5", "5"),
            ],
            None,
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_numbers_in_the_file_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    let file_arg = file.display().to_string();
    for (key, kind) in KEYS {
        let (bad, zero) = hostile_values(kind);
        for (toml_value, _) in bad {
            std::fs::write(&file, toml_line(key, toml_value)).unwrap();
            let out = herald(dir.path(), &["--config", &file_arg, "migrate"], &[]).await;
            let context = format!("{key} = {toml_value} in herald.toml");
            let err = assert_refused(&out, key, &context);
            assert!(err.contains("expected"), "{context}: {err}");
        }
        if let Some((toml_value, _)) = zero {
            std::fs::write(&file, toml_line(key, toml_value)).unwrap();
            let out = herald(dir.path(), &["--config", &file_arg, "migrate"], &[]).await;
            assert_ok(&out, &format!("{key} = {toml_value} means unlimited"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_numbers_in_the_environment_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, kind) in KEYS {
        let var = env_name(key);
        let (bad, zero) = hostile_values(kind);
        for (_, env_value) in bad {
            let out = herald(dir.path(), &["migrate"], &[(&var, env_value)]).await;
            let context = format!("{var}={env_value:?}");
            let err = assert_refused(&out, key, &context);
            assert!(err.contains("expected"), "{context}: {err}");
        }
        if let Some((_, env_value)) = zero {
            let out = herald(dir.path(), &["migrate"], &[(&var, env_value)]).await;
            assert_ok(&out, &format!("{var}={env_value} means unlimited"));
        }
    }
}

/// The message says the accepted range and where the value came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_state_value_range_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald(dir.path(), &["migrate"], &[("HERALD_SMTP_RATE", "1e-20")]).await;
    let err = assert_refused(&out, "smtp.rate", "smtp.rate=1e-20");
    assert!(
        err.contains(
            "smtp.rate = \"1e-20\": expected 0 (unlimited) or between 0.001 and 100000 messages per second"
        ),
        "{err}"
    );
    let out = herald(
        dir.path(),
        &["migrate"],
        &[("HERALD_DELIVERY_BATCH_SIZE", "many")],
    )
    .await;
    let err = assert_refused(&out, "delivery.batch_size", "batch_size=many");
    assert!(
        err.contains("delivery.batch_size = \"many\": expected a whole number from 1 to 10000")
            && err.contains("HERALD_DELIVERY_BATCH_SIZE"),
        "{err}"
    );
    let out = herald(
        dir.path(),
        &["migrate"],
        &[("HERALD_DELIVERY_RETRY_SCHEDULE", "1000000y")],
    )
    .await;
    let err = assert_refused(&out, "delivery.retry_schedule", "1000000y");
    assert!(err.contains("each from 1s to 30d"), "{err}");
}

/// Every key at its upper bound (and the smallest accepted values) starts.
async fn values_at_the_bounds_are_accepted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let url = db.url.clone();
    let common = [
        ("HERALD_DATABASE_URL", url.as_str()),
        ("HERALD_SECURITY_SECRET", "0123456789abcdef0123456789abcdef"),
    ];
    let high = [
        ("HERALD_DATABASE_MAX_CONNECTIONS", "1000"),
        ("HERALD_DATABASE_CONNECT_TIMEOUT", "5m"),
        ("HERALD_SMTP_CONCURRENCY", "512"),
        ("HERALD_SMTP_RATE", "100000"),
        ("HERALD_SMTP_RATE_PER_HOUR", "100000000"),
        ("HERALD_SMTP_RATE_PER_DAY", "1000000000"),
        ("HERALD_SMTP_TIMEOUT", "10m"),
        ("HERALD_SUBSCRIBE_CONFIRM_TTL", "365d"),
        ("HERALD_SUBSCRIBE_RESEND_INTERVAL", "7d"),
        ("HERALD_SUBSCRIBE_PER_IP_PER_HOUR", "1000000"),
        ("HERALD_DELIVERY_RETRY_SCHEDULE", "30d,30d"),
        ("HERALD_DELIVERY_GIVE_UP_AFTER", "365d"),
        ("HERALD_DELIVERY_LEASE", "24h"),
        ("HERALD_DELIVERY_BATCH_SIZE", "10000"),
        ("HERALD_DELIVERY_FLUSH_INTERVAL", "1m"),
    ];
    let low = [
        ("HERALD_DATABASE_MAX_CONNECTIONS", "1"),
        ("HERALD_DATABASE_CONNECT_TIMEOUT", "1s"),
        ("HERALD_SMTP_CONCURRENCY", "1"),
        ("HERALD_SMTP_RATE", "0.001"),
        ("HERALD_SMTP_TIMEOUT", "1s"),
        ("HERALD_SUBSCRIBE_CONFIRM_TTL", "1s"),
        ("HERALD_SUBSCRIBE_PER_IP_PER_HOUR", "1"),
        ("HERALD_DELIVERY_RETRY_SCHEDULE", "1s"),
        ("HERALD_DELIVERY_GIVE_UP_AFTER", "1s"),
        ("HERALD_DELIVERY_LEASE", "1s"),
        ("HERALD_DELIVERY_BATCH_SIZE", "1"),
        ("HERALD_DELIVERY_FLUSH_INTERVAL", "1ms"),
    ];
    for set in [&high[..], &low[..]] {
        let env: Vec<_> = common.iter().chain(set).copied().collect();
        let out = herald(db.path(), &["status", "--json"], &env).await;
        // No issue yet: a clean error from `status`, after the config was accepted.
        let err = stderr(&out);
        assert!(
            !err.contains("invalid configuration") && !err.contains("panicked"),
            "{err}"
        );
        assert!(err.contains("no issues yet"), "{err}");
    }
}

/// A transient failure under the longest retry wait allowed, with a short
/// give-up horizon: the delivery expires, and `send --wait` returns.
async fn a_retry_wait_at_the_bound_lets_send_wait_finish(backend: Backend) {
    let deferred = "deferred@example.org";
    let server = TestSmtpServer::start(
        Script::new().rcpt(deferred, [Reply::code(451, "4.3.0 try again later")]),
    )
    .await;
    let config = test_config("", &server.url());
    let fx = Fixture::new(TestDb::new(backend).await, config).await;
    fx.add_confirmed(&[deferred.into()]).await;
    let smtp_url = server.url();
    let secret = fx.app.config.security.secret.expose_text();
    let from = fx.app.config.newsletter.from.to_string();
    let started = Instant::now();
    let out = herald(
        fx.db.path(),
        &["send", "1", "--wait"],
        &[
            ("HERALD_DATABASE_URL", fx.db.url.as_str()),
            ("HERALD_SMTP_URL", smtp_url.as_str()),
            ("HERALD_SECURITY_SECRET", secret.as_str()),
            ("HERALD_NEWSLETTER_FROM", from.as_str()),
            ("HERALD_DELIVERY_RETRY_SCHEDULE", "30d"),
            ("HERALD_DELIVERY_GIVE_UP_AFTER", "1s"),
        ],
    )
    .await;
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("1 deliveries failed permanently"), "{err}");
    assert!(started.elapsed() < RUN_TIMEOUT);
    let d = fx.deliveries(fx.issue.id).await;
    assert_eq!(
        (
            d[deferred].0.state.as_str(),
            d[deferred].0.failure_reason.as_deref()
        ),
        ("failed", Some("expired"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_secret_is_refused_without_being_shown() {
    let dir = tempfile::tempdir().unwrap();
    let weak = "guessable-secret";
    let out = herald(
        dir.path(),
        &["migrate"],
        &[("HERALD_SECURITY_SECRET", weak)],
    )
    .await;
    let err = assert_refused(&out, "security.secret", "short secret");
    assert!(
        err.contains("at least 32 bytes") && err.contains("openssl rand -base64 48"),
        "{err}"
    );
    assert!(!err.contains(weak), "the secret must not be printed: {err}");
    // The single-letter key from the issue.
    let out = herald(dir.path(), &["migrate"], &[("HERALD_SECURITY_SECRET", "x")]).await;
    assert_refused(&out, "security.secret", "secret x");
    // 32 bytes is enough; empty means the generated instance secret.
    for ok in ["0123456789abcdef0123456789abcdef", ""] {
        let out = herald(dir.path(), &["migrate"], &[("HERALD_SECURITY_SECRET", ok)]).await;
        assert_ok(&out, &format!("secret {ok:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_name_with_cr_lf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "mail.example.com\r\nRSET",
        "mail.example.com\nMAIL FROM:<x@example.com>",
        "mail example com",
        "mail_example.com",
    ] {
        let out = herald(dir.path(), &["migrate"], &[("HERALD_SMTP_HELLO_NAME", bad)]).await;
        assert_refused(&out, "smtp.hello_name", &format!("{bad:?}"));
    }
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, "[smtp]\nhello_name = \"a.example\\r\\nQUIT\"\n").unwrap();
    let out = herald(
        dir.path(),
        &["--config", &file.display().to_string(), "migrate"],
        &[],
    )
    .await;
    assert_refused(&out, "smtp.hello_name", "CR/LF in herald.toml");
    std::fs::write(&file, "[smtp]\nhello_name = \"[192.0.2.1]\"\n").unwrap();
    let out = herald(
        dir.path(),
        &["--config", &file.display().to_string(), "migrate"],
        &[],
    )
    .await;
    assert_ok(&out, "an address literal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_in_bad_urls_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let password = "hunter2-Pa55word";
    for (var, url, key) in [
        (
            "HERALD_DATABASE_URL",
            format!("mysql://bob:{password}@db.example/herald"),
            "database.url",
        ),
        (
            "HERALD_DATABASE_URL",
            format!("bob:{password}@db.example/herald"),
            "database.url",
        ),
        (
            "HERALD_DATABASE_URL",
            format!("postgres://db.example/herald?user=bob&password={password}x"),
            "",
        ),
        (
            "HERALD_SMTP_URL",
            format!("http://bob:{password}@relay.example"),
            "smtp.url",
        ),
        (
            "HERALD_SMTP_URL",
            format!("smtp://bob:{password}@relay.example:notaport"),
            "smtp.url",
        ),
    ] {
        let out = herald(
            dir.path(),
            &["migrate"],
            &[
                (var, url.as_str()),
                ("HERALD_DATABASE_CONNECT_TIMEOUT", "2s"),
            ],
        )
        .await;
        let err = stderr(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{var}={url}: {err}");
        assert!(err.contains(key), "{var}={url}: {err}");
        assert!(
            !err.contains(password) && !stdout.contains(password),
            "{var}: the password leaked: {err}"
        );
    }
}

/// Nothing listens on the port: a clear message at once, not "pool timed out" after 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_fails_fast_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://herald:s3cret-Pw@127.0.0.1:{port}/herald");
    let started = Instant::now();
    let out = herald(dir.path(), &["migrate"], &[("HERALD_DATABASE_URL", &url)]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port} (connection refused): is the server running and is database.url"
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret-Pw"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

/// A server that accepts the connection and never answers: the connect
/// timeout bounds the wait and the message says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_postgres_fails_after_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Held open and never accepted from: the kernel completes the handshake,
    // nobody speaks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("postgres://herald:s3cret-Pw@127.0.0.1:{port}/herald");
    let started = Instant::now();
    let out = herald(
        dir.path(),
        &["migrate"],
        &[
            ("HERALD_DATABASE_URL", &url),
            ("HERALD_DATABASE_CONNECT_TIMEOUT", "1s"),
        ],
    )
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port} (no answer within 1s"
        )) && err.contains("database.connect_timeout"),
        "{err}"
    );
    assert!(!err.contains("s3cret-Pw"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_a_private_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald(dir.path(), &["init"], &[]).await;
    assert_ok(&out, "herald init");
    let file = dir.path().join("herald.toml");
    assert_eq!(mode(&file), 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("secret = \""), "{text}");
    // Refused without --force; the file is untouched.
    let out = herald(dir.path(), &["init"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    // --force over a world-readable file leaves a private one with a new secret.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = herald(dir.path(), &["init", "--force"], &[]).await;
    assert_ok(&out, "herald init --force");
    assert_eq!(mode(&file), 0o600);
    assert_ne!(std::fs::read_to_string(&file).unwrap(), text);
    // The file it wrote is accepted as is.
    let out = herald(dir.path(), &["migrate"], &[]).await;
    assert_ok(&out, "migrate with the written herald.toml");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_generate_writes_a_private_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = herald(
        dir.path(),
        &[
            "dkim",
            "generate",
            "--domain",
            "example.com",
            "--out",
            "k.pem",
        ],
        &[],
    )
    .await;
    assert_ok(&out, "dkim generate");
    let key = dir.path().join("k.pem");
    assert_eq!(mode(&key), 0o600);
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let out = herald(
        dir.path(),
        &[
            "dkim",
            "generate",
            "--domain",
            "example.com",
            "--out",
            "k.pem",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

/// `newsletter.from` is parsed at load; a row written by other means is
/// parsed when read, so a bad one is an error where it is read.
async fn a_stored_from_that_is_not_a_mailbox_is_an_error_not_a_panic(backend: Backend) {
    let t = support::app::TestApp::spawn(backend).await;
    t.exec(
        "INSERT INTO newsletters (slug, name, from_mailbox, reply_to, postal_address, list_id, subject_template, preheader, lang, created_at)
         VALUES ('broken', 'Broken', 'not a mailbox', NULL, 'Somewhere 1', 'broken.example', '{newsletter}', '', 'en', 0)",
    )
    .await;
    let err = t
        .app
        .newsletter(Some("broken"))
        .await
        .expect_err("a row without a valid From must not load");
    assert!(err.to_string().contains("from_mailbox"), "{err}");
    // The default newsletter is unaffected.
    assert_eq!(
        t.app
            .newsletter(None)
            .await
            .unwrap()
            .from()
            .address
            .as_str(),
        "digest@news.herald.test"
    );
}
