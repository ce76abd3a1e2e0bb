//! Umbra host library.
