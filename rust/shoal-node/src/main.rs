//! The `shoal-node` binary.

fn main() {
    std::process::exit(shoal_node::main_with_args(std::env::args().skip(1).collect()));
}
