//! Restriction lines (`limit_to`, SPEC §6): grammar, compilation and matching. STUB.

use crate::canonical::Query;

/// A load error in one restriction line: 1-based line and column within that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// What the evaluator sees of a request: method as sent, decoded path, validated query.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Query<'a>,
}

/// The verdict from method, path and query alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadVerdict {
    /// Allowed by this 1-based line (or `None` for a token without lines).
    Allow(Option<usize>),
    /// A JsonData line can still match: buffer the body and call `evaluate_body`.
    NeedBody,
    Deny,
}

/// The verdict once the body is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyVerdict {
    Allow(usize),
    Deny,
}

/// The compiled `limit_to` of one token.
#[derive(Debug, Default)]
pub struct Restrictions {
    lines: Vec<String>,
}

impl Restrictions {
    pub fn compile(lines: &[String]) -> Result<Restrictions, LineError> {
        if lines.is_empty() {
            Ok(Restrictions::default())
        } else {
            Err(LineError { line: 1, column: 1, message: "restriction lines are not supported yet".into() })
        }
    }

    pub fn is_unrestricted(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn evaluate_head(&self, req: &RequestView<'_>) -> HeadVerdict {
        let _ = req;
        if self.lines.is_empty() { HeadVerdict::Allow(None) } else { HeadVerdict::Deny }
    }

    /// `Err` when the body is not strict JSON (400), with the reason.
    pub fn evaluate_body(&self, req: &RequestView<'_>, body: &[u8]) -> Result<BodyVerdict, &'static str> {
        let _ = (req, body);
        Ok(BodyVerdict::Deny)
    }
}
