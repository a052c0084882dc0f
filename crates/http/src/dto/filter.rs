//! Query filters: `?status=` values, case-insensitive.

use std::str::FromStr;

use concert_domain::InvalidValue;

/// The status named by `value` (any case, surrounding blanks ignored), if
/// one was given; refuses an unknown one.
pub(crate) fn status<S: FromStr<Err = InvalidValue>>(
    value: Option<String>,
) -> Result<Option<S>, InvalidValue> {
    value
        .map(|s| s.trim().to_ascii_uppercase().parse::<S>())
        .transpose()
}
