"""The case-SLA domain: daily enforcement SLA metrics from landing case events."""
