//! cloister-policy
