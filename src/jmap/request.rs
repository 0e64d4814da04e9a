//! The JMAP request object (RFC 8620 §3.3) and its errors, without I/O: parsing the body,
//! checking the advertised limits, resolving result references (§3.7) against earlier
//! responses of the same request. Untrusted input: the whole request body.

use serde_json::{Map, Value};

use super::{CAP_CORE, CAP_MAIL, CAP_PEC, CAP_QUOTA, CAP_SUBMISSION, Limits};

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub using: Vec<String>,
    pub calls: Vec<Call>,
    pub created_ids: Option<Map<String, Value>>,
}

/// One method call: name, arguments, call id.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub args: Map<String, Value>,
    pub id: String,
}

/// A request-level error (RFC 8620 §3.6.1), answered as a problem document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request is not valid JSON: {0}")]
    NotJson(String),
    #[error("not a JMAP request: {0}")]
    NotRequest(String),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("limit {limit} exceeded: {detail}")]
    Limit { limit: &'static str, detail: String },
}

impl RequestError {
    pub fn urn(&self) -> &'static str {
        match self {
            RequestError::NotJson(_) => "urn:ietf:params:jmap:error:notJSON",
            RequestError::NotRequest(_) => "urn:ietf:params:jmap:error:notRequest",
            RequestError::UnknownCapability(_) => "urn:ietf:params:jmap:error:unknownCapability",
            RequestError::Limit { .. } => "urn:ietf:params:jmap:error:limit",
        }
    }
}

/// A method-level error (RFC 8620 §3.6.2): `["error", {"type", "description"}, id]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodError {
    pub kind: &'static str,
    pub description: Option<String>,
}

impl MethodError {
    pub fn new(kind: &'static str, description: impl Into<String>) -> Self {
        Self {
            kind,
            description: Some(description.into()),
        }
    }
    pub fn invalid_arguments(d: impl Into<String>) -> Self {
        Self::new("invalidArguments", d)
    }
    pub fn server_fail(d: impl std::fmt::Display) -> Self {
        Self::new("serverFail", d.to_string())
    }
    pub fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::from(self.kind));
        if let Some(d) = &self.description {
            m.insert("description".into(), Value::from(d.clone()));
        }
        Value::Object(m)
    }
}

impl From<crate::store::StoreError> for MethodError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "JMAP method: store error");
        MethodError::server_fail("the store could not be read")
    }
}

/// The capabilities this server knows.
pub const KNOWN: &[&str] = &[CAP_CORE, CAP_MAIL, CAP_SUBMISSION, CAP_QUOTA, CAP_PEC];

/// Parses and checks a request body.
pub fn parse(body: &[u8], limits: &Limits) -> Result<Request, RequestError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
    let Value::Object(mut o) = v else {
        return Err(RequestError::NotRequest(
            "the request is not a JSON object".into(),
        ));
    };
    let using = match o.remove("using") {
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(RequestError::NotRequest("using must list strings".into())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(RequestError::NotRequest("missing \"using\"".into())),
    };
    if let Some(u) = using.iter().find(|u| !KNOWN.contains(&u.as_str())) {
        return Err(RequestError::UnknownCapability(u.clone()));
    }
    let Some(Value::Array(raw_calls)) = o.remove("methodCalls") else {
        return Err(RequestError::NotRequest("missing \"methodCalls\"".into()));
    };
    if raw_calls.len() > limits.max_calls_in_request {
        return Err(RequestError::Limit {
            limit: "maxCallsInRequest",
            detail: format!(
                "{} calls, at most {}",
                raw_calls.len(),
                limits.max_calls_in_request
            ),
        });
    }
    let mut calls = Vec::with_capacity(raw_calls.len());
    for c in raw_calls {
        let Value::Array(mut parts) = c else {
            return Err(RequestError::NotRequest(
                "a method call is not an array".into(),
            ));
        };
        if parts.len() != 3 {
            return Err(RequestError::NotRequest(
                "a method call must have 3 elements".into(),
            ));
        }
        let id = parts.pop();
        let args = parts.pop();
        let name = parts.pop();
        match (name, args, id) {
            (Some(Value::String(name)), Some(Value::Object(args)), Some(Value::String(id))) => {
                calls.push(Call { name, args, id })
            }
            _ => {
                return Err(RequestError::NotRequest(
                    "a method call must be [name, {arguments}, callId]".into(),
                ));
            }
        }
    }
    let created_ids = match o.remove("createdIds") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => {
            return Err(RequestError::NotRequest(
                "createdIds must be an object".into(),
            ));
        }
    };
    Ok(Request {
        using,
        calls,
        created_ids,
    })
}

/// Replaces every `#name` argument with the value its ResultReference points at (RFC
/// 8620 §3.7). `responses` are the earlier `[name, args, id]` answers of this request.
pub fn resolve_references(
    args: &mut Map<String, Value>,
    responses: &[(String, Value, String)],
) -> Result<(), MethodError> {
    let refs: Vec<String> = args
        .keys()
        .filter(|k| k.starts_with('#'))
        .cloned()
        .collect();
    for k in refs {
        let plain = &k[1..];
        if args.contains_key(plain) {
            return Err(MethodError::invalid_arguments(format!(
                "both {plain} and #{plain} are given"
            )));
        }
        let r = args.remove(&k).unwrap_or(Value::Null);
        let (Some(rc), Some(name), Some(path)) = (
            r.get("resultOf").and_then(Value::as_str),
            r.get("name").and_then(Value::as_str),
            r.get("path").and_then(Value::as_str),
        ) else {
            return Err(MethodError::invalid_arguments(format!(
                "#{plain} is not a ResultReference"
            )));
        };
        let Some((_, value, _)) = responses.iter().find(|(n, _, id)| id == rc && n == name) else {
            return Err(MethodError::new(
                "invalidResultReference",
                format!("no {name} response with id {rc:?}"),
            ));
        };
        let v = pointer(value, path).ok_or_else(|| {
            MethodError::new(
                "invalidResultReference",
                format!("{path} not found in {name}"),
            )
        })?;
        args.insert(plain.to_string(), v);
    }
    Ok(())
}

/// JSON pointer with the JMAP `*` extension (§3.7): `*` maps over an array, and arrays
/// met that way are flattened.
pub fn pointer(v: &Value, path: &str) -> Option<Value> {
    if path.is_empty() {
        return Some(v.clone());
    }
    let rest = path.strip_prefix('/')?;
    let (head, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let head = head.replace("~1", "/").replace("~0", "~");
    match v {
        Value::Array(a) if head == "*" => {
            let mut out = Vec::new();
            for x in a {
                match pointer(x, tail)? {
                    Value::Array(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            Some(Value::Array(out))
        }
        Value::Array(a) => pointer(a.get(head.parse::<usize>().ok()?)?, tail),
        Value::Object(o) => pointer(o.get(&head)?, tail),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn the_request_level_errors_are_told_apart() {
        let e = |b: &[u8]| parse(b, &limits()).unwrap_err().urn();
        assert_eq!(e(b"{not json"), "urn:ietf:params:jmap:error:notJSON");
        assert_eq!(e(b"[]"), "urn:ietf:params:jmap:error:notRequest");
        assert_eq!(
            e(br#"{"using":[],"methodCalls":[["a",{}]]}"#),
            "urn:ietf:params:jmap:error:notRequest"
        );
        assert_eq!(
            e(br#"{"using":["urn:x"],"methodCalls":[]}"#),
            "urn:ietf:params:jmap:error:unknownCapability"
        );
        let many = json!({"using": [], "methodCalls": vec![json!(["Core/echo", {}, "c"]); 1000]});
        assert_eq!(
            e(many.to_string().as_bytes()),
            "urn:ietf:params:jmap:error:limit"
        );
    }

    #[test]
    fn result_references_resolve_with_star() {
        let responses = vec![(
            "Email/query".to_string(),
            json!({"ids": ["a", "b"], "list": [{"x": ["1"]}, {"x": ["2", "3"]}]}),
            "0".to_string(),
        )];
        let mut args = json!({"#ids": {"resultOf": "0", "name": "Email/query", "path": "/ids"}})
            .as_object()
            .unwrap()
            .clone();
        resolve_references(&mut args, &responses).unwrap();
        assert_eq!(args["ids"], json!(["a", "b"]));
        let v = pointer(&responses[0].1, "/list/*/x").unwrap();
        assert_eq!(v, json!(["1", "2", "3"]));
        let mut bad = json!({"#ids": {"resultOf": "9", "name": "Email/query", "path": "/ids"}})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            resolve_references(&mut bad, &responses).unwrap_err().kind,
            "invalidResultReference"
        );
    }
}
