//! Loom models of the shmq algorithm live in `tests/`; build with `RUSTFLAGS="--cfg loom"`.
