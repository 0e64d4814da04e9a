//! SearchSnippet/get (RFC 8621 §5): the subject and preview of each Email with the
//! searched terms marked. Message text is HTML-escaped before `<mark>` is added, so a
//! snippet is safe to show as HTML.

use serde_json::{Map, Value, json};

use super::{Ctx, MethodError, Out};

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn mark(text: &str, terms: &[String]) -> Option<String> {
    let lower = text.to_lowercase();
    let term = terms
        .iter()
        .find(|t| !t.is_empty() && lower.contains(&t.to_lowercase()))?;
    let tl = term.to_lowercase();
    let mut out = String::new();
    let mut rest = text;
    // Case-insensitive search on char boundaries of the original text.
    while let Some(pos) = rest.to_lowercase().find(&tl) {
        if !rest.is_char_boundary(pos) || !rest.is_char_boundary(pos + tl.len()) {
            break;
        }
        out.push_str(&escape_html(&rest[..pos]));
        out.push_str("<mark>");
        out.push_str(&escape_html(&rest[pos..pos + tl.len()]));
        out.push_str("</mark>");
        rest = &rest[pos + tl.len()..];
    }
    out.push_str(&escape_html(rest));
    Some(out)
}

fn text_terms(filter: &Value, out: &mut Vec<String>) {
    if let Value::Object(o) = filter {
        for k in ["text", "subject", "body"] {
            if let Some(s) = o.get(k).and_then(Value::as_str) {
                out.push(s.to_string());
            }
        }
        if let Some(c) = o.get("conditions").and_then(Value::as_array) {
            for x in c {
                text_terms(x, out);
            }
        }
    }
}

pub fn snippets(ctx: &mut Ctx<'_>, args: &Map<String, Value>) -> Out {
    let mut terms = Vec::new();
    text_terms(args.get("filter").unwrap_or(&Value::Null), &mut terms);
    let ids: Vec<String> = args
        .get("emailIds")
        .and_then(Value::as_array)
        .ok_or_else(|| MethodError::invalid_arguments("emailIds is required"))?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    for id in ids {
        match ctx.view.email(&id) {
            Some(e) => list.push(json!({
                "emailId": id,
                "subject": e.summary.subject.as_deref().and_then(|s| mark(s, &terms)),
                "preview": mark(&e.summary.preview, &terms),
            })),
            None => not_found.push(id),
        }
    }
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("list".into(), Value::Array(list));
    out.insert("notFound".into(), json!(not_found));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_escape_and_mark() {
        let m = mark("Fattura <n.1> del mese", &["fattura".into()]).unwrap();
        assert_eq!(m, "<mark>Fattura</mark> &lt;n.1&gt; del mese");
        assert!(mark("niente", &["x".into()]).is_none());
    }
}
