"""The publish protocol: stage, judge, then make a run's owned partitions visible atomically."""
