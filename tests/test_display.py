"""The chapters show the package's own source, highlighted, whole or a few lines at a time."""

import inspect
import textwrap

import pytest

from phoenix_lib import display, tables, transformer


def test_source_is_the_packages_code_highlighted():
    shown = display.source(tables.gather)
    assert shown.data == inspect.getsource(tables.gather)
    assert "<span" in shown._repr_html_()  # pygments' highlighting, not plain text
    method = display.source(transformer.RMSNorm.__call__)  # dedented
    assert method.data == textwrap.dedent(inspect.getsource(transformer.RMSNorm.__call__))


def test_several_objects_and_a_slice_of_lines():
    both = display.source(tables.gather, tables.embed).data
    assert both.startswith("@jax.jit\ndef gather") and "\n\n@jax.jit\ndef embed" in both
    lines = inspect.getsource(tables.gather).splitlines()
    part = display.source(tables.gather, lines=("safe =", "return"))  # by text, not number
    first = next(i for i, line in enumerate(lines) if "safe =" in line)
    assert part.data == textwrap.dedent("\n".join(lines[first:]) + "\n")
    assert part.data.startswith("safe = jnp.where")  # dedented: a part reads as code
    with pytest.raises(ValueError, match="contains 'no such text'"):
        display.source(tables.gather, lines=("safe =", "no such text"))
    with pytest.raises(ValueError, match="one object"):
        display.source(tables.gather, tables.embed, lines=(1, 2))
    with pytest.raises(ValueError, match="at least one"):
        display.source()
