//! Measuring tools for `scripts/bench.sh` and criterion benchmarks of the
//! issuance path (`cargo bench -p ward-benches`). Nothing here ships in the
//! `ward` binary.
