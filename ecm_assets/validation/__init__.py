"""Quality gate: judge staged output before anything is published."""
