"""Every call of rubin-nublado-client, ported: the synchronous side of the porting guide.

It runs the whole flow for one user: log in, start a lab, follow the spawn,
run code, see a failure, run a notebook, stop the lab. Settings:
NUBLADO_USER, NUBLADO_TOKEN, and NUBLADO_HUB_URL or REPERTOIRE_BASE_URL
(service discovery); NUBLADO_IMAGE (class, tag or reference) picks the
image choice to spawn.
"""

import datetime
import json
import os

from nublado_sync import (
    CodeContext,
    DiscoveryClient,
    NubladoClient,
    NubladoExecutionError,
    NubladoImageByClass,
    NubladoImageByReference,
    NubladoImageByTag,
    NubladoImageClass,
    NubladoImageSize,
    SpawnProgressMessage,
)

NOTEBOOK = json.dumps(
    {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "hello",
                "metadata": {},
                "outputs": [],
                "source": "print('hello')",
            }
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
)


def make_client(username: str, token: str, hub_url: "str | None") -> NubladoClient:
    # [construct]
    if hub_url is None:
        # As upstream: the hub's URL comes from service discovery (REPERTOIRE_BASE_URL).
        client = NubladoClient(username=username, token=token, discovery_client=DiscoveryClient())
    else:
        # New: the hub's URL given directly, no discovery service needed.
        client = NubladoClient(username=username, token=token, hub_url=hub_url)
    # [end construct]
    return client


def choose_image(choice: str):
    # [images]
    by_class = NubladoImageByClass(
        image_class=NubladoImageClass.LATEST_WEEKLY, size=NubladoImageSize.Small
    )
    by_tag = NubladoImageByTag(tag="w_2026_40", size=NubladoImageSize.Medium, debug=True)
    by_reference = NubladoImageByReference(reference="ghcr.io/lsst-sqre/sciplat-lab:w_2026_40")
    # [end images]
    return {"class": by_class, "tag": by_tag, "reference": by_reference}[choice]


def show(message: SpawnProgressMessage) -> None:
    print(f"Spawn: {message.progress}% {message.message}")


def run(client: NubladoClient, image) -> None:
    # [hub]
    client.auth_to_hub()
    if client.is_lab_stopped(log_running=True):
        client.spawn_lab(image)
    # [end hub]

    # [watch]
    for message in client.watch_spawn_progress():
        print(f"Spawn: {message.progress}% {message.message}")
        if message.ready:
            break
    else:  # the stream ended without ready: the spawn failed
        raise SystemExit("The lab did not start")
    # [end watch]

    # [wait]
    client.wait_for_spawn(datetime.timedelta(minutes=10), on_progress=show)
    # [end wait]

    # [session]
    client.auth_to_lab()
    with client.lab_session(kernel_name="lsst") as session:
        output = session.run_python("print(6 * 7)", timeout=datetime.timedelta(minutes=1))
        print(output, end="")  # 42
    # [end session]

    # [errors]
    with client.lab_session() as session:
        context = CodeContext(image="w_2026_40", notebook="checks.ipynb", cell="a1b2")
        try:
            session.run_python("1 / 0", context)
        except NubladoExecutionError as e:
            print(e.status, e.context.cell)  # error a1b2
            print(e)  # alice: cell a1b2 of notebook checks.ipynb failed ...
    # [end errors]

    # [notebook]
    result = client.run_notebook(
        NOTEBOOK, kernel_name="lsst", read_timeout=datetime.timedelta(hours=1)
    )
    if result.error is not None:
        print(f"Notebook failed: {result.error.name}: {result.error.value}")
    # [end notebook]

    # [stop]
    client.stop_lab()
    client.wait_for_lab_stopped(datetime.timedelta(minutes=5))  # new
    # [end stop]


def main() -> None:
    username = os.environ["NUBLADO_USER"]
    token = os.environ["NUBLADO_TOKEN"]
    image = choose_image(os.environ.get("NUBLADO_IMAGE", "class"))
    client = make_client(username, token, os.environ.get("NUBLADO_HUB_URL"))
    # [close]
    with client:  # or call client.close() when done
        run(client, image)
    # [end close]


if __name__ == "__main__":
    main()
