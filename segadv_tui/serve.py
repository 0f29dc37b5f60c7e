"""``segadv-tui --serve``: the same explorer in a browser tab, through textual-serve.

textual-serve runs one explorer process per browser tab and relays its screen over a websocket. It has
no authentication: by default it listens on 127.0.0.1 only, and the way in from another machine is an
SSH tunnel, whose command line is printed at start.
"""

from __future__ import annotations

import getpass
import ipaddress
import shlex
import socket
import sys

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def public_url(host: str, port: int) -> str:
    """The address a browser uses: a wildcard listen address is reached by this machine's name."""
    name = socket.getfqdn() if host in WILDCARD_HOSTS else host
    if ":" in name:  # an IPv6 literal
        name = f"[{name}]"
    return f"http://{name}:{port}"


def instructions(host: str, port: int) -> list[str]:
    """What ``--serve`` prints before it starts: the URL, the SSH tunnel, and a warning off loopback."""
    url = public_url(host, port)
    lines = [f"segadv-tui: serving the explorer at {url}"]
    if is_loopback(host):
        lines.append(f"  from another machine: ssh -N -L {port}:127.0.0.1:{port} "
                     f"{getpass.getuser()}@{socket.getfqdn()}   then open http://127.0.0.1:{port}")
    else:
        lines.append(f"  warning: --host {host} serves the explorer to the network with no authentication: anyone "
                     f"who reaches port {port} can run it and read the data and checkpoints it opens. The default "
                     f"127.0.0.1 with an SSH tunnel keeps it private.")
    lines.append("  Ctrl+C stops the server.")
    return lines


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on (host, port), or None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def serve(host: str, port: int, arguments: list[str]) -> None:
    """Serve ``segadv-tui ARGUMENTS`` (one process per tab) on host:port until interrupted."""
    from textual_serve.server import Server

    command = shlex.join([sys.executable, "-m", "segadv_tui.launch", *arguments])
    for line in instructions(host, port):
        print(line, flush=True)
    Server(command, host=host, port=port, title="segadv-tui", public_url=public_url(host, port)).serve()
