//! curl and JavaScript (fetch) snippets for a token and URL: one implementation for
//! `tokenctl new`/`snippet` and the token service's create answer.

/// How a snippet refers to the token: literally, or through an environment variable.
pub enum Secret<'a> {
    Literal(&'a str),
    EnvVar(&'a str),
}

/// Quotes for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./:@%+=,".contains(&c))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn js_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// `curl` for one request.
pub fn curl(url: &str, user: Option<&str>, secret: &Secret<'_>, bearer: bool) -> String {
    let url = shell_quote(url);
    match (bearer, secret) {
        (true, Secret::Literal(t)) => {
            format!(
                "curl -sS -H {} {url}",
                shell_quote(&format!("Authorization: Bearer {t}"))
            )
        }
        (true, Secret::EnvVar(v)) => {
            format!("curl -sS -H \"Authorization: Bearer ${v}\" {url}")
        }
        (false, Secret::Literal(t)) => {
            let user = user.unwrap_or("USERNAME");
            format!("curl -sS -u {} {url}", shell_quote(&format!("{user}:{t}")))
        }
        (false, Secret::EnvVar(v)) => {
            let user = user.unwrap_or("USERNAME");
            // Double quotes so the shell expands the variable; escape what they would not keep.
            let user: String = user
                .chars()
                .flat_map(|c| {
                    let esc = matches!(c, '\\' | '"' | '$' | '`');
                    esc.then_some('\\').into_iter().chain(std::iter::once(c))
                })
                .collect();
            format!("curl -sS -u \"{user}:${v}\" {url}")
        }
    }
}

/// `fetch` (Node.js 18+ or a browser) for one request.
pub fn javascript(url: &str, user: Option<&str>, secret: &Secret<'_>, bearer: bool) -> String {
    let token = match secret {
        Secret::Literal(t) => js_string(t),
        Secret::EnvVar(v) => format!("process.env.{v}"),
    };
    let auth = if bearer {
        match secret {
            Secret::Literal(t) => js_string(&format!("Bearer {t}")),
            Secret::EnvVar(_) => format!("\"Bearer \" + {token}"),
        }
    } else {
        let user = user.unwrap_or("USERNAME");
        if user.is_ascii() {
            format!("\"Basic \" + btoa({} + \":\" + {token})", js_string(user))
        } else {
            // btoa() only takes Latin-1: encode UTF-8 first.
            format!(
                "\"Basic \" + btoa(String.fromCharCode(...new TextEncoder().encode({} + \":\" + {token})))",
                js_string(user)
            )
        }
    };
    format!(
        "const response = await fetch({}, {{\n  headers: {{ Authorization: {auth}, Accept: \"application/json\" }},\n}});\nconsole.log(response.status, await response.json());",
        js_string(url)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote("https://x/rest?a=1"), "'https://x/rest?a=1'");
    }

    #[test]
    fn snippets_carry_the_scheme() {
        let s = Secret::Literal("tg_x");
        assert_eq!(
            curl("https://j/rest", Some("bob"), &s, false),
            "curl -sS -u bob:tg_x https://j/rest"
        );
        assert_eq!(
            curl("https://j/rest", None, &s, true),
            "curl -sS -H 'Authorization: Bearer tg_x' https://j/rest"
        );
        assert!(javascript("https://j/rest", Some("bob"), &s, false)
            .contains("btoa(\"bob\" + \":\" + \"tg_x\")"));
    }
}
