//! What Ward's sidecar (`ward proxy`) and edge gateway share, so that
//! neither copies the other: the listener (accept loop, handshake budget,
//! connections that end when their caller stops being trusted, drain),
//! strict HTTP validation, path canonicalisation, the authorization hook
//! (a typed [`authz::Permit`] that forwarding requires, or a
//! [`authz::Denial`] that says why), forwarding and pools, opaque TCP, and
//! telemetry with one record per call.
//!
//! Roles compose these pieces; configuration stays with the role.

pub mod authz;
pub mod body;
pub mod connect;
pub mod explain;
pub mod forward;
pub mod framing;
pub mod inbound;
pub mod listener;
pub mod path;
pub mod strict;
pub mod tcp;
pub mod telemetry;
