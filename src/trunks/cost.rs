//! What an outbound call costs, as carriers bill it: a trunk's `rate` is a price per minute
//! with a minimum billed duration and a billing increment (carriers write "60/60",
//! "30/6", "1/1": the first `minimum_seconds` are billed whole, the rest in steps of
//! `increment_seconds`, each step rounded up). Money is an integer count of micro-units
//! of the currency (1 USD = 1 000 000), never a float; prices are read and written as
//! decimal strings (`"0.0085"`).

use std::fmt;

/// Micro-units per unit of currency.
pub const MICROS: i64 = 1_000_000;

/// A trunk's price for outbound calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// Price per minute in micro-units of `currency`.
    pub per_minute_micros: i64,
    /// ISO 4217 code, upper case (`USD`, `INR`).
    pub currency: String,
    /// Billing step after the minimum, at least 1 second.
    pub increment_seconds: u32,
    /// Billed at least this long once answered (0: no minimum).
    pub minimum_seconds: u32,
}

impl Rate {
    /// The seconds billed for a call answered for `answered_seconds`: nothing if it was
    /// never answered; otherwise at least the minimum, and past it the rest rounded up
    /// to whole increments.
    pub fn billed_seconds(&self, answered_seconds: u64) -> u64 {
        if answered_seconds == 0 {
            return 0;
        }
        let minimum = u64::from(self.minimum_seconds);
        let step = u64::from(self.increment_seconds.max(1));
        if answered_seconds <= minimum {
            return minimum;
        }
        minimum + (answered_seconds - minimum).div_ceil(step) * step
    }

    /// The cost in micro-units of a call answered for `answered_seconds`: billed seconds
    /// times the per-minute price, rounded up to a whole micro-unit.
    pub fn cost_micros(&self, answered_seconds: u64) -> i64 {
        let billed = i128::from(self.billed_seconds(answered_seconds));
        let micros = (billed * i128::from(self.per_minute_micros) + 59) / 60;
        i64::try_from(micros).unwrap_or(i64::MAX)
    }
}

/// Why a price is not a valid amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be a decimal amount such as \"0.0085\"")]
    Syntax,
    #[error("has more than 6 decimal places")]
    Precision,
    #[error("is too large")]
    Overflow,
    #[error("must not be negative")]
    Negative,
}

/// A non-negative decimal amount (`"0.0085"`, `"1"`, `"12.50"`) in micro-units.
pub fn parse_amount(s: &str) -> Result<i64, AmountError> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(AmountError::Negative);
    }
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && frac.is_empty())
    {
        return Err(AmountError::Syntax);
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 6 {
        return Err(AmountError::Precision);
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| AmountError::Overflow)?
    };
    let frac_micros: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}")
            .parse()
            .map_err(|_| AmountError::Syntax)?
    };
    whole
        .checked_mul(MICROS)
        .and_then(|w| w.checked_add(frac_micros))
        .ok_or(AmountError::Overflow)
}

/// An amount as a decimal string: at least two decimals, at most six, no trailing zeros
/// beyond two (`0.026`, `1.50`, `0.000001`).
pub fn format_amount(micros: i64) -> String {
    Amount(micros).to_string()
}

/// Displays micro-units as [`format_amount`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub i64);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let micros = MICROS.unsigned_abs();
        let frac = format!("{:06}", abs % micros);
        let mut frac = frac.trim_end_matches('0').to_owned();
        while frac.len() < 2 {
            frac.push('0');
        }
        write!(f, "{sign}{}.{frac}", abs / micros)
    }
}

/// Whether `s` looks like an ISO 4217 code: three upper-case letters.
pub fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_minute: &str, minimum: u32, increment: u32) -> Rate {
        Rate {
            per_minute_micros: parse_amount(per_minute).unwrap_or_else(|e| panic!("{e}")),
            currency: "USD".to_owned(),
            increment_seconds: increment,
            minimum_seconds: minimum,
        }
    }

    #[test]
    fn per_minute_billing() {
        // 60/60: every started minute is billed whole.
        let r = rate("0.0130", 60, 60);
        assert_eq!(r.billed_seconds(0), 0);
        assert_eq!(r.billed_seconds(1), 60);
        assert_eq!(r.billed_seconds(60), 60);
        assert_eq!(r.billed_seconds(61), 120);
        assert_eq!(r.cost_micros(0), 0);
        assert_eq!(r.cost_micros(61), 26_000);
    }

    #[test]
    fn minimum_then_increments() {
        // 30/6: 30 s minimum, then 6-second steps.
        let r = rate("0.60", 30, 6);
        assert_eq!(r.billed_seconds(5), 30);
        assert_eq!(r.billed_seconds(30), 30);
        assert_eq!(r.billed_seconds(31), 36);
        assert_eq!(r.billed_seconds(36), 36);
        assert_eq!(r.billed_seconds(37), 42);
        // 42 s at 0.60/min = 0.42.
        assert_eq!(r.cost_micros(37), 420_000);
        // A minimum that is not a multiple of the increment still bills from the minimum.
        let r = rate("0.60", 45, 60);
        assert_eq!(r.billed_seconds(46), 105);
    }

    #[test]
    fn per_second_and_rounding_up() {
        // 1/1 at 0.0085/min: 7 s = 0.000991666… rounded up to 0.000992.
        let r = rate("0.0085", 0, 1);
        assert_eq!(r.billed_seconds(7), 7);
        assert_eq!(r.cost_micros(7), 992);
        // No minimum, 6 s steps: 1 s is one step.
        let r = rate("0.0085", 0, 6);
        assert_eq!(r.billed_seconds(1), 6);
        // An increment of 0 is treated as 1 s.
        let r = rate("1", 0, 0);
        assert_eq!(r.billed_seconds(7), 7);
        assert_eq!(r.cost_micros(60), 1_000_000);
    }

    #[test]
    fn amounts_round_trip_as_decimals() {
        assert_eq!(parse_amount("0.0085"), Ok(8_500));
        assert_eq!(parse_amount("1"), Ok(1_000_000));
        assert_eq!(parse_amount("12.50"), Ok(12_500_000));
        assert_eq!(parse_amount(".5"), Ok(500_000));
        assert_eq!(parse_amount("0.1000000"), Ok(100_000));
        assert_eq!(parse_amount("0.0000001"), Err(AmountError::Precision));
        assert_eq!(parse_amount("-1"), Err(AmountError::Negative));
        for bad in ["", ".", "1.", "1e3", "abc", "1.2.3", " "] {
            assert_eq!(parse_amount(bad), Err(AmountError::Syntax), "{bad:?}");
        }
        assert_eq!(
            parse_amount("99999999999999999999"),
            Err(AmountError::Overflow)
        );
        assert_eq!(format_amount(26_000), "0.026");
        assert_eq!(format_amount(1_500_000), "1.50");
        assert_eq!(format_amount(1), "0.000001");
        assert_eq!(format_amount(0), "0.00");
        assert_eq!(format_amount(-8_500), "-0.0085");
        for m in [0, 1, 8_500, 26_000, 1_500_000, 123_456_789] {
            assert_eq!(parse_amount(&format_amount(m)), Ok(m));
        }
    }

    #[test]
    fn currencies() {
        assert!(is_currency("USD") && is_currency("INR"));
        assert!(!is_currency("usd") && !is_currency("US") && !is_currency("USDT"));
    }
}
