//! `POST /`: the talk's filter. Checks the media type and size itself, then keeps the keys that start with `a` or `A`.
//!
//! The body is read by hand rather than with axum's `Json` extractor, whose
//! rejections are plain text and whose status codes differ from this API's.
//! Values are never parsed into a tree: each kept value is copied byte for
//! byte from the request (serde_json's `RawValue`), so numbers keep their
//! exact spelling and precision and nested values are untouched.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{ApiError, ErrorBody, APPLICATION_JSON};
use crate::AppState;

/// The one media type `POST /` accepts.
pub const JSON: &str = "application/json";

/// Keeps the keys of the JSON object that start with `a` or `A`.
#[utoipa::path(
    post,
    path = "/",
    tag = "filter",
    summary = "Keep the keys that start with a",
    description = "Takes a JSON object and returns it with only the keys whose first character \
        is `a` or `A`, in their original order, values untouched (nested ones too). \
        The body must be `application/json` (parameters such as `charset=utf-8` are allowed).",
    request_body(
        content = Object,
        content_type = "application/json",
        description = "Any JSON object.",
        example = json!({"abra": 123, "kadabra": 4})
    ),
    responses(
        (status = 200, description = "The object, filtered.", body = Object,
            content_type = "application/json", example = json!({"abra": 123})),
        (status = 400, description = "The body is not well-formed JSON.", body = ErrorBody,
            content_type = "application/json",
            example = json!({"error": "malformed json: EOF while parsing a value at line 1 column 8"})),
        (status = 413, description = "The body is larger than the limit (MAX_BODY_BYTES).",
            body = ErrorBody, content_type = "application/json",
            example = json!({"error": "request body too large: the limit is 1048576 bytes"})),
        (status = 415, description = "The Content-Type is missing or is not application/json.",
            body = ErrorBody, content_type = "application/json",
            example = json!({"error": "unsupported media type \"text/plain\": expected application/json"})),
        (status = 422, description = "The body is JSON but not an object.", body = ErrorBody,
            content_type = "application/json",
            example = json!({"error": "expected a json object, got an array"})),
    )
)]
pub async fn filter(State(state): State<AppState>, req: Request) -> Response {
    match filter_request(req, state.max_body_bytes).await {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, APPLICATION_JSON)],
            json,
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}

async fn filter_request(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let (parts, body) = req.into_parts();
    check_media_type(&parts.headers)?;
    let bytes = read_body(&parts.headers, body, limit).await?;
    filter_json(&bytes)
}

/// 415 unless the Content-Type is `application/json`, in any case, with any parameters.
fn check_media_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("missing content-type: expected {JSON}"),
        ));
    };
    let media_type = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if media_type.eq_ignore_ascii_case(JSON) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported media type {media_type:?}: expected {JSON}"),
        ))
    }
}

/// Reads at most `limit` bytes. A Content-Length over the limit is refused
/// before reading anything; a chunked body is cut off when it passes the limit.
/// A body that arrived in one piece is handed on as it is, without a copy.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large: the limit is {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        // The client hung up or sent a broken chunked encoding.
        Err(err) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {err}"),
        )),
    }
}

/// Validates `body` as JSON, requires an object and returns the filtered object, serialised.
pub fn filter_json(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed json: the body is not utf-8 ({e})"),
        )
    })?;
    let malformed = |e: serde_json::Error| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("malformed json: {e}"))
    };
    // An object is read in one pass: skipped values are still validated, and
    // anything after the object is an error, so what is not well-formed JSON
    // is a 400 here too. Anything else is validated whole before its type is
    // looked at, so `[1,` is malformed (400), not "not an object" (422).
    if !text.trim_start_matches(JSON_WHITESPACE).starts_with('{') {
        let whole: &RawValue = serde_json::from_str(text).map_err(malformed)?;
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("expected a json object, got {}", kind_of(whole.get())),
        ));
    }
    let kept: KeptEntries<'_> = serde_json::from_str(text).map_err(malformed)?;

    let mut out = Vec::with_capacity(text.len());
    out.push(b'{');
    for (i, (key, value)) in kept.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a str to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, key.as_ref());
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

/// The four characters JSON allows around values (RFC 8259), and no others.
const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

/// Whether the talk's rule keeps this key: its first character is `a` or `A`.
pub fn keeps(key: &str) -> bool {
    key.starts_with(['a', 'A'])
}

/// The JSON type of a well-formed, non-object document, for error messages.
fn kind_of(json: &str) -> &'static str {
    match json.as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// The kept entries of an object, in order, values borrowed from the input.
/// A repeated key keeps its first position and its last value, as
/// JavaScript's `JSON.parse` and Python's `dict` do.
struct KeptEntries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for KeptEntries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(KeptVisitor)
    }
}

struct KeptVisitor;

impl<'de> Visitor<'de> for KeptVisitor {
    type Value = KeptEntries<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
        // Repeated keys are found by a scan of the kept ones while they are
        // few (the usual case, and cheaper than hashing), and through an
        // index once there are many, so that a hostile body with thousands of
        // kept keys costs linear time, not quadratic.
        let mut index: Option<HashMap<Cow<'de, str>, usize>> = None;
        while let Some(Key(key)) = map.next_key()? {
            if !keeps(&key) {
                // Skipped without building anything, but still validated.
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value: &'de RawValue = map.next_value()?;
            let seen = match &index {
                Some(index) => index.get(&key).copied(),
                None => entries.iter().position(|(k, _)| *k == key),
            };
            match seen {
                Some(i) => entries[i].1 = value,
                None => {
                    if let Some(index) = &mut index {
                        index.insert(key.clone(), entries.len());
                    } else if entries.len() == SCAN_LIMIT {
                        let mut built: HashMap<_, _> = entries
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| (k.clone(), i))
                            .collect();
                        built.insert(key.clone(), entries.len());
                        index = Some(built);
                    }
                    entries.push((key, value));
                }
            }
        }
        Ok(KeptEntries(entries))
    }
}

/// Up to this many kept keys, repeats are found by scanning them.
const SCAN_LIMIT: usize = 32;

/// A key borrowed from the input when it has no escapes, owned when it had to be unescaped.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filtered(input: &str) -> String {
        String::from_utf8(filter_json(input.as_bytes()).unwrap()).unwrap()
    }

    fn status(input: &str) -> StatusCode {
        filter_json(input.as_bytes()).unwrap_err().status
    }

    #[test]
    fn the_talks_case() {
        assert_eq!(
            filtered(r#"{"abra": 123, "kadabra": 4}"#),
            r#"{"abra":123}"#
        );
    }

    #[test]
    fn rule_is_first_character_a_or_upper_a() {
        assert!(keeps("a"));
        assert!(keeps("Abc"));
        assert!(!keeps(""));
        assert!(!keeps("ba"));
        assert!(!keeps("ä"));
        assert!(!keeps("\u{ff41}")); // fullwidth a
        assert!(!keeps(" a"));
    }

    #[test]
    fn order_kept_and_values_untouched() {
        let input = r#"{"zeta":1,"alpha":{"b":[1, 2.50, {"x":null}],"a":"q"},"Apple":1e2,"a":123456789012345678901234567890,"beta":2,"ant":"\u00e9\n"}"#;
        assert_eq!(
            filtered(input),
            r#"{"alpha":{"b":[1, 2.50, {"x":null}],"a":"q"},"Apple":1e2,"a":123456789012345678901234567890,"ant":"\u00e9\n"}"#
        );
    }

    #[test]
    fn escaped_and_non_ascii_keys() {
        // "\u0061" is "a": the rule applies to the decoded key.
        assert_eq!(filtered(r#"{"\u0061b":1}"#), r#"{"ab":1}"#);
        assert_eq!(filtered(r#"{"éa":1,"añejo":2,"日本":3}"#), r#"{"añejo":2}"#);
        assert_eq!(filtered(r#"{"":1,"a\"q":2}"#), r#"{"a\"q":2}"#);
    }

    #[test]
    fn duplicate_keys_keep_first_position_last_value() {
        assert_eq!(filtered(r#"{"a":1,"ab":2,"a":3}"#), r#"{"a":3,"ab":2}"#);
    }

    #[test]
    fn duplicates_found_past_the_scan_limit() {
        // 40 kept keys, then a repeat of the first and of the last: the index
        // built after SCAN_LIMIT keys must find both.
        let mut input: Vec<String> = (0..40).map(|i| format!("\"a{i}\":{i}")).collect();
        input.push("\"b\":0".into());
        input.push("\"a0\":\"first\"".into());
        input.push("\"a39\":\"last\"".into());
        let out = filtered(&format!("{{{}}}", input.join(",")));
        let mut want: Vec<String> = (0..40).map(|i| format!("\"a{i}\":{i}")).collect();
        want[0] = "\"a0\":\"first\"".into();
        want[39] = "\"a39\":\"last\"".into();
        assert_eq!(out, format!("{{{}}}", want.join(",")));
    }

    #[test]
    fn whitespace_around_the_object() {
        assert_eq!(filtered(" \t\r\n{\"a\":1}\n "), r#"{"a":1}"#);
        // Only JSON's four whitespace characters: a no-break space is malformed.
        assert_eq!(status("\u{a0}{\"a\":1}"), StatusCode::BAD_REQUEST);
        assert_eq!(status(" [1] "), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn empty_results() {
        assert_eq!(filtered("{}"), "{}");
        assert_eq!(filtered(r#" {"b":1} "#), "{}");
    }

    #[test]
    fn malformed_is_400_and_non_objects_are_422() {
        for bad in ["", "{", "[1,", "{\"a\":}", "{\"a\":1} x", "nul", "{'a':1}"] {
            assert_eq!(status(bad), StatusCode::BAD_REQUEST, "{bad:?}");
        }
        assert_eq!(
            filter_json(b"{\"a\":\"\xff\"}").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        for other in ["[]", "[1,2]", "1", "-0.5", "\"a\"", "true", "null"] {
            assert_eq!(status(other), StatusCode::UNPROCESSABLE_ENTITY, "{other:?}");
        }
        assert!(filter_json(b"[]")
            .unwrap_err()
            .message
            .contains("got an array"));
    }

    #[test]
    fn deep_nesting_does_not_crash() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        // Either answer is fine; what matters is an answer, not a stack overflow.
        let _ = filter_json(deep.as_bytes());
        let deep_dropped = format!("{{\"b\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let _ = filter_json(deep_dropped.as_bytes());
    }
}
