//! YAML documents as a small tree that keeps each node's line, so findings
//! point at the key that is wrong. Parsing is saphyr's (YAML 1.2, with a
//! bound on alias expansion against "billion laughs" documents).

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

/// A YAML value with the 1-based line it starts on.
#[derive(Debug, Clone)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in document order; non-string keys are rendered as text.
    Map(Vec<(String, Node)>),
}

static NULL: Node = Node {
    line: 0,
    value: Value::Null,
};

impl Node {
    /// The value under `key` of a mapping (a null node when absent).
    pub fn get(&self, key: &str) -> &Node {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    /// `get` along a path of keys.
    pub fn at(&self, path: &[&str]) -> &Node {
        path.iter().fold(self, |n, k| n.get(k))
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A scalar as text (numbers and booleans too), as Kubernetes would
    /// read a string field.
    pub fn text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A boolean as Kubernetes reads it: its YAML library follows YAML
    /// 1.1, where `yes`, `on` and `y` are true, so `privileged: on` is a
    /// privileged container even though YAML 1.2 calls it a string.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            Value::Bool(b) => Some(*b),
            Value::Str(s) => match s.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True"
                | "TRUE" => Some(true),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False"
                | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match &self.value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items of a sequence (none for anything else).
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// The entries of a mapping (none for anything else).
    pub fn entries(&self) -> &[(String, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// The line of this node, or `fallback` when it is absent.
    pub fn line_or(&self, fallback: usize) -> usize {
        if self.line == 0 { fallback } else { self.line }
    }
}

/// Why a YAML text was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid YAML at line {line}, column {column}: {message}")]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parses every document of a YAML stream. Empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, YamlError> {
    let docs = MarkedYaml::load_from_str(text).map_err(|e| YamlError {
        line: e.marker().line(),
        column: e.marker().col() + 1,
        message: e.info().to_owned(),
    })?;
    Ok(docs.iter().map(convert).filter(|n| !n.is_null()).collect())
}

fn convert(y: &MarkedYaml<'_>) -> Node {
    let line = y.span.start.line();
    let value = match &y.data {
        YamlData::Value(s) => scalar(s),
        YamlData::Sequence(items) => Value::Seq(items.iter().map(convert).collect()),
        YamlData::Mapping(map) => Value::Map(
            map.iter()
                .map(|(k, v)| {
                    let key = match &k.data {
                        YamlData::Value(s) => match scalar(s) {
                            Value::Str(s) => s,
                            Value::Int(i) => i.to_string(),
                            Value::Bool(b) => b.to_string(),
                            Value::Float(f) => f.to_string(),
                            _ => "null".to_owned(),
                        },
                        YamlData::Representation(s, _, _) => s.to_string(),
                        _ => String::from("<complex key>"),
                    };
                    (key, convert(v))
                })
                .collect(),
        ),
        YamlData::Tagged(_, inner) => convert(inner).value,
        YamlData::Representation(s, _, _) => Value::Str(s.to_string()),
        _ => Value::Null,
    };
    Node { line, value }
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::Str(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_and_documents() {
        let docs = parse_documents("a: 1\n---\nkind: Pod\nspec:\n  x: [1, 2]\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].get("kind").as_str(), Some("Pod"));
        assert_eq!(docs[1].at(&["spec", "x"]).line, 5);
        assert_eq!(docs[1].at(&["spec", "x"]).items().len(), 2);
        assert!(docs[1].at(&["spec", "nope"]).is_null());
    }

    #[test]
    fn yaml_1_1_booleans_read_as_kubernetes_reads_them() {
        let d = &parse_documents("a: on\nb: yes\nc: True\nd: off\ne: maybe\n").unwrap()[0];
        let got: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|k| d.get(k).as_bool())
            .collect();
        assert_eq!(got, [Some(true), Some(true), Some(true), Some(false), None]);
    }

    #[test]
    fn invalid_yaml_names_the_line() {
        let e = parse_documents("a: 1\nb: {c: [\n").unwrap_err();
        assert!(e.line >= 2, "{e}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            t.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse_documents(&t).is_err());
    }
}
