"""Save and load parameter trees and whole training states as ``.npz`` files.

Parameters are keyed by the haiku module path and parameter name joined by
``/``, e.g. ``transformer/decoder_layer_0/multi_head_attention/query/w``, so a
file is readable with plain NumPy and maps one-to-one onto the release's tree.
A training state (parameters, tables, optimizer state, step) is keyed by its
pytree paths and loaded into a template of the same structure (concrete arrays or
``jax.eval_shape``'s abstract ones). Round trips are bit-exact. Every function here (and
:func:`phoenix_lib.mpzch.save` / ``load``) takes a path with or without the ``.npz``
suffix and uses the same file: ``ckpt`` means ``ckpt.npz``.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping

import jax
import numpy as np


def npz_path(path: str | os.PathLike) -> pathlib.Path:
    """``path`` with ``.npz`` appended unless it already ends so (NumPy's rule on save)."""
    path = pathlib.Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def flatten_params(params) -> dict[str, np.ndarray]:
    """``{module: {name: array}}`` -> ``{"module/name": np.ndarray}``."""
    flat = {}
    for module, entries in params.items():
        if not isinstance(entries, Mapping) or any(
            isinstance(v, Mapping | tuple) for v in entries.values()
        ):
            raise TypeError(
                f"params[{module!r}] is not a {{name: array}} dict: save_params takes a haiku "
                "parameter tree {module: {name: array}}; for a training state (its params "
                "hold the model and the hash tables) use save_state"
            )
        for name, value in entries.items():
            if "/" in name:
                raise ValueError(f"parameter name {name!r} in {module!r} contains '/'")
            array = np.asarray(jax.device_get(value))
            if array.dtype.kind not in "fiub" or array.dtype.itemsize not in (1, 2, 4, 8):
                raise TypeError(
                    f"{module}/{name} has dtype {array.dtype}, which .npz cannot store exactly"
                )
            flat[f"{module}/{name}"] = array
    return flat


def unflatten_params(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Inverse of :func:`flatten_params` (the name is the part after the last ``/``)."""
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        module, name = key.rsplit("/", 1)
        params.setdefault(module, {})[name] = value
    return params


def save_params(path: str | os.PathLike, params) -> pathlib.Path:
    """Write ``params`` (a haiku ``{module: {name: array}}`` tree) to ``path`` (.npz);
    returns the path written."""
    path = npz_path(path)
    np.savez(path, **flatten_params(params))
    return path


def load_params(path: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """Read a tree written by :func:`save_params`, as NumPy arrays."""
    with np.load(npz_path(path), allow_pickle=False) as data:
        return unflatten_params({key: data[key] for key in data.files})


def _settings(tree) -> dict[str, str]:
    """The static settings of every MPZCH table in ``tree``, by key (``<path>.settings``):
    they are part of the tree's structure, not of its arrays, so they are stored beside."""
    from phoenix_lib.mpzch import MpzchState  # mpzch imports this module

    tables = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda node: isinstance(node, MpzchState)
    )[0]
    return {
        f"{jax.tree_util.keystr(path)}.settings": json.dumps(node.settings(), sort_keys=True)
        for path, node in tables
        if isinstance(node, MpzchState)
    }


def save_state(path: str | os.PathLike, state) -> pathlib.Path:
    """Write any pytree of arrays (e.g. a ``TrainState``, or ``(state, mpzch_table)``) to
    ``path`` (.npz), keyed by path, with every MPZCH table's settings; returns the path."""
    path = npz_path(path)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    arrays = {jax.tree_util.keystr(k): np.asarray(jax.device_get(v)) for k, v in leaves}
    settings = {key: np.array(value) for key, value in _settings(state).items()}
    np.savez(path, **arrays, **settings)
    return path


def load_state(path: str | os.PathLike, like):
    """Read a pytree written by :func:`save_state` into the structure of ``like``: a tree of
    arrays, or of ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` of the code that makes the
    state, which costs no computation).

    Raises:
      ValueError: the file's keys, shapes or dtypes differ from ``like``'s, or an MPZCH
        table's settings (``padding_row``, ``eviction``, ...) differ from the template's.
    """
    path = npz_path(path)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    settings = _settings(like)
    with np.load(path, allow_pickle=False) as data:
        keys = [jax.tree_util.keystr(k) for k, _ in leaves]
        if sorted(keys + list(settings)) != sorted(data.files):
            raise ValueError(
                f"{path} holds keys {sorted(set(data.files) ^ (set(keys) | set(settings)))} "
                "that the template does not (or the reverse)"
            )
        for key, expected in settings.items():
            saved = str(data[key])
            if saved != expected:
                raise ValueError(
                    f"{key}: the file's MPZCH table has settings {saved}, the template's "
                    f"{expected}; make the template with the saved settings"
                )
        values = []
        for key, (_, template) in zip(keys, leaves, strict=True):
            value = data[key]
            shape = np.shape(template)  # arrays and jax.ShapeDtypeStruct alike
            dtype = np.dtype(template.dtype if hasattr(template, "dtype") else type(template))
            if value.shape != shape or value.dtype != dtype:
                raise ValueError(
                    f"{key}: file has {value.dtype}{list(value.shape)}, template "
                    f"{dtype}{list(shape)}"
                )
            values.append(value)
    return jax.tree_util.tree_unflatten(treedef, [jax.numpy.asarray(v) for v in values])
