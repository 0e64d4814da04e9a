//! The PEC timestamp: the `<data zona="+0100"><giorno>dd/mm/yyyy</giorno><ora>hh:mm:ss</ora>`
//! of daticert and the "Il giorno dd/mm/yyyy alle ore hh:mm:ss (+0100)" of the text parts
//! (digest §2 items 7–8, §5.1). Times are Italian legal time (Europe/Rome) at second
//! precision; one value is taken once per processing step and reused for every artefact.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, Zoned};

/// An instant as PEC writes it: local civil time plus its UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PecTime {
    pub local: DateTime,
    pub offset: Offset,
}

/// Why a `giorno`/`ora`/`zona` triple could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid PEC date {field}: {value:?}")]
pub struct PecTimeError {
    pub field: &'static str,
    pub value: String,
}

/// The zone of Italian legal time.
pub fn italian_zone() -> TimeZone {
    // The bundled tzdb always has Europe/Rome; a fixed CET offset is only a last resort.
    TimeZone::get("Europe/Rome").unwrap_or_else(|_| TimeZone::fixed(Offset::constant(1)))
}

impl PecTime {
    /// The instant `ts` in the given zone, truncated to the second.
    pub fn from_timestamp(ts: Timestamp, tz: &TimeZone) -> Self {
        let ts = Timestamp::from_second(ts.as_second()).unwrap_or(ts);
        let zoned: Zoned = ts.to_zoned(tz.clone());
        Self {
            local: zoned.datetime(),
            offset: zoned.offset(),
        }
    }

    /// The instant in Italian legal time.
    pub fn italian(ts: Timestamp) -> Self {
        Self::from_timestamp(ts, &italian_zone())
    }

    /// `dd/mm/yyyy`
    pub fn giorno(&self) -> String {
        format!(
            "{:02}/{:02}/{:04}",
            self.local.day(),
            self.local.month(),
            self.local.year()
        )
    }

    /// `hh:mm:ss`
    pub fn ora(&self) -> String {
        format!(
            "{:02}:{:02}:{:02}",
            self.local.hour(),
            self.local.minute(),
            self.local.second()
        )
    }

    /// `+hhmm` / `-hhmm`
    pub fn zona(&self) -> String {
        let secs = self.offset.seconds();
        let sign = if secs < 0 { '-' } else { '+' };
        let abs = secs.unsigned_abs();
        format!("{sign}{:02}{:02}", abs / 3600, (abs % 3600) / 60)
    }

    /// The UTC instant.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.offset.to_timestamp(self.local).ok()
    }

    /// RFC 5322 `Date:` value, e.g. `Thu, 05 Dec 2024 00:02:10 +0100`.
    pub fn rfc5322(&self) -> String {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let wd = self.local.weekday().to_monday_zero_offset() as usize;
        format!(
            "{}, {:02} {} {:04} {} {}",
            DAYS[wd % 7],
            self.local.day(),
            MONTHS[(self.local.month() as usize).saturating_sub(1) % 12],
            self.local.year(),
            self.ora(),
            self.zona()
        )
    }

    /// The human form of the text parts: `15/11/2024 alle ore 18:20:38 (+0100)`.
    pub fn human(&self) -> String {
        format!(
            "{} alle ore {} ({})",
            self.giorno(),
            self.ora(),
            self.zona()
        )
    }

    /// A compact form for identifiers: `yyyymmddhhmmss`.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.local.year(),
            self.local.month(),
            self.local.day(),
            self.local.hour(),
            self.local.minute(),
            self.local.second()
        )
    }

    /// Reads the three daticert fields. Tolerates surrounding whitespace and a `zona`
    /// written `+01:00`.
    pub fn parse(giorno: &str, ora: &str, zona: &str) -> Result<Self, PecTimeError> {
        let err = |field: &'static str, value: &str| PecTimeError {
            field,
            value: value.chars().take(64).collect(),
        };
        let g: Vec<&str> = giorno.trim().split('/').collect();
        let o: Vec<&str> = ora.trim().split(':').collect();
        if g.len() != 3 {
            return Err(err("giorno", giorno));
        }
        if o.len() != 3 {
            return Err(err("ora", ora));
        }
        let num =
            |s: &str, f: &'static str, v: &str| s.trim().parse::<i32>().map_err(|_| err(f, v));
        let (d, m, y) = (
            num(g[0], "giorno", giorno)?,
            num(g[1], "giorno", giorno)?,
            num(g[2], "giorno", giorno)?,
        );
        let (hh, mm, ss) = (
            num(o[0], "ora", ora)?,
            num(o[1], "ora", ora)?,
            num(o[2], "ora", ora)?,
        );
        let fit = |v: i32, f: &'static str, s: &str| i8::try_from(v).map_err(|_| err(f, s));
        let local = DateTime::new(
            i16::try_from(y).map_err(|_| err("giorno", giorno))?,
            fit(m, "giorno", giorno)?,
            fit(d, "giorno", giorno)?,
            fit(hh, "ora", ora)?,
            fit(mm, "ora", ora)?,
            fit(ss, "ora", ora)?,
            0,
        )
        .map_err(|_| err("giorno", giorno))?;
        let z = zona.trim().replace(':', "");
        let (sign, digits) = match z.as_bytes().first() {
            Some(b'+') => (1, &z[1..]),
            Some(b'-') => (-1, &z[1..]),
            _ => return Err(err("zona", zona)),
        };
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("zona", zona));
        }
        let h: i32 = digits[..2].parse().map_err(|_| err("zona", zona))?;
        let mi: i32 = digits[2..].parse().map_err(|_| err("zona", zona))?;
        let offset =
            Offset::from_seconds(sign * (h * 3600 + mi * 60)).map_err(|_| err("zona", zona))?;
        Ok(Self { local, offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winter_and_summer_offsets_in_rome() {
        let winter: Timestamp = "2024-11-15T17:20:38Z".parse().unwrap();
        let t = PecTime::italian(winter);
        assert_eq!(
            (t.giorno().as_str(), t.ora().as_str(), t.zona().as_str()),
            ("15/11/2024", "18:20:38", "+0100")
        );
        assert_eq!(t.rfc5322(), "Fri, 15 Nov 2024 18:20:38 +0100");
        let summer: Timestamp = "2025-05-10T09:01:54Z".parse().unwrap();
        assert_eq!(PecTime::italian(summer).zona(), "+0200");
        assert_eq!(
            PecTime::italian(summer).human(),
            "10/05/2025 alle ore 11:01:54 (+0200)"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_garbage() {
        let t = PecTime::parse(" 07/01/2013 ", "17:41:49", "+0100").unwrap();
        assert_eq!(t.timestamp().unwrap().to_string(), "2013-01-07T16:41:49Z");
        assert_eq!(
            PecTime::parse("07/01/2013", "17:41:49", "+01:00").unwrap(),
            t
        );
        assert!(PecTime::parse("32/01/2013", "17:41:49", "+0100").is_err());
        assert!(PecTime::parse("07/01/2013", "17:41", "+0100").is_err());
        assert!(PecTime::parse("07/01/2013", "17:41:49", "CET").is_err());
    }
}
