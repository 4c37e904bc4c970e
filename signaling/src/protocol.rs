//! Protocol v1 wire types: `courier_protocol`, under the name the server's modules use.
pub use courier_protocol::*;
