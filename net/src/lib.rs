//! Strata's network edges, shared by the broker, the bookie, the SDK and the CLI:
//!
//! - [`server`]: accepting gRPC connections with a connection limit, TLS (optional, with
//!   client certificates when asked) whose certificate files are reloaded when they
//!   change, and the HTTP/2 limits every Strata server shares;
//! - [`client`]: gRPC channels to `http://` and `https://` URLs, with the CA to trust and
//!   an optional client certificate;
//! - [`auth`]: JWT token authentication (servers verify, clients send);
//! - [`tls`]: loading certificates and keys from PEM files, with errors naming the file.
//!
//! One crypto provider (ring, as the rest of the workspace) is used throughout.

pub mod auth;
pub mod client;
pub mod server;
pub mod tls;
