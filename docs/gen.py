"""Generated documentation pages: the configuration and hook references, resource pages from READMEs.

Used two ways: as an MkDocs hook (``hooks: [gen.py]`` in mkdocs.yml), which
adds the generated pages to the build and expands ``<!-- include: PATH -->``
and ``<!-- generated: NAME -->`` markers in hand-written pages; and as a
module the tests import to check the references are complete.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: the import packages whose config classes and plugins the docs describe
PACKAGES = ["vxsandbox_core", "vxsandbox_resources_kv", "vxsandbox_resources_http", "vxsandbox_resources_log",
            "vxsandbox_resources_outbound", "vxsandbox_resources_contacts", "vxsandbox_js"]

#: generated page -> (title, README it is made from); the README's own title is replaced
README_PAGES = {
    "core.md": ("vxsandbox-core: brokers and the command line", "vxsandbox_core/README.md"),
    "resources/kv.md": ("kv: key-value store", "vxsandbox_resources_kv/README.md"),
    "resources/http.md": ("http: HTTP client", "vxsandbox_resources_http/README.md"),
    "resources/log.md": ("log: app logging", "vxsandbox_resources_log/README.md"),
    "resources/outbound.md": ("outbound: sending messages", "vxsandbox_resources_outbound/README.md"),
    "resources/contacts.md": ("contacts, groups and optout: Vumi Go's address book",
                              "vxsandbox_resources_contacts/README.md"),
    "resources/js.md": ("JavaScript workers and the js resource", "vxsandbox_js/README.md"),
    "changelog.md": ("Changelog", "CHANGELOG.md"),
}

_INCLUDE = re.compile(r"^<!-- include: (\S+)(?: (\w+))? -->$", re.M)
_GENERATED = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.M)
_RELATIVE_LINK = re.compile(r"\[([^\]]+)\]\((?!https?://|#|mailto:)[^)]*\)")


# --- config reference ----------------------------------------------------------------

def import_all() -> None:
    """Import every module of the documented packages, so every config class is defined."""
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, name + "."):
            importlib.import_module(info.name)


def config_classes() -> list[type]:
    """Every :class:`vxsandbox_core.Config` subclass defined in the documented packages, base first."""
    from vxsandbox_core.config import Config
    import_all()
    found: list[type] = []
    todo = [Config]
    while todo:
        cls = todo.pop(0)
        for sub in cls.__subclasses__():
            if sub not in found and sub.__module__.split(".")[0] in PACKAGES:
                found.append(sub)
            todo.append(sub)
    return sorted(found, key=lambda c: (PACKAGES.index(c.__module__.split(".")[0]), len(c.__mro__),
                                        c.__qualname__))


def config_users() -> dict[type, list[str]]:
    """Which worker or resource names use each config class (their ``CONFIG_CLASS``)."""
    from vxsandbox_core.registry import RESOURCES_GROUP, WORKERS_GROUP, installed
    users: dict[type, list[str]] = {}
    for group, kind in ((WORKERS_GROUP, "worker"), (RESOURCES_GROUP, "resource")):
        for name, plugin in sorted(installed(group).items()):
            if plugin.error is not None or plugin.target.split(".")[0].split(":")[0] not in PACKAGES:
                continue
            classes = [getattr(plugin.plugin, "CONFIG_CLASS", None)]
            if classes[0] is None:
                # A resource without CONFIG_CLASS builds its options from a class in its own module.
                module = importlib.import_module(plugin.plugin.__module__)
                classes = [c for c in vars(module).values()
                           if isinstance(c, type) and c.__module__ == module.__name__ and hasattr(c, "all_fields")]
            for cls in classes:
                if cls is not None:
                    users.setdefault(cls, []).append(f"{kind} `{name}`")
    return users


def _type_text(types: tuple[type, ...]) -> str:
    if float in types:
        types = tuple(t for t in types if t is not int)
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "mapping", list: "list",
             type(None): "null"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _default_text(field: Any) -> str:
    if field.required:
        return "**required**"
    default = field.default() if callable(field.default) else field.default
    # Some defaults are already parsed (e.g. host rules); the config file spells them as their entries.
    entries = getattr(default, "entries", None)
    if entries is not None and not isinstance(default, (dict, list)):
        default = list(entries)
    try:
        return "`" + json.dumps(default) + "`"
    except TypeError:
        return f"`{default!r}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def class_path(cls: type) -> str:
    """``package.module.Class`` of a class, as the reference names it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def config_reference() -> str:
    """The configuration reference page: every key, type, default and description of every config class."""
    users = config_users()
    out = [
        "# Configuration reference",
        "",
        "Generated from the `fields` of every config class in the vxsandbox distributions. "
        "A worker config is one YAML mapping; each resource's options sit under "
        "`sandbox.<resource name>` next to its `cls`. Every error names the key "
        "(e.g. `sandbox.kv.max_value_size`), the value and what was expected.",
        "",
    ]
    for cls in config_classes():
        used = users.get(cls)
        doc = inspect.getdoc(cls) or ""
        out += [f"## {cls.__qualname__}", "", f"`{class_path(cls)}`" + (f", used by {', '.join(used)}" if used
                                                                          else ""), ""]
        if doc:
            out += [doc.split("\n\n")[0].replace("\n", " "), ""]
        out += ["| key | type | default | description |", "|---|---|---|---|"]
        for field in cls.all_fields():
            out.append(f"| `{field.name}` | {_type_text(field.types)} | {_default_text(field)} | "
                       f"{_cell(field.description)} |")
        out.append("")
    return "\n".join(out)


# --- hooks reference -----------------------------------------------------------------

def hook_specs() -> list[Any]:
    """The hook specification functions of ``vxsandbox_core.hookspecs``, in source order."""
    from vxsandbox_core import hookspecs
    specs = [f for _, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "vxsandbox_spec")]
    return sorted(specs, key=lambda f: f.__code__.co_firstlineno)


def _docstring_markdown(doc: str) -> str:
    lines = []
    for line in doc.splitlines():
        m = re.match(r":param (\w+):\s*(.*)", line)
        if m:
            lines.append(f"- `{m.group(1)}`: {m.group(2)}")
            continue
        m = re.match(r":return:\s*(.*)", line)
        if m:
            lines.append(f"- returns: {m.group(1)}")
            continue
        if line.startswith("    ") and lines and lines[-1].startswith("- "):
            lines[-1] += " " + line.strip()
            continue
        lines.append(line)
    text = "\n".join(lines)
    return re.sub(r":(?:class|func|meth):`~?([^`]+)`", r"`\1`", text)


def hooks_reference() -> str:
    """The hook reference page, from the specs' signatures and docstrings."""
    from vxsandbox_core import hookspecs
    out = ["# Plugin hooks", "", _docstring_markdown(inspect.getdoc(hookspecs) or ""), "",
           "Implement a hook with `@vxsandbox_core.hookimpl` on a function or method named like the spec, "
           "taking any subset of its arguments; register the object under the entry point group "
           "`vxsandbox` (`[project.entry-points.vxsandbox] myplugin = \"mypkg.plugin\"`).", ""]
    for spec in hook_specs():
        opts = getattr(spec, "vxsandbox_spec", {}) or {}
        signature = str(inspect.signature(spec)).replace("'", "")
        out += [f"## {spec.__name__}", "", "```python", f"def {spec.__name__}{signature}", "```", ""]
        if opts.get("firstresult"):
            out += ["*firstresult*: the first implementation returning something other than `None` wins.", ""]
        out += [_docstring_markdown(inspect.getdoc(spec) or ""), ""]
    return "\n".join(out)


# --- other generated pieces ------------------------------------------------------------

def legacy_names() -> str:
    """A table of every old class path that still resolves, and what it resolves to."""
    from vxsandbox_core.registry import DISTRIBUTIONS, LEGACY_NAMES
    out = ["| old name | now | kind | distribution |", "|---|---|---|---|"]
    for old, (group, name) in sorted(LEGACY_NAMES.items()):
        kind = "worker" if group.endswith("workers") else "resource"
        out.append(f"| `{old}` | `{name}` | {kind} | {DISTRIBUTIONS.get((group, name), '?')} |")
    return "\n".join(out)


def readme_page(title: str, readme: str) -> str:
    """A README as a docs page: its title replaced, links outside the docs reduced to their text."""
    text = (ROOT / readme).read_text(encoding="utf-8")
    body = text.split("\n", 1)[1] if text.startswith("# ") else text
    body = _RELATIVE_LINK.sub(r"\1", body)
    return f"# {title}\n\n*From `{readme}`.*\n{body}"


GENERATED = {"legacy-names": legacy_names}


def expand(markdown: str) -> str:
    """Replace include and generated markers in a page."""
    def include(m: re.Match[str]) -> str:
        path = ROOT / m.group(1)
        lang = m.group(2) or ""
        return f"```{lang}\n{path.read_text(encoding='utf-8').rstrip()}\n```"
    markdown = _INCLUDE.sub(include, markdown)
    return _GENERATED.sub(lambda m: GENERATED[m.group(1)](), markdown)


def generated_pages() -> dict[str, str]:
    """Every generated page: path inside the docs -> Markdown."""
    pages = {"reference/configuration.md": config_reference(), "reference/hooks.md": hooks_reference()}
    for path, (title, readme) in README_PAGES.items():
        pages[path] = readme_page(title, readme)
    return pages


# --- the MkDocs hook -------------------------------------------------------------------

def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the site."""
    from mkdocs.structure.files import File
    for path, content in generated_pages().items():
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Expand include and generated markers."""
    return expand(markdown)
