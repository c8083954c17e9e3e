//! Wall-clock time for rosters, kept apart from the monotonic [`Instant`](crate::Instant).
//!
//! Timers (ring timeout, wrap-up, overflow) run on the monotonic time line the daemon passes in.
//! Rosters are about the wall clock ("08:00–20:00 Beijing time"), so they take a separate
//! [`WallClock`] input. Mixing the two would make a clock step (NTP, an operator fixing the date)
//! fire or stretch ring timers.
//!
//! Local time is Asia/Shanghai, computed as UTC+8. China has observed no daylight saving time since
//! 1991, so a fixed offset is exact for every date a roster can name and no time-zone database is
//! needed.

use std::fmt;

/// Seconds east of UTC of Asia/Shanghai (China Standard Time, no DST since 1991).
pub const SHANGHAI_OFFSET_S: i64 = 8 * 3600;

/// Minutes in a week: the resolution of rosters.
pub const MINUTES_PER_WEEK: u32 = 7 * 24 * 60;

/// A reading of the wall clock, as the daemon's `SystemTime` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallClock {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub unix_seconds: i64,
}

impl WallClock {
    /// The Asia/Shanghai local time of this reading.
    pub fn local(self) -> LocalTime {
        let local = self.unix_seconds + SHANGHAI_OFFSET_S;
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        LocalTime {
            date: Date::from_days_since_epoch(days),
            minute_of_day: (secs / 60) as u16,
        }
    }
}

/// A day of the week, Monday first (as Chinese calendars and ISO 8601 count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday (星期一).
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// All days, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// 0 for Monday … 6 for Sunday.
    pub fn index(self) -> u32 {
        self as u32
    }

    /// The day for an index 0 (Monday) … 6 (Sunday), taken modulo 7.
    pub fn from_index(i: u32) -> Weekday {
        Self::ALL[(i % 7) as usize]
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Weekday::Mon => "Mon",
            Weekday::Tue => "Tue",
            Weekday::Wed => "Wed",
            Weekday::Thu => "Thu",
            Weekday::Fri => "Fri",
            Weekday::Sat => "Sat",
            Weekday::Sun => "Sun",
        };
        f.write_str(s)
    }
}

/// A calendar date (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, e.g. 2025.
    pub year: i32,
    /// Month, 1–12.
    pub month: u8,
    /// Day of the month, 1–31.
    pub day: u8,
}

impl Date {
    /// The date, if it exists in the calendar.
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        let d = Date { year, month, day };
        ((1..=12).contains(&month) && (1..=days_in_month(year, month)).contains(&day)).then_some(d)
    }

    /// Days since 1970-01-01 (negative before). Howard Hinnant's `days_from_civil`.
    pub fn days_since_epoch(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01. Howard Hinnant's `civil_from_days`.
    pub fn from_days_since_epoch(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// Its day of the week. 1970-01-01 was a Thursday.
    pub fn weekday(self) -> Weekday {
        Weekday::from_index((self.days_since_epoch() + 3).rem_euclid(7) as u32)
    }

    /// The next calendar day.
    pub fn succ(self) -> Date {
        Date::from_days_since_epoch(self.days_since_epoch() + 1)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Asia/Shanghai local date and time of day, to the minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalTime {
    /// The local calendar date.
    pub date: Date,
    /// Minutes since local midnight, 0–1439.
    pub minute_of_day: u16,
}

impl LocalTime {
    /// Minutes since Monday 00:00 of this week, 0 – [`MINUTES_PER_WEEK`]−1.
    pub fn minute_of_week(self) -> u32 {
        self.date.weekday().index() * 1440 + u32::from(self.minute_of_day)
    }
}

/// Formats minutes since midnight as `HH:MM` (1440 as `24:00`).
pub(crate) fn hhmm(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// Parses `HH:MM` into minutes since midnight; `24:00` is allowed (the end of the day).
pub(crate) fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    match (h, m) {
        (24, 0) => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_thursday_and_round_trips() {
        let d = Date::new(1970, 1, 1).unwrap();
        assert_eq!(d.days_since_epoch(), 0);
        assert_eq!(d.weekday(), Weekday::Thu);
        for days in [-800_000_i64, -1, 0, 59, 60, 365, 11_016, 20_000, 2_932_896] {
            assert_eq!(Date::from_days_since_epoch(days).days_since_epoch(), days);
        }
        // 2024-02-29 exists, 2023-02-29 does not; 2025-10-01 (National Day) is a Wednesday.
        assert!(Date::new(2024, 2, 29).is_some());
        assert!(Date::new(2023, 2, 29).is_none());
        assert_eq!(Date::new(2025, 10, 1).unwrap().weekday(), Weekday::Wed);
    }

    #[test]
    fn shanghai_is_utc_plus_eight() {
        // 2025-06-02T00:30:00Z is Monday 08:30 in Xining (Asia/Shanghai).
        let wall = WallClock {
            unix_seconds: 1_748_824_200,
        };
        let local = wall.local();
        assert_eq!(local.date, Date::new(2025, 6, 2).unwrap());
        assert_eq!(local.minute_of_day, 8 * 60 + 30);
        assert_eq!(local.minute_of_week(), 8 * 60 + 30);
        // 16:00Z on Sunday is already Monday 00:00 local.
        let wall = WallClock {
            unix_seconds: 1_748_793_600,
        };
        assert_eq!(wall.local().date.weekday(), Weekday::Mon);
        assert_eq!(wall.local().minute_of_day, 0);
    }

    #[test]
    fn hhmm_parses_the_day_and_its_end() {
        assert_eq!(parse_hhmm("00:00"), Some(0));
        assert_eq!(parse_hhmm("08:30"), Some(510));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        assert_eq!(parse_hhmm("24:01"), None);
        assert_eq!(parse_hhmm("8:00"), None);
        assert_eq!(hhmm(1440), "24:00");
    }
}
