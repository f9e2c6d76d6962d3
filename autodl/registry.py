"""The plugin registry: finds architecture plugins by name, wherever they come from.

An architecture plugin is written exactly like a KerasTuner hypermodel; what it is,
receives and returns is stated once, in :mod:`autodl.plugin`.

Plugins come from three places, one namespace:

* the entry-point group ``autodl.plugins``: autodl's own built-ins (``plugins/``) are
  registered there by its package metadata, exactly like third-party packages;
* ``kt:NAME``: the hypermodels that ship with KerasTuner, given autodl's image
  augmentation (:mod:`autodl.augmentation`);
* a file, ``path/to/model.py`` or ``path/to/model.py:NAME``, imported only when named.

Core code never imports a plugin module directly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from autodl.errors import AutodlError
from autodl.plugin import make_hypermodel, plugin_arguments

ENTRY_POINT_GROUP = "autodl.plugins"
KERAS_TUNER_PREFIX = "kt:"
KERAS_TUNER_SOURCE = "keras-tuner"
KERAS_TUNER_HYPERMODELS = ("HyperResNet", "HyperXception", "HyperEfficientNet")


@dataclass(frozen=True)
class Plugin:
    """A plugin found by the registry; ``load()`` imports it and returns its target.

    Attributes:
        name: What ``--arch`` calls it.
        source: Where it comes from: ``built-in``, ``package NAME``, ``keras-tuner``
            or ``file PATH``.
        load: Returns the ``HyperModel`` subclass or ``build`` function.
    """

    name: str
    source: str
    load: Callable[[], Any]

    def description(self) -> str:
        """The first line of the plugin's docstring (its class's, else its module's)."""
        target = self.load()
        # The target's own docstring: inspect.getdoc would give a class without one
        # keras_tuner.HyperModel's.
        own = getattr(target, "__doc__", None)
        doc = inspect.cleandoc(own) if own else inspect.getdoc(sys.modules.get(target.__module__))
        return doc.splitlines()[0] if doc else ""


def _entry_point_plugins() -> dict[str, Plugin]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        same = [e for e in found.get(ep.name, []) if e.value == ep.value]
        if not same:  # the same distribution can be seen twice on sys.path
            found.setdefault(ep.name, []).append(ep)
    plugins = {}
    for name, eps in found.items():
        sources = [_entry_point_source(ep) for ep in eps]
        if len(eps) > 1:
            raise AutodlError(
                f"two plugins are named {name!r}: " + " and ".join(
                    f"{s} ({ep.value})" for s, ep in zip(sources, eps, strict=True)
                )
            )
        plugins[name] = Plugin(name, sources[0], _loader(eps[0]))
    return plugins


def _entry_point_source(ep: EntryPoint) -> str:
    dist = ep.dist.name if ep.dist else "unknown"
    return "built-in" if dist == "autodl" else f"package {dist}"


def _loader(ep: EntryPoint) -> Callable[[], Any]:
    def load() -> Any:
        try:
            return ep.load()
        except Exception as error:
            raise AutodlError(
                f"plugin {ep.name!r} ({ep.value}) failed to import: {error}"
            ) from None

    return load


def _keras_tuner_plugin(name: str) -> Plugin:
    def load() -> Any:
        import keras_tuner

        return getattr(keras_tuner.applications, name)

    return Plugin(f"{KERAS_TUNER_PREFIX}{name}", KERAS_TUNER_SOURCE, load)


def _file_plugin(spec: str) -> Plugin:
    path, _, attribute = spec.partition(".py:")
    path = path if path.endswith(".py") else path + ".py"
    file = Path(path)
    if not file.is_file():
        raise AutodlError(f"plugin file not found: {path}")
    # One module per file path, so loading the same file twice reuses it.
    digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]
    module_name = f"autodl_user_plugin_{digest}"

    def load() -> Any:
        module = sys.modules.get(module_name) or _import_file(file, module_name)
        if attribute:
            if not hasattr(module, attribute):
                raise AutodlError(f"{path} has no {attribute!r}")
            return getattr(module, attribute)
        return _find_target(module, path)

    return Plugin(attribute or file.stem, f"file {path}", load)


def _import_file(file: Path, module_name: str) -> Any:
    module_spec = importlib.util.spec_from_file_location(module_name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise AutodlError(f"{file} failed to import: {type(error).__name__}: {error}") from None
    return module


def _find_target(module: Any, path: str) -> Any:
    """A file's plugin: its ``build`` function, else its one ``HyperModel`` subclass."""
    import keras_tuner

    if callable(getattr(module, "build", None)):
        return module.build
    classes = [
        obj for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, keras_tuner.HyperModel)
        and obj.__module__ == module.__name__
    ]
    if len(classes) == 1:
        return classes[0]
    if not classes:
        raise AutodlError(f"{path} has no build(hp) function or keras_tuner.HyperModel subclass")
    names = ", ".join(c.__name__ for c in classes)
    raise AutodlError(f"{path} has several HyperModel classes ({names}); pick one: {path}:NAME")


def is_file_spec(name: str) -> bool:
    """Whether an ``--arch`` value names a plugin file rather than a registered plugin."""
    return name.endswith(".py") or ".py:" in name


def available() -> list[Plugin]:
    """Every registered plugin: entry points (built-ins first), then KerasTuner's."""
    plugins = sorted(
        _entry_point_plugins().values(), key=lambda p: (p.source != "built-in", p.name)
    )
    return plugins + [_keras_tuner_plugin(name) for name in KERAS_TUNER_HYPERMODELS]


def find(name: str) -> Plugin:
    """The plugin that ``--arch NAME`` names.

    Raises:
        AutodlError: If no plugin has that name, or two registered ones share it.
    """
    if is_file_spec(name):
        return _file_plugin(name)
    if name.startswith(KERAS_TUNER_PREFIX) and name[3:] in KERAS_TUNER_HYPERMODELS:
        return _keras_tuner_plugin(name[3:])
    plugins = {p.name: p for p in available()}
    if name not in plugins:
        raise AutodlError(
            f"unknown arch {name!r}; choose from {', '.join(plugins)}, or give a file path.py"
        )
    return plugins[name]


def instantiate(
    plugin: Plugin, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> Any:
    """Make the plugin's hypermodel for one task.

    Args:
        plugin: The plugin.
        input_shape: Shape of one example, e.g. ``(28, 28, 1)``.
        num_classes: Number of classes.
        **options: Plugin options from the command line (e.g. ``weights``); ``None``
            values mean "not given" and are left out.

    Returns:
        A ``keras_tuner.HyperModel``; for KerasTuner's own, one that augments their
        input as the built-in image plugins do.

    Raises:
        AutodlError: If the plugin is not a hypermodel, takes no such option, or its
            constructor refuses the task.
    """
    from autodl.augmentation import AugmentedApplication

    target = plugin.load()
    try:
        accepted = plugin_arguments(target)
    except TypeError:
        raise AutodlError(
            f"plugin {plugin.name} is neither a build function nor a HyperModel"
        ) from None
    given = {k: v for k, v in options.items() if v is not None}
    for option in given:
        if option not in accepted:
            raise AutodlError(f"--{option} does not apply to arch {plugin.name}")
    try:
        hypermodel = make_hypermodel(target, input_shape, num_classes, **given)
    except AutodlError:
        raise
    except Exception as error:
        raise AutodlError(f"arch {plugin.name}: {error}") from None
    return AugmentedApplication(hypermodel) if plugin.source == KERAS_TUNER_SOURCE else hypermodel
