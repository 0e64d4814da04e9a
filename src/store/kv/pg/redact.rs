//! Passwords out of connection strings, for messages and logs.

/// The URL (or key=value settings) with any password replaced, for messages and logs:
/// the user-info password of a URL (which may itself hold `@`), a `password=` query
/// parameter, and a `password` setting however spaced or quoted.
pub fn redacted(url: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            // User info ends at the last @ (a password may hold @ itself).
            let (auth, tail) = match rest.rfind('@') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => ("", rest),
            };
            let auth = match auth.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => auth.to_string(),
            };
            let tail = tail
                .split_inclusive(['?', '&'])
                .map(|p| {
                    if p.to_ascii_lowercase().starts_with("password=") {
                        let end = if p.ends_with('&') { "&" } else { "" };
                        format!("password=***{end}")
                    } else {
                        p.to_string()
                    }
                })
                .collect::<String>();
            return format!("{scheme}{auth}{tail}");
        }
    }
    // key=value settings: everything after `password` `=` up to the end of its value.
    let lower = url.to_ascii_lowercase();
    let Some(k) = lower.find("password") else {
        return url.to_string();
    };
    let after = &url[k + "password".len()..];
    let Some(eq) = after.find('=').filter(|&i| after[..i].trim().is_empty()) else {
        return url.to_string();
    };
    let value = after[eq + 1..].trim_start();
    let rest = if let Some(quoted) = value.strip_prefix('\'') {
        // A quoted value ends at the next unescaped quote.
        let mut end = quoted.len();
        let mut it = quoted.char_indices();
        while let Some((i, c)) = it.next() {
            if c == '\\' {
                it.next();
            } else if c == '\'' {
                end = i + 1;
                break;
            }
        }
        &quoted[end.min(quoted.len())..]
    } else {
        value.find(char::is_whitespace).map_or("", |i| &value[i..])
    };
    format!("{}password=***{}", &url[..k], redacted(rest))
}

#[cfg(test)]
mod redaction_tests {
    use super::redacted;

    #[test]
    fn no_password_survives_redaction() {
        for (url, secret) in [
            ("postgres://pecd:s3greta@db.example.it/pecd", "s3greta"),
            ("postgresql://pecd:pa@ss@db/pecd?sslmode=require", "pa@ss"),
            (
                "postgres://pecd@db/pecd?sslmode=require&password=s3greta",
                "s3greta",
            ),
            ("host=db user=pecd password=s3greta dbname=pecd", "s3greta"),
            ("host=db password = 's3 gr\\'eta' dbname=pecd", "gr"),
            ("host=db PASSWORD=s3greta", "s3greta"),
        ] {
            let r = redacted(url);
            assert!(!r.contains(secret), "{url} -> {r}");
            assert!(r.contains("db"), "{url} -> {r}");
        }
        assert_eq!(
            redacted("host=127.0.0.1 port=5432 user=pecd"),
            "host=127.0.0.1 port=5432 user=pecd"
        );
    }
}
