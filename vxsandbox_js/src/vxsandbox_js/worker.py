"""The JavaScript sandbox workers: ``js``, ``js-file`` and ``js-standalone``, each run on Node.js.

Each run spawns ``node [hardening flags] runner.js`` (the runner ships with
this package), the ``js`` resource sends it the app's code at sandbox init,
and the app's ``api.done()`` (``js.done``) ends the run successfully.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
from collections.abc import Hashable
from typing import Any, ClassVar, cast

from twisted.internet.defer import Deferred, succeed

from vxsandbox_core.api import SandboxApi
from vxsandbox_core.config import Field, SandboxConfig, positive, string_list
from vxsandbox_core.errors import ConfigError
from vxsandbox_core.isolation import effective_isolation
from vxsandbox_core.message import Message
from vxsandbox_core.process import SandboxChild, SandboxResult
from vxsandbox_core.protocol import make_command
from vxsandbox_core.rlimits import MiB
from vxsandbox_core.worker import Sandbox

from .node import GC_FLAGS, NodeVersion, find_node, hardening_flags, node_version, runner_files, runner_path
from .preload import find_requires
from .reads import app_reads, app_source
from .resource import JsSandboxResource
from .snapshot import EAGER_COMPILE, Snapshot, SnapshotStore, snapshot_flags

log = logging.getLogger("vxsandbox.worker")

#: rlimits a Node.js child starts under, measured on Node 20.20 (see the README): it needs
#: about 800 MiB of address space (dies of SIGTRAP at 600 MiB, unreliable at 750) and 19 file
#: descriptors for the runner under the permission model (a bare node segfaults at 17); the V8
#: heap itself is bounded by ``max_old_space_size``.
NODE_RLIMITS: dict[str, int] = {
    "RLIMIT_CORE": 1 * MiB,
    "RLIMIT_CPU": 60,
    "RLIMIT_FSIZE": 1 * MiB,
    "RLIMIT_DATA": 256 * MiB,
    "RLIMIT_STACK": 1 * MiB,
    "RLIMIT_RSS": 10 * MiB,
    "RLIMIT_NOFILE": 32,
    "RLIMIT_MEMLOCK": 64 * 1024,
    "RLIMIT_AS": 1024 * MiB,
}

#: the least address space Node.js starts in reliably (measured on Node 20.20, see NODE_RLIMITS)
NODE_MIN_ADDRESS_SPACE = 800 * MiB

#: MiB of V8 old space an app may use unless ``max_old_space_size`` says otherwise
DEFAULT_MAX_OLD_SPACE_SIZE = 64

#: environment every Node.js child gets unless the config's ``env`` sets the same name. glibc
#: gives a thread that meets another in malloc an arena of its own, 64 MiB of address space each;
#: node's GC and libuv threads, more so on a loaded machine, made up to five of them while a
#: 20 MiB message was read, about 1.15 GiB of address space in all, so V8's allocations for the
#: message failed against RLIMIT_AS and the child aborted. Two arenas: about 870 MiB (measured).
NODE_ENV: dict[str, str] = {"MALLOC_ARENA_MAX": "2"}



def _optional_string_list(value: list[Any] | None) -> list[str] | None:
    return None if value is None else string_list(value)


class JsSandboxConfig(SandboxConfig):
    """Config of the ``js`` worker: the generic options plus the app and the Node.js hardening."""

    javascript: str | None
    app_context: str | None
    executable: str | None
    args: list[str]
    path: str | None
    sandbox_id: str | None
    timeout: float
    logging_resource: str | None
    max_old_space_size: int | None
    node_permissions: bool
    allow_fs_read: list[str]
    preload: list[str] | None
    snapshot: bool | None

    fields: ClassVar[tuple[Field, ...]] = (
        Field("javascript", (str,), "the app's JavaScript source"),
        Field("app_context", (str, type(None)),
              "trusted JavaScript expression giving extra globals for the app, e.g. '{require: require}'",
              None),
        Field("executable", (str, type(None)),
              "the node program (default: node on PATH, else the usual install locations)", None),
        Field("args", (list,), "arguments for node; when set they replace the runner script and every "
              "hardening flag (the operator takes over)", list, string_list),
        Field("logging_resource", (str, type(None)),
              "resource that receives the app's log lines and errors (a 'log' resource is added when absent)",
              "log"),
        Field("max_old_space_size", (int, type(None)),
              "MiB of V8 heap the app may use (node's --max-old-space-size); null for V8's default",
              DEFAULT_MAX_OLD_SPACE_SIZE, positive),
        Field("node_permissions", (bool,),
              "run under Node's permission model where the node version has it (Node 20 and newer)", True),
        Field("allow_fs_read", (list,), "extra files or directories the app may read under the permission model",
              list, string_list),
        Field("preload", (list, type(None)),
              "modules every child requires as the app would, before its first message (spares too); "
              "null: the app's literal require('...') calls, found without running it, when app_context "
              "mentions require; [] for none", None, _optional_string_list),
        Field("snapshot", (bool, type(None)),
              "start children from a V8 startup snapshot holding the preload modules already loaded, which "
              "the worker makes in the children's jail (Node 20's --build-snapshot); children start plainly "
              "until it is ready, or when it cannot be made. null: wherever one can be made (Node 20 or "
              "newer, isolation bwrap, modules to preload), saying why not at info level; true: the same, "
              "saying why not as a warning; false: never", None),
    )

    def __init__(self, raw: dict[str, Any] | None = None, prefix: str = "") -> None:
        raw = dict(raw or {})
        sandbox = raw.get("sandbox", {})
        # vumigo_v02 aborts a run whose log.info request fails, so a JS app always has a log resource.
        if isinstance(sandbox, dict) and "log" not in sandbox:
            raw["sandbox"] = {**sandbox, "log": {"cls": "log"}}
        super().__init__(raw, prefix)

    def validate(self) -> None:
        """Drop ``args`` that start Vumi's own ``sandboxer.js`` (this worker runs its runner instead)."""
        super().validate()
        if any(os.path.basename(arg) == "sandboxer.js" for arg in self.args):
            self.warn(f"config key {self.prefix + 'args'!r} is deprecated when it starts Vumi's sandboxer.js "
                      f"({self.args!r}): ignored, the JavaScript workers run their own runner")
            self.args = []
        address_space = self.rlimits.get(resource.RLIMIT_AS)
        if address_space is not None and address_space[0] < NODE_MIN_ADDRESS_SPACE:
            # Old configs were written for Node 4, which started in 256 MiB; Node 20 dies of SIGTRAP there
            # on every message. Memory stays bounded by RLIMIT_DATA and max_old_space_size.
            raised = NODE_RLIMITS["RLIMIT_AS"]
            self.warn(f"config key {self.prefix + 'rlimits.RLIMIT_AS'!r} of {address_space[0] // MiB} MiB is "
                      f"deprecated: Node.js 20 needs about {NODE_MIN_ADDRESS_SPACE // MiB} MiB of address space "
                      f"to start, so it is raised to {raised // MiB} MiB (memory stays bounded by RLIMIT_DATA "
                      "and max_old_space_size)")
            self.rlimits[resource.RLIMIT_AS] = (raised, max(raised, address_space[1]))


class JsFileSandboxConfig(JsSandboxConfig):
    """Config of the ``js-file`` worker: the app comes from ``javascript_file``."""

    javascript_file: str

    fields: ClassVar[tuple[Field, ...]] = (
        Field("javascript", (str, type(None)), "not used by this worker; see javascript_file", None),
        Field("javascript_file", (str,), "path of the file holding the app's JavaScript"),
    )

    def validate(self) -> None:
        """Check that ``javascript_file`` is a file."""
        super().validate()
        if not os.path.isfile(self.javascript_file):
            raise ConfigError(self.prefix + "javascript_file", f"{self.javascript_file!r} is not a file")
        self.javascript_file = os.path.abspath(self.javascript_file)


def js_config(api: SandboxApi) -> JsSandboxConfig:
    """A run's config, typed as the JavaScript workers' config it always is."""
    return cast(JsSandboxConfig, api.config)


class JsSandbox(Sandbox):
    """Runs a JavaScript app on Node.js (worker name ``js``); the app is the config's ``javascript``."""

    CONFIG_CLASS: ClassVar[type[SandboxConfig]] = JsSandboxConfig
    DEFAULT_RLIMITS: ClassVar[dict[str, int]] = NODE_RLIMITS

    config: JsSandboxConfig

    #: the startup snapshots (unless ``snapshot: false``), made from setup on
    snapshots: SnapshotStore | None = None

    async def setup(self) -> None:
        """Set up as every worker does, and start making the startup snapshot (unless ``snapshot: false``)."""
        if self.config.snapshot is not False and not self.config.args:
            # Asked for by name, what stops it is a warning; by default, a note.
            level = logging.WARNING if self.config.snapshot else logging.INFO
            isolation = effective_isolation(self.config.isolation)
            if self.node_version.major < 20:
                log.log(level, "snapshot: node %s cannot make startup snapshots of the runner (Node 20 or newer "
                        "can); children start without one", self.node_version)
            elif isolation != "bwrap":
                # The builder runs the modules' top-level code without Node's permission model (a
                # snapshot made under it cannot start; children from it run under it), so only the
                # jail may hold it.
                log.log(level, "snapshot: startup snapshots are made only under isolation bwrap (effective "
                        "isolation here: %s); children start without one", isolation)
            else:
                try:
                    self.snapshots = SnapshotStore(self)
                except OSError as e:
                    log.warning("snapshot: no folder for startup snapshots (%s); children start without one", e)
        await super().setup()
        self.snapshot_ready()

    async def teardown(self) -> None:
        """Tear down as every worker does, then delete the startup snapshots."""
        await super().teardown()
        if self.snapshots is not None:
            await self.snapshots.close()

    def find_executable(self) -> str:
        """The node program: ``executable`` from the config, else found on PATH or the usual locations."""
        path = find_node(self.config.executable)
        self.node_version: NodeVersion = node_version(path)
        if self.config.node_permissions and self.node_version.permission_flag is None:
            log.warning("node %s at %s has no permission model (Node 20 or newer has); JavaScript apps "
                        "run with only rlimits and the heap bound", self.node_version, path)
        return path

    def add_default_resources(self) -> None:
        """Add the ``js`` resource (unless the config names its own) that starts and ends the app."""
        if "js" not in self.resources.resources:
            self.resources.add("js", JsSandboxResource("js", self, {}))

    def app_filename(self, api: SandboxApi) -> str:
        """The file name the app's code runs as: stack traces show it and ``require`` resolves from it."""
        return os.path.join(js_config(api).path or os.getcwd(), "app.js")

    def read_paths(self, api: SandboxApi) -> list[str]:
        """What the bwrap jail shows: the runner, the app, the node_modules folders its resolution
        searches (whole: inside the jail a link resolves among these binds only), the real paths of
        its symlinked packages, ``allow_fs_read``, and the startup snapshots' folder."""
        reads = app_reads(self.app_filename(api))
        snapshots = [self.snapshots.directory] if self.snapshots is not None else []
        return [*runner_files(), *reads.binds, *self._operator_reads(api), *snapshots]

    def allowed_reads(self, api: SandboxApi) -> list[str]:
        """What the child may read under the permission model: the runner, the app, each package its
        resolution can load (see :mod:`vxsandbox_js.reads`), and ``allow_fs_read``."""
        reads = app_reads(self.app_filename(api))
        return [*runner_files(), *reads.allow, *self._operator_reads(api)]

    def _operator_reads(self, api: SandboxApi) -> list[str]:
        return [os.path.abspath(p) for p in js_config(api).allow_fs_read]

    def sandbox_args(self, api: SandboxApi) -> list[str]:
        """``[node flags] runner.js [--preload=JSON]``, or the config's ``args`` verbatim when given."""
        config = js_config(api)
        if config.args:
            return list(config.args)
        flags, preload = self._runner_options(api)
        if preload is None:
            return [*flags, runner_path()]
        if config.snapshot is not False and self.snapshots is not None:
            v8_flags = self._snapshot_v8_flags(api, flags)
            blob = self.snapshots.blob(api, v8_flags, preload)
            if blob is not None:
                return [*snapshot_flags(v8_flags), "--snapshot-blob", blob]
        return [*flags, runner_path(), preload]

    def child_shape(self, api: SandboxApi) -> list[str]:
        """The arguments as if no snapshot existed: a child from the startup snapshot runs the same runner,
        flags and modules as one from ``runner.js``, so a tenant's warm child started before the snapshot was
        ready goes on serving it afterwards (rather than a second child being started beside it)."""
        config = js_config(api)
        if config.args:
            return list(config.args)
        flags, preload = self._runner_options(api)
        return [*flags, runner_path()] + ([preload] if preload is not None else [])

    def _runner_options(self, api: SandboxApi) -> tuple[list[str], str | None]:
        """The node flags and the ``--preload=`` argument (None when nothing is preloaded)."""
        config = js_config(api)
        flags = [*GC_FLAGS, *hardening_flags(self.node_version, config.max_old_space_size,
                                             config.node_permissions, self.allowed_reads(api))]
        modules = self.preload_modules(api)
        if not modules:
            return flags, None
        return flags, "--preload=" + json.dumps({"from": self.app_filename(api), "modules": modules})

    @staticmethod
    def _snapshot_v8_flags(api: SandboxApi, flags: list[str]) -> list[str]:
        """The flags of the snapshot's builder and of the children started from it.

        Where every child is a spare that serves one message (``prefork`` above 0,
        ``messages_per_process`` 1), ``--no-lazy`` too: a child from a snapshot compiles
        each function of its modules again when first called (Node makes the snapshot
        without their compiled code), and a one-message child never gets past that.
        With it V8 compiles them while the spare waits: the first message of a
        prepared vumigo spare costs 7.6-8.1 ms of CPU instead of 12.1-14.5, its start
        10-20 ms more and its RSS 4 MiB more. Not for cold children (no spare: the
        start is on the message's path, 8-11 ms later at low load) nor for warm ones
        (5-7 % more CPU per message in a long-lived child).
        """
        config = api.config
        if config.prefork > 0 and config.messages_per_process == 1:
            return [*flags, EAGER_COMPILE]
        return flags

    def snapshot_ready(self, api: SandboxApi | None = None) -> Deferred[Snapshot | None]:
        """Fires once the startup snapshot for ``api``'s config (the worker's own by default) is made, or
        cannot be (None); starts making it if needed."""
        api = api or self._template_api()
        config = js_config(api)
        if self.snapshots is None or config.snapshot is False or config.args:
            return succeed(None)
        flags, preload = self._runner_options(api)
        if preload is None:
            return succeed(None)
        return self.snapshots.wait(api, self._snapshot_v8_flags(api, flags), preload)

    def preload_modules(self, api: SandboxApi) -> list[str]:
        """The modules a child requires before its first message (``preload``, else found in the app)."""
        config = js_config(api)
        if config.preload is not None:
            return list(config.preload)
        context = self.app_context_for_api(api)
        if context is None or "require" not in context:
            # The app is given no require: there is nothing it could load.
            return []
        return self._found_requires(self.javascript_for_api(api))

    def _found_requires(self, source: str) -> list[str]:
        # Spares and new children ask for every spawn; the scan runs once per version of the code.
        if self._requires_cache is None or self._requires_cache[0] != source:
            self._requires_cache = (source, find_requires(source))
        return list(self._requires_cache[1])

    _requires_cache: tuple[str, list[str]] | None = None

    async def run_sandbox(self, api: SandboxApi, deliver: Any) -> SandboxResult:
        """Run the child; a run killed by the timeout is also explained in the app's own log."""
        result = await super().run_sandbox(api, deliver)
        if result.kill_reason == "timeout":
            # The operator's log says "killed: timeout"; the app's author needs the likely cause.
            api.log(f"the app's run was killed after the {js_config(api).timeout}s timeout: it did not call "
                    "api.done() (or kept working after it)", logging.ERROR)
        return result

    def app_fields(self, api: SandboxApi) -> dict[str, Any]:
        """What ``initialize`` tells the runner: the app's code, its context and its file name."""
        return {"javascript": self.javascript_for_api(api), "app_context": self.app_context_for_api(api),
                "filename": self.app_filename(api)}

    def _spawn_child(self, api: SandboxApi | None) -> SandboxChild:
        """Start a child; a prefork spare (``api`` None) is told to prepare the worker's app while it waits.

        ``prepare`` carries what ``initialize`` will (the worker's own config is
        the only one a spare serves): the runner compiles the app and makes its
        first context before any tenant is known, runs no app code, and binds
        to a tenant only at the ``initialize`` of its first run.
        """
        child = super()._spawn_child(api)
        if api is None:
            child.send(make_command("prepare", **self.app_fields(self._template_api())))
        return child

    def child_for_message(self, msg: Message | None, api: SandboxApi) -> SandboxChild:
        """The generic child, with :data:`NODE_ENV` under the config's own ``env``, taking late replies."""
        child = super().child_for_message(msg, api)
        child.env = self.node_env(api)
        # The runner drops replies to a run that has ended (api.done() does not wait for its log
        # line's reply), so a log written late does not cost the warm child its life.
        child.takes_late_replies = True
        return child

    def node_env(self, api: SandboxApi) -> dict[str, str]:
        """A node child's whole environment: :data:`NODE_ENV` under the config's own ``env``."""
        return {**NODE_ENV, **api.config.env}

    def child_key(self, api: SandboxApi) -> Hashable:
        """A warm child serves one tenant and one version of its code and context, nothing else."""
        code = (self.javascript_for_api(api), self.app_context_for_api(api), self.app_filename(api))
        # Hashed once per version of the code (an app bundle can be hundreds of KiB), not per message.
        if self._code_digest is None or self._code_digest[0] != code:
            self._code_digest = (code, hashlib.sha256(repr(code).encode("utf-8")).hexdigest())
        return (super().child_key(api), self._code_digest[1])

    _code_digest: tuple[tuple[str, str | None, str], str] | None = None

    def javascript_for_api(self, api: SandboxApi) -> str:
        """The app's source code for a run."""
        return js_config(api).javascript or ""

    def app_context_for_api(self, api: SandboxApi) -> str | None:
        """The trusted JavaScript expression giving the app's extra globals, or None."""
        return js_config(api).app_context


class JsFileSandbox(JsSandbox):
    """Runs a JavaScript app read from ``javascript_file`` (worker name ``js-file``).

    With ``app_context`` giving ``require``, the app can require modules from
    the ``node_modules`` folder next to its file.
    """

    CONFIG_CLASS: ClassVar[type[SandboxConfig]] = JsFileSandboxConfig

    config: JsFileSandboxConfig

    def app_filename(self, api: SandboxApi) -> str:
        return cast(JsFileSandboxConfig, api.config).javascript_file

    def javascript_for_api(self, api: SandboxApi) -> str:
        """The app's source, read from its file for every run so an edited app takes effect."""
        return app_source(cast(JsFileSandboxConfig, api.config).javascript_file)


class StandaloneJsFileSandbox(JsFileSandbox):
    """A file-based app serving one tenant (worker name ``js-standalone``): ``sandbox_id`` comes from the config."""

    def __init__(self, config: dict[str, Any] | SandboxConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        if not self.config.sandbox_id:
            raise ConfigError("sandbox_id", "is required by the js-standalone worker (the tenant it serves)")

    def sandbox_id_for_message(self, msg: Message) -> str:
        """Always the config's ``sandbox_id``, whatever the message says."""
        return str(self.config.sandbox_id)
