"""Training on several machines: the host map, this host's place in it, and the hosts' check-in.

The map is the seed write-up's JSON object of host -> processes (GPUs) to use there, in node
order (the first host is node 0 and holds the rendezvous)::

    {"gpu-a.example.com": 1, "gpu-b.example.com": 3}

torchrun's c10d rendezvous already lets each node bring its own ``--nproc-per-node``;
:mod:`train.launch` reads the map and starts torchrun with this host's counts. What the seed
lists as its hangs (a host left out, counts that disagree, a host that never comes) are caught
here before any training process starts: :func:`read_host_map` and :func:`find_this_host`
reject a bad map, and :func:`check_in` has every host announce itself (and the map it read) in a
small key-value store on the first host, so a host that never arrives is named after
``timeout_s`` instead of leaving the others waiting forever.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
CHECK_IN_POLL_S = 0.2


class HostMapError(ValueError):
    """The host map is wrong: nothing was started."""


class RendezvousTimeout(RuntimeError):
    """Some hosts of the map never checked in; ``missing`` names them."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class HostMap:
    """Host -> processes, in node order (JSON object order)."""

    processes: dict[str, int]
    source: str = "hosts.json"

    @property
    def hosts(self) -> list[str]:
        return list(self.processes)

    @property
    def world_size(self) -> int:
        return sum(self.processes.values())

    @property
    def rendezvous_host(self) -> str:
        return self.hosts[0]

    def node_rank(self, host: str) -> int:
        return self.hosts.index(host)

    def describe(self) -> str:
        return ", ".join(f"{host}: {count}" for host, count in self.processes.items())


def parse_host_map(payload, source: str = "hosts.json") -> HostMap:
    """A :class:`HostMap` from the decoded JSON; :class:`HostMapError` says what is wrong."""
    if not isinstance(payload, dict):
        raise HostMapError(f"{source}: expected a JSON object of host -> processes, e.g. "
                           '{"gpu-a.example.com": 1, "gpu-b.example.com": 3}')
    if not payload:
        raise HostMapError(f"{source}: names no host")
    processes: dict[str, int] = {}
    for host, count in payload.items():
        if not host.strip() or host != host.strip():
            raise HostMapError(f"{source}: host name {host!r} is empty or has spaces around it")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise HostMapError(f"{source}: {host}: processes must be a whole number >= 1, got {count!r} "
                               "(leave a host that runs nothing out of the map)")
        processes[host] = count
    loopback = [host for host in processes if is_loopback(host)]
    if loopback and len(loopback) < len(processes):
        raise HostMapError(f"{source}: {', '.join(loopback)} only reaches this machine, but the map also names "
                           f"other machines; name every host by an address the others can reach")
    return HostMap(processes, source)


def read_host_map(path: str | Path) -> HostMap:
    """Read the map at ``path`` (duplicate host names, bad JSON and bad counts are errors)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HostMapError(f"--hosts {path}: no such file") from None
    except UnicodeDecodeError as err:
        raise HostMapError(f"--hosts {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None

    def no_duplicates(pairs):
        seen = [key for key, _ in pairs]
        twice = sorted({key for key in seen if seen.count(key) > 1})
        if twice:
            raise HostMapError(f"{path}: host {', '.join(twice)} is listed more than once")
        return dict(pairs)

    try:
        payload = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as err:
        raise HostMapError(f"{path}: not valid JSON: line {err.lineno} column {err.colno}: {err.msg}") from None
    return parse_host_map(payload, str(path))


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _addresses(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return set()


def _is_local_address(address: str) -> bool:
    """An address is this machine's when a socket can bind to it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
        return True
    except OSError:
        return False


def names_this_machine(host: str) -> bool:
    """True when ``host`` (a name or an address) is this machine."""
    own = {socket.gethostname().lower(), socket.getfqdn().lower()}
    if host.lower() in own or is_loopback(host):
        return True
    return any(_is_local_address(address) for address in _addresses(host))


def find_this_host(host_map: HostMap, given: str | None = None) -> str:
    """Which entry of the map is this machine: ``given`` (``--host``), else the one entry naming it."""
    if given is not None:
        if given not in host_map.processes:
            raise HostMapError(f"{host_map.source} has no entry {given!r} (hosts: {', '.join(host_map.hosts)})")
        return given
    found = [host for host in host_map.hosts if names_this_machine(host)]
    if not found:
        raise HostMapError(
            f"this machine ({socket.gethostname()}) is not in {host_map.source} (hosts: {', '.join(host_map.hosts)}): "
            "add it, or pass --host with its entry")
    if len(found) > 1:
        raise HostMapError(f"several entries of {host_map.source} name this machine ({', '.join(found)}): "
                           "pass --host with the one to run as")
    return found[0]


# --- check-in ----------------------------------------------------------------------------
def _port_open(host: str, port: int, deadline: float) -> bool:
    """Wait until ``host:port`` accepts a connection (True) or ``deadline`` passes (False).

    Probed with plain sockets before the store client connects: torch's client logs a C++ stack
    trace on every failed attempt, where waiting for a host that is not up yet is normal.
    """
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(CHECK_IN_POLL_S)


def _key(host: str) -> str:
    return f"bertflow/host/{host}"


def check_in(host_map: HostMap, this_host: str, port: int, timeout_s: float):
    """Announce ``this_host`` on the first host's store and wait until every host has; returns the store.

    The first host serves the store on ``port`` (keep the returned object alive while the job
    runs: the others may still be reading it). A host whose map differs from ours, or hosts that
    have not checked in after ``timeout_s``, raise :class:`HostMapError` /
    :class:`RendezvousTimeout` naming them.
    """
    from torch.distributed import TCPStore

    first = host_map.rendezvous_host
    serving = this_host == first
    deadline = time.monotonic() + timeout_s
    try:
        if not serving and not _port_open(first, port, deadline):
            raise TimeoutError(f"{first}:{port} refused or did not answer")
        store = TCPStore(first, port, is_master=serving, timeout=timedelta(seconds=max(timeout_s, 1.0)),
                         wait_for_workers=False)
    except (RuntimeError, TimeoutError, ValueError) as err:  # DistNetworkError / DistStoreError are RuntimeErrors
        if serving:
            raise HostMapError(f"cannot serve the check-in on {first}:{port} ({err}); is the port in use? "
                               "pick another with --port") from None
        raise RendezvousTimeout(
            f"rendezvous timed out after {timeout_s:.0f} s: {first} (node 0, the rendezvous host) never answered "
            f"on port {port}; start the launcher there too, or check that this host can reach it",
            [first]) from None
    mine = json.dumps(host_map.processes)
    try:
        return _compare_maps(store, host_map, this_host, mine, serving, deadline, timeout_s, port)
    except RuntimeError as err:  # DistNetworkError: node 0 went away mid-check-in
        if isinstance(err, RendezvousTimeout):
            raise
        raise RendezvousTimeout(f"lost contact with {first} (node 0) during the check-in: {err}", [first]) from None


def _wait_for_keys(store, keys: list[str], deadline: float) -> list[str]:
    """Poll until every key is set or ``deadline`` passes; returns the keys still missing."""
    while True:
        missing = [key for key in keys if not store.check([key])]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(CHECK_IN_POLL_S)


def _compare_maps(store, host_map: HostMap, this_host: str, mine: str, serving: bool, deadline: float,
                  timeout_s: float, port: int):
    store.set(_key(this_host), mine)
    missing_keys = _wait_for_keys(store, [_key(host) for host in host_map.hosts], deadline)
    if missing_keys:
        missing = [host for host in host_map.hosts if _key(host) in missing_keys]
        raise RendezvousTimeout(
            f"rendezvous timed out after {timeout_s:.0f} s: {len(missing)} of {len(host_map.hosts)} hosts never "
            f"checked in: {', '.join(f'{host} ({host_map.processes[host]} processes)' for host in missing)}; "
            "start `python -m train.launch --hosts ...` there, or check that it can reach "
            f"{host_map.rendezvous_host}:{port}", missing)
    maps = {host: store.get(_key(host)).decode() for host in host_map.hosts}
    store.set(f"bertflow/read/{this_host}", "1")
    differing = [host for host, theirs in maps.items() if theirs != mine]
    if differing:
        if serving:  # keep the store up until the others have read the maps too (they report the same)
            _wait_for_keys(store, [f"bertflow/read/{host}" for host in host_map.hosts], time.monotonic() + 10)
        raise HostMapError(
            "the hosts read different maps: " + "; ".join(f"{host} has {maps[host]}" for host in differing)
            + f"; this host ({this_host}) has {mine}: give every host the same hosts.json")
    return store
