"""Identity: proves who a person is and issues a pseudonymous signer credential."""
