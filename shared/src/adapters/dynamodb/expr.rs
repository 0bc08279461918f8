//! A small builder for DynamoDB expressions: it hands out attribute-name and attribute-value
//! placeholders (every attribute name goes through `ExpressionAttributeNames`, so reserved
//! words such as `status` and `count` and dynamic names such as `h#{holder}` are safe), and
//! collects `SET` / `REMOVE` / `ADD` clauses, condition terms and filter terms. Three requests
//! are sent from here: a conditional [`update_item`] and [`put_item`], and a paginated
//! [`query_all`].

use std::collections::HashMap;
use std::fmt::Display;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use super::errors::{conditional, store_error, Conditional};
use super::keys::Item;
use crate::error::StoreError;

/// Placeholders, update clauses and condition terms of one request.
#[derive(Debug, Default)]
pub struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
    conditions: Vec<String>,
    filters: Vec<String>,
}

/// The rendered parts of an [`Expr`], ready for a request builder.
#[derive(Debug)]
pub struct Rendered {
    pub update: Option<String>,
    /// The condition of a write, or the key condition of a query.
    pub condition: Option<String>,
    /// The filter of a query.
    pub filter: Option<String>,
    pub names: Option<HashMap<String, String>>,
    pub values: Option<HashMap<String, AttributeValue>>,
}

impl Expr {
    /// The placeholder of attribute `attr`: `#attr` for plain lower-case names (readable in
    /// logs), `#_n` for anything else.
    pub fn name(&mut self, attr: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, a)| a.as_str() == attr) {
            return placeholder.clone();
        }
        let plain = attr.starts_with(|c: char| c.is_ascii_lowercase())
            && attr
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let placeholder = if plain {
            format!("#{attr}")
        } else {
            format!("#_{}", self.names.len())
        };
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    /// A placeholder for `value`.
    pub fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    /// A placeholder for a number.
    pub fn num(&mut self, n: impl Display) -> String {
        self.value(AttributeValue::N(n.to_string()))
    }

    /// A placeholder for a string.
    pub fn str(&mut self, s: impl Into<String>) -> String {
        self.value(AttributeValue::S(s.into()))
    }

    /// `SET #attr = {value}` (`value` is a placeholder or an expression such as
    /// `if_not_exists(...)`).
    pub fn set(&mut self, attr: &str, value: String) {
        let name = self.name(attr);
        self.set.push(format!("{name} = {value}"));
    }

    /// `REMOVE #attr`.
    pub fn remove(&mut self, attr: &str) {
        let name = self.name(attr);
        self.remove.push(name);
    }

    /// `ADD #attr {delta}` on a number.
    pub fn add(&mut self, attr: &str, delta: i64) {
        let name = self.name(attr);
        let value = self.num(delta);
        self.add.push(format!("{name} {value}"));
    }

    /// Adds a term to the condition (of a query: the key condition); terms are joined with
    /// `AND`.
    pub fn require(&mut self, term: String) {
        self.conditions.push(term);
    }

    /// Adds a term to a query's filter; terms are joined with `AND`.
    pub fn filter(&mut self, term: String) {
        self.filters.push(term);
    }

    /// The placeholders and clauses in the form the request builders take.
    pub fn render(self) -> Rendered {
        let mut clauses = Vec::new();
        if !self.set.is_empty() {
            clauses.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.remove.is_empty() {
            clauses.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        if !self.add.is_empty() {
            clauses.push(format!("ADD {}", self.add.join(", ")));
        }
        Rendered {
            update: (!clauses.is_empty()).then(|| clauses.join(" ")),
            condition: conjunction(self.conditions),
            filter: conjunction(self.filters),
            names: (!self.names.is_empty()).then_some(self.names),
            values: (!self.values.is_empty()).then_some(self.values),
        }
    }
}

/// `a AND b AND ...` with each term parenthesized (a single term stays as it is).
fn conjunction(terms: Vec<String>) -> Option<String> {
    match terms.len() {
        0 => None,
        1 => terms.into_iter().next(),
        _ => Some(
            terms
                .iter()
                .map(|t| format!("({t})"))
                .collect::<Vec<_>>()
                .join(" AND "),
        ),
    }
}

/// Sends one `UpdateItem` of `key` built from `x`. `Written` carries the attributes
/// `return_values` asked for (empty for `NONE`); `Failed` the item as it was (`ALL_OLD`).
pub async fn update_item(
    client: &Client,
    table: &str,
    key: Item,
    x: Expr,
    return_values: ReturnValue,
    operation: &'static str,
) -> Result<Conditional<Item>, StoreError> {
    let r = x.render();
    let result = client
        .update_item()
        .table_name(table)
        .set_key(Some(key))
        .set_update_expression(r.update)
        .set_condition_expression(r.condition)
        .set_expression_attribute_names(r.names)
        .set_expression_attribute_values(r.values)
        .return_values(return_values)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    Ok(match conditional(operation, result)? {
        Conditional::Written(out) => Conditional::Written(out.attributes.unwrap_or_default()),
        Conditional::Failed(old) => Conditional::Failed(old),
    })
}

/// Sends a `PutItem` of `item` under the condition (if any) of `x`; on a failed condition the
/// `ALL_OLD` item comes back in [`Conditional::Failed`].
pub async fn put_item(
    client: &Client,
    table: &str,
    item: Item,
    x: Expr,
    operation: &'static str,
) -> Result<Conditional<()>, StoreError> {
    let r = x.render();
    let result = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .set_condition_expression(r.condition)
        .set_expression_attribute_names(r.names)
        .set_expression_attribute_values(r.values)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await;
    Ok(match conditional(operation, result)? {
        Conditional::Written(_) => Conditional::Written(()),
        Conditional::Failed(old) => Conditional::Failed(old),
    })
}

/// How [`query_all`] reads.
#[derive(Debug, Clone, Copy)]
pub struct QueryOptions {
    /// The index to query; `None` for the table.
    pub index: Option<&'static str>,
    /// A strongly consistent read (the table only: global secondary indexes are always
    /// eventually consistent).
    pub consistent: bool,
    /// Sort-key order: ascending unless set.
    pub descending: bool,
    /// Items evaluated per request (DynamoDB's `Limit`, applied before the filter); `None`
    /// for 1 MB pages.
    pub page_size: Option<u32>,
    /// Stop once this many items (after the filter) are collected; `None` for all.
    pub max_items: Option<usize>,
}

impl QueryOptions {
    /// A strongly consistent, ascending read of the whole partition, in 1 MB pages.
    pub const CONSISTENT: QueryOptions = QueryOptions {
        index: None,
        consistent: true,
        descending: false,
        page_size: None,
        max_items: None,
    };

    /// An eventually consistent, ascending read of `index`.
    pub const fn index(index: &'static str) -> QueryOptions {
        QueryOptions {
            index: Some(index),
            consistent: false,
            descending: false,
            page_size: None,
            max_items: None,
        }
    }
}

/// Sends `Query` requests with the key condition (and filter) of `x`, following
/// `LastEvaluatedKey` until the items are exhausted or `options.max_items` are collected (more
/// than that are never returned). Items come in sort-key order.
pub async fn query_all(
    client: &Client,
    table: &str,
    x: Expr,
    options: QueryOptions,
    operation: &'static str,
) -> Result<Vec<Item>, StoreError> {
    let r = x.render();
    // DynamoDB's Limit is an i32 of at least 1.
    let page_size = options
        .page_size
        .map(|n| i32::try_from(n.max(1)).unwrap_or(i32::MAX));
    let mut items = Vec::new();
    let mut start = None;
    loop {
        if options.max_items.is_some_and(|max| items.len() >= max) {
            break;
        }
        let page = client
            .query()
            .table_name(table)
            .set_index_name(options.index.map(str::to_owned))
            .set_key_condition_expression(r.condition.clone())
            .set_filter_expression(r.filter.clone())
            .set_expression_attribute_names(r.names.clone())
            .set_expression_attribute_values(r.values.clone())
            .set_consistent_read(options.consistent.then_some(true))
            .scan_index_forward(!options.descending)
            .set_limit(page_size)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| store_error(operation, e))?;
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    if let Some(max) = options.max_items {
        items.truncate(max);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_clauses_conditions_and_placeholders() {
        let mut x = Expr::default();
        let h = x.name("h#hld_1");
        let exp = x.num(42);
        x.set("h#hld_1", exp);
        x.add("in_flight", 1);
        x.remove("probe_holder");
        x.require(format!("attribute_not_exists({h})"));
        let limit = x.num(3);
        let in_flight = x.name("in_flight");
        x.require(format!("{in_flight} < {limit}"));
        let r = x.render();
        assert_eq!(
            r.update.as_deref(),
            Some("SET #_0 = :v0 REMOVE #probe_holder ADD #in_flight :v1")
        );
        assert_eq!(
            r.condition.as_deref(),
            Some("(attribute_not_exists(#_0)) AND (#in_flight < :v2)")
        );
        let names = r.names.unwrap_or_default();
        assert_eq!(names.len(), 3);
        assert_eq!(names["#_0"], "h#hld_1");
        assert_eq!(r.values.unwrap_or_default().len(), 3);
    }

    #[test]
    fn key_condition_and_filter_render_apart() {
        let mut x = Expr::default();
        let (pk, status) = (x.name("gsi1pk"), x.name("status"));
        let (tenant, running) = (x.str("TENANT#acme"), x.str("RUNNING"));
        x.require(format!("{pk} = {tenant}"));
        x.filter(format!("{status} = {running}"));
        let r = x.render();
        assert_eq!(r.condition.as_deref(), Some("#gsi1pk = :v0"));
        assert_eq!(r.filter.as_deref(), Some("#status = :v1"));
        assert!(r.update.is_none());
    }

    #[test]
    fn empty_parts_are_none() {
        let r = Expr::default().render();
        assert!(r.update.is_none() && r.condition.is_none() && r.filter.is_none());
        assert!(r.names.is_none() && r.values.is_none());
    }
}
