"""A live model's structure for the static checks, without importing Keras here (duck typing on
the objects the caller built with the flavour's Keras).

Functional and Sequential models give their config (`get_config()`, the same JSON a `.keras`
archive holds), parsed by bnspec.audit.tree; the live objects are attached to the tree so that
custom layers' `call` signatures can be inspected. Subclassed models have no graph in their config:
their tree is built from the tracked sub-layers, and the source of every user-defined `call` is
read with `ast` for BN layers called with a constant `training` argument, or called at several
places.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

from bnspec.audit.checks.training_mode import hardcoded_findings
from bnspec.audit.findings import Finding, Target, make
from bnspec.audit.tree import BN_CLASSES, Layer, parse


def is_bn(obj) -> bool:
    return any(cls.__name__ in BN_CLASSES for cls in type(obj).__mro__) and hasattr(obj, "moving_mean")


def is_model(obj) -> bool:
    return any(cls.__name__ in ("Model", "Functional", "Sequential") for cls in type(obj).__mro__)


def is_wrapper(obj) -> bool:
    """TimeDistributed, Bidirectional and other keras.layers.Wrapper subclasses (the inner layer in `.layer`)."""
    return any(cls.__name__ == "Wrapper" for cls in type(obj).__mro__) and hasattr(obj, "layer")


def _keras_class(obj) -> bool:
    return type(obj).__module__.split(".")[0] in ("keras", "tf_keras")


def children(obj) -> list:
    """Direct sub-layers (Keras 3 and tf_keras both have _flatten_layers)."""
    try:
        return list(obj._flatten_layers(include_self=False, recursive=False))
    except (AttributeError, TypeError):
        return list(getattr(obj, "layers", []) or [])


def _config(obj) -> dict:
    try:
        cfg = dict(obj.get_config())
    except Exception:  # noqa: BLE001 - custom layers without get_config
        cfg = {}
    cfg["name"] = obj.name
    cfg["trainable"] = bool(obj.trainable)
    if is_bn(obj):
        for attr in ("momentum", "epsilon", "axis"):
            if attr not in cfg and hasattr(obj, attr):
                value = getattr(obj, attr)
                cfg[attr] = list(value) if isinstance(value, (list, tuple)) else value
    return cfg


def _build_shape(obj):
    for attr in ("_build_shapes_dict",):
        shapes = getattr(obj, attr, None)
        if isinstance(shapes, dict) and len(shapes) == 1:
            shape = next(iter(shapes.values()))
            try:
                return list(shape)
            except TypeError:
                return None
    try:
        shape = obj.input_shape  # tf_keras, and Keras 3 layers called once
        if isinstance(shape, tuple):
            return list(shape)
    except Exception:  # noqa: BLE001
        pass
    return None


def _walk_objects(obj, path: str, parent: Layer | None, seen: dict) -> Layer:
    kind = "bn" if is_bn(obj) else ("subclassed" if is_model(obj) else ("wrapper" if is_wrapper(obj) else "layer"))
    node = Layer(name=obj.name, class_name=type(obj).__name__, module=type(obj).__module__, config=_config(obj),
                 kind=kind, path=path, parent=parent, obj=obj, build_shape=_build_shape(obj))
    if id(obj) in seen:  # the same object tracked twice: keep one node
        return seen[id(obj)]
    seen[id(obj)] = node
    for child in children(obj):
        node.children.append(_walk_objects(child, f"{path}/{child.name}", node, seen))
    return node


def _attach(root: Layer, model) -> None:
    """Attach live objects to a config-parsed tree, matching children by name. A custom layer whose
    config does not list its sub-layers (a block holding BN) gets them from the live object."""
    root.obj = model
    by_name = {c.name: c for c in children(model)}
    for child in root.children:
        obj = by_name.get(child.name)
        if obj is None:
            continue
        if child.kind == "layer" and not child.children and children(obj):
            seen: dict = {}
            child.children = [_walk_objects(c, f"{child.path}/{c.name}", child, seen) for c in children(obj)]
            child.kind = "wrapper" if is_wrapper(obj) else "subclassed"
            child.obj = obj
        else:
            _attach(child, obj)
        if child.build_shape is None:
            child.build_shape = _build_shape(obj)


def tree(model) -> tuple[Layer, list[str]]:
    """(Layer tree of `model`, notes)."""
    notes = []
    if is_model(model):
        try:
            cfg = model.get_config()
        except Exception as exc:  # noqa: BLE001 - custom layers without get_config
            cfg, why = None, f"{type(exc).__name__}: {exc}"
        else:
            why = ""
        if isinstance(cfg, dict) and isinstance(cfg.get("layers"), list):
            entry = {"class_name": type(model).__name__, "module": type(model).__module__, "config": cfg}
            try:
                root = parse(entry)
                _attach(root, model)
                return root, notes
            except Exception as exc:  # noqa: BLE001
                why = f"{type(exc).__name__}: {exc}"
        if why:
            notes.append(f"{model.name}: the model config could not be read ({why}); graph checks (positions, "
                         "upstream layers, call arguments) skipped, layer checks done on the live layers")
    root = _walk_objects(model, model.name, None, {})
    if root.kind == "layer":
        root.kind = "subclassed"
    return root, notes


def resolver(node: Layer):
    """Does this live layer's `call` default training=True? None when there is no live object."""
    if node.obj is None:
        return None
    try:
        param = inspect.signature(type(node.obj).call).parameters.get("training")
    except (TypeError, ValueError, AttributeError):
        return None
    return param is not None and param.default is True


# --------------------------------------------------------------------------- subclassed: read call()


def _call_sites(cls) -> tuple[list, str]:
    try:
        src = textwrap.dedent(inspect.getsource(cls.call))
        return list(ast.walk(ast.parse(src))), ""
    except (OSError, TypeError, SyntaxError, IndentationError) as exc:
        return [], f"{cls.__name__}.call: source not readable ({type(exc).__name__})"


def _in_loop(tree_nodes: list, call: ast.Call) -> bool:
    for node in tree_nodes:
        if isinstance(node, (ast.For, ast.While, ast.AsyncFor, ast.ListComp, ast.GeneratorExp)):
            if any(sub is call for sub in ast.walk(node)):
                return True
    return False


def scan_calls(root: Layer, target: Target) -> tuple[list[Finding], list[str]]:
    """N05/C01/N08 in user-defined `call` methods: `self.x(..., training=<constant>)` where x is a BN
    layer or a model holding BN, and one BN attribute called at several places."""
    findings, notes, done = [], [], set()
    by_obj = {id(n.obj): n for n in root.walk() if n.obj is not None}
    for node in root.walk():
        obj = node.obj
        if obj is None or _keras_class(obj) or type(obj) in done or not node.children:
            continue
        done.add(type(obj))
        nodes, why = _call_sites(type(obj))
        if why:
            notes.append(f"{node.path}: {why}; hard-coded training arguments in it could not be read (the dynamic "
                         "checks still measure their effect)")
            continue
        counts: dict = {}
        for call in (n for n in nodes if isinstance(n, ast.Call)):
            func = call.func
            if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self"):
                continue
            target_obj = getattr(obj, func.attr, None)
            child = by_obj.get(id(target_obj))
            if child is None:
                continue
            if child.is_bn:
                counts.setdefault(child, []).append(call.lineno if not _in_loop(nodes, call) else -1)
            for kw in call.keywords:
                if kw.arg == "training" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, bool):
                    where = {"in": f"{type(obj).__name__}.call", "source": f"self.{func.attr}(..., training="
                             f"{kw.value.value})", "line_in_call": call.lineno}
                    findings += hardcoded_findings(child, kw.value.value, "subclassed", where, target)
        for child, lines in counts.items():
            if len(lines) > 1 and -1 not in lines:
                findings.append(make(
                    "N08", "shared-bn", "warning", child.path, f"BN layer called at {len(lines)} places in "
                    f"{type(obj).__name__}.call", target,
                    evidence={"positions": len(lines), "lines_in_call": lines},
                    fix="the places share gamma, beta and ONE pair of moving statistics, updated by each in turn; "
                    "create one BatchNormalization per place unless sharing is intended"))
    return findings, notes
