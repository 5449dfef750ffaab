//! The API token check: `Authorization: Bearer <token>`, the scheme matched without
//! regard to case (RFC 9110 §11.1) and the token compared in constant time, so how
//! long a refusal takes says nothing about how much of a guess was right.

use axum::http::HeaderValue;
use subtle::ConstantTimeEq;

/// Whether `header` presents `token`.
pub fn presents(header: Option<&HeaderValue>, token: &str) -> bool {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else { return false };
    let Some((scheme, presented)) = value.trim().split_once(' ') else { return false };
    // The comparison's time depends only on the lengths, never on the bytes.
    scheme.eq_ignore_ascii_case("bearer") && bool::from(presented.trim_start().as_bytes().ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> Option<HeaderValue> {
        Some(HeaderValue::from_str(value).expect("header"))
    }

    #[test]
    fn accepts_the_token_under_any_case_of_the_scheme() {
        for value in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret", "Bearer  s3cret"] {
            assert!(presents(header(value).as_ref(), "s3cret"), "{value}");
        }
    }

    #[test]
    fn refuses_anything_else() {
        for value in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer", "Bearer S3CRET", ""] {
            assert!(!presents(header(value).as_ref(), "s3cret"), "{value}");
        }
        assert!(!presents(None, "s3cret"));
    }
}
