//! The leased slot table stored on semaphore items and connector state items: an `in_flight`
//! count plus one `h#{holder}` attribute per holder whose value is its lease expiry (epoch ms).
//! Shared by `semaphore.rs` and `connector.rs`: reading the table from a raw item, the clauses
//! that take, renew or release a slot, and the reclaim of expired holders.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::ReturnValue;
use aws_sdk_dynamodb::Client;

use super::errors::{corrupt, number, Conditional};
use super::expr::update_item;
use super::expr::Expr;
use super::keys::{self, Item, HOLDER_PREFIX, IN_FLIGHT};
use crate::domain::ids::HolderId;
use crate::domain::semaphore::SlotTable;
use crate::domain::time::Timestamp;
use crate::error::StoreError;

/// The slot table held by `item` (empty if the item does not exist).
pub fn read(item: &Item, operation: &'static str, key: &str) -> Result<SlotTable, StoreError> {
    let in_flight = number::<u32>(item, IN_FLIGHT, operation, key)?.unwrap_or(0);
    let mut holders = BTreeMap::new();
    for attr in item.keys() {
        let Some(raw) = attr.strip_prefix(HOLDER_PREFIX) else {
            continue;
        };
        let holder = HolderId::parse(raw).map_err(|e| corrupt(operation, key, e))?;
        let expiry = number::<i64>(item, attr, operation, key)?.unwrap_or_default();
        holders.insert(holder, Timestamp::from_millis(expiry));
    }
    Ok(SlotTable { in_flight, holders })
}

/// Adds the clauses that give `holder` a slot until `expires_at`. A new holder is counted
/// (`ADD in_flight 1`) only while fewer than `limit` are; a holder already present (`renew`)
/// only moves its expiry, so it never takes a second slot.
pub fn take(x: &mut Expr, holder: &HolderId, expires_at: Timestamp, limit: u32, renew: bool) {
    take_under(x, holder, expires_at, limit, renew, None);
}

/// [`take`], where a number attribute `limit_attr` on the item, when present, is the limit
/// instead of `limit`: the condition compares `in_flight` with that attribute, so the limit in
/// force at the moment of the write counts, with no read.
pub fn take_under(
    x: &mut Expr,
    holder: &HolderId,
    expires_at: Timestamp,
    limit: u32,
    renew: bool,
    limit_attr: Option<&str>,
) {
    let attr = keys::holder_attr(holder);
    let h = x.name(&attr);
    let expiry = x.num(expires_at.as_millis());
    x.set(&attr, expiry);
    if renew {
        // The holder may have been released or reclaimed since we read it: then it must
        // compete for a slot again instead of resurrecting one without counting it.
        x.require(format!("attribute_exists({h})"));
    } else {
        let in_flight = x.name(IN_FLIGHT);
        let limit = x.num(limit);
        x.add(IN_FLIGHT, 1);
        // Re-checks the free slot the decision saw, and that the holder is not counted
        // already (two takes by one holder would count it twice).
        let free = match limit_attr {
            None => format!("attribute_not_exists({in_flight}) OR {in_flight} < {limit}"),
            // No count yet: a free slot under any limit (an override is at least 1).
            // Otherwise the override when present, else `limit`.
            Some(attr) => {
                let over = x.name(attr);
                format!(
                    "attribute_not_exists({in_flight}) \
                     OR (attribute_not_exists({over}) AND {in_flight} < {limit}) \
                     OR {in_flight} < {over}"
                )
            }
        };
        x.require(free);
        x.require(format!("attribute_not_exists({h})"));
    }
}

/// Adds the clauses that release `holder`'s slot if `held`, or that check it is still not
/// held (and leave `in_flight` alone) if not.
pub fn release(x: &mut Expr, holder: &HolderId, held: bool) {
    let attr = keys::holder_attr(holder);
    let h = x.name(&attr);
    if held {
        x.remove(&attr);
        x.add(IN_FLIGHT, -1);
        // Only the holder's own removal may decrement the count, exactly once.
        x.require(format!("attribute_exists({h})"));
    } else {
        x.require(format!("attribute_not_exists({h})"));
    }
}

/// Removes exactly the `expired` holders and uncounts them, if each one's expiry is still the
/// one that was read (a holder that renewed meanwhile keeps its slot). Returns the item as it
/// is afterwards: `ALL_NEW` if the reclaim happened, `ALL_OLD` if it did not (empty if the item
/// is gone).
pub async fn reclaim(
    client: &Client,
    table: &str,
    (pk, sk): (String, &str),
    expired: &[(HolderId, Timestamp)],
    operation: &'static str,
) -> Result<Item, StoreError> {
    let mut x = Expr::default();
    for (holder, expiry) in expired {
        let attr = keys::holder_attr(holder);
        let h = x.name(&attr);
        let was = x.num(expiry.as_millis());
        x.remove(&attr);
        x.require(format!("{h} = {was}"));
    }
    x.add(IN_FLIGHT, -(expired.len() as i64));
    tracing::debug!(pk, holders = expired.len(), "reclaiming expired slots");
    let key = keys::key(pk, sk);
    match update_item(client, table, key, x, ReturnValue::AllNew, operation).await? {
        Conditional::Written(item) | Conditional::Failed(item) => Ok(item),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn n(v: i64) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    #[test]
    fn reads_count_and_holders() {
        let item = Item::from([
            ("in_flight".to_owned(), n(2)),
            ("h#hld_a".to_owned(), n(10)),
            ("h#hld_b".to_owned(), n(20)),
            ("pk".to_owned(), AttributeValue::S("SOURCE#x".into())),
        ]);
        let t = read(&item, "test", "k").unwrap();
        assert_eq!(t.in_flight, 2);
        assert_eq!(t.holders.len(), 2);
        assert_eq!(
            t.holders[&HolderId::parse("hld_b").unwrap()],
            Timestamp::from_millis(20)
        );
        assert_eq!(
            read(&Item::new(), "test", "k").unwrap(),
            SlotTable::default()
        );
    }

    #[test]
    fn a_limit_attribute_replaces_the_limit_only_when_present() {
        let holder = HolderId::parse("hld_a").unwrap();
        let condition = |limit_attr| {
            let mut x = Expr::default();
            take_under(
                &mut x,
                &holder,
                Timestamp::from_millis(1),
                2,
                false,
                limit_attr,
            );
            let r = x.render();
            (r.condition.unwrap(), r.names.unwrap())
        };
        let (plain, _) = condition(None);
        assert_eq!(
            plain,
            "(attribute_not_exists(#in_flight) OR #in_flight < :v1) AND (attribute_not_exists(#_0))"
        );
        let (over, names) = condition(Some("limit_override"));
        assert_eq!(
            over,
            "(attribute_not_exists(#in_flight) \
             OR (attribute_not_exists(#limit_override) AND #in_flight < :v1) \
             OR #in_flight < #limit_override) AND (attribute_not_exists(#_0))"
        );
        assert_eq!(names["#limit_override"], "limit_override");
    }

    #[test]
    fn malformed_tables_are_corrupt_not_panics() {
        for item in [
            Item::from([("in_flight".to_owned(), AttributeValue::S("two".into()))]),
            Item::from([("in_flight".to_owned(), n(-1))]),
            Item::from([("h#hld_a".to_owned(), AttributeValue::S("soon".into()))]),
            Item::from([("h#".to_owned(), n(1))]),
        ] {
            assert!(matches!(
                read(&item, "test", "k"),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }
}
