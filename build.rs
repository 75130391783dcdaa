//! Rebuilds the crate when a built-in phone model or template changes: they
//! are embedded with `include_dir!`, which cargo does not track by itself.

fn main() {
    println!("cargo:rerun-if-changed=phone-models");
    println!("cargo:rerun-if-changed=templates");
}
