"""The petition catalogue: petitions, their state and thresholds, stored in
Cassandra. Signing writes it; signing and tally read it."""
