//! The typed values of a newsletter's schedule, parsed once when the
//! configuration is loaded (or a stored schedule row is read).
//!
//! Cron semantics are those of crontab(5): five fields (minute … weekday),
//! weekday 0 and 7 = Sunday, 1 = Monday, names like `FRI`, day-of-month and
//! day-of-week OR-ed when both are restricted; optionally a leading seconds
//! field (6 fields) and a trailing year field (7 fields). `croner` gives
//! exactly this (the `cron` crate numbers Sunday 1 and needs 6 fields); see
//! ARCHITECTURE.md.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::EmailAddress;

pub const SCHEDULE_EXAMPLE: &str = "\"0 9 * * FRI\" (minute hour day-of-month month weekday; weekday 0 or 7 = Sunday, 1 = Monday), or 6/7 fields with leading seconds and trailing years such as \"0 0 9 * * FRI\"";

/// A parsed cron expression, keeping the text it came from.
#[derive(Clone)]
pub struct CronSchedule {
    text: String,
    cron: Cron,
}

impl CronSchedule {
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
        let text = text.trim();
        let fields = text.split_whitespace().count();
        if !(5..=7).contains(&fields) && !text.starts_with('@') {
            return Err(format!(
                "{text:?} has {fields} fields; expected {SCHEDULE_EXAMPLE}"
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Optional)
            .build();
        let cron = parser.parse(text).map_err(|e| {
            format!("{text:?} is not a cron expression ({e}); expected {SCHEDULE_EXAMPLE}")
        })?;
        Ok(CronSchedule {
            text: text.to_owned(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The slots strictly after `after`, in `zone`, as UTC instants. A wall
    /// time that a DST gap skips fires at the first instant after the gap;
    /// a fixed wall time that an overlap repeats fires once (the first).
    pub fn slots_after(
        &self,
        zone: ScheduleTz,
        after: DateTime<Utc>,
    ) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.cron
            .iter_after(after.with_timezone(&zone.0))
            .map(|t| t.with_timezone(&Utc))
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.text)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An IANA time zone (`Europe/Berlin`, `Asia/Almaty`, `UTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleTz(pub chrono_tz::Tz);

impl Default for ScheduleTz {
    fn default() -> Self {
        ScheduleTz(chrono_tz::UTC)
    }
}

impl FromStr for ScheduleTz {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim().parse::<chrono_tz::Tz>().map(ScheduleTz).map_err(|_| {
            format!("{s:?} is not an IANA time zone; expected a name such as \"Europe/Berlin\", \"Asia/Almaty\" or \"UTC\"")
        })
    }
}

impl fmt::Display for ScheduleTz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for ScheduleTz {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for ScheduleTz {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

/// `newsletter.schedule`: empty = no schedule.
pub mod optional_cron {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CronSchedule>, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Ok(None);
        }
        CronSchedule::parse(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(c: &Option<CronSchedule>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.as_ref().map(CronSchedule::as_str).unwrap_or(""))
    }
}

/// What a slot with no ready items does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnEmpty {
    /// The week is skipped and recorded with the reason.
    #[default]
    Skip,
    /// An issue is composed anyway (from the intro alone) and sent.
    SendAnyway,
}

impl OnEmpty {
    pub fn as_str(self) -> &'static str {
        match self {
            OnEmpty::Skip => "skip",
            OnEmpty::SendAnyway => "send_anyway",
        }
    }
}

impl FromStr for OnEmpty {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(OnEmpty::Skip),
            "send_anyway" => Ok(OnEmpty::SendAnyway),
            other => Err(format!("{other:?}: expected \"skip\" or \"send_anyway\"")),
        }
    }
}

/// `newsletter.preview_to`: editor addresses, as a TOML list or (from the
/// environment) a comma-separated string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddressList(pub Vec<EmailAddress>);

impl AddressList {
    pub fn parse_text(s: &str) -> Result<AddressList, String> {
        s.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                EmailAddress::parse(a)
                    .map_err(|e| format!("{a:?} is not an address ({e}); expected addresses like \"editor@example.com\", comma-separated"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(AddressList)
    }

    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(EmailAddress::as_str)
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl<'de> Deserialize<'de> for AddressList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AddressList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of addresses, or a comma-separated string of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AddressList, E> {
                AddressList::parse_text(v).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<AddressList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.extend(
                        AddressList::parse_text(&s)
                            .map_err(serde::de::Error::custom)?
                            .0,
                    );
                }
                Ok(AddressList(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for AddressList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(EmailAddress::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike};

    fn first_after(expr: &str, zone: &str, after: DateTime<Utc>) -> DateTime<Utc> {
        let c = CronSchedule::parse(expr).unwrap();
        c.slots_after(zone.parse().unwrap(), after).next().unwrap()
    }

    #[test]
    fn standard_weekdays_and_field_counts() {
        // 2026-05-06 is a Wednesday.
        let wed = Utc.with_ymd_and_hms(2026, 5, 6, 12, 0, 0).unwrap();
        let fri = first_after("0 9 * * FRI", "UTC", wed);
        assert_eq!((fri.day(), fri.hour()), (8, 9));
        assert_eq!(first_after("0 9 * * 5", "UTC", wed), fri);
        assert_eq!(first_after("0 0 9 * * 5", "UTC", wed), fri);
        assert_eq!(first_after("0 0 9 * * 5 2026", "UTC", wed), fri);
        let mon = first_after("0 9 * * 1", "UTC", wed);
        assert_eq!(mon.weekday(), chrono::Weekday::Mon);
        for sunday in ["0 9 * * 0", "0 9 * * 7", "0 9 * * SUN"] {
            assert_eq!(
                first_after(sunday, "UTC", wed).weekday(),
                chrono::Weekday::Sun
            );
        }
        let weekdays = CronSchedule::parse("0 9 * * 1-5").unwrap();
        let days: Vec<_> = weekdays
            .slots_after(ScheduleTz::default(), wed)
            .take(5)
            .map(|t| t.weekday())
            .collect();
        assert!(!days.contains(&chrono::Weekday::Sat) && !days.contains(&chrono::Weekday::Sun));
        assert_eq!(
            first_after("0 9 * * FRI", "Asia/Almaty", wed).hour(),
            4,
            "09:00 in Almaty (UTC+5) is 04:00 UTC"
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_expected() {
        for bad in [
            "",
            "0 9 * *",
            "0 9 * * FRIDAY",
            "61 9 * * *",
            "1 2 3 4 5 6 7 8",
        ] {
            let err = CronSchedule::parse(bad).unwrap_err();
            assert!(err.contains("0 9 * * FRI"), "{bad:?}: {err}");
        }
        let err = "Mars/Olympus".parse::<ScheduleTz>().unwrap_err();
        assert!(err.contains("Europe/Berlin"), "{err}");
    }

    #[test]
    fn berlin_dst_gap_and_overlap_fire_once() {
        // 2026-03-29 02:30 does not exist in Berlin: first instant after the gap (03:00 CEST = 01:00 UTC).
        let c = CronSchedule::parse("30 2 * * *").unwrap();
        let berlin: ScheduleTz = "Europe/Berlin".parse().unwrap();
        let from = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        let slots: Vec<_> = c.slots_after(berlin, from).take(2).collect();
        assert_eq!(
            slots[0],
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap()
        );
        assert_eq!(
            slots[1],
            Utc.with_ymd_and_hms(2026, 3, 30, 0, 30, 0).unwrap()
        );
        // 2026-10-25 02:30 happens twice in Berlin: once, at the first (00:30 UTC).
        let from = Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap();
        let slots: Vec<_> = c.slots_after(berlin, from).take(2).collect();
        assert_eq!(
            slots[0],
            Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap()
        );
        assert_eq!(
            slots[1],
            Utc.with_ymd_and_hms(2026, 10, 26, 1, 30, 0).unwrap()
        );
    }

    #[test]
    fn preview_to_from_text_or_list() {
        let l = AddressList::parse_text("a@example.com, b@example.com").unwrap();
        assert_eq!(l.0.len(), 2);
        assert!(AddressList::parse_text("not an address").is_err());
        assert!(AddressList::parse_text("").unwrap().0.is_empty());
    }
}
