//! infragraph: an infrastructure inventory and dependency graph.
//!
//! Modules: `model` (domain types), `store` (the database), `graph` (the
//! in-memory snapshot and impact analysis, no IO), `api` (GraphQL over axum),
//! `app` (shared state: store + current graph), `collector` (configured
//! collectors), `config` (the serve config file), `scheduler`, `cli`.

pub mod agent;
pub mod api;
pub mod app;
pub mod cli;
pub mod collector;
pub mod config;
pub mod diagram;
pub mod generate;
pub mod graph;
pub mod incident;
pub mod model;
pub mod scheduler;
pub mod store;

/// mimalloc instead of glibc's malloc: loading a million resources and
/// five million relations is mostly small allocations made on one thread
/// and freed on another, where glibc's arenas spend their time
/// consolidating (see ARCHITECTURE.md, session 25).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
