//! KafkaBackup schedules: standard 5-field cron expressions, read in an optional IANA time zone.
//!
//! Missed slots: when a slot passes while a run of the same KafkaBackup is still going, or while
//! no operator was running, one run starts as soon as possible for the most recent missed slot;
//! older missed slots are skipped (and counted in an event). So there is never more than one run
//! at a time, and never two runs for one slot.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed `spec.schedule` with its time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses `expr` (minute hour day-of-month month day-of-week, or a nickname such as
    /// `@hourly`) and `time_zone` (default UTC). Errors name the field and say what is accepted.
    pub fn parse(expr: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
        let tz = match time_zone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                format!(
                    "spec.timeZone: '{name}' is not an IANA time zone name; use e.g. UTC, Europe/Berlin or America/New_York"
                )
            })?,
        };
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && fields != 5 {
            return Err(format!(
                "spec.schedule: '{expr}' has {fields} fields; a standard cron expression has 5 (minute hour day-of-month month day-of-week), e.g. \"0 * * * *\""
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| {
                format!(
                    "spec.schedule: '{expr}' is not a valid cron expression ({e}); use 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 * * * *\""
                )
            })?;
        Ok(Schedule { cron, tz })
    }

    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The slots in `(after, until]`, at most `limit` of them (oldest first), and how many there
    /// are in all.
    pub fn slots_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> (Vec<DateTime<Utc>>, usize) {
        let mut out = Vec::new();
        let mut count = 0;
        let mut t = after;
        while let Some(next) = self.next_after(t) {
            if next > until {
                break;
            }
            count += 1;
            if out.len() == limit {
                out.remove(0);
            }
            out.push(next);
            t = next;
            if count > 100_000 {
                break;
            }
        }
        (out, count)
    }

    /// The most recent slot in `(after, until]`, and how many slots in that interval there are.
    pub fn latest_due(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, usize)> {
        let (slots, count) = self.slots_between(after, until, 1);
        slots.last().map(|s| (*s, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn hourly_expression_of_the_spec() {
        let s = Schedule::parse("0 * * * *", None).expect("parses");
        assert_eq!(
            s.next_after(t("2024-12-01T12:05:00Z")),
            Some(t("2024-12-01T13:00:00Z"))
        );
        assert_eq!(
            s.next_after(t("2024-12-01T13:00:00Z")),
            Some(t("2024-12-01T14:00:00Z"))
        );
    }

    #[test]
    fn time_zone_moves_the_slots() {
        let s = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).expect("parses");
        // 02:00 in Berlin in winter is 01:00 UTC.
        assert_eq!(
            s.next_after(t("2024-12-01T00:00:00Z")),
            Some(t("2024-12-01T01:00:00Z"))
        );
        let err = Schedule::parse("0 2 * * *", Some("Mars/Olympus")).expect_err("zone");
        assert!(
            err.contains("spec.timeZone") && err.contains("Mars/Olympus"),
            "{err}"
        );
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for bad in ["0 * * *", "0 0 * * * *", "61 * * * *", "every hour"] {
            let err = Schedule::parse(bad, None).expect_err(bad);
            assert!(err.starts_with("spec.schedule:"), "{err}");
            assert!(err.contains(bad), "{err}");
        }
        assert!(Schedule::parse("@hourly", None).is_ok());
        assert!(Schedule::parse("*/15 9-17 * * MON-FRI", None).is_ok());
    }

    #[test]
    fn missed_slots_collapse_to_the_latest() {
        let s = Schedule::parse("*/10 * * * *", None).expect("parses");
        let (slot, count) = s
            .latest_due(t("2024-12-01T12:00:00Z"), t("2024-12-01T12:35:00Z"))
            .expect("due");
        assert_eq!(slot, t("2024-12-01T12:30:00Z"));
        assert_eq!(count, 3);
        assert!(
            s.latest_due(t("2024-12-01T12:30:00Z"), t("2024-12-01T12:35:00Z"))
                .is_none()
        );
    }
}
