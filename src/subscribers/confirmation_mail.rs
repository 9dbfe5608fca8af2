//! The double opt-in mail. It carries nothing the requester typed (not even
//! the name), so the form cannot be used to send arbitrary text to a stranger.

use lettre::message::{Mailbox as LettreMailbox, Message, MultiPart};
use maud::{DOCTYPE, html};

use crate::app::App;
use crate::domain::{ConfirmationToken, EmailAddress, Millis, ms_to_datetime};
use crate::store::Newsletter;
use crate::store::subscribers::ConsentContext;

pub fn build(
    app: &App,
    newsletter: &Newsletter,
    to: &EmailAddress,
    token: &ConfirmationToken,
    ctx: &ConsentContext,
    now: Millis,
) -> Vec<u8> {
    let link = app.links.confirm(token.as_str());
    let when = ms_to_datetime(now).format("%Y-%m-%d %H:%M UTC").to_string();
    let days = app.config.subscribe.confirm_ttl.0.as_secs() / 86_400;
    let expiry = if days >= 1 {
        format!("{days} days")
    } else {
        humantime::format_duration(app.config.subscribe.confirm_ttl.0).to_string()
    };
    let origin = match &ctx.ip {
        Some(ip) => format!("from the address {ip} "),
        None => String::new(),
    };
    let name = &newsletter.name;
    let request_line = format!("Someone {origin}asked on {when} to subscribe {to} to {name}.");
    let text = format!(
        "Please confirm your subscription\n\n{request_line}\n\nTo confirm, open this link and press the Confirm button:\n\n{link}\n\n\
         If you did not ask for this, ignore this message: without confirmation you will not be subscribed and we will not write again.\n\
         The link works for {expiry}.\n\n--\n{name}\n{}\n",
        newsletter.postal_address
    );
    let html = html! {
        (DOCTYPE)
        html lang=(newsletter.lang) {
            head { meta charset="utf-8"; meta name="viewport" content="width=device-width, initial-scale=1"; title { "Confirm your subscription" } }
            body style="margin:0;padding:24px;font-family:Arial,Helvetica,sans-serif;color:#1f2933;background:#ffffff;" {
                h1 style="font-size:22px;" { "Please confirm your subscription" }
                p style="font-size:16px;line-height:1.5;" { (request_line) }
                p { a href=(link) style="display:inline-block;background:#0b5cad;color:#ffffff;padding:12px 20px;border-radius:4px;text-decoration:none;font-weight:bold;" { "Confirm my subscription" } }
                p style="font-size:14px;line-height:1.5;" { "If you did not ask for this, ignore this message: without confirmation you will not be subscribed and we will not write again. The link works for " (expiry) "." }
                p style="font-size:12px;color:#52606d;" { (name) br; (newsletter.postal_address) }
            }
        }
    }
    .into_string();
    let from = newsletter.from();
    let domain = from.address.domain().to_owned();
    let message = Message::builder()
        .from(lettre_mailbox(from.name.clone(), &from.address))
        .to(lettre_mailbox(None, to))
        .subject(format!("Confirm your subscription to {name}"))
        .message_id(Some(format!(
            "<confirm.{}@{domain}>",
            uuid::Uuid::new_v4().simple()
        )))
        .date_now()
        .multipart(MultiPart::alternative_plain_html(text, html))
        .expect("every part of the confirmation mail is built from validated values");
    message.formatted()
}

fn lettre_mailbox(name: Option<String>, address: &EmailAddress) -> LettreMailbox {
    let addr = address
        .as_str()
        .parse()
        .expect("an EmailAddress is a valid lettre address");
    LettreMailbox::new(name, addr)
}
