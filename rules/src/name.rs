//! Table names as PostgreSQL sees them.
//!
//! A rule names its tables in configuration text (`public.orders`, `"My Table"`), while a
//! client names them in SQL. Both must land on the same catalog name, so both go through the
//! same fold: unquoted parts become lower case, quoted parts are kept exactly. Display goes
//! the other way and quotes only the parts that need it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

use crate::ident::{ident, normalize, quote_ident};

/// Why a configured table name could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Nothing but whitespace (or an empty part such as `public.`).
    #[error("table name \"{0}\" has an empty part")]
    Empty(String),
    /// A `"` was opened and never closed.
    #[error("table name \"{0}\" has an unterminated quoted identifier")]
    Unterminated(String),
    /// More than `schema.table`, or stray characters after a quoted part.
    #[error("table name \"{0}\" is not of the form [schema.]table")]
    Malformed(String),
}

/// A table, by its catalog spelling. `schema == None` means "resolved through search_path".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TableName {
    /// Schema (namespace) name, exactly as in `pg_namespace.nspname`.
    pub schema: Option<String>,
    /// Relation name, exactly as in `pg_class.relname`.
    pub name: String,
}

impl TableName {
    /// A name from parts already in catalog spelling (no folding is applied).
    pub fn new(schema: Option<&str>, name: &str) -> Self {
        Self {
            schema: schema.map(str::to_string),
            name: name.to_string(),
        }
    }

    /// Parse SQL spelling: `orders`, `public.orders`, `"My Table"`, `app."Orders"`.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let parts = split_parts(text)?;
        match parts.as_slice() {
            [name] => Ok(Self::new(None, name)),
            [schema, name] => Ok(Self::new(Some(schema), name)),
            _ => Err(NameError::Malformed(text.to_string())),
        }
    }

    /// The name a parsed SQL object name refers to, when it is `[schema.]table` made of
    /// plain identifiers. A database-qualified name (`db.schema.table`) keeps its last two
    /// parts: PostgreSQL only accepts the current database there.
    pub(crate) fn from_object_name(name: &ObjectName) -> Option<Self> {
        let idents: Vec<&Ident> = name
            .0
            .iter()
            .map(|part| match part {
                ObjectNamePart::Identifier(ident) => Some(ident),
                _ => None,
            })
            .collect::<Option<_>>()?;
        match idents.as_slice() {
            [table] => Some(Self::new(None, &normalize(table))),
            [.., schema, table] => Some(Self {
                schema: Some(normalize(schema)),
                name: normalize(table),
            }),
            [] => None,
        }
    }

    /// A parser name for this catalog-spelled table (`schema.name`, each part quoted when
    /// needed).
    pub(crate) fn to_object_name(&self) -> ObjectName {
        let mut parts = Vec::new();
        if let Some(schema) = &self.schema {
            parts.push(ident(schema));
        }
        parts.push(ident(&self.name));
        ObjectName::from(parts)
    }

    /// The table named `<name><suffix>` in the same schema (the default target is `_v2`).
    pub fn with_suffix(&self, suffix: &str) -> Self {
        Self {
            schema: self.schema.clone(),
            name: format!("{}{suffix}", self.name),
        }
    }
}

/// Split `a.b` into folded parts, honouring quotes and `""` escapes inside them.
fn split_parts(text: &str) -> Result<Vec<String>, NameError> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(NameError::Unterminated(text.to_string())),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if !matches!(chars.peek(), None | Some('.')) {
                return Err(NameError::Malformed(text.to_string()));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' {
                    return Err(NameError::Malformed(text.to_string()));
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
            let trimmed = part.trim_end().to_string();
            if trimmed.is_empty() {
                return Err(NameError::Empty(text.to_string()));
            }
            part = trimmed;
        }
        parts.push(part);
        match chars.next() {
            Some('.') => continue,
            None => return Ok(parts),
            Some(_) => return Err(NameError::Malformed(text.to_string())),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{}.", quote_ident(schema))?;
        }
        f.write_str(&quote_ident(&self.name))
    }
}

impl FromStr for TableName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TableName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TableName> for String {
    fn from(t: TableName) -> Self {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_folds() {
        assert_eq!(
            TableName::parse("orders").unwrap(),
            TableName::new(None, "orders")
        );
        assert_eq!(
            TableName::parse("Public.ORDERS").unwrap(),
            TableName::new(Some("public"), "orders")
        );
        assert_eq!(
            TableName::parse("\"My Table\"").unwrap(),
            TableName::new(None, "My Table")
        );
        assert_eq!(
            TableName::parse("app.\"Or\"\"ders\"").unwrap(),
            TableName::new(Some("app"), "Or\"ders")
        );
        assert_eq!(
            TableName::parse(" \"a.b\" . c ").unwrap(),
            TableName::new(Some("a.b"), "c")
        );
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(TableName::parse(""), Err(NameError::Empty(_))));
        assert!(matches!(
            TableName::parse("public."),
            Err(NameError::Empty(_))
        ));
        assert!(matches!(
            TableName::parse("\"abc"),
            Err(NameError::Unterminated(_))
        ));
        assert!(matches!(
            TableName::parse("a.b.c"),
            Err(NameError::Malformed(_))
        ));
        assert!(matches!(
            TableName::parse("\"a\"b"),
            Err(NameError::Malformed(_))
        ));
    }

    #[test]
    fn displays_with_minimal_quotes() {
        assert_eq!(
            TableName::new(Some("public"), "orders").to_string(),
            "public.orders"
        );
        assert_eq!(TableName::new(None, "My Table").to_string(), "\"My Table\"");
        assert_eq!(
            TableName::new(Some("App"), "order").to_string(),
            "\"App\".\"order\""
        );
        let round = TableName::parse(&TableName::new(Some("A"), "b c").to_string()).unwrap();
        assert_eq!(round, TableName::new(Some("A"), "b c"));
    }
}
