"""DEVELOPMENT ONLY: an SMTP server that delivers nothing and keeps every
message as a file, so that local runs and tests can read one-time codes."""
