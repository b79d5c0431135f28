//! OCSF's data types that rollcall checks or converts values to: `timestamp_t` (epoch
//! milliseconds, from the stored RFC 3339 times) and `email_t`. Pure functions of one value.

use super::MappingError;

/// A stored RFC 3339 time as OCSF's `timestamp_t`; `field` names it in the error.
pub(super) fn millis(field: &'static str, text: &str) -> Result<i64, MappingError> {
    crate::encode::parse_time(text)
        .map(|t| t.timestamp_millis())
        .map_err(|source| MappingError::Time {
            field,
            text: text.to_owned(),
            source,
        })
}

/// OCSF's `email_t`: `^[a-zA-Z0-9!#$%&'*+-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+$`. In
/// the local part `+-/` is a range, so `,` is allowed too.
pub(super) fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let Some((first, rest)) = domain.split_once('.') else {
        return false;
    };
    let local_ok = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+,-./=?^_`{|}~".contains(c);
    let label_ok = |c: char| c.is_ascii_alphanumeric() || c == '-';
    !local.is_empty()
        && local.chars().all(local_ok)
        && !first.is_empty()
        && first.chars().all(label_ok)
        && !rest.is_empty()
        && rest.chars().all(|c| label_ok(c) || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn email_check_follows_ocsf_email_t() {
        for ok in ["alice@example.com", "a.b+c@ex-ample.co.uk", "x,y@a.b"] {
            assert!(is_email(ok), "{ok}");
        }
        for bad in [
            "",
            "alice-at-example",
            "alice@example",
            "@example.com",
            "alice@.com",
            "alice@example.",
            "a@b@c.d",
            "alice smith@example.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }
}
