"""Benchmarks as a library: `pcsim bench` and the scripts in benchmarks/ measure with these."""
