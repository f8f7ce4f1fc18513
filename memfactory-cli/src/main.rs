//! memfactory CLI
fn main() {}
