"""Waiting for a lab with a progress callback, and what a failed spawn raises.

Settings: NUBLADO_USER, NUBLADO_TOKEN, and NUBLADO_HUB_URL or
REPERTOIRE_BASE_URL.
"""

import datetime
import os
import sys

from nublado_sync import NubladoClient, NubladoImageByClass, NubladoSpawnError

username = os.environ["NUBLADO_USER"]
token = os.environ["NUBLADO_TOKEN"]
hub_url = os.environ.get("NUBLADO_HUB_URL")


def show(message):
    print(f"[{message.progress:3d}%] {message.message}")


with NubladoClient(username, token, hub_url=hub_url) as client:
    client.auth_to_hub()
    if client.is_lab_stopped():
        client.spawn_lab(NubladoImageByClass())
    try:
        client.wait_for_spawn(datetime.timedelta(minutes=10), on_progress=show)
    except NubladoSpawnError as e:  # also NubladoSpawnTimeoutError
        print(f"The lab did not start: {e}")
        print("\n".join(e.log))  # every progress message
        sys.exit(4)
