"""The HTTP gateway: the JSON API, the live counter and the web page, in
front of the identity, signing and tally gRPC services."""
