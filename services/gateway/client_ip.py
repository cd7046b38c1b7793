"""Which address a request came from.

The client address feeds the fraud limits, so it must not be something a
client can choose: a forwarding header is believed only when the gateway is
configured to sit behind a proxy and the connection really comes from one
of that proxy's networks. A header such as X-Forwarded-For lists the hops
left to right, each proxy appending the address it saw; the client is the
right-most address that is not one of our proxies. Anything before it was
written by the client and is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> IpAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    # An IPv4 client seen through an IPv6 socket is still that IPv4 client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddress:
    def __init__(self, header: str, trusted_networks: Sequence[IpNetwork]):
        self._header = header
        self._trusted = tuple(trusted_networks)

    def _trusted_hop(self, address: IpAddress) -> bool:
        return any(address in network for network in self._trusted)

    def of(self, peer: str | None, header_values: Sequence[str]) -> str:
        """The client's address, given the TCP peer and the values of the
        configured header (every occurrence, in order); "" when unknown."""
        peer_address = _address(peer or "")
        if peer_address is None:
            return ""
        if not self._header or not self._trusted_hop(peer_address):
            return str(peer_address)
        hops = [hop for value in header_values for hop in value.split(",") if hop.strip()]
        client = peer_address
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                # A hop we cannot read: trust stops here, at the last proxy.
                return str(client)
            client = address
            if not self._trusted_hop(address):
                return str(address)
        return str(client)
