//! Volume API handler tests.
