//! Local replies in Jira's error shape (SPEC §10).

use crate::config::AuthMethods;
use crate::text::push_json_string;

/// Jira's exact content type: clients such as atlassian-python-api show the message only
/// when it matches.
pub const CONTENT_TYPE: &str = "application/json;charset=UTF-8";

/// `{"errorMessages":[message],"errors":{}}`.
pub fn error_body(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 36);
    out.push_str("{\"errorMessages\":[");
    push_json_string(&mut out, message);
    out.push_str("],\"errors\":{}}");
    out
}

/// The `WWW-Authenticate` challenges a 401 carries for the enabled schemes.
pub fn challenges(methods: AuthMethods) -> &'static [&'static str] {
    match methods {
        AuthMethods::Basic => &["Basic realm=\"tokengate\""],
        AuthMethods::Bearer => &["Bearer"],
        AuthMethods::Both => &["Basic realm=\"tokengate\"", "Bearer"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jira_error_shape() {
        assert_eq!(
            error_body("token expired"),
            r#"{"errorMessages":["token expired"],"errors":{}}"#
        );
        assert_eq!(
            error_body("a\"b\\c\u{1}"),
            r#"{"errorMessages":["a\"b\\c\u0001"],"errors":{}}"#
        );
    }

    #[test]
    fn challenges_follow_methods() {
        assert_eq!(challenges(AuthMethods::Both).len(), 2);
        assert_eq!(challenges(AuthMethods::Bearer), &["Bearer"]);
    }
}
