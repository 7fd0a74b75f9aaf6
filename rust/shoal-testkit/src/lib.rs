//! Shoal's shared test support (a dev-dependency of the other crates, never a normal one): one seeded
//! [`Rng`], random test vectors, and a [`TempDir`] removed on drop. It depends on nothing, so a crate that
//! keeps its normal dependencies small (shoal-core) can use it freely.

mod rng;
mod temp_dir;
mod vectors;

pub use rng::Rng;
pub use temp_dir::TempDir;
pub use vectors::normalize;
pub use vectors::random_unit_vectors;
pub use vectors::random_vectors;
