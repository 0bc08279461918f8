//! The table's shape, read from the `SluiceTable` resource of `template.yaml` (embedded at
//! build time, so the deployed table and the tables the local engines and tests create cannot
//! differ), and [`create_table`], which creates that table in an engine.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use serde::Deserialize;

use super::errors::{store_error, AdapterError};
use crate::error::StoreError;

/// The SAM template, as built into the crate.
const TEMPLATE: &str = include_str!("../../../../template.yaml");
/// The table's logical id in the template.
const RESOURCE: &str = "SluiceTable";
/// How long [`create_table`] waits for the table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Why the template does not yield a table spec.
#[derive(Debug, thiserror::Error)]
pub enum TableSpecError {
    #[error("template is not valid YAML or SluiceTable's properties do not fit: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("template has no {0}")]
    Missing(&'static str),
    #[error("template's SluiceTable: {0}")]
    Invalid(String),
}

/// One `AttributeDefinitions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeSpec {
    pub attribute_name: String,
    /// `S`, `N` or `B`.
    pub attribute_type: String,
}

/// One `KeySchema` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeySpec {
    pub attribute_name: String,
    /// `HASH` or `RANGE`.
    pub key_type: String,
}

/// A global secondary index's projection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProjectionSpec {
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection_type: String,
    #[serde(default)]
    pub non_key_attributes: Vec<String>,
}

/// One `GlobalSecondaryIndexes` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexSpec {
    pub index_name: String,
    pub key_schema: Vec<KeySpec>,
    pub projection: ProjectionSpec,
}

/// `TimeToLiveSpecification`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TtlSpec {
    pub attribute_name: String,
    pub enabled: bool,
}

/// The shape of the Sluice table, as declared by `SluiceTable` in `template.yaml`. Other
/// properties (encryption, recovery, tags) only matter to CloudFormation and are not read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableSpec {
    pub attribute_definitions: Vec<AttributeSpec>,
    pub key_schema: Vec<KeySpec>,
    #[serde(default)]
    pub global_secondary_indexes: Vec<IndexSpec>,
    pub time_to_live_specification: Option<TtlSpec>,
    pub billing_mode: Option<String>,
}

impl TableSpec {
    /// The spec of the template built into this crate.
    pub fn from_template() -> Result<TableSpec, TableSpecError> {
        Self::from_yaml(TEMPLATE)
    }

    /// The spec of the `SluiceTable` resource in a CloudFormation / SAM template. Intrinsic
    /// tags (`!Ref`, `!Sub`, ...) elsewhere in the template are fine.
    pub fn from_yaml(template: &str) -> Result<TableSpec, TableSpecError> {
        let doc: serde_yaml::Value = serde_yaml::from_str(template)?;
        let resource = doc
            .get("Resources")
            .ok_or(TableSpecError::Missing("Resources"))?
            .get(RESOURCE)
            .ok_or(TableSpecError::Missing("Resources.SluiceTable"))?;
        let kind = resource.get("Type").and_then(serde_yaml::Value::as_str);
        if kind != Some("AWS::DynamoDB::Table") {
            return Err(TableSpecError::Invalid(format!(
                "Type is {kind:?}, not AWS::DynamoDB::Table"
            )));
        }
        let properties = resource
            .get("Properties")
            .ok_or(TableSpecError::Missing("Resources.SluiceTable.Properties"))?;
        let spec: TableSpec = serde_yaml::from_value(properties.clone())?;
        spec.validate()?;
        Ok(spec)
    }

    /// The TTL attribute, if TTL is enabled.
    pub fn ttl_attribute(&self) -> Option<&str> {
        self.time_to_live_specification
            .as_ref()
            .filter(|t| t.enabled)
            .map(|t| t.attribute_name.as_str())
    }

    fn validate(&self) -> Result<(), TableSpecError> {
        let invalid = |msg: String| Err(TableSpecError::Invalid(msg));
        for a in &self.attribute_definitions {
            if !["S", "N", "B"].contains(&a.attribute_type.as_str()) {
                return invalid(format!(
                    "attribute {} has type {}",
                    a.attribute_name, a.attribute_type
                ));
            }
        }
        let schemas = std::iter::once(("table", &self.key_schema)).chain(
            self.global_secondary_indexes
                .iter()
                .map(|i| (i.index_name.as_str(), &i.key_schema)),
        );
        for (of, schema) in schemas {
            if schema.first().map(|k| k.key_type.as_str()) != Some("HASH")
                || schema.iter().skip(1).any(|k| k.key_type != "RANGE")
                || schema.len() > 2
            {
                return invalid(format!("{of}: key schema must be HASH [, RANGE]"));
            }
            for k in schema {
                if !self
                    .attribute_definitions
                    .iter()
                    .any(|a| a.attribute_name == k.attribute_name)
                {
                    return invalid(format!("{of}: key {} is not defined", k.attribute_name));
                }
            }
        }
        for i in &self.global_secondary_indexes {
            if !["ALL", "KEYS_ONLY", "INCLUDE"].contains(&i.projection.projection_type.as_str()) {
                return invalid(format!(
                    "{}: projection {}",
                    i.index_name, i.projection.projection_type
                ));
            }
        }
        match self.billing_mode.as_deref() {
            None | Some("PAY_PER_REQUEST") => Ok(()),
            Some(other) => invalid(format!(
                "billing mode {other}; only PAY_PER_REQUEST is supported"
            )),
        }
    }

    /// Creates a table of this shape named `table_name`, waits until it is ACTIVE (at most
    /// 30 s) and enables TTL.
    pub async fn create(&self, client: &Client, table_name: &str) -> Result<(), StoreError> {
        const OP: &str = "table.create";
        let rejected = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Rejected {
            operation: OP,
            source: Box::new(e),
        };
        let key_schema = |schema: &[KeySpec]| {
            schema
                .iter()
                .map(|k| {
                    KeySchemaElement::builder()
                        .attribute_name(&k.attribute_name)
                        .key_type(KeyType::from(k.key_type.as_str()))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let attributes = self
            .attribute_definitions
            .iter()
            .map(|a| {
                AttributeDefinition::builder()
                    .attribute_name(&a.attribute_name)
                    .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(rejected)?;
        let mut indexes = Vec::new();
        for i in &self.global_secondary_indexes {
            let projection = Projection::builder()
                .projection_type(ProjectionType::from(i.projection.projection_type.as_str()))
                .set_non_key_attributes(
                    (!i.projection.non_key_attributes.is_empty())
                        .then(|| i.projection.non_key_attributes.clone()),
                )
                .build();
            let index = GlobalSecondaryIndex::builder()
                .index_name(&i.index_name)
                .set_key_schema(Some(key_schema(&i.key_schema).map_err(rejected)?))
                .projection(projection)
                .build()
                .map_err(rejected)?;
            indexes.push(index);
        }
        client
            .create_table()
            .table_name(table_name)
            .set_attribute_definitions(Some(attributes))
            .set_key_schema(Some(key_schema(&self.key_schema).map_err(rejected)?))
            .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        wait_until_active(client, table_name).await?;
        if let Some(attr) = self.ttl_attribute() {
            let ttl = TimeToLiveSpecification::builder()
                .attribute_name(attr)
                .enabled(true)
                .build()
                .map_err(rejected)?;
            client
                .update_time_to_live()
                .table_name(table_name)
                .time_to_live_specification(ttl)
                .send()
                .await
                .map_err(|e| store_error("table.enable_ttl", e))?;
        }
        Ok(())
    }
}

/// Polls `DescribeTable` until the table and its indexes are ACTIVE, for at most 30 s.
async fn wait_until_active(client: &Client, table_name: &str) -> Result<(), StoreError> {
    const OP: &str = "table.describe";
    let started = Instant::now();
    loop {
        let out = client
            .describe_table()
            .table_name(table_name)
            .send()
            .await
            .map_err(|e| store_error(OP, e))?;
        if let Some(table) = out.table {
            let indexes_active = table
                .global_secondary_indexes()
                .iter()
                .all(|i| matches!(i.index_status(), None | Some(IndexStatus::Active)));
            if table.table_status() == Some(&TableStatus::Active) && indexes_active {
                return Ok(());
            }
        }
        if started.elapsed() >= ACTIVE_TIMEOUT {
            return Err(AdapterError::TableNotActive {
                table: table_name.to_owned(),
                secs: ACTIVE_TIMEOUT.as_secs(),
            }
            .transient(OP));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Creates the Sluice table (the shape of `SluiceTable` in `template.yaml`) as `table_name`,
/// waits until it is ACTIVE and enables TTL on `expires_at`.
pub async fn create_table(client: &Client, table_name: &str) -> Result<(), StoreError> {
    let spec = TableSpec::from_template().map_err(|e| StoreError::Rejected {
        operation: "table.create",
        source: Box::new(e),
    })?;
    spec.create(client, table_name).await
}

#[cfg(test)]
mod tests {
    use super::super::keys::{EXPIRES_AT, GSI1, GSI1PK, GSI1SK, GSI2, GSI2PK, GSI2SK, PK, SK};
    use super::*;

    fn key(name: &str, key_type: &str) -> KeySpec {
        KeySpec {
            attribute_name: name.into(),
            key_type: key_type.into(),
        }
    }

    #[test]
    fn template_declares_the_layout_the_adapters_use() {
        let spec = TableSpec::from_template().expect("template parses");
        assert_eq!(spec.key_schema, vec![key(PK, "HASH"), key(SK, "RANGE")]);
        let indexes: Vec<_> = spec
            .global_secondary_indexes
            .iter()
            .map(|i| (i.index_name.as_str(), i.key_schema.clone()))
            .collect();
        assert_eq!(
            indexes,
            vec![
                (GSI1, vec![key(GSI1PK, "HASH"), key(GSI1SK, "RANGE")]),
                (GSI2, vec![key(GSI2PK, "HASH"), key(GSI2SK, "RANGE")]),
            ]
        );
        for gsi in &spec.global_secondary_indexes {
            assert_eq!(gsi.projection.projection_type, "ALL", "{}", gsi.index_name);
        }
        for attr in [PK, SK, GSI1PK, GSI1SK, GSI2PK, GSI2SK] {
            assert!(spec
                .attribute_definitions
                .iter()
                .any(|a| a.attribute_name == attr && a.attribute_type == "S"));
        }
        assert_eq!(spec.ttl_attribute(), Some(EXPIRES_AT));
        assert_eq!(spec.billing_mode.as_deref(), Some("PAY_PER_REQUEST"));
    }

    #[test]
    fn broken_templates_are_errors() {
        assert!(matches!(
            TableSpec::from_yaml("Resources: {}"),
            Err(TableSpecError::Missing(_))
        ));
        let undefined_key = "
Resources:
  SluiceTable:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}, {AttributeName: sk, KeyType: RANGE}]
      Tags: [{Key: stage, Value: !Ref Stage}]
";
        assert!(matches!(
            TableSpec::from_yaml(undefined_key),
            Err(TableSpecError::Invalid(_))
        ));
        assert!(TableSpec::from_yaml("a: [").is_err());
    }
}
