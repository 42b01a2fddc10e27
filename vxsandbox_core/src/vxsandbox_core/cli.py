"""The ``vxsandbox`` command: run a worker on RabbitMQ, check a config, list plugins, and plugins' commands.

Core's subcommands:

- ``vxsandbox run -c worker.yaml [--amqp-url URL]`` runs the worker in the
  foreground until SIGTERM or SIGINT, then lets in-flight runs finish, acks
  them and exits 0. The broker URL comes from ``--amqp-url``, else
  ``VXSANDBOX_AMQP_URL``, else the config's ``amqp.url``, else
  ``amqp://guest:guest@127.0.0.1:5672/%2F``.
- ``vxsandbox check -c worker.yaml`` validates the config and resolves every
  name without connecting anywhere, and shows each kv resource's effective
  key quota; exit 1 with the errors.
- ``vxsandbox resources`` lists installed resource, worker and hook plugins.
- ``vxsandbox send [CONTENT] --transport-name NAME`` publishes messages to a
  running worker's ``<transport>.inbound`` as a transport would and prints
  its replies (see :mod:`vxsandbox_core.send`).

Other distributions add commands through the ``register_commands`` hook
(vxsandbox-js adds ``chat``); every command gets the same logging options,
and a command that returns a coroutine runs it on the reactor.

Logs go to stderr, one line per event (``--log-format json`` for machines).
A config file that cannot be read, is not YAML or has wrong values is one
clear message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from typing import Any

from .errors import ConfigError, split_config_errors

log = logging.getLogger("vxsandbox.cli")

ENV_AMQP_URL = "VXSANDBOX_AMQP_URL"
EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A problem the command reports in one line before exiting with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- logging -------------------------------------------------------------------------

class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        # One event, one line: a traceback is folded onto the line it belongs to.
        return super().format(record).replace("\n", " | ")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """Send Python logs to stderr, one line per event (``vxsandbox run`` adds Twisted's)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def _route_twisted_logs() -> None:
    from twisted.logger import STDLibLogObserver, globalLogBeginner
    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")],
                                    redirectStandardIO=False)


# --- commands ------------------------------------------------------------------------

#: what a command does with its parsed arguments: an exit status, or an awaitable of one
#: (``None`` is 0) that runs on the reactor
CommandFunction = Callable[[argparse.Namespace], int | None | Awaitable[int | None]]


class Commands:
    """The subcommands of ``vxsandbox``; the ``register_commands`` hook adds to it."""

    def __init__(self, subparsers: Any) -> None:
        self._subparsers = subparsers
        self.names: list[str] = []

    def add(self, name: str, run: CommandFunction, help: str, description: str | None = None
            ) -> argparse.ArgumentParser:
        """Add the subcommand ``vxsandbox NAME``; returns its parser, for its own arguments.

        :param run: called with the parsed arguments after logging is set up
            (``--log-format``, ``--log-level``: every command has them). It
            returns the exit status, or an awaitable of it: that runs on the
            Twisted reactor, which stops when it is done (or on SIGTERM/SIGINT).
            Raising :class:`CliError` prints its message and exits with its code.
        :param help: one line for ``vxsandbox --help``.
        :raises ValueError: another command has that name.
        """
        if name in self.names:
            raise ValueError(f"two plugins add the command {name!r}")
        self.names.append(name)
        parser: argparse.ArgumentParser = self._subparsers.add_parser(
            name, help=help, description=description or help, formatter_class=PlainHelpFormatter)
        # Each command gets its own option objects (argparse parents would share them), so a
        # command may change its defaults (chat logs warnings only) without changing the others'.
        parser.add_argument("--log-format", choices=("text", "json"), default="text",
                            help="stderr log lines as text (default) or JSON objects")
        parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
        parser.set_defaults(func=run)
        return parser


def run_on_reactor(command: str, work: Awaitable[int | None]) -> int:
    """Run ``work`` on the global reactor until it finishes; returns its exit status.

    SIGTERM and SIGINT stop the reactor (shutdown triggers run first); a
    :class:`CliError` is printed as one line; any other exception is logged
    and the status is 1.
    """
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    async def body(reactor: Any) -> None:
        try:
            code = await work
        except CliError as e:
            print(f"vxsandbox {command}: {e}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
        except Exception:
            log.exception("vxsandbox %s failed", command)
            raise SystemExit(EXIT_ERRORS) from None
        if code:
            raise SystemExit(code)

    _route_twisted_logs()
    try:
        task.react(lambda reactor: ensureDeferred(body(reactor)))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_ERRORS
    return EXIT_OK


# --- config files ------------------------------------------------------------------

def load_config_file(path: str) -> dict[str, Any]:
    """Read a worker config file: a YAML mapping.

    :raises CliError: missing, unreadable, not YAML or not a mapping.
    """
    import yaml
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CliError(f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise CliError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CliError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise CliError(f"config file {path} must be a YAML mapping of config keys, got "
                       f"{type(data).__name__ if data is not None else 'an empty file'}")
    return data


def amqp_url(config_amqp: Any, override: str | None) -> str:
    """The broker URL: ``--amqp-url``, then ``VXSANDBOX_AMQP_URL``, then ``amqp.url``, then the default."""
    from .brokers.amqp.url import DEFAULT_URL
    if override:
        return override
    if os.environ.get(ENV_AMQP_URL):
        return os.environ[ENV_AMQP_URL]
    if isinstance(config_amqp, dict) and config_amqp.get("url"):
        return str(config_amqp["url"])
    return DEFAULT_URL


def _distribution_of(obj: Any) -> str:
    from .registry import RESOURCES_GROUP, WORKERS_GROUP, installed
    for group in (RESOURCES_GROUP, WORKERS_GROUP):
        for entry_point in installed(group).values():
            if entry_point.loaded is obj:
                return f"{entry_point.distribution} {entry_point.version}"
    top = (getattr(obj, "__module__", "") or "").split(".")[0]
    # Editable installs are missing from packages_distributions(); their names follow the package's.
    dists = metadata.packages_distributions().get(top) or [top.replace("_", "-")]
    try:
        return f"{dists[0]} {metadata.version(dists[0])}"
    except metadata.PackageNotFoundError:
        return "not from an installed distribution"


def _class_path(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


# --- run ---------------------------------------------------------------------------

def with_worker_class(raw: dict[str, Any], worker_class: str | None) -> dict[str, Any]:
    """The config with ``--worker-class`` as its ``worker`` (old configs named it on twistd's command line).

    :raises ConfigError: the file names a different worker.
    """
    if worker_class is None:
        return raw
    if "worker" in raw and raw["worker"] != worker_class:
        raise ConfigError("worker", f"is {raw['worker']!r} in the file but --worker-class says {worker_class!r}; "
                                    "keep one of them")
    return {**raw, "worker": worker_class}


def build(raw: dict[str, Any], url_override: str | None, worker_class: str | None = None) -> tuple[Any, Any]:
    """Build the worker named by the config (or ``worker_class``) and its AMQP broker (nothing connects yet).

    :raises ConfigError: the config is invalid or names something not installed (every error found).
    """
    from .brokers.amqp.broker import AmqpBroker
    from .registry import resolve_worker
    raw = with_worker_class(raw, worker_class)
    worker_cls = resolve_worker(raw.get("worker", "sandbox"))
    config_cls = getattr(worker_cls, "CONFIG_CLASS", None)
    config = config_cls(raw) if config_cls is not None else raw
    transport = getattr(config, "transport_name", None)
    if not transport:
        raise ConfigError("transport_name", "is required to run against a broker "
                                            "(the worker consumes <transport_name>.inbound and .event)")
    broker = AmqpBroker(amqp_url(getattr(config, "amqp", None), url_override),
                        prefetch_count=getattr(config, "amqp_prefetch_count", 20),
                        connection_name=f"vxsandbox {transport} pid {os.getpid()}")
    worker = worker_cls(config, broker=broker)
    return worker, broker


async def _serve(reactor: Any, worker: Any, broker: Any) -> None:
    from twisted.internet.defer import Deferred
    from twisted.internet.error import CannotListenError

    from .observability import start_observability
    from .service import WorkerService
    service = WorkerService(worker, broker)
    stopped: Deferred[None] = Deferred()
    try:
        observer = start_observability(worker, broker)
    except CannotListenError as e:
        log.error("cannot serve metrics on metrics_host %s, metrics_port %s: %s", worker.config.get("metrics_host"),
                  worker.config.get("metrics_port"), e.socketError)
        raise SystemExit(EXIT_ERRORS) from None

    async def shutdown() -> None:
        log.info("stopping: no new messages; finishing runs in flight")
        await service.stop()
        if observer is not None:
            await observer.stop()

    def before_shutdown() -> Deferred[None]:
        # Twisted turns SIGTERM and SIGINT into reactor.stop(); the reactor keeps running
        # (children exit, replies are confirmed, acks go out) until this Deferred fires.
        from twisted.internet.defer import ensureDeferred
        d = ensureDeferred(shutdown())

        def release(result: Any) -> Any:
            if not stopped.called:
                stopped.callback(None)
            return result
        d.addBoth(release)
        return d

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    log.info("starting worker %s (%s) for transport %s on %s, prefetch %d",
             worker.config.worker, type(worker).__name__, service.transport_name,
             broker.url.safe(), broker.prefetch_count)
    try:
        await service.start()
    except Exception as e:
        if service.stopping:
            return
        log.error("worker failed to start: %s: %s", type(e).__name__, e)
        raise SystemExit(EXIT_ERRORS) from None
    log.info("running; SIGTERM or SIGINT stops gracefully")
    await stopped


def cmd_run(args: argparse.Namespace) -> Awaitable[None]:
    raw = load_config_file(args.config)
    try:
        worker, broker = build(raw, args.amqp_url, args.worker_class)
    except ConfigError as e:
        errors = split_config_errors(e)
        for error in errors[:-1]:
            print(f"vxsandbox run: {args.config}: {error}", file=sys.stderr)
        raise CliError(f"{args.config}: {errors[-1]}") from None
    from twisted.internet import reactor
    return _serve(reactor, worker, broker)


# --- check ---------------------------------------------------------------------------

def check_config(raw: dict[str, Any], url_override: str | None = None, worker_class: str | None = None,
                 warnings: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Validate a worker config without connecting: returns (what would run, every error found).

    Deprecation warnings are appended to ``warnings`` when given.
    """
    from .brokers.amqp.url import AmqpUrl
    from .config import SandboxConfig
    from .isolation import DEFAULT_ISOLATION, check_isolation, describe_isolation, describe_unreachable
    from .registry import resolve_resource, resolve_worker
    lines: list[str] = []
    errors: list[str] = []
    found_warnings: list[str] = [] if warnings is None else warnings

    def add(error: ConfigError) -> None:
        for single in split_config_errors(error):
            if str(single) not in errors:
                errors.append(str(single))

    try:
        raw = with_worker_class(raw, worker_class)
    except ConfigError as e:
        add(e)
    worker_name = raw.get("worker", "sandbox")
    try:
        worker_cls = resolve_worker(worker_name)
        lines.append(f"worker: {worker_name} -> {_class_path(worker_cls)} ({_distribution_of(worker_cls)})")
    except ConfigError as e:
        add(e)
        worker_cls = None
    config_cls = getattr(worker_cls, "CONFIG_CLASS", SandboxConfig)
    config = None
    try:
        config = config_cls(raw)
        found_warnings.extend(config.warnings)
    except ConfigError as e:
        add(e)
    # The worker's config may add resources of its own (the JS workers add 'log').
    sandbox = config.sandbox if config is not None else raw.get("sandbox")
    resolved_all = True
    if isinstance(sandbox, dict):
        for name, rconfig in sandbox.items():
            cls_name = rconfig.get("cls") if isinstance(rconfig, dict) else None
            try:
                cls = resolve_resource(cls_name, key=f"sandbox.{name}.cls")
                lines.append(f"resource {name}: {cls_name} -> {_class_path(cls)} ({_distribution_of(cls)})")
            except ConfigError as e:
                resolved_all = False
                add(e)
                continue
            options_cls = getattr(cls, "CONFIG_CLASS", None)
            if options_cls is not None:
                try:
                    options = options_cls(rconfig, prefix=f"sandbox.{name}.")
                except ConfigError as e:
                    resolved_all = False
                    add(e)
                    continue
                found_warnings.extend(options.warnings)
                # Any resource with a key quota (kv's) shows it settled: defaults and deprecated
                # synonyms applied, as the worker will enforce it.
                hard = getattr(options, "keys_per_user_hard", None)
                if hard is not None:
                    lines.append(f"  quota: keys_per_user_hard {hard}, keys_per_user_soft "
                                 f"{getattr(options, 'keys_per_user_soft', None)} (keys per sandbox_id)")
    transport = getattr(config, "transport_name", None) if config is not None else raw.get("transport_name")
    if transport:
        if config is not None:
            lines.append(f"consumes: {transport}.inbound, {transport}.event "
                         f"(prefetch {getattr(config, 'amqp_prefetch_count', 20)})")
            sends = {transport}
            for endpoint, target in getattr(config, "send_to", {}).items():
                if not isinstance(target, dict):
                    errors.append(f"config key 'send_to.{endpoint}': expected a mapping with transport_name, "
                                  f"got {target!r}")
                    continue
                sends.add(target.get("transport_name") or transport)
            lines.append("publishes: " + ", ".join(f"{t}.outbound" for t in sorted(sends)))
    else:
        errors.append("config key 'transport_name': is required to run against a broker "
                      "(the worker consumes <transport_name>.inbound and .event)")
    if config is not None:
        mode = raw.get("isolation", DEFAULT_ISOLATION)
        try:
            lines.append(describe_isolation(check_isolation(mode)))
        except ValueError as e:
            if not any("'isolation'" in error for error in errors):
                errors.append(f"config key 'isolation': {e} (got {mode!r})")
        try:
            url = AmqpUrl.parse(amqp_url(getattr(config, "amqp", None), url_override))
            lines.append(f"broker: {url.safe()}")
        except ConfigError as e:
            add(e)
        if worker_cls is not None and resolved_all and not errors:
            # Building the worker (without setting it up) runs every resource's own
            # validation and finds the executable, without connecting anything.
            try:
                worker = worker_cls(config, broker=None)
            except ConfigError as e:
                add(e)
            except Exception as e:
                errors.append(f"building the worker failed: {type(e).__name__}: {e}")
            else:
                closed = worker.unreachable_by_children()
                if closed:
                    errors.append(describe_unreachable(closed))
    return lines, errors


def cmd_check(args: argparse.Namespace) -> int:
    raw = load_config_file(args.config)
    warnings: list[str] = []
    lines, errors = check_config(raw, args.amqp_url, args.worker_class, warnings)
    for line in lines:
        print(line)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if errors:
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        print(f"{args.config}: {len(errors)} error(s)", file=sys.stderr)
        return EXIT_ERRORS
    print(f"{args.config}: OK")
    return EXIT_OK


# --- resources -----------------------------------------------------------------------

def cmd_resources(args: argparse.Namespace) -> int:
    from .registry import HOOKS_GROUP, RESOURCES_GROUP, WORKERS_GROUP, installed
    rows: list[tuple[str, str, str, str, str, str]] = []
    broken = 0
    for kind, group in (("resource", RESOURCES_GROUP), ("worker", WORKERS_GROUP), ("hooks", HOOKS_GROUP)):
        for name, entry_point in sorted(installed(group).items()):
            rows.append((kind, name, entry_point.target, entry_point.distribution, entry_point.version,
                         entry_point.error or ""))
            broken += entry_point.error is not None
    if args.json:
        print(json.dumps([dict(zip(("kind", "name", "class", "distribution", "version", "error"), r, strict=True))
                          for r in rows], indent=2))
        return EXIT_ERRORS if broken else EXIT_OK
    header = ("KIND", "NAME", "CLASS", "DISTRIBUTION", "VERSION")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)).rstrip())
        if row[5]:
            print(f"    import error: {row[5]}")
    return EXIT_ERRORS if broken else EXIT_OK


# --- entry point -----------------------------------------------------------------------

_RST_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_RST_LITERAL = re.compile(r"``([^`]+)``")


def plain_text(text: str) -> str:
    """Text for a terminal: reStructuredText roles and literals (from docstrings) without their markup."""
    # As Sphinx does, a role's target starting with ~ shows only its last component.
    text = _RST_ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return _RST_LITERAL.sub(r"\1", text)


class PlainHelpFormatter(argparse.HelpFormatter):
    """Help without the reStructuredText markup that descriptions taken from docstrings carry."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(plain_text(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))


def make_parser(pm: Any = None) -> argparse.ArgumentParser:
    """The argument parser of ``vxsandbox``: core's commands and those the plugins in ``pm`` add.

    :param pm: the plugin manager whose ``register_commands`` hooks add
        commands (default: the process-wide one).
    """
    from . import __version__
    parser = argparse.ArgumentParser(prog="vxsandbox", description=__doc__.splitlines()[0] if __doc__ else None,
                                     formatter_class=PlainHelpFormatter)
    parser.add_argument("--version", action="version", version=f"vxsandbox-core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    commands = Commands(sub)
    run = commands.add("run", cmd_run, help="run a worker against RabbitMQ (foreground)")
    run.add_argument("-c", "--config", required=True, help="worker config YAML file")
    run.add_argument("--amqp-url", help=f"broker URL (default: ${ENV_AMQP_URL}, then the config's amqp.url)")
    run.add_argument("--worker-class", metavar="CLASS",
                     help="worker to run when the config names none (old configs named it on the twistd "
                          "command line), e.g. vxsandbox.worker.StandaloneJsFileSandbox or js-standalone")
    check = commands.add("check", cmd_check, help="validate a worker config without starting it")
    check.add_argument("-c", "--config", required=True, help="worker config YAML file")
    check.add_argument("--amqp-url", help="broker URL to check instead of the config's")
    check.add_argument("--worker-class", metavar="CLASS", help="worker to check the config for, as for run")
    res = commands.add("resources", cmd_resources, help="list installed resource, worker and hook plugins")
    res.add_argument("--json", action="store_true", help="print JSON instead of a table")
    from . import send
    send.add_arguments(commands.add("send", send.run_command, help="publish messages to a running worker "
                                    "over RabbitMQ and print its replies", description=send.DESCRIPTION))
    if pm is not None:
        pm.hook.register_commands(commands=commands)
    parser.set_defaults(commands=commands.names)
    return parser


def _plugin_manager() -> Any:
    """The process-wide plugin manager, or None (after saying why) when a plugin is broken."""
    from .plugins import get_plugin_manager
    try:
        return get_plugin_manager()
    except ConfigError as e:
        # Core's own commands still work: `resources` shows the broken plugin and `run` refuses it.
        print(f"vxsandbox: plugin commands unavailable: {e}", file=sys.stderr)
        return None


def _missing_command(name: str) -> str | None:
    """What to install for a well-known command that no installed plugin added."""
    from .registry import COMMANDS_GROUP, provider_of
    dist = provider_of(COMMANDS_GROUP, name)
    if dist is None:
        return None
    hint = f"vxsandbox {name} comes from {dist}: pip install {dist}"
    if os.environ.get("VXSANDBOX_PLUGINS") is not None:
        hint += " (or add its plugin to VXSANDBOX_PLUGINS)"
    return hint


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``vxsandbox``; returns (or exits with) the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser(_plugin_manager())
    known = parser.get_default("commands")
    if args_list and not args_list[0].startswith("-") and args_list[0] not in known:
        hint = _missing_command(args_list[0])
        if hint is not None:
            print(hint, file=sys.stderr)
            return _exit(EXIT_USAGE, argv)
    args = parser.parse_args(args_list)
    setup_logging(args.log_format, args.log_level)
    try:
        result = args.func(args)
        code = run_on_reactor(args.command, result) if inspect.isawaitable(result) else int(result or 0)
    except CliError as e:
        print(f"vxsandbox {args.command}: {e}", file=sys.stderr)
        code = e.exit_code
    return _exit(code, argv)


def _exit(code: int, argv: Sequence[str] | None) -> int:
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    # Under ``python -m`` this file is ``__main__``, a second copy of the module: run the imported one,
    # so a command module's ``from .cli import CliError`` is the class main() catches.
    from vxsandbox_core.cli import main as imported_main
    imported_main()
