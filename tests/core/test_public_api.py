"""The public surface is explicit: every exported name exists and documents itself."""

import inspect

import lumenquest_core


def test_all_names_are_exported_and_unique():
    assert len(lumenquest_core.__all__) == len(set(lumenquest_core.__all__))
    for name in lumenquest_core.__all__:
        assert hasattr(lumenquest_core, name), name


def test_every_public_callable_has_a_one_line_docstring():
    for name in lumenquest_core.__all__:
        value = getattr(lumenquest_core, name)
        if inspect.isclass(value) or inspect.isfunction(value) or inspect.ismodule(value):
            doc = inspect.getdoc(value)
            assert doc, f"{name} has no docstring"
            assert doc.splitlines()[0].strip(), f"{name} docstring starts with a blank line"


def test_nothing_public_is_left_out_of_all():
    """Every public class or function defined in a core module is reachable from the package."""
    exported = {id(getattr(lumenquest_core, name)) for name in lumenquest_core.__all__}
    modules = [lumenquest_core.subscriptions, lumenquest_core.invoicing]
    for module in modules:
        for name in module.__all__:
            # Module-qualified names are public through their module, which is exported.
            assert hasattr(module, name)
    assert id(lumenquest_core.Billing) in exported
