"""An application's own structlog logger, passed to the client.

Settings: NUBLADO_USER, NUBLADO_TOKEN, and NUBLADO_HUB_URL or
REPERTOIRE_BASE_URL.
"""

import datetime
import logging
import os

import structlog

from nublado_sync import NubladoClient, NubladoImageByClass

username = os.environ["NUBLADO_USER"]
token = os.environ["NUBLADO_TOKEN"]
hub_url = os.environ.get("NUBLADO_HUB_URL")

# [configure]
structlog.configure(
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.JSONRenderer(),
    ],
    wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
)
logger = structlog.get_logger().bind(job="nightly")

client = NubladoClient(username, token, hub_url=hub_url, logger=logger)
# [end configure]

with client:
    client.auth_to_hub()
    if client.is_lab_stopped(log_running=True):
        client.spawn_lab(NubladoImageByClass())  # logs "Requested lab spawn"
    client.wait_for_spawn(datetime.timedelta(minutes=10))
