//! The words the templates add around the editors' content, per newsletter
//! language, and dates in that language (month names from chrono's locale
//! data, not from a table of ours). A language without a table reads English.

use chrono::Locale;

use crate::domain::LanguageTag;

/// One language's strings. A pair is the text before and after a value
/// (an issue number, a newsletter or outlet name).
#[derive(Debug)]
pub(crate) struct Labels {
    pub issue: (&'static str, &'static str),
    pub view_in_browser: &'static str,
    pub unsubscribe: &'static str,
    pub read_article: &'static str,
    /// "Read in The National Interest →"
    pub read_in: (&'static str, &'static str),
    pub in_this_issue: &'static str,
    /// Heading over unsectioned items that follow a section, so they do not
    /// read as part of it.
    pub more_news: &'static str,
    pub greeting: (&'static str, &'static str),
    pub by: &'static str,
    pub receiving: (&'static str, &'static str),
    pub archive: (&'static str, &'static str),
    pub subscribe: &'static str,
    pub subscribe_rest: &'static str,
    date_pattern: &'static str,
    locale: Locale,
    /// chrono's month names are capitalised where the language writes them
    /// in lower case inside a date (Kazakh).
    lowercase_date: bool,
}

const EN: Labels = Labels {
    issue: ("Issue ", ""),
    view_in_browser: "View in browser",
    unsubscribe: "Unsubscribe",
    read_article: "Read the article",
    read_in: ("Read in ", " →"),
    in_this_issue: "In this issue",
    more_news: "More news",
    greeting: ("Hello ", ","),
    by: "By ",
    receiving: ("You are receiving this because you subscribed to ", "."),
    archive: ("You are reading the web archive of ", ". "),
    subscribe: "Subscribe",
    subscribe_rest: " to receive it by email.",
    date_pattern: "%-d %B %Y",
    locale: Locale::en_GB,
    lowercase_date: false,
};

const RU: Labels = Labels {
    issue: ("Выпуск ", ""),
    view_in_browser: "Открыть в браузере",
    unsubscribe: "Отписаться",
    read_article: "Читать статью",
    read_in: ("Читать на сайте ", " →"),
    in_this_issue: "В этом выпуске",
    more_news: "Другие новости",
    greeting: ("Здравствуйте, ", "!"),
    by: "Автор: ",
    receiving: (
        "Вы получили это письмо, потому что подписались на рассылку «",
        "».",
    ),
    archive: ("Это веб-архив рассылки «", "». "),
    subscribe: "Подпишитесь",
    subscribe_rest: ", чтобы получать её по почте.",
    // ru_RU's MON holds the genitive forms a date needs ("2 декабря 2026").
    date_pattern: "%-d %B %Y",
    locale: Locale::ru_RU,
    lowercase_date: false,
};

const KK: Labels = Labels {
    issue: ("№ ", " шығарылым"),
    view_in_browser: "Браузерде ашу",
    unsubscribe: "Жазылымнан бас тарту",
    read_article: "Мақаланы оқу",
    read_in: ("", " сайтында оқу →"),
    in_this_issue: "Бұл шығарылымда",
    more_news: "Басқа жаңалықтар",
    greeting: ("Сәлеметсіз бе, ", "!"),
    by: "Авторы: ",
    receiving: (
        "Сіз бұл хатты «",
        "» таратылымына жазылғаныңыз үшін алдыңыз.",
    ),
    archive: ("Бұл — «", "» таратылымының веб-мұрағаты. "),
    subscribe: "Жазылыңыз",
    subscribe_rest: ", сонда оны поштамен аласыз.",
    // "2026 ж. 2 желтоқсан", as Kazakh writes a full date.
    date_pattern: "%Y ж. %-d %B",
    locale: Locale::kk_KZ,
    lowercase_date: true,
};

impl Labels {
    /// The table for `lang`'s primary language; English when we have none.
    pub(crate) fn for_language(lang: &LanguageTag) -> &'static Labels {
        match lang.language() {
            "ru" => &RU,
            "kk" => &KK,
            _ => &EN,
        }
    }

    /// "2 December 2026", "2 декабря 2026", "2026 ж. 2 желтоқсан".
    pub(crate) fn date(&self, d: chrono::NaiveDate) -> String {
        let s = d
            .format_localized(self.date_pattern, self.locale)
            .to_string();
        if self.lowercase_date {
            s.to_lowercase()
        } else {
            s
        }
    }

    /// "Issue 1 · 2 December 2026"
    pub(crate) fn issue_line(&self, number: i64, date: chrono::NaiveDate) -> String {
        format!(
            "{}{number}{} · {}",
            self.issue.0,
            self.issue.1,
            self.date(date)
        )
    }
}

/// Quotation marks for a pull quote in the item's own language.
pub(crate) fn quote_marks(lang: &LanguageTag) -> (&'static str, &'static str) {
    match lang.language() {
        "ru" | "kk" | "uk" | "be" | "fr" | "ar" | "fa" | "ps" | "ur" | "uz" | "ky" | "tg" => {
            ("«", "»")
        }
        "de" => ("„", "“"),
        "he" => ("”", "“"),
        "ja" | "zh" => ("「", "」"),
        _ => ("“", "”"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> LanguageTag {
        LanguageTag::parse(s).unwrap()
    }

    #[test]
    fn dates_in_the_newsletter_language() {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        assert_eq!(
            Labels::for_language(&tag("en")).issue_line(1, d),
            "Issue 1 · 2 December 2026"
        );
        assert_eq!(
            Labels::for_language(&tag("ru")).issue_line(1, d),
            "Выпуск 1 · 2 декабря 2026"
        );
        assert_eq!(
            Labels::for_language(&tag("kk")).date(d),
            "2026 ж. 2 желтоқсан"
        );
        // No table for Turkish: English labels and dates.
        assert_eq!(
            Labels::for_language(&tag("tr-TR")).date(d),
            "2 December 2026"
        );
    }
}
