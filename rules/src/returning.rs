//! Carrying the client's RETURNING list over to the rewrite's final SELECT.
//!
//! The client asked its write to return rows; the rewritten statement returns them from
//! `SELECT <list> FROM tandem_w AS <name>`, where `tandem_w` holds exactly the written legacy
//! rows and `<name>` is the client's alias or the table's bare name. That keeps column names,
//! types and even the RowDescription's table OID identical. Two things need care:
//! a reference spelled `schema.table.col` must lose its schema (the final SELECT only knows
//! `<name>`), and with UPDATE … FROM or DELETE … USING the list may reference the other
//! tables, which `tandem_w` does not carry: those lists are refused.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, SelectItem, SelectItemQualifiedWildcardKind,
    Visit, VisitMut, Visitor, VisitorMut,
};

use crate::carried::Carried;
use crate::ident::normalize;
use crate::refusal::Refusal;
use crate::rule::ResolvedRule;

/// The table a write names, as the client wrote it.
pub(crate) struct Subject<'a> {
    /// The table name as written (`orders`, `public.orders`).
    pub table: &'a ObjectName,
    /// The client's alias, if any.
    pub alias: Option<&'a Ident>,
    /// The rule for that table.
    pub rule: &'a ResolvedRule,
}

impl Subject<'_> {
    /// The plan for a mirrored write: the client's `write` (its RETURNING already removed)
    /// returning `row` as `tandem_w`, the rule's mirror of those rows, and the client's
    /// RETURNING list (if any) projected from `tandem_w`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mirrored(
        &self,
        with: Option<&sqlparser::ast::With>,
        write: &dyn std::fmt::Display,
        row: &str,
        joined: bool,
        tag: crate::plan::WriteTag,
        returning: Option<&[sqlparser::ast::SelectItem]>,
        statement: &str,
    ) -> Result<crate::plan::StatementPlan, Refusal> {
        let carried = Carried::of(self, returning, joined)?;
        let sql = crate::sqlgen::Composed {
            with,
            before: None,
            write: format!("{write} RETURNING {}", carried.returning(row)),
            mirror: crate::sqlgen::mirror(
                self.rule,
                tag,
                statement,
                &carried.row_of(self, crate::sqlgen::WRITE_CTE),
            ),
            projection: returning.map(|r| self.projection(r, &carried)),
            alias: self.row_name().to_string(),
            check: self.resolution_check(),
        }
        .sql();
        Ok(crate::plan::StatementPlan {
            sql,
            response: crate::plan::ResponseFix::Mirror {
                tag,
                returning: returning.is_some(),
            },
            rule_table: Some(self.rule.rule.table.clone()),
            policy: Some(self.rule.rule.on_mirror_error),
        })
    }

    /// [`mirrored`](Self::mirrored) for an UPDATE or DELETE: with another table joined
    /// (`FROM` / `USING`), `tandem_w` returns only the subject's columns and the client's
    /// RETURNING may name no other table; otherwise it returns `*`.
    pub(crate) fn mirrored_joined(
        &self,
        with: Option<&sqlparser::ast::With>,
        write: &dyn std::fmt::Display,
        joined: bool,
        tag: crate::plan::WriteTag,
        returning: Option<&[sqlparser::ast::SelectItem]>,
        statement: &str,
    ) -> Result<crate::plan::StatementPlan, Refusal> {
        let row = if joined {
            if let Some(items) = returning {
                self.check_only_subject(items)?;
            }
            self.row_star()
        } else {
            "*".to_string()
        };
        self.mirrored(with, write, &row, joined, tag, returning, statement)
    }

    /// The condition that makes the server check, as it runs the statement, that the name
    /// the client wrote means the ruled table (by OID, with the session's search_path and
    /// temporary tables; a qualified name, that the table was not replaced since the rules
    /// were read): `tandem.resolves_to()` raises otherwise. `None` for an unknown OID.
    pub(crate) fn resolution_check(&self) -> Option<String> {
        if let Some((name, oid, table)) = &self.rule.client_name {
            return Some(format!(
                "tandem.resolves_to({}, {oid}::oid, {})",
                crate::record::literal(name),
                crate::record::literal(&table.to_string()),
            ));
        }
        let oid = self.rule.shape.legacy_oid;
        if oid == 0 {
            return None;
        }
        Some(format!(
            "tandem.resolves_to({}, {oid}::oid, {})",
            crate::record::literal(&self.table.to_string()),
            crate::record::literal(&self.rule.rule.table.to_string()),
        ))
    }

    /// The identifier that names the written row in RETURNING: the alias, else the last
    /// part of the table name.
    pub(crate) fn row_name(&self) -> Ident {
        match self.alias {
            Some(alias) => alias.clone(),
            None => last_ident(self.table)
                .cloned()
                .unwrap_or_else(|| Ident::new("")),
        }
    }

    /// What qualifies the written table's columns inside the write: the alias, else the
    /// table name as written.
    pub(crate) fn qualifier(&self) -> String {
        match self.alias {
            Some(alias) => alias.to_string(),
            None => self.table.to_string(),
        }
    }

    /// `qualifier.*` for the inner write's RETURNING when other tables are in scope.
    pub(crate) fn row_star(&self) -> String {
        format!("{}.*", self.qualifier())
    }

    /// Does `parts` (a qualifier, without the column) name the written table?
    pub(crate) fn names_row(&self, parts: &[Ident]) -> bool {
        self.is_subject(parts)
    }

    /// Does `parts` (a qualifier, without the column) name the written table?
    fn is_subject(&self, parts: &[Ident]) -> bool {
        let row = normalize(&self.row_name());
        match (parts, self.alias) {
            ([one], _) => normalize(one) == row,
            (_, Some(_)) => false,
            (many, None) => {
                let written: Vec<String> = idents(self.table).map(normalize).collect();
                let given: Vec<String> = many.iter().map(normalize).collect();
                written.ends_with(&given) || given.ends_with(&written)
            }
        }
    }

    /// The client's RETURNING list rendered for `SELECT … FROM tandem_w AS <row_name>`;
    /// `*` and `<row>.*` are spelled out when `tandem_w` carries more than the row.
    pub(crate) fn projection(&self, items: &[SelectItem], carried: &Carried) -> String {
        let mut items = items.to_vec();
        let row = self.row_name();
        if !carried.is_empty() {
            let spelled: Vec<String> = crate::carried::table_columns(self)
                .iter()
                .map(|c| format!("{row}.{}", crate::ident::quote_ident(c)))
                .collect();
            let spelled = spelled.join(", ");
            return items
                .iter()
                .map(|item| match item {
                    SelectItem::Wildcard(_) => spelled.clone(),
                    SelectItem::QualifiedWildcard(
                        SelectItemQualifiedWildcardKind::ObjectName(name),
                        _,
                    ) if self.is_subject(&idents(name).cloned().collect::<Vec<_>>()) => {
                        spelled.clone()
                    }
                    other => self.requalified(other, &row),
                })
                .collect::<Vec<_>>()
                .join(", ");
        }
        for item in &mut items {
            if let SelectItem::QualifiedWildcard(
                SelectItemQualifiedWildcardKind::ObjectName(name),
                _,
            ) = item
            {
                let parts: Vec<Ident> = idents(name).cloned().collect();
                if parts.len() > 1 && self.is_subject(&parts) {
                    *name = ObjectName::from(vec![row.clone()]);
                }
            }
            let _ = item.visit(&mut Requalify {
                subject: self,
                row: &row,
            });
        }
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// May a bare `name` in RETURNING refer to the written table: one of its columns, a
    /// system column, or its whole row (see [`carried`](crate::carried))?
    fn may_name_bare(&self, name: &str) -> bool {
        self.rule.shape.is_legacy_column(name)
            || crate::carried::is_system_column(name)
            || name == normalize(&self.row_name())
    }

    /// One item with `schema.table.col` spelled `<row>.col`.
    fn requalified(&self, item: &SelectItem, row: &Ident) -> String {
        let mut item = item.clone();
        let _ = VisitMut::visit(&mut item, &mut Requalify { subject: self, row });
        item.to_string()
    }

    /// With FROM/USING tables in scope, accept only references to the written table.
    pub(crate) fn check_only_subject(&self, items: &[SelectItem]) -> Result<(), Refusal> {
        let refuse = |what: String| Refusal::Returning {
            table: self.rule.rule.table.clone(),
            what,
        };
        for item in items {
            match item {
                SelectItem::Wildcard(_) => {
                    return Err(refuse(
                        "* (which includes the other tables' columns)".into(),
                    ))
                }
                SelectItem::QualifiedWildcard(
                    SelectItemQualifiedWildcardKind::ObjectName(n),
                    _,
                ) => {
                    let parts: Vec<Ident> = idents(n).cloned().collect();
                    if !self.is_subject(&parts) {
                        return Err(refuse(format!("{n}.*")));
                    }
                }
                _ => {}
            }
            let mut check = OnlySubject { subject: self };
            if let ControlFlow::Break(what) = item.visit(&mut check) {
                return Err(refuse(what));
            }
        }
        Ok(())
    }
}

fn idents(name: &ObjectName) -> impl Iterator<Item = &Ident> {
    name.0.iter().filter_map(|p| match p {
        ObjectNamePart::Identifier(i) => Some(i),
        _ => None,
    })
}

fn last_ident(name: &ObjectName) -> Option<&Ident> {
    idents(name).last()
}

/// Rewrites `schema.table.col` to `<row>.col` in the final SELECT.
struct Requalify<'a> {
    subject: &'a Subject<'a>,
    row: &'a Ident,
}

impl VisitorMut for Requalify<'_> {
    type Break = ();
    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::CompoundIdentifier(parts) = expr {
            if parts.len() > 2 && self.subject.is_subject(&parts[..parts.len() - 1]) {
                let column = parts[parts.len() - 1].clone();
                *parts = vec![self.row.clone(), column];
            }
        }
        ControlFlow::Continue(())
    }
}

/// Finds the first reference that is not to the written table's own columns (generated
/// ones included: `tandem_w` carries them).
struct OnlySubject<'a> {
    subject: &'a Subject<'a>,
}

impl Visitor for OnlySubject<'_> {
    type Break = String;
    fn pre_visit_query(&mut self, _query: &Query) -> ControlFlow<String> {
        ControlFlow::Break("a subquery".into())
    }
    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
        match expr {
            Expr::Identifier(id) if !self.subject.may_name_bare(&normalize(id)) => {
                ControlFlow::Break(format!(
                    "column {id}, which is not a known column of the table"
                ))
            }
            Expr::CompoundIdentifier(parts)
                if parts.len() > 1 && !self.subject.is_subject(&parts[..parts.len() - 1]) =>
            {
                let names: Vec<String> = parts.iter().map(ToString::to_string).collect();
                ControlFlow::Break(names.join("."))
            }
            _ => ControlFlow::Continue(()),
        }
    }
}
