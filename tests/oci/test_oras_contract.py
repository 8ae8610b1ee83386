"""The oras-py internals the registry modules rely on, checked by name and signature.

core/oci/registry_client.py subclasses ``oras.provider.Registry``, overrides ``do_request``
and calls the undecorated original through ``__wrapped__`` (to put its own retries in place
of oras'), builds ``Container`` objects field by field, and core/oci/registry_auth.py
drives the auth backends by hand. None of that is oras' public API, so pyproject pins oras
to the tested range; an upgrade that moves any of it fails here, by name, rather than as a
strange registry error mid-push.
"""

from __future__ import annotations

import inspect

import oras.auth
import oras.container
import oras.provider
import pytest
import requests

Registry = oras.provider.Registry


def params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_do_request_is_decorated_and_the_original_has_the_called_signature():
    # registry_client.py: _oras_do_request = Registry.do_request.__wrapped__, called positionally
    # as (self, url, method, data, headers, json, stream).
    wrapped = getattr(Registry.do_request, "__wrapped__", None)
    assert wrapped is not None, "oras Registry.do_request is no longer a wrapped (retrying) function"
    assert params(wrapped) == ["self", "url", "method", "data", "headers", "json", "stream"]
    # The override in _OrasRegistry keeps the same signature, so oras' callers reach it.
    assert params(Registry.do_request) == params(wrapped)


@pytest.mark.parametrize("method", ["put_upload", "chunked_upload", "get_blob"])
def test_transfer_methods_go_through_do_request(method):
    # forge's retries, Basic header and scope refresh apply only if oras' transfers call
    # self.do_request (which _OrasRegistry overrides) rather than the session directly.
    fn = getattr(Registry, method)
    source = inspect.getsource(inspect.unwrap(fn))
    assert "self.do_request(" in source, f"oras Registry.{method} no longer calls self.do_request"


def test_transfer_signatures():
    assert params(Registry.put_upload)[:4] == ["self", "blob", "container", "layer"]
    assert params(Registry.chunked_upload)[:4] == ["self", "blob", "container", "layer"]
    assert "chunk_size" in params(Registry.chunked_upload)
    assert params(inspect.unwrap(Registry.get_blob))[:3] == ["self", "container", "digest"]
    assert "stream" in params(inspect.unwrap(Registry.get_blob))


def test_registry_construction_and_attributes():
    assert {"hostname", "insecure"} <= set(params(Registry.__init__))
    reg = Registry(hostname="localhost:5000", insecure=True)
    assert isinstance(reg.session, requests.Session)  # registry_client.py mounts its adapters there
    reg.auth = oras.auth.get_auth_backend("basic", reg.session, True)  # and sets .auth


def test_auth_backends():
    assert {"name", "session", "insecure"} <= set(params(oras.auth.get_auth_backend))
    session = requests.Session()
    basic = oras.auth.get_auth_backend("basic", session, True)
    token = oras.auth.get_auth_backend("token", session, True)
    assert isinstance(basic, oras.auth.BasicAuth)
    assert isinstance(token, oras.auth.TokenAuth)
    for backend in (basic, token):
        assert params(backend.set_basic_auth) == ["username", "password"]
        assert params(backend.get_auth_header) == []
        assert params(backend.authenticate_request)[:2] == ["original", "headers"]
    basic.set_basic_auth("u", "p")
    assert "Authorization" in basic.get_auth_header()
    assert hasattr(token, "token")  # cleared on a 401 to re-request another scope
    token.token = None


def test_container_fields():
    container = oras.container.Container("placeholder", registry="example.test")
    container.namespace, container.repository = "team.a", "x"
    assert (container.registry, container.namespace, container.repository) == (
        "example.test", "team.a", "x")
