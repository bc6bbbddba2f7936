"""What run_python returns (standard output) and what execute returns (everything).

Settings: JUPYTER_TOKEN and JUPYTER_URL, as for quickstart_server.py.
"""

import os

from nublado_sync import open_lab_session

url = os.environ.get("JUPYTER_URL", "http://127.0.0.1:8888/")
token = os.environ["JUPYTER_TOKEN"]

with open_lab_session(url, token) as session:
    # [run_python]
    code = "import sys; print('to stdout'); print('to stderr', file=sys.stderr); 6 * 7"
    print(repr(session.run_python(code)))  # 'to stdout\n'
    # [end run_python]

    # [execute]
    result = session.execute(code)
    print(result.status)  # ok
    print(repr(result.stdout))  # 'to stdout\n'
    print(repr(result.stderr))  # 'to stderr\n'
    print(result.result)  # {'text/plain': '42'}: the last expression's value
    print(repr(result.duration))  # datetime.timedelta(microseconds=...)
    # [end execute]

    # [both_streams]
    # Standard output and error together, in the order they arrived: what
    # rubin-nublado-client's run_python returns.
    result = session.execute(code)
    streams = "".join(out["text"] for out in result.outputs if out["output_type"] == "stream")
    print(repr(streams))  # 'to stdout\nto stderr\n'
    # [end both_streams]

    # [displays]
    result = session.execute("display(6 * 7)")
    print(result.displays)  # [{'text/plain': '42'}]
    print(result.result)  # None: display() returns nothing
    # [end displays]

    # [raise_on_error]
    result = session.execute("print('before'); 1 / 0", raise_on_error=False)
    print(result.status)  # error
    print(repr(result.stdout))  # 'before\n'
    print(result.ename)  # ZeroDivisionError
    print(result.evalue)  # division by zero
    print(result.error_text)  # the traceback, one string
    # [end raise_on_error]
