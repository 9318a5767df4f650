//! The web console (SPEC §17). Sessions are looked up here for the API's [`crate::api::Admin`].

use axum::http::request::Parts;

use crate::api::ApiError;
use crate::App;

/// The admin a console session cookie belongs to (none yet: the console is its own issue).
pub async fn session_admin(_parts: &Parts, _app: &App) -> Result<Option<String>, ApiError> {
    Ok(None)
}
