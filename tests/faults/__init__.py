"""The fault matrix (RELIABILITY.md 5.2) as one suite run on every backend: placeholder."""
