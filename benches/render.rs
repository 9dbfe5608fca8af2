//! Render benchmarks: `cargo bench --bench render`.
//!
//! * `full_render`: parse the sample digest file → `render_issue` → `MessageTemplate::prepare`
//!   (goal ≤ 2 ms).
//! * `full_render_stress`: the same for `tests/fixtures/stress-digest.md` (15 items in
//!   four languages, 300-character URLs).
//! * `personalise_into`: one recipient into a reused buffer (goal ≤ 5 µs, ≥ 200k/s on one core).

use std::hint::black_box;

use chrono::{NaiveDate, TimeZone};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald::digest_file::parse_digest_file;
use herald::render::{
    DigestIssue, MessageHeaders, MessageTemplate, NewsletterInfo, Recipient, Theme, render_issue,
};

const SAMPLE: &str = include_str!("../emails/samples/week-2024-18.md");
const STRESS: &str = include_str!("../tests/fixtures/stress-digest.md");

fn newsletter() -> NewsletterInfo {
    NewsletterInfo {
        name: "Kazakhstan Press Digest".into(),
        postal_address: "Herald Media, 12 Example Street, Springfield 12345, USA".into(),
        lang: herald::domain::LanguageTag::english(),
        base_url: "https://news.example.com".into(),
    }
}

fn headers() -> MessageHeaders {
    MessageHeaders {
        from: "Kazakhstan Press Digest <news@news.example.com>".into(),
        reply_to: None,
        subject: "Almaty peace talks, U.S. ties and the Middle Corridor".into(),
        date: chrono::FixedOffset::east_opt(0)
            .unwrap()
            .with_ymd_and_hms(2024, 5, 3, 7, 0, 0)
            .unwrap(),
        list_id: "Kazakhstan Press Digest <weekly.news.example.com>".into(),
        feedback_id: "2024w18:digest:news:herald01".into(),
        extra: vec![],
        one_click: true,
    }
}

fn full(nl: &NewsletterInfo, theme: &Theme, h: &MessageHeaders) -> MessageTemplate {
    full_of(SAMPLE, nl, theme, h)
}

fn full_of(file: &str, nl: &NewsletterInfo, theme: &Theme, h: &MessageHeaders) -> MessageTemplate {
    let p = parse_digest_file("digest.md", file).unwrap();
    let issue = DigestIssue {
        number: 18,
        title: p.title.unwrap_or_default(),
        subject: p.subject.unwrap_or_default(),
        preheader: p.preheader.unwrap_or_default(),
        intro_markdown: p.intro_markdown.unwrap_or_default(),
        date: NaiveDate::from_ymd_opt(2024, 5, 3).unwrap(),
        items: p.items,
        web_url: "https://news.example.com/issues/18".into(),
        lang: p.lang,
    };
    let rendered = render_issue(nl, &issue, theme).unwrap();
    MessageTemplate::prepare(&rendered, h).unwrap()
}

fn benches(c: &mut Criterion) {
    let nl = newsletter();
    let theme = Theme::builtin();
    let h = headers();
    c.bench_function("full_render", |b| {
        b.iter(|| black_box(full(black_box(&nl), &theme, &h)))
    });
    c.bench_function("full_render_stress", |b| {
        b.iter(|| black_box(full_of(STRESS, black_box(&nl), &theme, &h)))
    });

    let template = full(&nl, &theme, &h);
    let mut group = c.benchmark_group("personalise");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::new();
    let addrs: Vec<String> = (0..64).map(|i| format!("reader{i}@example.net")).collect();
    let ids: Vec<String> = (0..64)
        .map(|i| format!("<{i:08x}-2024w18@news.example.com>"))
        .collect();
    let urls: Vec<String> = (0..64)
        .map(|i| format!("https://news.example.com/u/{i:032x}"))
        .collect();
    let mut i = 0usize;
    group.bench_function("personalise_into", |b| {
        b.iter(|| {
            let k = i & 63;
            i += 1;
            let r = Recipient {
                to: &addrs[k],
                name: if k.is_multiple_of(2) {
                    Some("Ada Lovelace")
                } else {
                    None
                },
                message_id: &ids[k],
                unsubscribe_url: &urls[k],
                unsubscribe_mailto: Some("mailto:unsubscribe@news.example.com?subject=unsubscribe"),
            };
            template.personalise_into(black_box(&r), &mut out);
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(render, benches);
criterion_main!(render);
