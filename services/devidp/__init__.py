"""DEVELOPMENT ONLY: a local OpenID Connect provider that issues ID tokens for
named test personas, so the system runs without a national provider.
Never configure it as a trusted issuer in production."""
