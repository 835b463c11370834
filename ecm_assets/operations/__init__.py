"""Operator actions outside a Dagster run: replay, recovery, lifecycle commands."""
