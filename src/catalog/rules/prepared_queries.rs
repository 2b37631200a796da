//! Creating, replacing and deleting prepared queries: the checks that
//! depend on the other rows (Consul's `preparedQuerySetTxn`), and a
//! session's invalidation deleting the queries bound to it.

use super::super::prepared_query::{PreparedQuery, PreparedQueryError, PreparedQueryOp};
use super::super::tables::Tables;
use super::super::types::Index;

/// Applies one prepared query write at `index`.
pub(crate) fn apply(
    tables: &mut Tables,
    index: Index,
    op: &PreparedQueryOp,
) -> Result<(), PreparedQueryError> {
    match op {
        PreparedQueryOp::Create(q) => {
            if tables.prepared_queries.get(&q.id).is_some() {
                return Err(PreparedQueryError::Duplicate(q.id.clone()));
            }
            set(tables, index, (**q).clone(), index)
        }
        PreparedQueryOp::Update(q) => {
            let Some(old) = tables.prepared_queries.get(&q.id) else {
                return Err(PreparedQueryError::UpdateMissing(q.id.clone()));
            };
            let created = old.create_index;
            set(tables, index, (**q).clone(), created)
        }
        PreparedQueryOp::Delete(id) => {
            if tables.prepared_queries.remove(id, index) {
                Ok(())
            } else {
                Err(PreparedQueryError::DeleteMissing(id.clone()))
            }
        }
    }
}

/// Stores `q` after the checks that span rows.
fn set(
    tables: &mut Tables,
    index: Index,
    mut q: PreparedQuery,
    created: Index,
) -> Result<(), PreparedQueryError> {
    if q.id.is_empty() {
        return Err(PreparedQueryError::MissingId);
    }
    let queries = &tables.prepared_queries;
    let other = |found: Option<&PreparedQuery>| found.is_some_and(|f| f.id != q.id);
    if !q.name.is_empty() {
        if other(queries.by_name(&q.name)) {
            return Err(PreparedQueryError::NameTaken(q.name.clone()));
        }
        // A name equal to another query's ID would hijack lookups by ID.
        if other(queries.get(&q.name)) {
            return Err(PreparedQueryError::NameIsId(q.name.clone()));
        }
    } else if q.is_template() && other(queries.template_for("").filter(|t| t.name.is_empty())) {
        return Err(PreparedQueryError::CatchAllTaken);
    }
    if !q.session.is_empty() && tables.sessions.get(&q.session).is_none() {
        return Err(PreparedQueryError::InvalidSession(q.session.clone()));
    }
    q.create_index = created;
    q.modify_index = index;
    tables.prepared_queries.put(q, index);
    Ok(())
}

/// Deletes the queries bound to session `id`, which is being invalidated.
pub(crate) fn drop_session(tables: &mut Tables, index: Index, id: &str) {
    for query in tables.prepared_queries.on_session(id) {
        tables.prepared_queries.remove(&query, index);
    }
}
