"""Helpers the test modules share (fixtures live in tests/conftest.py); no test module imports another."""
