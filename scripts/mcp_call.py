"""Call one tool of Superset's MCP service over stdio, as an AI agent's MCP client does.

    python mcp_call.py TOOL [ARGUMENTS_JSON]

Starts `python -m superset.mcp_service` with this interpreter (so the venv's Superset), sends
`initialize`, `notifications/initialized` and `tools/call`, prints the tool's answer (the
JSON-RPC `result`) on stdout, and exits 1 if the service answers an error or ends first. The
service reads its config from SUPERSET_CONFIG_PATH and acts as the user its MCP_DEV_USERNAME
names; its own output goes to mcp.log in SUPERSET_HOME. Run by `scripts/superset.sh mcp-call`.
"""

import json
import os
import signal
import subprocess
import sys

# Starting the service (Flask, every tool's schema) takes seconds; a hung one must not hang CI.
DEADLINE_SECONDS = 300


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    tool = sys.argv[1]
    arguments = json.loads(sys.argv[2]) if len(sys.argv) == 3 else {}
    signal.alarm(DEADLINE_SECONDS)
    log_path = os.path.join(os.environ.get("SUPERSET_HOME", "."), "mcp.log")
    with open(log_path, "a") as log:
        service = subprocess.Popen(
            [sys.executable, "-m", "superset.mcp_service"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            return converse(service, tool, arguments, log_path)
        finally:
            service.stdin.close()
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()


def converse(service: subprocess.Popen, tool: str, arguments: dict, log_path: str) -> int:
    def send(message: dict) -> None:
        service.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        service.stdin.flush()

    def answer(request_id: int) -> dict:
        # Notifications and log messages may come first: read up to the answer to this request.
        for line in service.stdout:
            message = json.loads(line)
            if message.get("id") == request_id:
                return message
        raise SystemExit(f"the MCP service ended before answering; see {log_path}")

    send({"id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "rollcall-e2e", "version": "1"},
    }})
    if "error" in answer(1):
        raise SystemExit(f"initialize failed; see {log_path}")
    send({"method": "notifications/initialized"})
    send({"id": 2, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
    reply = answer(2)
    if "error" in reply:
        print(json.dumps(reply["error"]), file=sys.stderr)
        return 1
    print(json.dumps(reply["result"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
