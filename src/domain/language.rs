//! A BCP 47 language tag (`en`, `kk`, `ar`, `zh-Hant-TW`), parsed once by
//! `icu_locale_core`, and the writing direction it implies.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A well-formed BCP 47 language tag in its canonical spelling
/// (`EN-us` → `en-US`). Only a parsed tag can be built, so `lang=""`
/// attributes and the label/date tables never see a malformed value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LanguageTag {
    canonical: String,
    language: String,
    script: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{value:?} is not a BCP 47 language tag; write a language code such as \"en\", \"kk\", \"ru\", \"ar\" or \"zh-Hant\""
)]
pub struct LanguageTagError {
    pub value: String,
}

/// Which way a text runs, as the HTML `dir` attribute spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ltr,
    Rtl,
    /// The language's script is not known to us: the browser decides from
    /// the first strong character.
    Auto,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ltr => "ltr",
            Direction::Rtl => "rtl",
            Direction::Auto => "auto",
        }
    }
}

/// Scripts written right to left (ISO 15924).
const RTL_SCRIPTS: &[&str] = &[
    "Arab", "Hebr", "Syrc", "Thaa", "Nkoo", "Adlm", "Rohg", "Mand", "Samr", "Yezi", "Mend",
];
/// Languages whose default script is written right to left.
const RTL_LANGUAGES: &[&str] = &[
    "ar", "fa", "he", "iw", "ur", "ps", "ckb", "dv", "yi", "ug", "sd", "ks", "syr", "prs", "arc",
    "azb", "bal", "glk", "lrc", "mzn", "nqo", "ji",
];
/// Languages whose default script is written left to right. A language in
/// neither list gets `dir="auto"`.
const LTR_LANGUAGES: &[&str] = &[
    "en", "ru", "kk", "uk", "be", "ky", "uz", "tg", "tk", "tt", "ba", "mn", "az", "tr", "hy", "ka",
    "de", "fr", "es", "it", "pt", "nl", "pl", "cs", "sk", "sl", "hr", "sr", "bs", "bg", "mk", "ro",
    "hu", "fi", "et", "lv", "lt", "sv", "no", "nb", "nn", "da", "is", "ga", "cy", "el", "sq", "mt",
    "ca", "eu", "gl", "zh", "ja", "ko", "vi", "th", "lo", "km", "my", "hi", "bn", "pa", "gu", "mr",
    "ta", "te", "kn", "ml", "si", "ne", "id", "ms", "tl", "fil", "sw", "am", "ha", "yo", "ig",
    "zu", "xh", "af", "so", "eo", "la",
];

impl LanguageTag {
    pub fn parse(value: &str) -> Result<LanguageTag, LanguageTagError> {
        let err = || LanguageTagError {
            value: value.to_owned(),
        };
        let trimmed = value.trim();
        // `und` parses but names no language; an empty value is "not set",
        // which callers express with `Option`.
        if trimmed.is_empty() {
            return Err(err());
        }
        let locale = icu_locale_core::Locale::try_from_str(trimmed).map_err(|_| err())?;
        let language = locale.id.language.as_str().to_owned();
        if language == "und" {
            return Err(err());
        }
        Ok(LanguageTag {
            canonical: locale.to_string(),
            script: locale.id.script.map(|s| s.as_str().to_owned()),
            language,
        })
    }

    /// English, the default of `newsletter.language`.
    pub fn english() -> LanguageTag {
        LanguageTag {
            canonical: "en".into(),
            language: "en".into(),
            script: None,
        }
    }

    /// The canonical tag, e.g. `en-US`.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// The primary language subtag, e.g. `en` for `en-US`.
    pub fn language(&self) -> &str {
        &self.language
    }

    /// The direction of the tag's script: an explicit script subtag wins
    /// (`az-Arab` is rtl, `ku-Latn` ltr), then the language's usual script.
    pub fn direction(&self) -> Direction {
        if let Some(script) = &self.script {
            return if RTL_SCRIPTS.contains(&script.as_str()) {
                Direction::Rtl
            } else {
                Direction::Ltr
            };
        }
        if RTL_LANGUAGES.contains(&self.language.as_str()) {
            Direction::Rtl
        } else if LTR_LANGUAGES.contains(&self.language.as_str()) {
            Direction::Ltr
        } else {
            Direction::Auto
        }
    }
}

impl Default for LanguageTag {
    fn default() -> Self {
        LanguageTag::english()
    }
}

impl fmt::Display for LanguageTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl FromStr for LanguageTag {
    type Err = LanguageTagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LanguageTag::parse(s)
    }
}

impl TryFrom<String> for LanguageTag {
    type Error = LanguageTagError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        LanguageTag::parse(&s)
    }
}

impl serde::Serialize for LanguageTag {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.canonical)
    }
}

impl<'de> serde::Deserialize<'de> for LanguageTag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LanguageTag::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_canonicalises() {
        assert_eq!(LanguageTag::parse("EN-us").unwrap().as_str(), "en-US");
        assert_eq!(LanguageTag::parse("kk").unwrap().language(), "kk");
        assert_eq!(
            LanguageTag::parse("zh-Hant-TW").unwrap().as_str(),
            "zh-Hant-TW"
        );
        for bad in [
            "",
            " ",
            "english!",
            "e",
            "und",
            "en_US_x",
            "a-b-c-d-e-f-g-h-i",
        ] {
            assert!(LanguageTag::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            LanguageTag::parse("xx yy")
                .unwrap_err()
                .to_string()
                .contains("BCP 47")
        );
    }

    #[test]
    fn direction_from_script_then_language() {
        let dir = |t: &str| LanguageTag::parse(t).unwrap().direction();
        assert_eq!(dir("ar"), Direction::Rtl);
        assert_eq!(dir("ar-EG"), Direction::Rtl);
        assert_eq!(dir("fa"), Direction::Rtl);
        assert_eq!(dir("he"), Direction::Rtl);
        assert_eq!(dir("ckb"), Direction::Rtl);
        assert_eq!(dir("kk"), Direction::Ltr);
        assert_eq!(dir("kk-Arab"), Direction::Rtl);
        assert_eq!(dir("az-Latn"), Direction::Ltr);
        assert_eq!(dir("en"), Direction::Ltr);
        assert_eq!(dir("qaa"), Direction::Auto);
    }
}
