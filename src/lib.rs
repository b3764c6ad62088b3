//! muxcast: a live media server. Data flows one way: ingest → media → mux → stream → server.

pub mod app;
pub mod config;
pub mod fuzzing;
pub mod ingest;
pub mod media;
pub mod mux;
pub mod server;
pub mod stream;
