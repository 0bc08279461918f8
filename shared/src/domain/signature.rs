//! Webhook signature schemes and their verification (pure: the current time is an argument).
//!
//! Every scheme is HMAC-SHA256: over the raw body (GitHub), over `"<timestamp>.<body>"`
//! (Stripe), or over `"<timestamp>.<delivery id>.<body>"` (generic). Signatures are hex-decoded and compared in constant time by
//! [`Mac::verify_slice`]; the timestamp is checked against `now` in both directions after the
//! signature, so [`SignatureError::Stale`] means "authentic but too old (or too far ahead)".
//! The `sign_*` functions produce the header values a sender would, for tests and examples.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::time::Timestamp;

/// How a source signs its deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureScheme {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`; the delivery id
    /// is in `X-GitHub-Delivery`.
    GitHub,
    /// Stripe: `Stripe-Signature: t=<unix secs>,v1=<hex HMAC-SHA256(secret, "t.body")>[,v1=..]`,
    /// rejected when `t` is further than `tolerance_secs` from now (Stripe's default: 300).
    Stripe { tolerance_secs: i64 },
    /// Generic: `<signature_header>: sha256=<hex HMAC-SHA256(secret,
    /// "<timestamp>.<delivery id>.<body>")>`, `<timestamp_header>: <unix secs>` within
    /// `tolerance_secs` of now, and `<delivery_header>: <delivery id>`. The timestamp is signed
    /// as its decimal epoch seconds, the delivery id exactly as the header's value (not
    /// trimmed: intake takes the delivery id from the same value), the body as its raw bytes:
    /// neither header can be changed without the secret.
    Hmac {
        signature_header: String,
        timestamp_header: String,
        delivery_header: String,
        tolerance_secs: i64,
    },
}

impl SignatureScheme {
    /// The headers whose exact values the signature covers, so a delivery id, tenant or run
    /// key may be taken from them: none for GitHub (it signs only the body) and for Stripe (it
    /// signs the body and the timestamp inside its own signature header); the delivery header
    /// for the generic scheme. (Its timestamp header is signed as the parsed number, so
    /// `+1700000000` and `1700000000` verify alike: not an identity.)
    pub fn signed_headers(&self) -> Vec<&str> {
        match self {
            SignatureScheme::GitHub | SignatureScheme::Stripe { .. } => Vec::new(),
            SignatureScheme::Hmac {
                delivery_header, ..
            } => vec![delivery_header],
        }
    }

    /// Whether header `name` (case-insensitive) is covered by the signature.
    pub fn signs_header(&self, name: &str) -> bool {
        self.signed_headers()
            .iter()
            .any(|signed| signed.eq_ignore_ascii_case(name))
    }
}

/// Read access to request headers, case-insensitive by name.
pub trait Headers {
    /// The first value of header `name`, if present and valid text.
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for BTreeMap<String, String> {
    /// Exact lookup first, then a case-insensitive scan, so keys may be stored in any case
    /// (lower-case keys, as HTTP/2 and API Gateway v2 deliver them, hit the fast path).
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name)
            .or_else(|| {
                self.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case(name))
                    .map(|(_, value)| value)
            })
            .map(String::as_str)
    }
}

/// GitHub's signature header.
pub const GITHUB_SIGNATURE_HEADER: &str = "X-Hub-Signature-256";
/// Stripe's signature header.
pub const STRIPE_SIGNATURE_HEADER: &str = "Stripe-Signature";

/// Why a delivery's signature was refused. Never retryable: the sender must fix the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header the scheme needs is absent.
    #[error("missing header `{header}`")]
    MissingHeader { header: String },
    /// A header is present but cannot be read (bad hex, wrong length, no timestamp, ...).
    #[error("malformed header `{header}`: {reason}")]
    Malformed {
        header: String,
        reason: &'static str,
    },
    /// No signature matches the body under the secret.
    #[error("signature does not match")]
    Mismatch,
    /// The signature is valid but its timestamp is `age_secs` from now (negative: in the
    /// future), beyond `tolerance_secs`.
    #[error(
        "timestamp is {}, beyond the {tolerance_secs} s tolerance",
        describe_age(*.age_secs)
    )]
    Stale { age_secs: i64, tolerance_secs: i64 },
}

/// `age_secs` (positive: in the past) in words: "3600 s old" or "3600 s in the future".
fn describe_age(age_secs: i64) -> String {
    if age_secs < 0 {
        format!("{} s in the future", age_secs.unsigned_abs())
    } else {
        format!("{age_secs} s old")
    }
}

impl SignatureError {
    /// A stable machine-readable code for HTTP error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader { .. } => "missing_signature",
            SignatureError::Malformed { .. } => "malformed_signature",
            SignatureError::Mismatch => "invalid_signature",
            SignatureError::Stale { .. } => "stale_signature",
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Bytes in an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// Checks that `body`, as received with `headers`, was signed with `secret` under `scheme`.
pub fn verify(
    scheme: &SignatureScheme,
    secret: &[u8],
    headers: &dyn Headers,
    body: &[u8],
    now: Timestamp,
) -> Result<(), SignatureError> {
    match scheme {
        SignatureScheme::GitHub => verify_github(secret, headers, body),
        SignatureScheme::Stripe { tolerance_secs } => {
            verify_stripe(secret, headers, body, now, *tolerance_secs)
        }
        SignatureScheme::Hmac {
            signature_header,
            timestamp_header,
            delivery_header,
            tolerance_secs,
        } => verify_hmac(
            secret,
            headers,
            body,
            now,
            HmacHeaders {
                signature: signature_header,
                timestamp: timestamp_header,
                delivery: delivery_header,
            },
            *tolerance_secs,
        ),
    }
}

/// The `X-Hub-Signature-256` value GitHub would send for `body`: `sha256=<hex>`.
pub fn sign_github(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, None, body).finalize().into_bytes())
    )
}

/// The `Stripe-Signature` value Stripe would send for `body` at `t`: `t=<t>,v1=<hex>`.
pub fn sign_stripe(secret: &[u8], body: &[u8], t: i64) -> String {
    let tag = mac(secret, Some(t), body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

/// The signature header value for the generic scheme at `timestamp` for delivery id
/// `delivery_id`: `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<delivery_id>.<body>")>`.
pub fn sign_hmac(secret: &[u8], body: &[u8], timestamp: i64, delivery_id: &str) -> String {
    let tag = hmac_mac(secret, timestamp, delivery_id, body)
        .finalize()
        .into_bytes();
    format!("sha256={}", hex::encode(tag))
}

/// The generic scheme's three header names.
struct HmacHeaders<'a> {
    signature: &'a str,
    timestamp: &'a str,
    delivery: &'a str,
}

fn verify_github(secret: &[u8], headers: &dyn Headers, body: &[u8]) -> Result<(), SignatureError> {
    let value = required(headers, GITHUB_SIGNATURE_HEADER)?;
    let hex_tag = value
        .strip_prefix("sha256=")
        .ok_or_else(|| malformed(GITHUB_SIGNATURE_HEADER, "expected `sha256=<hex>`"))?;
    let tag = decode_tag(GITHUB_SIGNATURE_HEADER, hex_tag)?;
    mac(secret, None, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

fn verify_stripe(
    secret: &[u8],
    headers: &dyn Headers,
    body: &[u8],
    now: Timestamp,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let header = STRIPE_SIGNATURE_HEADER;
    let value = required(headers, header)?;
    let mut timestamp = None;
    let mut tags = Vec::new();
    for item in value.split(',') {
        let (key, val) = item
            .split_once('=')
            .ok_or_else(|| malformed(header, "expected `key=value` items"))?;
        match key.trim() {
            "t" if timestamp.is_some() => return Err(malformed(header, "more than one `t`")),
            "t" => timestamp = Some(parse_secs(header, val)?),
            "v1" => tags.push(decode_tag(header, val.trim())?),
            // v0 (test-mode legacy) and future schemes are ignored, as Stripe's libraries do.
            _ => {}
        }
    }
    let t = timestamp.ok_or_else(|| malformed(header, "no `t` timestamp"))?;
    if tags.is_empty() {
        return Err(malformed(header, "no `v1` signature"));
    }
    let expected = mac(secret, Some(t), body);
    // Several v1 entries appear while a secret is being rolled: any match is enough.
    if !tags
        .iter()
        .any(|tag| expected.clone().verify_slice(tag).is_ok())
    {
        return Err(SignatureError::Mismatch);
    }
    check_fresh(t, now, tolerance_secs)
}

fn verify_hmac(
    secret: &[u8],
    headers: &dyn Headers,
    body: &[u8],
    now: Timestamp,
    names: HmacHeaders<'_>,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let value = required(headers, names.signature)?;
    let hex_tag = value.strip_prefix("sha256=").unwrap_or(value);
    let tag = decode_tag(names.signature, hex_tag)?;
    let t = parse_secs(names.timestamp, required(headers, names.timestamp)?)?;
    // Untrimmed: the delivery id intake resolves from this header is the value as sent, so
    // padding it must not verify under the unpadded signature.
    let delivery_id =
        headers
            .header(names.delivery)
            .ok_or_else(|| SignatureError::MissingHeader {
                header: names.delivery.to_owned(),
            })?;
    hmac_mac(secret, t, delivery_id, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)?;
    check_fresh(t, now, tolerance_secs)
}

/// HMAC-SHA256 keyed with `secret` over `"<timestamp>.<delivery_id>.<body>"`.
fn hmac_mac(secret: &[u8], timestamp: i64, delivery_id: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = mac(secret, Some(timestamp), delivery_id.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// HMAC-SHA256 keyed with `secret`, fed `"<timestamp>."` (when given) and then `body`.
fn mac(secret: &[u8], timestamp: Option<i64>, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    if let Some(t) = timestamp {
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    mac
}

fn required<'h>(headers: &'h dyn Headers, name: &str) -> Result<&'h str, SignatureError> {
    headers
        .header(name)
        .map(str::trim)
        .ok_or_else(|| SignatureError::MissingHeader {
            header: name.to_owned(),
        })
}

fn malformed(header: &str, reason: &'static str) -> SignatureError {
    SignatureError::Malformed {
        header: header.to_owned(),
        reason,
    }
}

fn decode_tag(header: &str, hex_tag: &str) -> Result<[u8; TAG_LEN], SignatureError> {
    let mut tag = [0u8; TAG_LEN];
    hex::decode_to_slice(hex_tag, &mut tag)
        .map_err(|_| malformed(header, "signature is not 64 hex digits"))?;
    Ok(tag)
}

fn parse_secs(header: &str, value: &str) -> Result<i64, SignatureError> {
    value
        .trim()
        .parse()
        .map_err(|_| malformed(header, "timestamp is not whole epoch seconds"))
}

/// Refuses `t` when it is more than `tolerance_secs` before or after `now`.
fn check_fresh(t: i64, now: Timestamp, tolerance_secs: i64) -> Result<(), SignatureError> {
    let age_secs = now.epoch_secs().saturating_sub(t);
    if age_secs.unsigned_abs() > tolerance_secs.max(0).unsigned_abs() {
        return Err(SignatureError::Stale {
            age_secs,
            tolerance_secs,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
            .collect()
    }

    fn now() -> Timestamp {
        Timestamp::from_secs(NOW)
    }

    fn stripe() -> SignatureScheme {
        SignatureScheme::Stripe {
            tolerance_secs: 300,
        }
    }

    fn generic() -> SignatureScheme {
        SignatureScheme::Hmac {
            signature_header: "X-Signature".to_owned(),
            timestamp_header: "X-Timestamp".to_owned(),
            delivery_header: "X-Delivery".to_owned(),
            tolerance_secs: 300,
        }
    }

    #[test]
    fn github_known_answer_from_its_docs() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign_github(secret, body), expected);
        let h = headers(&[("X-Hub-Signature-256", expected)]);
        assert_eq!(
            verify(&SignatureScheme::GitHub, secret, &h, body, now()),
            Ok(())
        );
    }

    #[test]
    fn github_rejects_a_flipped_bit_a_wrong_secret_and_a_missing_prefix() {
        let body = b"{\"action\":\"opened\"}".to_vec();
        let h = headers(&[("x-hub-signature-256", &sign_github(b"s3cret", &body))]);
        let mut flipped = body.clone();
        flipped[3] ^= 0x01;
        let scheme = SignatureScheme::GitHub;
        assert_eq!(
            verify(&scheme, b"s3cret", &h, &flipped, now()),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&scheme, b"other", &h, &body, now()),
            Err(SignatureError::Mismatch)
        );

        let bare = sign_github(b"s3cret", &body).replace("sha256=", "");
        let h = headers(&[("x-hub-signature-256", &bare)]);
        assert!(matches!(
            verify(&scheme, b"s3cret", &h, &body, now()),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn github_missing_header() {
        let err = verify(&SignatureScheme::GitHub, b"s", &headers(&[]), b"x", now());
        assert_eq!(
            err,
            Err(SignatureError::MissingHeader {
                header: GITHUB_SIGNATURE_HEADER.to_owned()
            })
        );
    }

    #[test]
    fn short_long_and_non_hex_signatures_are_malformed() {
        let good = sign_github(b"s", b"x");
        let candidates = [
            good[..good.len() - 2].to_owned(),
            format!("{good}00"),
            format!("{}zz", &good[..good.len() - 2]),
            "sha256=".to_owned(),
        ];
        for value in candidates {
            let h = headers(&[("x-hub-signature-256", &value)]);
            let result = verify(&SignatureScheme::GitHub, b"s", &h, b"x", now());
            assert!(
                matches!(result, Err(SignatureError::Malformed { .. })),
                "{value}: {result:?}"
            );
        }
    }

    #[test]
    fn stripe_accepts_its_own_signature_and_any_matching_v1() {
        let body = b"{\"id\":\"evt_1\"}";
        let value = sign_stripe(b"whsec_new", body, NOW - 10);
        assert_eq!(
            value,
            format!("t={},v1={}", NOW - 10, &value[value.len() - 64..])
        );
        let h = headers(&[("Stripe-Signature", &value)]);
        assert_eq!(verify(&stripe(), b"whsec_new", &h, body, now()), Ok(()));

        // Rolling secrets: the header carries one v1 per secret, plus a legacy v0.
        let old = sign_stripe(b"whsec_old", body, NOW);
        let new = sign_stripe(b"whsec_new", body, NOW);
        let combined = format!(
            "t={NOW},v1={},v1={},v0={}",
            &old[old.len() - 64..],
            &new[new.len() - 64..],
            "ab".repeat(32)
        );
        let h = headers(&[("stripe-signature", &combined)]);
        assert_eq!(verify(&stripe(), b"whsec_new", &h, body, now()), Ok(()));
        assert_eq!(verify(&stripe(), b"whsec_old", &h, body, now()), Ok(()));
        assert_eq!(
            verify(&stripe(), b"whsec_other", &h, body, now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stripe_signature_covers_the_timestamp_and_the_body() {
        let body = b"payload";
        let value = sign_stripe(b"k", body, NOW);
        let h = headers(&[(
            "stripe-signature",
            &value.replace(&format!("t={NOW}"), "t=1700000001"),
        )]);
        assert_eq!(
            verify(&stripe(), b"k", &h, body, now()),
            Err(SignatureError::Mismatch)
        );
        let h = headers(&[("stripe-signature", &value)]);
        assert_eq!(
            verify(&stripe(), b"k", &h, b"payloaD", now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_message_says_old_or_future() {
        let old = SignatureError::Stale {
            age_secs: 3600,
            tolerance_secs: 300,
        };
        assert_eq!(
            old.to_string(),
            "timestamp is 3600 s old, beyond the 300 s tolerance"
        );
        let future = SignatureError::Stale {
            age_secs: -3600,
            tolerance_secs: 300,
        };
        assert_eq!(
            future.to_string(),
            "timestamp is 3600 s in the future, beyond the 300 s tolerance"
        );
    }

    #[test]
    fn stripe_stale_and_future_timestamps() {
        let body = b"{}";
        let at_edge = headers(&[("stripe-signature", &sign_stripe(b"k", body, NOW - 300))]);
        assert_eq!(verify(&stripe(), b"k", &at_edge, body, now()), Ok(()));

        let old = headers(&[("stripe-signature", &sign_stripe(b"k", body, NOW - 301))]);
        assert_eq!(
            verify(&stripe(), b"k", &old, body, now()),
            Err(SignatureError::Stale {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        let future = headers(&[("stripe-signature", &sign_stripe(b"k", body, NOW + 301))]);
        assert_eq!(
            verify(&stripe(), b"k", &future, body, now()),
            Err(SignatureError::Stale {
                age_secs: -301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn stripe_malformed_headers() {
        let tag = "ab".repeat(32);
        let cases = [
            format!("v1={tag}"),
            format!("t={NOW}"),
            format!("t={NOW},v0={tag}"),
            format!("t=soon,v1={tag}"),
            format!("t={NOW},t={NOW},v1={tag}"),
            format!("t={NOW},v1=abc"),
            format!("t={NOW};v1={tag}"),
            String::new(),
        ];
        for value in cases {
            let h = headers(&[("stripe-signature", &value)]);
            let result = verify(&stripe(), b"k", &h, b"{}", now());
            assert!(
                matches!(result, Err(SignatureError::Malformed { .. })),
                "{value:?}: {result:?}"
            );
        }
        let none = verify(&stripe(), b"k", &headers(&[]), b"{}", now());
        assert!(matches!(none, Err(SignatureError::MissingHeader { .. })));
    }

    #[test]
    fn generic_hmac_with_prefix_or_bare_hex() {
        let body = b"{\"n\":1}";
        let signed = sign_hmac(b"k", body, NOW, "d-1");
        let ts = NOW.to_string();
        let h = headers(&[
            ("X-Signature", &signed),
            ("X-Timestamp", &ts),
            ("X-Delivery", "d-1"),
        ]);
        assert_eq!(verify(&generic(), b"k", &h, body, now()), Ok(()));
        let bare = signed.trim_start_matches("sha256=");
        let h = headers(&[
            ("X-Signature", bare),
            ("X-Timestamp", &ts),
            ("X-Delivery", "d-1"),
        ]);
        assert_eq!(verify(&generic(), b"k", &h, body, now()), Ok(()));
        assert_eq!(
            verify(&generic(), b"k", &h, b"{\"n\":2}", now()),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn generic_hmac_timestamp_rules() {
        let body = b"x";
        let at = |t: i64| {
            headers(&[
                ("x-signature", &sign_hmac(b"k", body, t, "d-1")),
                ("x-timestamp", &t.to_string()),
                ("x-delivery", "d-1"),
            ])
        };
        assert_eq!(
            verify(&generic(), b"k", &at(NOW + 300), body, now()),
            Ok(())
        );
        assert_eq!(
            verify(&generic(), b"k", &at(NOW - 1000), body, now()),
            Err(SignatureError::Stale {
                age_secs: 1000,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            verify(&generic(), b"k", &at(NOW + 1000), body, now()),
            Err(SignatureError::Stale {
                age_secs: -1000,
                tolerance_secs: 300
            })
        );

        // The timestamp is signed: moving it breaks the signature.
        let mut moved = at(NOW);
        moved.insert("x-timestamp".to_owned(), (NOW + 1).to_string());
        assert_eq!(
            verify(&generic(), b"k", &moved, body, now()),
            Err(SignatureError::Mismatch)
        );

        let mut unreadable = at(NOW);
        unreadable.insert("x-timestamp".to_owned(), "yesterday".to_owned());
        assert!(matches!(
            verify(&generic(), b"k", &unreadable, body, now()),
            Err(SignatureError::Malformed { header, .. }) if header == "X-Timestamp"
        ));
    }

    #[test]
    fn generic_hmac_missing_headers_are_named() {
        let sig = sign_hmac(b"k", b"x", NOW, "d-1");
        let no_delivery = headers(&[("x-signature", &sig), ("x-timestamp", "1700000000")]);
        assert_eq!(
            verify(&generic(), b"k", &no_delivery, b"x", now()),
            Err(SignatureError::MissingHeader {
                header: "X-Delivery".to_owned()
            })
        );
        let only_sig = headers(&[("x-signature", &sig)]);
        assert_eq!(
            verify(&generic(), b"k", &only_sig, b"x", now()),
            Err(SignatureError::MissingHeader {
                header: "X-Timestamp".to_owned()
            })
        );
        let only_ts = headers(&[("x-timestamp", "1700000000")]);
        assert_eq!(
            verify(&generic(), b"k", &only_ts, b"x", now()),
            Err(SignatureError::MissingHeader {
                header: "X-Signature".to_owned()
            })
        );
    }

    #[test]
    fn generic_hmac_signs_the_exact_string_timestamp_dot_delivery_dot_body() {
        // The documented signed string, computed independently of `sign_hmac`.
        let mut expected = HmacSha256::new_from_slice(b"k").unwrap();
        expected.update(b"1700000000.d-1.{\"n\":1}");
        let expected = format!("sha256={}", hex::encode(expected.finalize().into_bytes()));
        assert_eq!(sign_hmac(b"k", b"{\"n\":1}", NOW, "d-1"), expected);
    }

    #[test]
    fn generic_hmac_refuses_a_changed_delivery_id_inside_the_tolerance() {
        let body = b"{\"n\":1}";
        let ts = NOW.to_string();
        let sig = sign_hmac(b"k", body, NOW, "d-1");
        for changed in ["d-2", " d-1", "d-1 ", "D-1"] {
            let h = headers(&[
                ("x-signature", &sig),
                ("x-timestamp", &ts),
                ("x-delivery", changed),
            ]);
            assert_eq!(
                verify(&generic(), b"k", &h, body, now()),
                Err(SignatureError::Mismatch),
                "{changed:?}"
            );
        }
    }

    #[test]
    fn signed_headers_by_scheme() {
        assert!(SignatureScheme::GitHub.signed_headers().is_empty());
        assert!(stripe().signed_headers().is_empty());
        assert_eq!(generic().signed_headers(), ["X-Delivery"]);
        assert!(!generic().signs_header("X-Timestamp"));
        assert!(generic().signs_header("x-delivery"));
        assert!(!generic().signs_header("X-Tenant"));
        assert!(!SignatureScheme::GitHub.signs_header("X-GitHub-Delivery"));
    }

    #[test]
    fn btreemap_headers_are_case_insensitive() {
        let mut h = BTreeMap::new();
        h.insert("x-hub-signature-256".to_owned(), "a".to_owned());
        h.insert("Content-Type".to_owned(), "b".to_owned());
        assert_eq!(h.header("X-Hub-Signature-256"), Some("a"));
        assert_eq!(h.header("x-hub-signature-256"), Some("a"));
        assert_eq!(h.header("content-type"), Some("b"));
        assert_eq!(h.header("x-missing"), None);
    }

    #[test]
    fn error_codes_are_distinct() {
        let errors = [
            SignatureError::MissingHeader {
                header: "h".to_owned(),
            },
            malformed("h", "r"),
            SignatureError::Mismatch,
            SignatureError::Stale {
                age_secs: 1,
                tolerance_secs: 0,
            },
        ];
        let codes: std::collections::BTreeSet<_> =
            errors.iter().map(SignatureError::code).collect();
        assert_eq!(codes.len(), errors.len());
    }
}
