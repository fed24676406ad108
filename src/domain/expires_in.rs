//! `expires_in` as edX sends it: an integer, a float or a numeric string, always > 0.

use std::time::Duration;

use serde_json::Value;

/// The longest lifetime believed; anything longer is a broken answer, not a token.
const MAX_LIFETIME_SECS: f64 = 366.0 * 24.0 * 3600.0;

/// Parses an `expires_in` value. `Ok(None)` when absent or null (the JWT `exp` decides).
pub fn parse_expires_in(value: Option<&Value>) -> Result<Option<Duration>, String> {
    let seconds = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or("is not a finite number")?,
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| "is a string that is not a number".to_owned())?,
        Some(_) => return Err("is neither a number nor a numeric string".to_owned()),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err("must be a positive number of seconds".to_owned());
    }
    if seconds > MAX_LIFETIME_SECS {
        return Err("is implausibly long (over a year)".to_owned());
    }
    Ok(Some(Duration::from_secs_f64(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn integers_floats_and_numeric_strings_are_accepted() {
        let cases = [
            (json!(36000), 36000.0),
            (json!(30), 30.0),
            (json!("180"), 180.0),
            (json!(" 3600 "), 3600.0),
            (json!(3599.5), 3599.5),
            (json!("42.25"), 42.25),
        ];
        for (value, secs) in cases {
            let got = parse_expires_in(Some(&value)).unwrap().unwrap();
            assert_eq!(got.as_secs_f64(), secs, "{value}");
        }
        assert_eq!(parse_expires_in(None).unwrap(), None);
        assert_eq!(parse_expires_in(Some(&Value::Null)).unwrap(), None);
    }

    #[test]
    fn non_positive_and_non_numeric_values_are_rejected() {
        for value in [
            json!(0),
            json!(-5),
            json!("0"),
            json!("-1"),
            json!("soon"),
            json!(""),
            json!("NaN"),
            json!("inf"),
            json!(true),
            json!([3600]),
            json!({"s": 1}),
            json!(1e12),
        ] {
            assert!(
                parse_expires_in(Some(&value)).is_err(),
                "{value} should be rejected"
            );
        }
    }

    proptest! {
        #[test]
        fn every_positive_integer_up_to_a_year_parses_the_same_as_number_or_string(n in 1u64..31_000_000) {
            let as_number = parse_expires_in(Some(&json!(n))).unwrap().unwrap();
            let as_string = parse_expires_in(Some(&json!(n.to_string()))).unwrap().unwrap();
            prop_assert_eq!(as_number, Duration::from_secs(n));
            prop_assert_eq!(as_string, as_number);
        }

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,20}") {
            let _ = parse_expires_in(Some(&json!(s)));
        }

        #[test]
        fn negative_numbers_are_always_rejected(n in -1_000_000i64..=0) {
            prop_assert!(parse_expires_in(Some(&json!(n))).is_err());
        }
    }
}
