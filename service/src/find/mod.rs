//! Finding events: a find's filters, order and keyset cursors and its MongoDB query
//! ([`query`]), the find across MongoDB and the Parquet archive ([`archive`]), and one event
//! by id, stored or queued ([`lookup`]); event counts over time buckets ([`histogram`]).

pub mod archive;
pub mod histogram;
pub mod lookup;
pub mod query;
