"""Finding the hub through Rubin service discovery, with one DiscoveryClient shared.

Settings: REPERTOIRE_BASE_URL (the discovery service), NUBLADO_USER and
NUBLADO_TOKEN.
"""

import os

from nublado_sync import DiscoveryClient, NubladoClient

username = os.environ["NUBLADO_USER"]
token = os.environ["NUBLADO_TOKEN"]

discovery = DiscoveryClient()  # reads REPERTOIRE_BASE_URL at the first lookup
with NubladoClient(username, token, discovery_client=discovery) as client:
    print(client.hub_url)  # such as https://data.example.org/nb/
