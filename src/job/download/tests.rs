//! Tests of `download`.
use super::*;

#[test]
fn content_range_parsing() {
    assert_eq!(
        parse_content_range("bytes 100-199/1000"),
        Some((100, 199, 1000))
    );
    assert_eq!(parse_content_range("bytes */1000"), None);
    assert_eq!(parse_content_range("items 1-2/3"), None);
}

#[test]
fn oss_error_fields() {
    let body = b"<?xml version=\"1.0\"?>\n<Error>\n  <Code>AccessDenied</Code>\n  <Message>Request has expired.</Message>\n</Error>";
    assert_eq!(
        oss_error(body),
        ("AccessDenied".into(), "Request has expired.".into())
    );
    assert_eq!(oss_error(b"garbage"), (String::new(), String::new()));
}
