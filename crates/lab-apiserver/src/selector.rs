//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`) with the syntax of
//! `k8s.io/apimachinery/pkg/labels` and `.../fields`.

use serde_json::Value;

use crate::registry::FieldLabelError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelRequirement>);

/// Splits on commas that are not inside parentheses (field selectors).
fn split_terms(input: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&input[start..]);
    terms.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect()
}

/// `IsQualifiedName` (k8s.io/apimachinery/pkg/util/validation): `[prefix/]name`, the form of label keys, with the
/// real server's messages.
pub fn qualified_name_problems(value: &str) -> Vec<String> {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    let mut errors = Vec::new();
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_string());
    }
    if !name.is_empty() && !label_value_ok(name) {
        errors.push(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an \
             alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is \
             '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
                .to_string(),
        );
    }
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errors.push("prefix part must be non-empty".to_string());
        } else if let Some(problem) = crate::store::subdomain_problem(prefix) {
            errors.push(format!("prefix part {problem}"));
        }
    }
    errors
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, non-empty.
fn label_value_ok(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `IsValidLabelValue`.
fn label_value_problems(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !label_value_ok(value) {
        errors.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and \
             must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex \
             used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
                .to_string(),
        );
    }
    errors
}

/// Tokens of the label selector lexer (k8s.io/apimachinery/pkg/labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn literal_token(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// The lexer: identifiers run to whitespace or a special symbol; special symbols take the longest known token.
fn lex(input: &str) -> Vec<(Token, String)> {
    let b = input.as_bytes();
    let mut pos = 0;
    let mut items = Vec::new();
    loop {
        while pos < b.len() && matches!(b[pos], b' ' | b'\t' | b'\r' | b'\n') {
            pos += 1;
        }
        if pos >= b.len() {
            items.push((Token::End, String::new()));
            return items;
        }
        if is_special(b[pos]) {
            let start = pos;
            let mut last: Option<(Token, usize)> = None;
            while pos < b.len() && is_special(b[pos]) {
                pos += 1;
                match literal_token(&input[start..pos]) {
                    Some(token) => last = Some((token, pos)),
                    None if last.is_some() => {
                        pos -= 1;
                        break;
                    }
                    None => {}
                }
            }
            match last {
                Some((token, end)) => {
                    pos = end;
                    items.push((token, input[start..end].to_string()));
                }
                None => items.push((
                    Token::Error,
                    format!("error expected: keyword found '{}'", &input[start..pos]),
                )),
            }
        } else {
            let start = pos;
            while pos < b.len() && !is_special(b[pos]) && !matches!(b[pos], b' ' | b'\t' | b'\r' | b'\n') {
                pos += 1;
            }
            let word = &input[start..pos];
            items.push((literal_token(word).unwrap_or(Token::Identifier), word.to_string()));
        }
    }
}

/// The recursive-descent parser of k8s.io/apimachinery/pkg/labels, with its error messages.
struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

/// Where `in`/`notin` are read: as values they are identifiers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

impl Parser {
    fn token(&self, at: usize, context: Context) -> (Token, String) {
        let (token, literal) = self.items.get(at).cloned().unwrap_or((Token::End, String::new()));
        let token = match (context, token) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            (_, token) => token,
        };
        (token, literal)
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        self.token(self.position, context)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        self.position += 1;
        self.token(self.position - 1, context)
    }

    fn parse(&mut self) -> Result<Vec<LabelRequirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (next, literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(format!("found '{literal}', expected: identifier after ','"));
                            }
                        }
                        _ => return Err(format!("found '{literal}', expected: ',' or 'end of string'")),
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{literal}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<LabelRequirement, String> {
        let (mut token, mut key) = self.consume(Context::Values);
        let not = token == Token::DoesNotExist;
        if not {
            (token, key) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{key}', expected: identifier"));
        }
        let problems = qualified_name_problems(&key);
        if !problems.is_empty() {
            return Err(format!("<nil>: Invalid value: \"{key}\": {}", problems.join("; ")));
        }
        let (next, _) = self.lookahead(Context::Values);
        if not {
            return Ok(LabelRequirement::DoesNotExist(key));
        }
        if next == Token::End || next == Token::Comma {
            return Ok(LabelRequirement::Exists(key));
        }
        let (operator, literal) = self.consume(Context::KeyAndOperator);
        let values = match operator {
            Token::In | Token::NotIn => self.values()?,
            Token::Equals | Token::DoubleEquals | Token::NotEquals | Token::GreaterThan | Token::LessThan => {
                self.exact_value()?
            }
            _ => return Err(format!("found '{literal}', expected: in, notin, =, ==, !=, gt, lt")),
        };
        for (i, value) in values.iter().enumerate() {
            let problems = label_value_problems(value);
            if !problems.is_empty() && !matches!(operator, Token::GreaterThan | Token::LessThan) {
                return Err(format!(
                    "values[{i}][{key}]: Invalid value: \"{value}\": {}",
                    problems.join("; ")
                ));
            }
        }
        let number = |values: &[String]| {
            values[0].parse::<i64>().map_err(|_| {
                format!(
                    "values[0]: Invalid value: \"{}\": for 'Gt', 'Lt' operators, the value must be an integer",
                    values[0]
                )
            })
        };
        Ok(match operator {
            Token::In => LabelRequirement::In(key, values),
            Token::NotIn => LabelRequirement::NotIn(key, values),
            Token::NotEquals => LabelRequirement::NotEquals(key, values[0].clone()),
            Token::GreaterThan => LabelRequirement::GreaterThan(key, number(&values)?),
            Token::LessThan => LabelRequirement::LessThan(key, number(&values)?),
            _ => LabelRequirement::Equals(key, values[0].clone()),
        })
    }

    /// `(a,b,c)`: values of `in`/`notin`, sorted and unique as Go's string set.
    fn values(&mut self) -> Result<Vec<String>, String> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        let mut values = std::collections::BTreeSet::new();
        match token {
            Token::Identifier | Token::Comma => {
                loop {
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::Identifier => {
                            values.insert(literal);
                            let (next, literal) = self.lookahead(Context::Values);
                            match next {
                                Token::Comma => continue,
                                Token::ClosedPar => break,
                                _ => return Err(format!("found '{literal}', expected: ',' or ')'")),
                            }
                        }
                        Token::Comma => {
                            if values.is_empty() {
                                values.insert(String::new());
                            }
                            let (next, _) = self.lookahead(Context::Values);
                            if next == Token::ClosedPar {
                                values.insert(String::new());
                                break;
                            }
                            if next == Token::Comma {
                                values.insert(String::new());
                            }
                        }
                        _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
                    }
                }
                let (token, _) = self.consume(Context::Values);
                if token != Token::ClosedPar {
                    return Err(format!("found '{literal}', expected: ')'"));
                }
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                values.insert(String::new());
            }
            _ => return Err(format!("found '{literal}', expected: ',', ')' or identifier")),
        }
        Ok(values.into_iter().collect())
    }

    fn exact_value(&mut self) -> Result<Vec<String>, String> {
        let (token, _) = self.lookahead(Context::Values);
        if token == Token::End || token == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            Ok(vec![literal])
        } else {
            Err(format!("found '{literal}', expected: identifier"))
        }
    }
}

impl LabelSelector {
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut parser = Parser {
            items: lex(input),
            position: 0,
        };
        parser.parse().map(Self)
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |key: &str| labels.get(key).and_then(Value::as_str);
        let number = |key: &str| get(key).and_then(|v| v.parse::<i64>().ok());
        self.0.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
            LabelRequirement::GreaterThan(k, n) => number(k).is_some_and(|l| l > *n),
            LabelRequirement::LessThan(k, n) => number(k).is_some_and(|l| l < *n),
        })
    }
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, joined by commas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks every label against the fields this resource supports (`(label, stored path)`),
    /// rejecting others with the real server's wording for this resource.
    pub fn parse(input: &str, supported: &[(String, String)], error: FieldLabelError) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in split_terms(input) {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, true, v)
            } else {
                return Err(format!("invalid selector: '{input}'; can't understand '{term}'"));
            };
            let label = path.trim();
            let Some((_, path)) = supported.iter().find(|(l, _)| l == label) else {
                return Err(match error {
                    FieldLabelError::NotSupported => format!("field label not supported: {label}"),
                    FieldLabelError::NotKnown => format!(
                        "\"{label}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                    ),
                });
            };
            terms.push((path.clone(), equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let found = path.split('.').try_fold(object, |v, part| v.get(part));
            // Missing fields compare as the empty string; booleans and numbers as their text, as the real
            // server's field sets do.
            let actual = match found {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == *value) == *equal
        })
    }
}

/// Both selectors of a list or watch request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn is_empty(&self) -> bool {
        self.labels.0.is_empty() && self.fields.0.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "spec": {"type": "LoadBalancer"}})
    }

    #[test]
    fn label_operators() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m(""));
        assert!(m("app=web") && m("app==web") && !m("app=db"));
        assert!(m("app!=db") && !m("app!=web") && m("missing!=x"));
        assert!(m("app in (db, web)") && !m("app in (db)"));
        assert!(m("app notin (db)") && !m("app notin (web,db)") && m("missing notin (x)"));
        assert!(m("tier") && !m("missing") && m("!missing") && !m("!tier"));
        assert!(m("app in (web,db),tier=front") && !m("app=web,tier=back"));
    }

    #[test]
    fn label_numbers_and_odd_values() {
        let o = obj(json!({"n": "5", "app": "in"}));
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(m("n>4") && !m("n>5") && m("n<6") && !m("app>1"));
        assert!(m("app in (in, x)") && m("app in (in,,x)") && !m("app notin (in)"));
        assert!(m("app,!missing") && m("  app  ==  in "));
    }

    #[test]
    fn label_parse_errors_are_the_real_servers() {
        let err = |s: &str| LabelSelector::parse(s).unwrap_err();
        assert_eq!(
            err("app in web"),
            "unable to parse requirement: found 'web' expected: '('"
        );
        assert_eq!(
            err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(err("a,"), "found '', expected: identifier after ','");
        assert_eq!(
            err("a===b"),
            "unable to parse requirement: found '=', expected: identifier"
        );
        assert_eq!(
            err("a in (x"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert!(err("-bad").starts_with("unable to parse requirement: <nil>: Invalid value: \"-bad\": name part"));
        assert!(err("a=-x-").starts_with("unable to parse requirement: values[0][a]: Invalid value: \"-x-\""));
        assert_eq!(
            err("a>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value \
             must be an integer"
        );
    }

    #[test]
    fn field_selectors() {
        let o = obj(json!({}));
        let supported: Vec<(String, String)> = ["metadata.name", "metadata.namespace", "spec.type"]
            .iter()
            .map(|f| (f.to_string(), f.to_string()))
            .collect();
        let parse = |s: &str| FieldSelector::parse(s, &supported, FieldLabelError::NotSupported);
        let m = |s: &str| parse(s).unwrap().matches(&o);
        assert!(m("metadata.name=a") && !m("metadata.name!=a") && m("metadata.namespace==ns"));
        assert!(m("spec.type=LoadBalancer,metadata.name=a") && !m("spec.type=ClusterIP"));
        let err = parse("spec.nope=1").unwrap_err();
        assert_eq!(err, "field label not supported: spec.nope");
        let err = FieldSelector::parse("spec.nope=1", &supported, FieldLabelError::NotKnown).unwrap_err();
        assert_eq!(
            err,
            "\"spec.nope\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
    }
}
