//! Build time. Nothing we write reads the clock: times come from `SOURCE_DATE_EPOCH`
//! (reproducible-builds.org/specs/source-date-epoch) or, failing that, a fixed epoch.

/// The fixed time used when `SOURCE_DATE_EPOCH` is unset: 2016-09-26T00:00:00Z, the
/// general-availability date of Windows Server 2016, so images look plausible.
pub const DEFAULT_EPOCH: i64 = 1_474_848_000;

/// Seconds between 1601-01-01 (Windows FILETIME epoch) and 1970-01-01.
pub const FILETIME_UNIX_DIFF_SECS: i64 = 11_644_473_600;

#[derive(Debug, thiserror::Error)]
#[error("SOURCE_DATE_EPOCH='{0}' is not a whole number of seconds since 1970-01-01 UTC")]
pub struct EpochError(String);

/// The build time in Unix seconds: `SOURCE_DATE_EPOCH` when set, else [`DEFAULT_EPOCH`].
pub fn build_epoch() -> Result<i64, EpochError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            let n: i64 = v.trim().parse().map_err(|_| EpochError(v.clone()))?;
            if !(0..=253_402_300_799).contains(&n) {
                return Err(EpochError(v));
            }
            Ok(n)
        }
        _ => Ok(DEFAULT_EPOCH),
    }
}

/// Unix seconds to a Windows FILETIME (100 ns ticks since 1601).
pub fn unix_to_filetime(secs: i64) -> u64 {
    ((secs + FILETIME_UNIX_DIFF_SECS) as u64) * 10_000_000
}

/// Civil date and time (UTC) of Unix seconds: (year, month, day, hour, minute, second).
/// Algorithm from Howard Hinnant's "chrono-Compatible Low-Level Date Algorithms".
pub fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, ((rem % 3600) / 60) as u32, (rem % 60) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(DEFAULT_EPOCH), (2016, 9, 26, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(1_700_000_000), (2023, 11, 14, 22, 13, 20));
    }

    #[test]
    fn filetime() {
        // 1970-01-01 is 116444736000000000 ticks after 1601-01-01.
        assert_eq!(unix_to_filetime(0), 116_444_736_000_000_000);
    }
}
