//! infragraph: an infrastructure inventory and dependency graph.
//!
//! Modules: `model` (domain types), `store` (the database), `graph` (the
//! in-memory snapshot and impact analysis, no IO), `api` (GraphQL over axum),
//! `config`, `scheduler` (collectors inside `serve`), `cli`.

pub mod model;
pub mod store;
