"""The run manifest ledger: durable evidence of what each run read, judged and published."""
