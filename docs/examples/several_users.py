"""Clients for several users side by side, one per thread, sharing one DiscoveryClient.

Settings: NUBLADO_TOKEN_DIR, a directory holding one file per user, named
after the user and holding that user's token, and REPERTOIRE_BASE_URL.
"""

import datetime
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nublado_sync import DiscoveryClient, NubladoClient, NubladoError, NubladoImageByClass

discovery = DiscoveryClient()


def check(username: str, token: str) -> str:
    with NubladoClient(username, token, discovery_client=discovery) as client:
        client.auth_to_hub()
        if client.is_lab_stopped():
            client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn(datetime.timedelta(minutes=10))
        client.auth_to_lab()
        with client.lab_session() as session:
            return session.run_python("import getpass; print(getpass.getuser())")


token_dir = Path(os.environ["NUBLADO_TOKEN_DIR"])
tokens = {path.name: path.read_text().strip() for path in sorted(token_dir.iterdir())}
with ThreadPoolExecutor(max_workers=4) as pool:
    futures = {user: pool.submit(check, user, token) for user, token in tokens.items()}
    for user, future in futures.items():
        try:
            print(user, future.result().strip())
        except NubladoError as e:
            print(user, "failed:", e)
