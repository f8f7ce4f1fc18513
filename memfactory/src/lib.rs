//! MemFactory facade.
