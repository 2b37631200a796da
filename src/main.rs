//! The `trellis` binary (wired up once the agent lands).
fn main() {}
