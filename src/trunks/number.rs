//! Phone numbers: what carriers, softphones and users write, read into E.164 (ITU-T
//! E.164: `+`, country code, national significant number, at most 15 digits), and E.164
//! written the way a trunk expects it (`number_format`).
//!
//! Reading (see docs/trunks.md, "Number formats"):
//! - `+<digits>` is E.164 already; `00<digits>` is the international prefix most of the
//!   world dials, so `0014155550100` is `+14155550100`;
//! - `0<digits>` is a national number with its trunk prefix (`09876543210` in India):
//!   it needs the trunk's country code (`+919876543210`);
//! - bare digits with a country code: a national number of that country when they have
//!   its national length (`9876543210` with 91), or already international when they start
//!   with the country code and the rest has that length (`919876543210`); for a country
//!   whose national length voxgate does not know, bare digits that start with the country
//!   code are read as international, others as national;
//! - bare digits without a country code are E.164 without its `+` (what many carriers put
//!   in From).
//!
//! Spaces, dashes, dots and parentheses are ignored, as is a `tel:` prefix.

use std::fmt;

/// A number in E.164: `+` and 7-15 digits, the first not 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(String);

impl E164 {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits after `+`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a trunk writes numbers in its Request-URIs and From headers.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum NumberFormat {
    /// `+14155550100`.
    #[default]
    E164,
    /// India's national form: `0` and the 10-digit national number (`09876543210`), for
    /// numbers of the trunk's country (91 unless `country_code` says otherwise).
    InNational,
}

impl NumberFormat {
    pub const fn as_str(self) -> &'static str {
        match self {
            NumberFormat::E164 => "e164",
            NumberFormat::InNational => "in_national",
        }
    }
}

impl std::str::FromStr for NumberFormat {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "e164" => Ok(NumberFormat::E164),
            "in_national" => Ok(NumberFormat::InNational),
            _ => Err(()),
        }
    }
}

/// Why a string is not a number voxgate can dial or match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("is empty")]
    Empty,
    #[error("contains {0:?}: only digits, a leading + and separators (space - . ( )) are allowed")]
    BadChar(char),
    #[error("has {0} digits: an E.164 number has 7 to 15")]
    Length(usize),
    #[error("an E.164 country code cannot start with 0")]
    LeadingZero,
    #[error("is a national number: it needs the trunk's country_code")]
    NoCountry,
    #[error("cannot be written as {format}: it is not a number of country +{country}")]
    OtherCountry {
        format: &'static str,
        country: String,
    },
}

/// National significant number lengths voxgate knows, by country code.
fn national_len(country: &str) -> Option<usize> {
    match country {
        // NANP: 3-digit area code + 7 digits.
        "1" => Some(10),
        // India: 10-digit mobile and geographic numbers.
        "91" => Some(10),
        _ => None,
    }
}

/// Whether `s` is a valid country code: 1-3 digits, not starting with 0.
pub fn is_country_code(s: &str) -> bool {
    (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0')
}

/// Read `input` as E.164, with `country` (a country code such as `"91"`) for national
/// forms.
pub fn parse(input: &str, country: Option<&str>) -> Result<E164, NumberError> {
    let s = input.trim();
    let s = s.strip_prefix("tel:").unwrap_or(s);
    let (plus, rest) = match s.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' => {}
            other => return Err(NumberError::BadChar(other)),
        }
    }
    if digits.is_empty() {
        return Err(NumberError::Empty);
    }
    let international = if plus {
        digits
    } else if let Some(r) = digits.strip_prefix("00") {
        r.to_owned()
    } else if let Some(r) = digits.strip_prefix('0') {
        let cc = country.ok_or(NumberError::NoCountry)?;
        format!("{cc}{r}")
    } else {
        match country {
            None => digits,
            Some(cc) => match national_len(cc) {
                Some(n) if digits.len() == n => format!("{cc}{digits}"),
                Some(_) => digits,
                None if digits.starts_with(cc) => digits,
                None => format!("{cc}{digits}"),
            },
        }
    };
    check(international)
}

fn check(digits: String) -> Result<E164, NumberError> {
    if !(7..=15).contains(&digits.len()) {
        return Err(NumberError::Length(digits.len()));
    }
    if digits.starts_with('0') {
        return Err(NumberError::LeadingZero);
    }
    Ok(E164(format!("+{digits}")))
}

/// `number` as a trunk with this format and country code writes it.
pub fn format(
    number: &E164,
    format: NumberFormat,
    country: Option<&str>,
) -> Result<String, NumberError> {
    match format {
        NumberFormat::E164 => Ok(number.as_str().to_owned()),
        NumberFormat::InNational => {
            let cc = country.unwrap_or("91");
            match number.digits().strip_prefix(cc) {
                Some(national) if !national.is_empty() => Ok(format!("0{national}")),
                _ => Err(NumberError::OtherCountry {
                    format: NumberFormat::InNational.as_str(),
                    country: cc.to_owned(),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(input: &str, country: Option<&str>) -> Result<String, NumberError> {
        parse(input, country).map(E164::into_string)
    }

    #[test]
    fn reads_international_forms() {
        for cc in [None, Some("1"), Some("91")] {
            assert_eq!(e("+14155550100", cc).as_deref(), Ok("+14155550100"));
            assert_eq!(e("0014155550100", cc).as_deref(), Ok("+14155550100"));
            assert_eq!(e("+919876543210", cc).as_deref(), Ok("+919876543210"));
            assert_eq!(e(" +1 (415) 555-0100 ", cc).as_deref(), Ok("+14155550100"));
            assert_eq!(
                e("tel:+44.20.7946.0958", cc).as_deref(),
                Ok("+442079460958")
            );
        }
    }

    #[test]
    fn reads_national_forms_with_a_country() {
        let india = Some("91");
        assert_eq!(e("09876543210", india).as_deref(), Ok("+919876543210"));
        assert_eq!(e("9876543210", india).as_deref(), Ok("+919876543210"));
        assert_eq!(e("919876543210", india).as_deref(), Ok("+919876543210"));
        assert_eq!(e("98765 43210", india).as_deref(), Ok("+919876543210"));
        let us = Some("1");
        assert_eq!(e("4155550100", us).as_deref(), Ok("+14155550100"));
        assert_eq!(e("14155550100", us).as_deref(), Ok("+14155550100"));
        // A country whose national length is unknown: the code decides.
        assert_eq!(
            e("442079460958", Some("44")).as_deref(),
            Ok("+442079460958")
        );
        assert_eq!(e("02079460958", Some("44")).as_deref(), Ok("+442079460958"));
        assert_eq!(e("2079460958", Some("44")).as_deref(), Ok("+442079460958"));
    }

    #[test]
    fn bare_digits_without_a_country_are_international() {
        assert_eq!(e("14155550100", None).as_deref(), Ok("+14155550100"));
        assert_eq!(e("919876543210", None).as_deref(), Ok("+919876543210"));
        assert_eq!(e("09876543210", None), Err(NumberError::NoCountry));
    }

    #[test]
    fn rejects_what_is_not_a_number() {
        assert_eq!(e("", None), Err(NumberError::Empty));
        assert_eq!(e("+", None), Err(NumberError::Empty));
        assert_eq!(e("alice", None), Err(NumberError::BadChar('a')));
        assert_eq!(e("+1415555010x", None), Err(NumberError::BadChar('x')));
        assert_eq!(e("++14155550100", None), Err(NumberError::BadChar('+')));
        assert_eq!(e("+123456", None), Err(NumberError::Length(6)));
        assert_eq!(e("+1234567890123456", None), Err(NumberError::Length(16)));
        assert_eq!(e("+0123456789", None), Err(NumberError::LeadingZero));
        assert_eq!(e("000123456789", None), Err(NumberError::LeadingZero));
    }

    #[test]
    fn writes_per_trunk_format() {
        let n = parse("+919876543210", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            format(&n, NumberFormat::E164, Some("91")).as_deref(),
            Ok("+919876543210")
        );
        assert_eq!(
            format(&n, NumberFormat::InNational, Some("91")).as_deref(),
            Ok("09876543210")
        );
        assert_eq!(
            format(&n, NumberFormat::InNational, None).as_deref(),
            Ok("09876543210")
        );
        let us = parse("+14155550100", None).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            format(&us, NumberFormat::InNational, Some("91")),
            Err(NumberError::OtherCountry { .. })
        ));
        // Round trip: the national form reads back as the same number.
        let national = format(&n, NumberFormat::InNational, Some("91")).unwrap_or_default();
        assert_eq!(parse(&national, Some("91")), Ok(n));
    }

    #[test]
    fn country_codes() {
        assert!(is_country_code("1") && is_country_code("91") && is_country_code("880"));
        assert!(!is_country_code("") && !is_country_code("0") && !is_country_code("1234"));
        assert!(!is_country_code("+91") && !is_country_code("9a"));
    }
}
