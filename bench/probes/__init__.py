"""Probes of broker behaviour that choreograph's broker profiles and README quote (run one with
`python -m bench.probes.<name>`); not part of `make bench`."""
