//! Finding audit events: by the most selective index a filter names, within
//! the sequence range its time bounds map to, in either order.

use prost_types::Timestamp;

use crate::error::Result;
use crate::pb::{AuditEvent, AuditOrder};
use crate::store::records::{self, Record, Source};
use crate::store::{ReadView, keys};

use super::chain;
use super::event::{
    BY_ACTION, BY_ACTOR, BY_CATALOG, BY_PACKAGE, BY_TARGET, BY_TARGET_TYPE, BY_USER, sequence_key,
    target_key,
};

fn seconds_nanos(t: &Timestamp) -> (i64, i32) {
    (t.seconds, t.nanos)
}

/// A checked [`AuditFilter`](crate::pb::AuditFilter); empty fields do not filter. Checking a
/// filter from a client is input validation, which lives with the rest of
/// it: `Filter::parse` in `domain::validate::audit_filter`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub actor: String,
    pub target_type: String,
    pub target_id: String,
    pub action: String,
    pub catalog_id: String,
    pub access_package_id: String,
    pub user_id: String,
    pub start: Option<Timestamp>,
    pub end: Option<Timestamp>,
}

impl Filter {
    /// Every filter value in a fixed order, to bind page tokens to.
    pub fn token_parts(&self) -> Vec<String> {
        let time = |t: &Option<Timestamp>| {
            t.map(|t| format!("{}.{}", t.seconds, t.nanos))
                .unwrap_or_default()
        };
        vec![
            self.actor.clone(),
            self.target_type.clone(),
            self.target_id.clone(),
            self.action.clone(),
            self.catalog_id.clone(),
            self.access_package_id.clone(),
            self.user_id.clone(),
            time(&self.start),
            time(&self.end),
        ]
    }

    fn matches(&self, event: &AuditEvent) -> bool {
        let field = |wanted: &str, value: &str| wanted.is_empty() || wanted == value;
        field(&self.actor, &event.actor)
            && field(&self.target_type, &event.target_type)
            && field(&self.target_id, &event.target_id)
            && field(&self.action, &event.action)
            && field(&self.catalog_id, &event.catalog_id)
            && field(&self.access_package_id, &event.access_package_id)
            && field(&self.user_id, &event.user_id)
    }

    /// The narrowest index the filter names (index, value), if any.
    fn index(&self) -> Option<(&'static str, String)> {
        if !self.target_id.is_empty() {
            return Some((BY_TARGET, target_key(&self.target_type, &self.target_id)));
        }
        [
            (BY_PACKAGE, &self.access_package_id),
            (BY_USER, &self.user_id),
            (BY_ACTOR, &self.actor),
            (BY_CATALOG, &self.catalog_id),
            (BY_ACTION, &self.action),
            (BY_TARGET_TYPE, &self.target_type),
        ]
        .into_iter()
        .find(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name, value.clone()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

impl From<AuditOrder> for Order {
    fn from(order: AuditOrder) -> Self {
        match order {
            AuditOrder::NewestFirst => Order::NewestFirst,
            _ => Order::OldestFirst,
        }
    }
}

fn load_at(view: &(impl ReadView + ?Sized), sequence: u64) -> Result<Option<AuditEvent>> {
    Ok(records::load(view, &sequence_key(sequence))?)
}

/// The first sequence in [low, high) whose event is at or after `time`
/// (`high` when none is). Event times never decrease along the chain.
fn first_at_or_after(
    view: &(impl ReadView + ?Sized),
    time: &Timestamp,
    mut low: u64,
    mut high: u64,
) -> Result<u64> {
    while low < high {
        let middle = low + (high - low) / 2;
        let before = load_at(view, middle)?
            .and_then(|e| e.time)
            .is_some_and(|t| seconds_nanos(&t) < seconds_nanos(time));
        if before {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    Ok(low)
}

/// Matching events strictly beyond sequence `after` in `order`.
pub fn events<'v>(
    view: &'v (impl ReadView + ?Sized),
    filter: &'v Filter,
    order: Order,
    after: Option<u64>,
) -> Result<impl Iterator<Item = Result<AuditEvent>> + 'v> {
    let first = chain::anchor(view)?.first;
    let past_last = chain::head(view)?.sequence + 1;
    let low = match &filter.start {
        Some(start) => first_at_or_after(view, start, first, past_last)?,
        None => first,
    };
    let high = match &filter.end {
        Some(end) => first_at_or_after(view, end, first, past_last)?,
        None => past_last,
    };
    // [low, high) is the sequence range; `after` narrows it for paging.
    let (low, high) = match (order, after) {
        (Order::OldestFirst, Some(after)) => (low.max(after + 1), high),
        (Order::NewestFirst, Some(after)) => (low, high.min(after)),
        _ => (low, high),
    };
    let index = filter.index();
    let source = match &index {
        None => Source::All,
        Some((name, value)) => Source::Index {
            kind: AuditEvent::KIND,
            name,
            value,
        },
    };
    let prefix = records::source_prefix(AuditEvent::KIND, &source);
    let key_of = |sequence: u64| {
        let mut key = prefix.clone();
        key.extend_from_slice(sequence_key(sequence).as_bytes());
        key
    };
    let keys = match order {
        Order::OldestFirst => view.scan(&prefix, low.checked_sub(1).map(key_of).as_deref()),
        Order::NewestFirst => view.scan_back(&prefix, Some(&key_of(high))),
    };
    let ids = keys.map(|item| -> Result<String> { Ok(keys::last_part(&item?.0)) });
    Ok(ids
        .map(|id| -> Result<u64> { Ok(id?.parse::<u64>().unwrap_or(0)) })
        .take_while(move |sequence| match sequence {
            Ok(sequence) => (low..high).contains(sequence),
            Err(_) => true,
        })
        .filter_map(move |sequence| match sequence {
            Ok(sequence) => load_at(view, sequence).transpose(),
            Err(error) => Some(Err(error)),
        })
        .filter(move |event| event.as_ref().map_or(true, |e| filter.matches(e))))
}
