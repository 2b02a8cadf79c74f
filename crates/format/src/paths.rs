//! Object paths in a repository (format.md §1), backup ids, and the UTC date arithmetic they need
//! (done here rather than with a date crate: it is a few lines, and keeps the crate small).

/// `<name>/manifests/<backupId>.json`: a complete backup exists iff this object exists.
pub fn manifest_path(name: &str, backup_id: &str) -> String {
    format!("{name}/manifests/{backup_id}.json")
}

/// `<name>/checkpoints/<backupId>.json`: the progress of a run that has not completed.
pub fn checkpoint_path(name: &str, backup_id: &str) -> String {
    format!("{name}/checkpoints/{backup_id}.json")
}

/// The prefix under which the checkpoints of a backup name are listed.
pub fn checkpoints_prefix(name: &str) -> String {
    format!("{name}/checkpoints/")
}

/// `<name>/restores/<restore>.json`: the [`crate::RestoreState`] of restore `restore` of a backup
/// of `name`, so a restarted restore knows what it already wrote.
pub fn restore_state_path(name: &str, restore: &str) -> String {
    format!("{name}/restores/{restore}.json")
}

/// `<name>/offset-maps/<backupId>/<restore>.json`: the [`crate::OffsetMap`] restore `restore`
/// of backup `backup_id` wrote.
pub fn offset_map_path(name: &str, backup_id: &str, restore: &str) -> String {
    format!("{}{restore}.json", offset_maps_prefix(name, backup_id))
}

/// The prefix under which the offset maps of every restore of `backup_id` are listed.
pub fn offset_maps_prefix(name: &str, backup_id: &str) -> String {
    format!("{name}/offset-maps/{backup_id}/")
}

/// The top-level folder of offset snapshots. It shares the repository's top level with backup
/// names, so it is a [reserved name](RESERVED_NAMES).
pub const SNAPSHOTS_PREFIX: &str = "offset-snapshots/";

/// `offset-snapshots/<snapshotId>.json`: an [`crate::OffsetSnapshot`].
pub fn snapshot_path(id: &str) -> String {
    format!("{SNAPSHOTS_PREFIX}{id}.json")
}

/// `<name>/progress/<job>.json`: the [`crate::ProgressDocument`] of Job `job`, under the name of
/// the backup it writes or restores.
pub fn progress_path(name: &str, job: &str) -> String {
    format!("{name}/progress/{job}.json")
}

/// Top-level folders of a repository that are not backup names: a backup of one of these names
/// would mix its objects with others', so writers refuse them as names.
pub const RESERVED_NAMES: &[&str] = &["offset-snapshots"];

/// The prefix under which all manifests of a backup name are listed.
pub fn manifests_prefix(name: &str) -> String {
    format!("{name}/manifests/")
}

/// The prefix under which all segments of a backup name are listed (garbage collection).
pub fn segments_prefix(name: &str) -> String {
    format!("{name}/segments/")
}

/// `<name>/segments/<topic>/<partition>/<first>-<unique>.kbseg`, the first offset zero-padded to 20
/// digits so listings sort by offset, `unique` as 16 lower-case hex digits (random per segment, so
/// two writers never collide). Only the first offset is in the name: a segment streams to storage
/// while it is written, before its last offset is known. Offsets are never negative.
pub fn segment_path(
    name: &str,
    topic: &str,
    partition: i32,
    first_offset: i64,
    unique: u64,
) -> String {
    format!("{name}/segments/{topic}/{partition}/{first_offset:020}-{unique:016x}.kbseg")
}

/// The parts of a segment path, as [`parse_segment_path`] finds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentPath {
    /// The backup name.
    pub name: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// The random part.
    pub unique: u64,
}

/// Parses a path made by [`segment_path`] (relative to the repository); `None` for anything else,
/// so garbage collection can skip objects that are not segments.
pub fn parse_segment_path(path: &str) -> Option<SegmentPath> {
    let parts: Vec<&str> = path.split('/').collect();
    let [name, "segments", topic, partition, file] = parts.as_slice() else {
        return None;
    };
    if name.is_empty() || topic.is_empty() {
        return None;
    }
    let stem = file.strip_suffix(".kbseg")?;
    let mut fields = stem.split('-');
    let (first, unique) = (fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first, 20) {
        return None;
    }
    if unique.len() != 16
        || !unique
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    if partition.is_empty()
        || !partition.bytes().all(|b| b.is_ascii_digit())
        || (partition.len() > 1 && partition.starts_with('0'))
    {
        return None;
    }
    let first_offset: i64 = first.parse().ok()?;
    Some(SegmentPath {
        name: (*name).to_owned(),
        topic: (*topic).to_owned(),
        partition: partition.parse().ok()?,
        first_offset,
        unique: u64::from_str_radix(unique, 16).ok()?,
    })
}

/// A UTC date and time to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcDateTime {
    /// Proleptic Gregorian year.
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
    /// 0..=23.
    pub hour: u32,
    /// 0..=59.
    pub minute: u32,
    /// 0..=59.
    pub second: u32,
}

impl UtcDateTime {
    /// The date and time of Unix time `secs`.
    pub fn from_unix_seconds(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        UtcDateTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }

    /// Unix time in seconds; `None` if a field is out of range.
    pub fn to_unix_seconds(&self) -> Option<i64> {
        if !(1..=12).contains(&self.month)
            || self.day < 1
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 59
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day)?;
        days.checked_mul(86_400)?.checked_add(
            i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second),
        )
    }
}

/// `<name>-<YYYYMMDD>-<HHMMSS>` for a run started at Unix time `start_unix_seconds` (UTC).
pub fn backup_id(name: &str, start_unix_seconds: i64) -> String {
    format!("{name}-{}", id_time_suffix(start_unix_seconds))
}

/// The `<YYYYMMDD>-<HHMMSS>` part of a backup id started at `start_unix_seconds`, for other ids
/// that carry a time the same way (default snapshot ids).
pub fn id_time_suffix(start_unix_seconds: i64) -> String {
    let t = UtcDateTime::from_unix_seconds(start_unix_seconds);
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// The backup name a backup id starts with: `id` without its `-<YYYYMMDD>-<HHMMSS>` suffix;
/// `None` if `id` does not end with a valid one or has nothing before it.
pub fn backup_name_of(id: &str) -> Option<&str> {
    let cut = id.len().checked_sub(16)?;
    let name = id.get(..cut).filter(|n| !n.is_empty())?;
    parse_backup_id(name, id).map(|_| name)
}

/// The start time encoded in a backup id of `name`, as Unix seconds; `None` if `id` is not one.
pub fn parse_backup_id(name: &str, id: &str) -> Option<i64> {
    let rest = id.strip_prefix(name)?.strip_prefix('-')?;
    let (date, time) = rest.split_once('-')?;
    if date.len() != 8
        || time.len() != 6
        || !(date.bytes().chain(time.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n = |s: &str| s.parse::<u32>().ok();
    UtcDateTime {
        year: i64::from(n(&date[0..4])?),
        month: n(&date[4..6])?,
        day: n(&date[6..8])?,
        hour: n(&time[0..2])?,
        minute: n(&time[2..4])?,
        second: n(&time[4..6])?,
    }
    .to_unix_seconds()
}

/// RFC 3339 UTC to the second, e.g. `2024-12-01T12:00:00Z`, as manifests write times.
pub fn rfc3339(unix_seconds: i64) -> String {
    let t = UtcDateTime::from_unix_seconds(unix_seconds);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Parses an RFC 3339 time (`YYYY-MM-DDTHH:MM:SS`, optional fraction, then `Z` or `±HH:MM`) into
/// Unix seconds, truncating any fraction; `None` if malformed. Lets retention order manifests by
/// `startTime` whatever offset a writer used.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let t = UtcDateTime {
        year: i64::from(num(0..4)?),
        month: num(5..7)?,
        day: num(8..10)?,
        hour: num(11..13)?,
        minute: num(14..16)?,
        second: num(17..19)?,
    };
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' {
                return None;
            }
            let sign = match ob[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hh = rest.get(1..3)?.parse::<i64>().ok()?;
            let mm = rest.get(4..6)?.parse::<i64>().ok()?;
            if hh > 23 || mm > 59 {
                return None;
            }
            sign * (hh * 3600 + mm * 60)
        }
    };
    t.to_unix_seconds()?.checked_sub(offset)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01; the inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let y = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.checked_mul(146_097)?.checked_add(doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            manifest_path("b", "b-20241201-120000"),
            "b/manifests/b-20241201-120000.json"
        );
        assert_eq!(restore_state_path("b", "r"), "b/restores/r.json");
        assert_eq!(
            offset_map_path("b", "b-20241201-120000", "r"),
            "b/offset-maps/b-20241201-120000/r.json"
        );
        assert_eq!(snapshot_path("s"), "offset-snapshots/s.json");
        assert_eq!(progress_path("b", "j"), "b/progress/j.json");
        assert_eq!(
            checkpoint_path("b", "b-20241201-120000"),
            "b/checkpoints/b-20241201-120000.json"
        );
        let p = segment_path("orders-backup", "orders", 0, 10, 0x3f2a9c0d1e4b5a67);
        assert_eq!(
            p,
            "orders-backup/segments/orders/0/00000000000000000010-3f2a9c0d1e4b5a67.kbseg"
        );
        let parsed = parse_segment_path(&p).unwrap();
        assert_eq!(
            parsed,
            SegmentPath {
                name: "orders-backup".into(),
                topic: "orders".into(),
                partition: 0,
                first_offset: 10,
                unique: 0x3f2a9c0d1e4b5a67,
            }
        );
        let big = segment_path("n", "t.x_y-z", 2_147_483_647, i64::MAX, 1);
        assert_eq!(parse_segment_path(&big).unwrap().first_offset, i64::MAX);
        assert!(big.starts_with(&segments_prefix("n")));
        for bad in [
            "orders-backup/segments/orders/0/10-3f2a9c0d1e4b5a67.kbseg",
            "orders-backup/segments/orders/0/00000000000000000010-3F2A9C0D1E4B5A67.kbseg",
            "orders-backup/segments/orders/0/00000000000000000010-3f2a9c0d1e4b5a67.json",
            "orders-backup/segments/orders/01/00000000000000000010-3f2a9c0d1e4b5a67.kbseg",
            "orders-backup/segments/orders/-1/00000000000000000010-3f2a9c0d1e4b5a67.kbseg",
            "orders-backup/manifests/orders/0/00000000000000000010-3f2a9c0d1e4b5a67.kbseg",
            "x/orders-backup/segments/orders/0/00000000000000000010-3f2a9c0d1e4b5a67.kbseg",
            "orders-backup/segments/orders/0/00000000000000000010-00000000000000000999-3f2a9c0d1e4b5a67.kbseg",
            "orders-backup/segments/orders/0/99999999999999999999-3f2a9c0d1e4b5a67.kbseg",
            "orders-backup/segments//0/00000000000000000010-3f2a9c0d1e4b5a67.kbseg",
            "",
        ] {
            assert_eq!(parse_segment_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn backup_ids() {
        // 2024-12-01T12:00:00Z
        assert_eq!(
            backup_id("orders-backup", 1_733_054_400),
            "orders-backup-20241201-120000"
        );
        assert_eq!(backup_id("x", 0), "x-19700101-000000");
        assert_eq!(backup_id("x", 951_825_599), "x-20000229-115959");
        assert_eq!(
            parse_backup_id("orders-backup", "orders-backup-20241201-120000"),
            Some(1_733_054_400)
        );
        assert_eq!(
            parse_backup_id("orders", "orders-backup-20241201-120000"),
            None
        );
        assert_eq!(parse_backup_id("x", "x-20230229-000000"), None);
        assert_eq!(
            backup_name_of("orders-backup-20241201-120000"),
            Some("orders-backup")
        );
        for bad in [
            "latest",
            "-20241201-120000",
            "x-20241301-120000",
            "é-2024120ü-12000",
        ] {
            assert_eq!(backup_name_of(bad), None, "{bad}");
        }
        assert_eq!(id_time_suffix(1_733_054_400), "20241201-120000");
    }

    #[test]
    fn rfc3339_round_trip() {
        assert_eq!(rfc3339(1_733_054_400), "2024-12-01T12:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(parse_rfc3339("2024-12-01T12:00:00Z"), Some(1_733_054_400));
        assert_eq!(
            parse_rfc3339("2024-12-01T12:00:00.123456Z"),
            Some(1_733_054_400)
        );
        assert_eq!(
            parse_rfc3339("2024-12-01T13:30:00+01:30"),
            Some(1_733_054_400)
        );
        assert_eq!(
            parse_rfc3339("2024-12-01T10:00:00-02:00"),
            Some(1_733_054_400)
        );
        for bad in [
            "2024-12-01",
            "2024-13-01T00:00:00Z",
            "2024-12-01T24:00:00Z",
            "2024-12-01T12:00:00",
            "2024-12-01T12:00:00.Z",
            "2024-12-01T12:00:00+1:00",
            "２０24-12-01T12:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        // Every day over several 400-year cycles, both directions.
        for days in (-800_000i64..800_000).step_by(7) {
            let secs = days * 86_400 + 45_296;
            let t = UtcDateTime::from_unix_seconds(secs);
            assert_eq!(t.to_unix_seconds(), Some(secs), "{t:?}");
            if (0..=9999).contains(&t.year) {
                assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs));
            }
        }
    }
}
