"""Contracts: what a dataset promises (schema, partitions, publish mode) and what a run reads."""
