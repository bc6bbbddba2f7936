"""Report a failure to Slack and Sentry, as rubin-nublado-client's exceptions do.

Settings: JUPYTER_TOKEN and JUPYTER_URL, as for quickstart_server.py;
SLACK_WEBHOOK (a Slack incoming webhook) and SENTRY_DSN, each optional:
without them the reports are printed, not sent.
"""

import json
import os

import requests

from nublado_sync import (
    CodeContext,
    NubladoError,
    open_lab_session,
    sentry_before_send,
)

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]

# [sentry]
try:
    import sentry_sdk
except ImportError:  # Sentry is optional
    sentry_sdk = None
if sentry_sdk is not None:
    # Every event for a NubladoError gets its tags, contexts and attachments.
    sentry_sdk.init(dsn=os.environ.get("SENTRY_DSN"), before_send=sentry_before_send)
# [end sentry]

with open_lab_session(url, token) as session:
    # [report]
    context = CodeContext(notebook="checks.ipynb", cell="a1b2", image="w_2026_48")
    try:
        session.run_python("1 / 0", context)
    except NubladoError as e:
        message = e.to_slack()
        print(message.message)  # Error while running `checks.ipynb` cell `a1b2`
        webhook = os.environ.get("SLACK_WEBHOOK")
        if webhook:
            requests.post(webhook, json=message.to_slack(), timeout=10).raise_for_status()
        else:
            print(json.dumps(message.to_slack(), indent=1))
        print(e.to_sentry().tags)  # {'image': 'w_2026_48', 'notebook': ...}
        if sentry_sdk is not None:
            sentry_sdk.capture_exception(e)
    # [end report]
