"""zarray reliability suite: fuzzing, load, faults, memory and transport security."""
