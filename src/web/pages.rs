//! The public pages: small, accessible, readable on a phone, no script.

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The only style of every page; the CSP allows it by hash
/// (`security_headers`), so no page may add a `style=` attribute.
pub(crate) const STYLE: &str = "
*{box-sizing:border-box}body{margin:0;font:17px/1.55 -apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#1f2933;background:#f5f7fa}
main{max-width:34rem;margin:0 auto;padding:2rem 1.25rem}h1{font-size:1.6rem;line-height:1.25;margin:0 0 1rem}
.card{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:1.5rem}
label{display:block;font-weight:600;margin:1rem 0 .35rem}input[type=email],input[type=text]{width:100%;font:inherit;padding:.7rem .8rem;border:1px solid #7b8794;border-radius:6px}
input:focus,button:focus{outline:3px solid #f0b429;outline-offset:2px}
button{margin-top:1.25rem;font:inherit;font-weight:700;color:#fff;background:#0b5cad;border:0;border-radius:6px;padding:.75rem 1.4rem;cursor:pointer}
.secondary{background:#fff;color:#0b5cad;border:2px solid #0b5cad}.hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
.note{color:#52606d;font-size:.95rem}.error{color:#a61b1b;font-weight:600}a{color:#0b5cad}
@media (prefers-color-scheme:dark){body{background:#101418;color:#e4e7eb}.card{background:#1c2228;border-color:#323f4b}.note{color:#9aa5b1}a{color:#8cc2ff}
input[type=email],input[type=text]{background:#101418;color:#e4e7eb;border-color:#9aa5b1}.error{color:#ff9b9b}.secondary{background:#1c2228;color:#8cc2ff;border-color:#8cc2ff}}
";

pub fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                meta name="referrer" content="no-referrer";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { main { div class="card" { (body) } } }
        }
    }
}

pub fn subscribe_form(
    newsletter_name: &str,
    action: &str,
    error: Option<&str>,
    email: &str,
) -> Markup {
    page(
        &format!("Subscribe to {newsletter_name}"),
        html! {
            h1 { "Subscribe to " (newsletter_name) }
            p { "One email a week with the digest. We will send you a link to confirm; you can unsubscribe from any issue with one click." }
            @if let Some(error) = error { p class="error" role="alert" { (error) } }
            form method="post" action=(action) {
                label for="email" { "Email address" }
                input type="email" id="email" name="email" required autocomplete="email" value=(email);
                label for="name" { "Name " span class="note" { "(optional)" } }
                input type="text" id="name" name="name" autocomplete="name" maxlength="200";
                div class="hp" aria-hidden="true" {
                    label for="website" { "Leave this field empty" }
                    input type="text" id="website" name="website" tabindex="-1" autocomplete="off";
                }
                button type="submit" { "Subscribe" }
            }
        },
    )
}

/// The answer to every subscribe request, whatever the address's state.
/// `name_not_kept` depends only on what was typed, never on the address.
pub fn check_inbox(name_not_kept: Option<&str>) -> Markup {
    page(
        "Check your inbox",
        html! {
            h1 { "Check your inbox" }
            p { "If the address can receive our newsletter, a message with a confirmation link is on its way. Open it and press Confirm to finish." }
            @if let Some(reason) = name_not_kept {
                p class="error" role="status" { "We did not keep the name you entered: " (reason) ". Your request went ahead without it." }
            }
            p class="note" { "Nothing arrived after a few minutes? Look in your spam folder, or try again later." }
        },
    )
}

pub fn confirm_button(newsletter_name: &str, action: &str) -> Markup {
    page(
        "Confirm your subscription",
        html! {
            h1 { "Confirm your subscription" }
            p { "Press the button to start receiving " (newsletter_name) "." }
            form method="post" action=(action) { button type="submit" { "Confirm" } }
        },
    )
}

pub fn confirmed(newsletter_name: &str) -> Markup {
    page(
        "Subscription confirmed",
        html! {
            h1 { "You are subscribed" }
            p { "Thank you. The next issue of " (newsletter_name) " will reach your inbox. Every issue has a one-click unsubscribe link." }
        },
    )
}

pub fn bad_confirmation_link(expired: bool, subscribe_action: &str) -> Markup {
    page(
        "This link does not work",
        html! {
            h1 { @if expired { "This link has expired" } @else { "This link does not work" } }
            p { "Confirmation links work once and for a limited time. Enter your address and we will send you a new one." }
            form method="post" action=(subscribe_action) {
                label for="email" { "Email address" }
                input type="email" id="email" name="email" required autocomplete="email";
                div class="hp" aria-hidden="true" { input type="text" name="website" tabindex="-1" autocomplete="off"; }
                button type="submit" { "Send me a new link" }
            }
        },
    )
}

pub fn unsubscribe_button(newsletter_name: &str, action: &str) -> Markup {
    page(
        "Unsubscribe",
        html! {
            h1 { "Unsubscribe from " (newsletter_name) "?" }
            p { "Press the button and you will not receive further issues." }
            form method="post" action=(action) {
                input type="hidden" name="source" value="page";
                button type="submit" { "Unsubscribe" }
            }
        },
    )
}

pub fn unsubscribed(newsletter_name: &str, email: &str, resubscribe_action: &str) -> Markup {
    page(
        "Unsubscribed",
        html! {
            h1 { "You are unsubscribed" }
            p { (email) " will not receive " (newsletter_name) " any more." }
            p class="note" { "Changed your mind? We will send a confirmation link first." }
            form method="post" action=(resubscribe_action) { button type="submit" class="secondary" { "Subscribe again" } }
        },
    )
}

pub fn invalid_unsubscribe_link() -> Markup {
    page(
        "This link does not work",
        html! {
            h1 { "This unsubscribe link does not work" }
            p { "It may have been cut off by your mail program. Use the unsubscribe link at the bottom of any issue, or reply to the newsletter and we will remove you." }
        },
    )
}

pub fn not_found() -> Markup {
    page(
        "Not found",
        html! { h1 { "Not found" } p { "There is nothing at this address." } },
    )
}

pub fn error_page(message: &str) -> Markup {
    page(
        "Something went wrong",
        html! { h1 { "Something went wrong" } p { (message) } },
    )
}

pub fn bad_request(message: &str) -> Markup {
    page(
        "This request did not work",
        html! { h1 { "This request did not work" } p { (message) } p { a href="/subscribe" { "Back to the subscription form" } } },
    )
}

pub fn archive(
    newsletter_name: &str,
    issues: &[crate::store::content::IssueSummary],
    links: &crate::app::Links,
) -> Markup {
    page(
        &format!("{newsletter_name}: archive"),
        html! {
            h1 { (newsletter_name) ": past issues" }
            @if issues.is_empty() { p { "No issue has been sent yet." } }
            ul {
                @for issue in issues {
                    li { a href=(links.archive_issue(&issue.slug)) { "#" (issue.number) " " (issue.title) } " " span class="note" { (issue.subject) } }
                }
            }
            p { a href=(links.subscribe(None)) { "Subscribe" } }
        },
    )
}
