"""Run a short check in a user's Nublado lab, starting the lab if needed.

Settings come from the environment: NUBLADO_HUB_URL (or REPERTOIRE_BASE_URL
for service discovery), NUBLADO_USER and NUBLADO_TOKEN_FILE.
"""

import datetime
import os
import sys
from pathlib import Path

from nublado_sync import (
    NubladoClient,
    NubladoError,
    NubladoExecutionError,
    NubladoImageByClass,
    NubladoImageClass,
    NubladoImageSize,
    NubladoSpawnError,
    NubladoTimeoutError,
    SpawnProgressMessage,
)

CODE = """
import platform
print(f"Python {platform.python_version()} on {platform.node()}")
"""


def show_progress(message: SpawnProgressMessage) -> None:
    print(f"[{message.progress:3d}%] {message.message}", file=sys.stderr)


def main() -> int:
    hub_url = os.environ.get("NUBLADO_HUB_URL")  # None: use service discovery
    username = os.environ["NUBLADO_USER"]
    token = Path(os.environ["NUBLADO_TOKEN_FILE"]).expanduser().read_text().strip()
    image = NubladoImageByClass(NubladoImageClass.RECOMMENDED, NubladoImageSize.Medium)

    with NubladoClient(username, token, hub_url=hub_url) as client:
        spawned = False
        try:
            client.auth_to_hub()
            if client.is_lab_stopped():
                client.spawn_lab(image)
                spawned = True
            # Also right when the lab was already there: for a running lab
            # the hub answers at once, and a lab still starting is waited for.
            client.wait_for_spawn(datetime.timedelta(minutes=10), on_progress=show_progress)
            client.auth_to_lab()
            with client.lab_session("nightly-check") as session:
                output = session.run_python(CODE, timeout=datetime.timedelta(minutes=5))
            print(output, end="")
        except NubladoTimeoutError as e:  # the spawn or the code took too long
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 3
        except NubladoSpawnError as e:
            print(f"The lab did not start: {e}", file=sys.stderr)
            print("\n".join(e.log), file=sys.stderr)
            return 4
        except NubladoExecutionError as e:
            print(e, file=sys.stderr)
            return 1
        except NubladoError as e:
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 5
        finally:
            # Stop the lab this script started, also after a failure, and
            # wait until the hub is done. A failure here must not hide the
            # one that matters, so it is only reported.
            if spawned:
                try:
                    client.stop_lab()
                    client.wait_for_lab_stopped(datetime.timedelta(minutes=5))
                except NubladoError as e:
                    print(f"Could not stop the lab: {e}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
