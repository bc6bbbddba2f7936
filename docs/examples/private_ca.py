"""A hub behind a private certificate authority: verify= names its CA bundle.

Settings: NUBLADO_CA_BUNDLE (a PEM file), NUBLADO_USER, NUBLADO_TOKEN and
NUBLADO_HUB_URL.
"""

import os

from nublado_sync import NubladoClient

username = os.environ["NUBLADO_USER"]
token = os.environ["NUBLADO_TOKEN"]
hub_url = os.environ.get("NUBLADO_HUB_URL", "https://nb.internal.example/nb")
ca_bundle = os.environ.get("NUBLADO_CA_BUNDLE", "/etc/pki/internal-ca.pem")

with NubladoClient(username, token, hub_url=hub_url, verify=ca_bundle) as client:
    client.auth_to_hub()  # the hub, the lab and the kernel WebSocket all trust ca_bundle
    print(f"Logged in to {client.hub_url}")
