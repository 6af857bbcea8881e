//! Time as the platform handles it: [`Timestamp`] (UTC milliseconds since the epoch) and the text
//! forms the protocols use (spec/device-protocol.md §3.8): the compact `yyyyMMdd'T'HHmmss'Z'`,
//! the millisecond `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`, and the authentication hour `YYYYMMDDHH`.
//! Nothing here reads the clock except [`Timestamp::now`]; callers pass `now` in.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

const COMPACT: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");
const MILLIS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
const SECONDS_ISO: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
const AUTH_HOUR: &[BorrowedFormatItem<'static>] = format_description!("[year][month][day][hour]");

/// A UTC instant with millisecond precision, stored as milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The epoch itself.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The instant `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time. The only function in the model that reads a clock.
    pub fn now() -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Self(i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX))
    }

    /// This instant plus `secs` seconds, saturating.
    pub fn plus_secs(self, secs: u64) -> Self {
        let ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// This instant plus `ms` milliseconds, saturating.
    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    fn datetime(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }

    fn from_datetime(dt: OffsetDateTime) -> Option<Self> {
        i64::try_from(dt.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .map(Self)
    }

    /// Formats as `yyyyMMdd'T'HHmmss'Z'`, the form of `event_time` in events, shadows and pushes.
    pub fn to_compact(self) -> String {
        self.datetime()
            .and_then(|dt| dt.format(COMPACT).ok())
            .unwrap_or_default()
    }

    /// Formats as `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'` (HTTPS reports, `event_time_ms` in pushes).
    pub fn to_millis_iso(self) -> String {
        self.datetime()
            .and_then(|dt| dt.format(MILLIS).ok())
            .unwrap_or_default()
    }

    /// Formats the hour as `YYYYMMDDHH`, the timestamp of the MQTT/HTTPS authentication scheme.
    pub fn to_auth_hour(self) -> String {
        self.datetime()
            .and_then(|dt| dt.format(AUTH_HOUR).ok())
            .unwrap_or_default()
    }

    /// Parses the compact form `yyyyMMdd'T'HHmmss'Z'`.
    pub fn parse_compact(s: &str) -> Option<Self> {
        parse_with(s, COMPACT)
    }

    /// Parses an event time in any form a device may send (spec/device-protocol.md §3.8, §12 #5):
    /// compact, millisecond ISO, or second ISO. Returns `None` when it is none of them.
    pub fn parse_event_time(s: &str) -> Option<Self> {
        parse_with(s, COMPACT)
            .or_else(|| parse_with(s, MILLIS))
            .or_else(|| parse_with(s, SECONDS_ISO))
    }

    /// Parses an authentication hour `YYYYMMDDHH` (exactly ten digits) to the start of that hour.
    pub fn parse_auth_hour(s: &str) -> Option<Self> {
        if s.len() != 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // The format description has no minute, so append one to satisfy the parser.
        let padded = format!("{s}00");
        let fmt = format_description!("[year][month][day][hour][minute]");
        let dt = PrimitiveDateTime::parse(&padded, fmt).ok()?.assume_utc();
        Self::from_datetime(dt)
    }
}

fn parse_with(s: &str, fmt: &[BorrowedFormatItem<'static>]) -> Option<Timestamp> {
    let dt = PrimitiveDateTime::parse(s, fmt).ok()?.assume_utc();
    Timestamp::from_datetime(dt)
}

/// Reads a device-supplied event time, falling back to the platform's receive time when it is
/// absent or malformed (spec/device-protocol.md §13 item 12: never reject a report for it).
pub fn event_time_or(raw: Option<&str>, received: Timestamp) -> Timestamp {
    raw.and_then(Timestamp::parse_event_time)
        .unwrap_or(received)
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.datetime().and_then(|dt| dt.format(MILLIS).ok()) {
            Some(s) => write!(f, "Timestamp({s})"),
            None => write!(f, "Timestamp({}ms)", self.0),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_millis_iso())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2018-07-24T17:56:20Z, the example of spec/device-protocol.md §3.5.
    const T: Timestamp = Timestamp::from_millis(1_532_454_980_000);

    #[test]
    fn formats() {
        assert_eq!(T.to_compact(), "20180724T175620Z");
        assert_eq!(
            T.plus_millis(333).to_millis_iso(),
            "2018-07-24T17:56:20.333Z"
        );
        assert_eq!(T.to_auth_hour(), "2018072417");
    }

    #[test]
    fn parses_every_event_time_form() {
        assert_eq!(Timestamp::parse_event_time("20180724T175620Z"), Some(T));
        assert_eq!(
            Timestamp::parse_event_time("2018-07-24T17:56:20.333Z"),
            Some(T.plus_millis(333))
        );
        assert_eq!(Timestamp::parse_event_time("2018-07-24T17:56:20Z"), Some(T));
        assert_eq!(Timestamp::parse_event_time("yesterday"), None);
        assert_eq!(Timestamp::parse_event_time("20181324T175620Z"), None);
    }

    #[test]
    fn event_time_falls_back_to_receive_time() {
        assert_eq!(event_time_or(None, T), T);
        assert_eq!(event_time_or(Some("garbage"), T), T);
        assert_eq!(
            event_time_or(Some("20151212T121212Z"), T).to_compact(),
            "20151212T121212Z"
        );
    }

    #[test]
    fn auth_hour_round_trip() {
        let hour = Timestamp::parse_auth_hour("2018072417").unwrap();
        assert_eq!(hour.to_auth_hour(), "2018072417");
        assert_eq!(T.millis_since(hour), (56 * 60 + 20) * 1000);
        assert_eq!(Timestamp::parse_auth_hour("201807241"), None);
        assert_eq!(Timestamp::parse_auth_hour("2018072425"), None);
        assert_eq!(Timestamp::parse_auth_hour("20180724１7"), None);
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            Timestamp::from_millis(i64::MAX).plus_secs(10).as_millis(),
            i64::MAX
        );
        assert_eq!(Timestamp::EPOCH.plus_secs(u64::MAX).as_millis(), i64::MAX);
        assert_eq!(Timestamp::from_millis(i64::MAX).to_compact(), "");
    }
}
