//! Not a plugin: an ordinary WASI command, which exports `wasi:cli/run` instead of Quiver's
//! `transformer` interface. Loading it must fail with a clear message.

fn main() {
    println!("hello from a command");
}
