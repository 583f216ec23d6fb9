//! The wire: bytes between the client, Tandem and the server.
//!
//! Everything on the hot path below the session lives here: [`protocol`] turns bytes into
//! frames and back (no I/O), [`stream`] and [`tls`] are the sockets ([`verify_full`] checks
//! the server as libpq does), [`upstream`] opens the
//! connection to the real server, and [`cancel`] routes a client's CancelRequest to the
//! server backend it belongs to. Nothing here knows about rules.

pub mod cancel;
pub mod protocol;
pub mod stream;
pub mod tls;
pub mod upstream;
pub mod verify_full;
