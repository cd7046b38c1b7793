"""The dev OIDC provider's constants that other processes need.

devidp reads its options from the command line (services/devidp/server.py);
only the names of its files live here, so dev-secrets can create them without
importing the server.
"""

from __future__ import annotations

# The provider's ES256 signing key, by name in the secrets directory.
KEY_FILE = "devidp-key.pem"
