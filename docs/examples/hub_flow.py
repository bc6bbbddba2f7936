"""The hub flow, step by step: log in, start a lab if needed, run code, stop it.

Settings: NUBLADO_USER, NUBLADO_TOKEN, and NUBLADO_HUB_URL (such as
https://data.example.org/nb) or, for Rubin service discovery,
REPERTOIRE_BASE_URL.
"""

import datetime
import os

from nublado_sync import NubladoClient, NubladoImageByClass

username = os.environ["NUBLADO_USER"]
token = os.environ["NUBLADO_TOKEN"]
hub_url = os.environ.get("NUBLADO_HUB_URL")  # None: service discovery

with NubladoClient(username, token, hub_url=hub_url) as client:
    client.auth_to_hub()  # 1. log in to the hub
    if client.is_lab_stopped():  # 2. is there a lab?
        client.spawn_lab(NubladoImageByClass())  # 3. ask for one (recommended image, Large)
    # 4. Wait until it is ready; also for a lab that was there: it may still be starting.
    client.wait_for_spawn(datetime.timedelta(minutes=10))
    client.auth_to_lab()  # 5. log in to the lab
    with client.lab_session() as session:  # 6. a kernel in the lab
        print(session.run_python("print(6 * 7)"), end="")  # 42
    client.stop_lab()  # 7. stop the lab, and wait until it is gone
    client.wait_for_lab_stopped(datetime.timedelta(minutes=5))
