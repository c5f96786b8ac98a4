//! SCIM filters (RFC 7644 §3.4.2.2) and the attribute paths PATCH uses
//! (§3.5.2): parsing, and matching against a resource's SCIM JSON.
//!
//! Matching works on the JSON a client reads back, so a filter sees
//! exactly the attributes a GET shows, under the same names.

use serde_json::Value;

use super::errors::{ScimError, ScimResult};
use super::urns::EXTENSIONS;

/// Longest filter accepted, and deepest nesting of parentheses and value
/// paths: parsing recurses, and a client has no need for more.
const MAX_LENGTH: usize = 4096;
const MAX_DEPTH: usize = 32;

/// An attribute path: `[schema URN ":"] name ["." sub-attribute]`, or
/// an extension's URN alone (with an empty name) for its whole object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URN of an extension attribute, e.g. the enterprise
    /// user's; None for the resource's core schema.
    pub uri: Option<String>,
    pub name: String,
    pub sub: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub const ALL: [(&'static str, CompareOp); 9] = [
        ("eq", CompareOp::Eq),
        ("ne", CompareOp::Ne),
        ("co", CompareOp::Co),
        ("sw", CompareOp::Sw),
        ("ew", CompareOp::Ew),
        ("gt", CompareOp::Gt),
        ("ge", CompareOp::Ge),
        ("lt", CompareOp::Lt),
        ("le", CompareOp::Le),
    ];
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: some value of the multi-valued `attr` matches.
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

/// A PATCH operation's target: `attrPath`, or `attrPath[filter]` with an
/// optional `.subAttr` after the brackets.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    pub sub: Option<String>,
}

pub fn parse_filter(text: &str) -> ScimResult<Filter> {
    let mut parser = Parser::new(text).map_err(ScimError::invalid_filter)?;
    let filter = parser.or(0).map_err(ScimError::invalid_filter)?;
    parser.end().map_err(ScimError::invalid_filter)?;
    Ok(filter)
}

pub fn parse_patch_path(text: &str) -> ScimResult<PatchPath> {
    let parse = || -> Result<PatchPath, String> {
        let mut parser = Parser::new(text)?;
        let attr = match parser.next() {
            Some(Token::Word(word)) => attr_path(&word)?,
            other => return Err(format!("expected an attribute path, found {other:?}")),
        };
        let mut path = PatchPath {
            attr,
            filter: None,
            sub: None,
        };
        if parser.peek() == Some(&Token::Open('[')) {
            parser.next();
            parser.in_value_path = true;
            path.filter = Some(parser.or(1)?);
            parser.expect(Token::Close(']'))?;
            if let Some(Token::Word(word)) = parser.peek().cloned() {
                let sub = word
                    .strip_prefix('.')
                    .filter(|sub| is_name(sub))
                    .ok_or_else(|| format!("expected .subAttribute after ], found {word:?}"))?;
                path.sub = Some(sub.to_string());
                parser.next();
            }
        }
        parser.end()?;
        Ok(path)
    };
    parse().map_err(ScimError::invalid_path)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open(char),
    Close(char),
    Word(String),
    Literal(Value),
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    /// Inside `attr[...]`, where another value path cannot nest.
    in_value_path: bool,
}

impl Parser {
    fn new(text: &str) -> Result<Self, String> {
        if text.len() > MAX_LENGTH {
            return Err(format!("longer than {MAX_LENGTH} bytes"));
        }
        Ok(Self {
            tokens: tokenize(text)?,
            at: 0,
            in_value_path: false,
        })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn expect(&mut self, expected: Token) -> Result<(), String> {
        match self.next() {
            Some(token) if token == expected => Ok(()),
            other => Err(format!("expected {expected:?}, found {other:?}")),
        }
    }

    fn end(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(token) => Err(format!("unexpected {token:?}")),
        }
    }

    fn keyword(&mut self, keyword: &str) -> bool {
        match self.peek() {
            Some(Token::Word(word)) if word.eq_ignore_ascii_case(keyword) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    /// `and` binds tighter than `or`.
    fn or(&mut self, depth: usize) -> Result<Filter, String> {
        let mut left = self.and(depth)?;
        while self.keyword("or") {
            left = Filter::Or(Box::new(left), Box::new(self.and(depth)?));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, String> {
        let mut left = self.term(depth)?;
        while self.keyword("and") {
            left = Filter::And(Box::new(left), Box::new(self.term(depth)?));
        }
        Ok(left)
    }

    fn term(&mut self, depth: usize) -> Result<Filter, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        if self.keyword("not") {
            self.expect(Token::Open('('))?;
            let inner = self.or(depth + 1)?;
            self.expect(Token::Close(')'))?;
            return Ok(Filter::Not(Box::new(inner)));
        }
        match self.next() {
            Some(Token::Open('(')) => {
                let inner = self.or(depth + 1)?;
                self.expect(Token::Close(')'))?;
                Ok(inner)
            }
            Some(Token::Word(word)) => {
                let path = attr_path(&word)?;
                if self.peek() == Some(&Token::Open('[')) {
                    if self.in_value_path {
                        return Err("a value path cannot nest in another".to_string());
                    }
                    self.next();
                    self.in_value_path = true;
                    let filter = self.or(depth + 1)?;
                    self.in_value_path = false;
                    self.expect(Token::Close(']'))?;
                    return Ok(Filter::ValuePath {
                        path,
                        filter: Box::new(filter),
                    });
                }
                if self.keyword("pr") {
                    return Ok(Filter::Present(path));
                }
                let op = match self.next() {
                    Some(Token::Word(op)) => CompareOp::ALL
                        .iter()
                        .find(|(name, _)| op.eq_ignore_ascii_case(name))
                        .map(|(_, op)| *op)
                        .ok_or_else(|| format!("{op:?} is not an operator"))?,
                    other => return Err(format!("expected an operator, found {other:?}")),
                };
                let value = match self.next() {
                    Some(Token::Literal(value)) => value,
                    other => return Err(format!("expected a value, found {other:?}")),
                };
                Ok(Filter::Compare { path, op, value })
            }
            other => Err(format!("expected a filter, found {other:?}")),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | '[' => {
                chars.next();
                tokens.push(Token::Open(c));
            }
            ')' | ']' => {
                chars.next();
                tokens.push(Token::Close(c));
            }
            '"' => {
                // A JSON string: find its closing quote, skipping escapes.
                chars.next();
                let mut escaped = false;
                let end = loop {
                    match chars.next() {
                        None => return Err("unterminated string".to_string()),
                        Some((_, '\\')) if !escaped => escaped = true,
                        Some((i, '"')) if !escaped => break i,
                        Some(_) => escaped = false,
                    }
                };
                let value: String = serde_json::from_str(&text[start..=end])
                    .map_err(|e| format!("bad string {}: {e}", &text[start..=end]))?;
                tokens.push(Token::Literal(Value::String(value)));
            }
            _ => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if c.is_whitespace() || "()[]\"".contains(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                let word = &text[start..end];
                tokens.push(match word {
                    "true" | "false" | "null" => {
                        Token::Literal(serde_json::from_str(word).unwrap_or_default())
                    }
                    _ if word.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
                        Token::Literal(
                            serde_json::from_str(word)
                                .map_err(|_| format!("{word:?} is not a number"))?,
                        )
                    }
                    _ => Token::Word(word.to_string()),
                });
            }
        }
    }
    Ok(tokens)
}

/// An attribute name: a letter, then letters, digits, `_`, `-` or `$`
/// (as in `$ref`).
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parses `[URN ":"] name ["." sub]`. A URN contains dots of its own
/// (`...:enterprise:2.0:User`), so the attribute starts after its last `:`.
pub fn attr_path(text: &str) -> Result<AttrPath, String> {
    // An extension's URN alone names the extension's object.
    if let Some(uri) = EXTENSIONS.iter().find(|uri| uri.eq_ignore_ascii_case(text)) {
        return Ok(AttrPath {
            uri: Some(uri.to_string()),
            name: String::new(),
            sub: None,
        });
    }
    let (uri, rest) = if text.to_ascii_lowercase().starts_with("urn:") {
        let (uri, rest) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not an attribute path"))?;
        (Some(uri.to_string()), rest)
    } else {
        (None, text)
    };
    let (name, sub) = match rest.split_once('.') {
        Some((name, sub)) => (name, Some(sub.to_string())),
        None => (rest, None),
    };
    if !is_name(name) || sub.as_deref().is_some_and(|sub| !is_name(sub)) {
        return Err(format!("{text:?} is not an attribute path"));
    }
    Ok(AttrPath {
        uri,
        name: name.to_string(),
        sub,
    })
}

/// A member of a JSON object by case-insensitive name (SCIM attribute
/// names are case-insensitive).
pub fn member<'v>(object: &'v Value, name: &str) -> Option<&'v Value> {
    object
        .as_object()?
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// Values of `path` in `resource`; a multi-valued attribute yields each
/// value, and a complex one without a sub-attribute its `value`.
fn values<'v>(resource: &'v Value, path: &AttrPath) -> Vec<&'v Value> {
    let container = match &path.uri {
        Some(uri) => match member(resource, uri) {
            Some(extension) => extension,
            None => return Vec::new(),
        },
        None => resource,
    };
    let attribute = if path.name.is_empty() {
        container
    } else {
        match member(container, &path.name) {
            Some(attribute) => attribute,
            None => return Vec::new(),
        }
    };
    let items: Vec<&Value> = match attribute {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    items
        .into_iter()
        .filter_map(|item| match (&path.sub, item) {
            (Some(sub), item) => member(item, sub),
            (None, Value::Object(_)) => member(item, "value"),
            (None, item) => Some(item),
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// Attributes compared with letter case: ids (RFC 7643 makes `id` and
/// `externalId` case-exact, and group members are ids).
fn case_exact(path: &AttrPath) -> bool {
    let name = path.name.to_ascii_lowercase();
    name == "id"
        || name == "externalid"
        || (name == "members" && path.sub.as_deref() != Some("display"))
}

impl Filter {
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::Present(path) => values(resource, path).into_iter().any(|value| match value {
                Value::String(text) => !text.is_empty(),
                Value::Array(items) => !items.is_empty(),
                _ => true,
            }),
            Filter::Compare { path, op, value } => {
                let exact = case_exact(path);
                values(resource, path)
                    .into_iter()
                    .any(|found| compare(found, *op, value, exact))
            }
            Filter::And(left, right) => left.matches(resource) && right.matches(resource),
            Filter::Or(left, right) => left.matches(resource) || right.matches(resource),
            Filter::Not(inner) => !inner.matches(resource),
            Filter::ValuePath { path, filter } => {
                let container = match &path.uri {
                    Some(uri) => member(resource, uri),
                    None => Some(resource),
                };
                match container.and_then(|c| member(c, &path.name)) {
                    Some(Value::Array(items)) => items.iter().any(|item| filter.matches(item)),
                    Some(item @ Value::Object(_)) => filter.matches(item),
                    _ => false,
                }
            }
        }
    }
}

fn compare(found: &Value, op: CompareOp, wanted: &Value, exact: bool) -> bool {
    use std::cmp::Ordering;
    let ordering = match (found, wanted) {
        (Value::String(found), Value::String(wanted)) => {
            let (found, wanted) = if exact {
                (found.clone(), wanted.clone())
            } else {
                (found.to_lowercase(), wanted.to_lowercase())
            };
            match op {
                CompareOp::Co => return found.contains(&wanted),
                CompareOp::Sw => return found.starts_with(&wanted),
                CompareOp::Ew => return found.ends_with(&wanted),
                _ => found.cmp(&wanted),
            }
        }
        (Value::Number(found), Value::Number(wanted)) => {
            let (Some(found), Some(wanted)) = (found.as_f64(), wanted.as_f64()) else {
                return false;
            };
            match found.partial_cmp(&wanted) {
                Some(ordering) => ordering,
                None => return false,
            }
        }
        (Value::Bool(found), Value::Bool(wanted)) => {
            return match op {
                CompareOp::Eq => found == wanted,
                CompareOp::Ne => found != wanted,
                _ => false,
            };
        }
        _ => return op == CompareOp::Ne,
    };
    match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => false,
    }
}

/// The one value `filter` asks an attribute to equal, for a lookup that
/// needs no scan: `attr eq "value"`, possibly inside `and`.
pub fn equality<'f>(filter: &'f Filter, name: &str) -> Option<&'f str> {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: Value::String(value),
        } if path.uri.is_none() && path.sub.is_none() && path.name.eq_ignore_ascii_case(name) => {
            Some(value)
        }
        Filter::And(left, right) => equality(left, name).or_else(|| equality(right, name)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "id": "u1",
            "userName": "Alice@Contoso.example",
            "externalId": "E-1",
            "displayName": "Alice Smith",
            "active": true,
            "emails": [{"value": "alice@contoso.example", "type": "work", "primary": true}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "Sales",
                "manager": {"value": "m1"}
            }
        })
    }

    fn matches(filter: &str) -> bool {
        parse_filter(filter).unwrap().matches(&user())
    }

    #[test]
    fn operators_attributes_and_case() {
        assert!(matches(r#"userName eq "alice@contoso.example""#));
        assert!(matches(r#"USERNAME EQ "ALICE@contoso.example""#));
        assert!(!matches(r#"externalId eq "e-1""#));
        assert!(matches(r#"externalId eq "E-1""#));
        assert!(matches(r#"emails.value co "contoso""#));
        assert!(matches(r#"emails co "contoso""#));
        assert!(matches(r#"displayName sw "Ali""#));
        assert!(matches(r#"displayName ew "smith""#));
        assert!(matches("displayName pr and not (title pr)"));
        assert!(matches("active eq true"));
        assert!(matches(r#"emails[type eq "work" and primary eq true]"#));
        assert!(!matches(r#"emails[type eq "home"]"#));
        assert!(matches(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "sales""#
        ));
        assert!(matches(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m1""#
        ));
        assert!(matches(
            r#"id eq "nobody" or (id eq "u1" and active eq true)"#
        ));
        assert!(!matches(
            r#"id eq "nobody" or id eq "u1" and active eq false"#
        ));
    }

    #[test]
    fn malformed_filters_are_invalid_filter_errors() {
        for bad in [
            "",
            "userName",
            "userName eq",
            r#"userName xx "a""#,
            r#"userName eq "a"#,
            r#"(userName eq "a""#,
            r#"userName eq "a" and"#,
            r#"emails[type eq "a""#,
            r#"emails[types[value eq "a"]]"#,
            r#"1abc eq "a""#,
            r#"userName eq "a" extra"#,
        ] {
            let error = parse_filter(bad).unwrap_err();
            assert_eq!(error.scim_type, Some("invalidFilter"), "{bad:?}");
        }
        let deep = format!("{}id pr{}", "(".repeat(100), ")".repeat(100));
        assert!(parse_filter(&deep).is_err());
    }

    #[test]
    fn patch_paths() {
        let path = parse_patch_path(r#"members[value eq "u2"]"#).unwrap();
        assert_eq!(path.attr.name, "members");
        assert!(path.filter.is_some());
        let path = parse_patch_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(path.sub.as_deref(), Some("value"));
        let path = parse_patch_path(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        )
        .unwrap();
        assert_eq!(
            path.attr.uri.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(path.attr.sub.as_deref(), Some("value"));
        for bad in [
            "",
            "members[",
            "members]",
            r#"members[value eq "a"]x"#,
            "a b",
        ] {
            assert_eq!(
                parse_patch_path(bad).unwrap_err().scim_type,
                Some("invalidPath"),
                "{bad:?}"
            );
        }
    }

    /// Renders a filter in the grammar, fully parenthesized.
    fn render(filter: &Filter) -> String {
        fn path(p: &AttrPath) -> String {
            let mut text = p.uri.as_ref().map(|u| format!("{u}:")).unwrap_or_default();
            text.push_str(&p.name);
            if let Some(sub) = &p.sub {
                text.push('.');
                text.push_str(sub);
            }
            text
        }
        match filter {
            Filter::Compare { path: p, op, value } => {
                let op = CompareOp::ALL.iter().find(|(_, o)| o == op).unwrap().0;
                format!("{} {op} {value}", path(p))
            }
            Filter::Present(p) => format!("{} pr", path(p)),
            Filter::And(l, r) => format!("({} and {})", render(l), render(r)),
            Filter::Or(l, r) => format!("({} or {})", render(l), render(r)),
            Filter::Not(inner) => format!("not ({})", render(inner)),
            Filter::ValuePath { path: p, filter } => format!("{}[{}]", path(p), render(filter)),
        }
    }

    fn arb_path() -> impl Strategy<Value = AttrPath> {
        (
            prop_oneof![
                Just(None),
                Just(Some(
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User".to_string()
                ))
            ],
            "[a-zA-Z][a-zA-Z0-9_]{0,8}",
            proptest::option::of("[a-zA-Z][a-zA-Z0-9]{0,5}"),
        )
            .prop_filter("not a keyword", |(_, name, _)| {
                !["and", "or", "not", "pr", "true", "false", "null"]
                    .contains(&name.to_ascii_lowercase().as_str())
            })
            .prop_map(|(uri, name, sub)| AttrPath { uri, name, sub })
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            Just(Value::Null),
        ]
    }

    fn arb_leaf() -> impl Strategy<Value = Filter> {
        prop_oneof![
            (arb_path(), 0..CompareOp::ALL.len(), arb_value()).prop_map(|(path, op, value)| {
                Filter::Compare {
                    path,
                    op: CompareOp::ALL[op].1,
                    value,
                }
            }),
            arb_path().prop_map(Filter::Present),
        ]
    }

    fn arb_filter() -> impl Strategy<Value = Filter> {
        let leaf = prop_oneof![
            arb_leaf(),
            (arb_path(), arb_leaf()).prop_map(|(path, filter)| Filter::ValuePath {
                path,
                filter: Box::new(filter)
            }),
        ];
        leaf.prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(l, r)| Filter::And(Box::new(l), Box::new(r))),
                (inner.clone(), inner.clone())
                    .prop_map(|(l, r)| Filter::Or(Box::new(l), Box::new(r))),
                inner.prop_map(|f| Filter::Not(Box::new(f))),
            ]
        })
    }

    proptest! {
        #[test]
        fn rendering_then_parsing_gives_the_same_filter(filter in arb_filter()) {
            prop_assert_eq!(parse_filter(&render(&filter)).unwrap(), filter);
        }

        #[test]
        fn any_text_parses_or_fails_cleanly(text in ".{0,64}") {
            if let Err(error) = parse_filter(&text) {
                prop_assert_eq!(error.scim_type, Some("invalidFilter"));
            }
        }

        #[test]
        fn filter_like_text_parses_or_fails_cleanly(
            text in r#"[a-z. ()\[\]"]{0,40}( (eq|co|pr|and|or|not) [a-z"()]{0,8}){0,4}"#
        ) {
            let _ = parse_filter(&text);
        }
    }
}
