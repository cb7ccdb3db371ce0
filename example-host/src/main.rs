//! `fusion-host`, the device binary.

mod e57las;

fn main() {}
