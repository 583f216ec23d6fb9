//! The PostgreSQL v3 wire protocol as Tandem needs it, with no I/O.
//!
//! Tandem forwards almost every message as raw bytes, so this module is small on purpose:
//! frame headers (tag + length) to find message boundaries, the untagged startup packets,
//! the few backend messages Tandem must read during authentication, and the few it
//! originates itself (errors, its own BackendKeyData). Every decoder here is bounds-checked
//! and returns an error instead of panicking, because every byte comes from a peer.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod startup;

pub use frame::{FrameError, FrameHeader};

/// Message tags Tandem looks at. Everything else is forwarded without a glance.
pub mod tag {
    /// Frontend: simple Query.
    pub const QUERY: u8 = b'Q';
    /// Frontend: Parse (extended protocol).
    pub const PARSE: u8 = b'P';
    /// Frontend: Execute.
    pub const EXECUTE: u8 = b'E';
    /// Frontend: Sync.
    pub const SYNC: u8 = b'S';
    /// Frontend: Terminate.
    pub const TERMINATE: u8 = b'X';
    /// Frontend: PasswordMessage / SASLInitialResponse / SASLResponse / GSSResponse.
    pub const PASSWORD: u8 = b'p';
    /// Frontend: FunctionCall.
    pub const FUNCTION_CALL: u8 = b'F';
    /// Backend: Authentication*.
    pub const AUTHENTICATION: u8 = b'R';
    /// Backend: BackendKeyData.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// Backend: ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// Backend: NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// Backend: ParameterStatus.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// Backend: ReadyForQuery.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// Backend: DataRow.
    pub const DATA_ROW: u8 = b'D';
    /// Backend: NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}
