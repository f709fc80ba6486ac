import pytest

from backends.registry import Registry, UnknownNameError, import_submodules


def test_register_create_and_sorted_names():
    reg = Registry("widget")

    @reg.register("b")
    def make_b(x, scale=1):
        return ("b", x * scale)

    @reg.register()
    def a(x):
        return ("a", x)

    assert reg.names() == ["a", "b"]
    assert reg.create("b", 2, scale=3) == ("b", 6)
    assert "a" in reg and "c" not in reg
    assert reg.names("b*") == ["b"]


def test_unknown_name_lists_known_ones():
    reg = Registry("widget")
    reg.register("alpha")(lambda: 1)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'beta'; known: alpha"):
        reg.create("beta")
    with pytest.raises(ValueError):  # UnknownNameError is a ValueError
        reg.get("beta")


def test_registering_a_taken_name_twice_is_an_error():
    reg = Registry("widget")
    reg.register("x")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(lambda: 2)


def test_import_submodules_registers_every_backend_module():
    names = import_submodules("backends", skip=("base", "registry"))
    assert "registry" not in names and "base" not in names


def test_a_registered_class_knows_its_name_from_the_decorator_alone():
    reg = Registry("thing")

    @reg.register("named_once")
    class Thing:
        pass

    assert Thing.registry_name == "named_once" and reg.get("named_once") is Thing
