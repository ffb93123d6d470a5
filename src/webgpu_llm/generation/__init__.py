"""Generation: sampling settings, the decode loop with its read-back ring, stop conditions."""
