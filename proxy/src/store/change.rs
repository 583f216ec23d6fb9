//! Changing the rule store: the admin console's and the CLI's SET/ADD/DROP RULE, validated.
//!
//! (Owned by the admin work; see [`apply`].)
