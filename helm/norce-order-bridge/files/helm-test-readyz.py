# `helm test` check, run by the bridge image's Python: poll the bridge's /readyz through its
# Service until it answers 200 {"status": "ok"} or TIMEOUT_S passes. Standard library only.
import json
import os
import sys
import time
import urllib.error
import urllib.request

url = os.environ["READYZ_URL"]
timeout_s = float(os.environ.get("TIMEOUT_S", "120"))
deadline = time.monotonic() + timeout_s
last = "no answer yet"
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.loads(response.read(4096) or b"{}")
            if response.status == 200 and body.get("status") == "ok":
                print(f"ready: {url} answered {response.status} {body}")
                sys.exit(0)
            last = f"HTTP {response.status} {body}"
    except urllib.error.HTTPError as exc:
        last = f"HTTP {exc.code} {exc.read(4096).decode('utf-8', 'replace').strip()}"
    except (OSError, ValueError) as exc:
        last = f"{type(exc).__name__}: {exc}"
    if time.monotonic() >= deadline:
        print(f"not ready after {timeout_s:g}s: {url}: {last}", file=sys.stderr)
        sys.exit(1)
    print(f"waiting: {url}: {last}", flush=True)
    time.sleep(2)
