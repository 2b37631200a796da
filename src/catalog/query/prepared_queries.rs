//! Reading prepared queries: one by ID, all, and the query a name
//! resolves to (Consul's `PreparedQueryResolve`).

use super::super::prepared_query::PreparedQuery;
use super::super::state::State;
use super::super::types::Index;

impl State {
    /// Index of the last change to any prepared query (at least 1, as
    /// Consul's indexes).
    pub fn prepared_queries_index(&self) -> Index {
        self.tables.prepared_queries.index().max(1)
    }

    /// One prepared query by ID.
    pub fn prepared_query(&self, id: &str) -> Option<&PreparedQuery> {
        self.tables.prepared_queries.get(id)
    }

    /// Every prepared query, by ID.
    pub fn prepared_queries(&self) -> impl Iterator<Item = &PreparedQuery> {
        self.tables.prepared_queries.rows().values()
    }

    /// The query `id_or_name` names, unrendered: the query of that ID,
    /// else the one of that name (any case), else the template with the
    /// longest name prefixing it, the catch-all last.
    pub fn resolve_prepared_query(&self, id_or_name: &str) -> Option<&PreparedQuery> {
        let t = &self.tables.prepared_queries;
        t.get(id_or_name)
            .or_else(|| t.by_name(id_or_name))
            .or_else(|| t.template_for(id_or_name))
    }
}
