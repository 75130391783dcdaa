//! Daylight saving time for phones: the rule a zone of the IANA database
//! follows, in the form phones take ("the last Sunday of March at 02:00").
//!
//! Phones carry no time zone database of their own that we could name a
//! zone in (each vendor has its own short table, or none), but nearly all
//! take an explicit rule. The rule is read off the zone's coming
//! transitions in the database bundled with jiff, so it follows the
//! database, and a zone that has dropped daylight saving gets none.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use serde::Serialize;

/// Whether `name` is a zone of the bundled IANA database (`Europe/Paris`).
pub fn is_known(name: &str) -> bool {
    TimeZone::get(name).is_ok()
}

/// A zone's offsets and daylight-saving rule, as of one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ZoneRules {
    /// The offset in force at that moment, in minutes east of UTC.
    pub current_minutes: i32,
    /// The standard (winter) offset, in minutes east of UTC.
    pub standard_minutes: i32,
    /// Daylight saving time, when the zone keeps it.
    pub dst: Option<DaylightSaving>,
}

/// When clocks go forward, when they go back, and by how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaylightSaving {
    /// How far clocks go forward, in minutes (60 nearly everywhere).
    pub save_minutes: i32,
    /// The switch to summer time, in local standard time.
    pub start: Switch,
    /// The switch back, in local summer time.
    pub end: Switch,
    /// Whether both switches fall on the hour and clocks move by whole
    /// hours: all that phones taking only hours can be told.
    pub whole_hours: bool,
}

/// One switch: the `week`th `weekday` of `month`, at `hour`:`minute` local
/// time. Each vendor numbers weekdays its own way, so both usual ways are
/// given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Switch {
    /// 1 (January) to 12.
    pub month: i8,
    /// 1 to 4, or 5 for the last such weekday of the month.
    pub week: i8,
    /// Whether it is the last such weekday of the month (`week` is then 5).
    pub last: bool,
    /// 0 (Sunday) to 6 (Saturday).
    pub weekday: i8,
    /// 1 (Monday) to 7 (Sunday).
    pub weekday_iso: i8,
    /// 0 to 23.
    pub hour: i8,
    /// 0 to 59.
    pub minute: i8,
}

/// The rules of zone `name` from `now` on; `None` for a name the database
/// does not have.
pub fn rules(name: &str, now: Timestamp) -> Option<ZoneRules> {
    let zone = TimeZone::get(name).ok()?;
    // Eight years of switches: enough for each date to fall on most
    // weekdays, so that "the last Sunday" is told from "the fourth" and a
    // rule by date ("the Friday before the last Sunday") shows.
    let switches: Vec<Transition> = zone
        .following(now)
        .take(2 * YEARS)
        .map(|t| {
            let before = zone.to_offset(t.timestamp() - jiff::SignedDuration::from_secs(1));
            Transition {
                local: before.to_datetime(t.timestamp()),
                before,
                after: t.offset(),
            }
        })
        .collect();
    let current_minutes = zone.to_offset(now).seconds() / 60;
    Some(match daylight_saving(&switches) {
        Some((standard, dst)) => ZoneRules {
            current_minutes,
            standard_minutes: standard.seconds() / 60,
            dst: Some(dst),
        },
        None => ZoneRules {
            current_minutes,
            standard_minutes: current_minutes,
            dst: None,
        },
    })
}

/// How many years of switches a rule must fit.
const YEARS: usize = 8;

/// One change of a zone's offset.
struct Transition {
    /// The wall-clock time it happens at, before the change.
    local: DateTime,
    before: Offset,
    after: Offset,
}

/// The standard offset and the rule behind [`YEARS`] of switches, if they
/// alternate between the same two offsets on weekday rules. Summer is the
/// larger offset, whatever the database calls it (Europe/Dublin counts
/// winter as its daylight time).
fn daylight_saving(switches: &[Transition]) -> Option<(Offset, DaylightSaving)> {
    let first = switches.first()?;
    let (low, high) = (first.before.min(first.after), first.before.max(first.after));
    let alternates = switches.len() == 2 * YEARS
        && low != high
        && switches
            .iter()
            .all(|t| (t.before, t.after) == (low, high) || (t.before, t.after) == (high, low));
    if !alternates {
        return None;
    }
    let rule_to = |offset: Offset| {
        let years: Vec<DateTime> = switches
            .iter()
            .filter(|t| t.after == offset)
            .map(|t| t.local)
            .collect();
        switch(&years)
    };
    let (start, end) = (rule_to(high)?, rule_to(low)?);
    let save_minutes = (high.seconds() - low.seconds()) / 60;
    let dst = DaylightSaving {
        save_minutes,
        start,
        end,
        whole_hours: save_minutes % 60 == 0 && start.minute == 0 && end.minute == 0,
    };
    Some((low, dst))
}

/// The weekday rule that the same switch follows in successive years, if
/// there is one ("the last Sunday", "the second Sunday").
fn switch(years: &[DateTime]) -> Option<Switch> {
    let first = *years.first()?;
    let last = years.iter().all(|at| at.day() + 7 > at.days_in_month());
    let week = |at: &DateTime| if last { 5 } else { (at.day() - 1) / 7 + 1 };
    let same_rule = years.iter().all(|at| {
        (at.month(), week(at), at.weekday(), at.time())
            == (first.month(), week(&first), first.weekday(), first.time())
    });
    // Israel's "the Friday before the last Sunday" has no such form.
    if !same_rule {
        return None;
    }
    Some(Switch {
        month: first.month(),
        week: week(&first),
        last,
        weekday: first.weekday().to_sunday_zero_offset(),
        weekday_iso: first.weekday().to_monday_one_offset(),
        hour: first.hour(),
        minute: first.minute(),
    })
}

/// The POSIX `TZ` form of an offset and rule (`STD-1DST-2,M3.5.0/2,M10.5.0/3`),
/// which some phones take as their zone. POSIX counts offsets west of UTC.
pub fn posix(standard_minutes: i32, dst: Option<&DaylightSaving>) -> String {
    let mut zone = format!("STD{}", posix_offset(standard_minutes));
    if let Some(dst) = dst {
        let rule = |s: &Switch| {
            format!(
                "M{}.{}.{}/{}:{:02}",
                s.month, s.week, s.weekday, s.hour, s.minute
            )
        };
        zone.push_str(&format!(
            "DST{},{},{}",
            posix_offset(standard_minutes + dst.save_minutes),
            rule(&dst.start),
            rule(&dst.end)
        ));
    }
    zone
}

/// `-1`, `+5`, `-5:30`: minutes east of UTC as POSIX writes them.
fn posix_offset(minutes_east: i32) -> String {
    let sign = if minutes_east > 0 { '-' } else { '+' };
    let (hours, minutes) = (minutes_east.abs() / 60, minutes_east.abs() % 60);
    if minutes == 0 {
        format!("{sign}{hours}")
    } else {
        format!("{sign}{hours}:{minutes:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(date: &str) -> Timestamp {
        date.parse().unwrap()
    }

    fn rules_at(name: &str, date: &str) -> ZoneRules {
        rules(name, at(date)).unwrap()
    }

    #[test]
    fn europe_switches_on_the_last_sundays_of_march_and_october() {
        let paris = rules_at("Europe/Paris", "2026-11-30T12:00:00Z");
        assert_eq!((paris.current_minutes, paris.standard_minutes), (60, 60));
        let dst = paris.dst.clone().unwrap();
        assert_eq!(dst.save_minutes, 60);
        let (start, end) = (dst.start, dst.end);
        assert_eq!(
            (
                start.month,
                start.week,
                start.last,
                start.weekday,
                start.weekday_iso
            ),
            (3, 5, true, 0, 7)
        );
        assert_eq!((start.hour, start.minute), (2, 0));
        assert_eq!((end.month, end.week, end.last, end.hour), (10, 5, true, 3));
        assert!(dst.whole_hours);
        assert_eq!(
            posix(paris.standard_minutes, paris.dst.as_ref()),
            "STD-1DST-2,M3.5.0/2:00,M10.5.0/3:00"
        );
        // The same rule in summer, with the summer offset in force.
        let summer = rules_at("Europe/Paris", "2027-07-01T00:00:00Z");
        assert_eq!(summer.current_minutes, 120);
        assert_eq!((summer.standard_minutes, summer.dst), (60, paris.dst));
    }

    #[test]
    fn the_us_switches_on_the_second_and_first_sundays() {
        let new_york = rules_at("America/New_York", "2026-11-30T12:00:00Z");
        assert_eq!(new_york.standard_minutes, -300);
        let dst = new_york.dst.unwrap();
        assert_eq!(
            (dst.start.month, dst.start.week, dst.start.last),
            (3, 2, false)
        );
        assert_eq!((dst.end.month, dst.end.week, dst.end.hour), (11, 1, 2));
    }

    #[test]
    fn the_southern_hemisphere_starts_in_spring_too() {
        let sydney = rules_at("Australia/Sydney", "2026-11-30T12:00:00Z");
        assert_eq!(sydney.standard_minutes, 600);
        let dst = sydney.dst.unwrap();
        assert_eq!((dst.start.month, dst.start.week), (10, 1));
        assert_eq!((dst.end.month, dst.end.week, dst.end.hour), (4, 1, 3));
    }

    #[test]
    fn dublin_summer_is_the_larger_offset() {
        let dublin = rules_at("Europe/Dublin", "2026-11-30T12:00:00Z");
        assert_eq!(dublin.standard_minutes, 0);
        let dst = dublin.dst.unwrap();
        assert_eq!(
            (dst.save_minutes, dst.start.month, dst.end.month),
            (60, 3, 10)
        );
    }

    #[test]
    fn a_rule_with_no_weekday_form_is_left_out() {
        // Jerusalem: the Friday before the last Sunday of March, some
        // years the fourth Friday and some the last.
        let jerusalem = rules_at("Asia/Jerusalem", "2026-11-30T12:00:00Z");
        assert_eq!((jerusalem.standard_minutes, jerusalem.dst), (120, None));
    }

    #[test]
    fn zones_without_daylight_saving_and_unknown_names() {
        let tokyo = rules_at("Asia/Tokyo", "2026-11-30T12:00:00Z");
        assert_eq!((tokyo.standard_minutes, tokyo.dst), (540, None));
        let kolkata = rules_at("Asia/Kolkata", "2026-11-30T12:00:00Z");
        assert_eq!(kolkata.current_minutes, 330);
        assert_eq!(posix(kolkata.standard_minutes, None), "STD-5:30");
        assert_eq!(posix(-300, None), "STD+5");
        assert_eq!(rules_at("UTC", "2026-11-30T12:00:00Z").standard_minutes, 0);
        assert!(rules("Europe/Pariss", at("2026-11-30T12:00:00Z")).is_none());
        assert!(!is_known("../../etc/passwd") && is_known("America/Argentina/Buenos_Aires"));
    }
}
