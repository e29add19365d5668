//! weft's benchmarks. The criterion micro-benchmarks live in `benches/`;
//! run them with `cargo bench -p weft-benches`.
