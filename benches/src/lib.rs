//! Benches live in `benches/benches/`; comparison scripts in `benches/scripts/`.
