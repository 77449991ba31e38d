"""Server configuration that needs no running server: the allocator it preloads."""

from __future__ import annotations

import pytest

from aln.errors import MissingComponentError
from aln.serving import server
from aln.serving.server import ServerConfig, allocator_library, repository_allocator


def test_glibc_preloads_nothing_and_each_other_allocator_an_installed_library():
    assert allocator_library("glibc") is None
    for name, wanted in server.ALLOCATORS.items():
        if wanted is not None:
            library = allocator_library(name)
            assert library is not None and library.name == wanted[0] and library.is_file()


def test_an_unknown_allocator_is_refused_naming_the_field_and_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"ServerConfig.allocator: .*'hoard'.*glibc, jemalloc"):
        ServerConfig(tmp_path, allocator="hoard")


def test_a_missing_allocator_library_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(server.ALLOCATORS, "jemalloc", ("libjemalloc.so.99", "libjemalloc99"))
    with pytest.raises(MissingComponentError, match="libjemalloc.so.99.*package libjemalloc99"):
        allocator_library("jemalloc")


def test_a_repository_with_an_openvino_engine_is_served_with_glibc_and_refuses_a_preload(tmp_path):
    onnx, openvino = tmp_path / "onnx", tmp_path / "openvino"
    for repository, engine in ((onnx, "model.onnx"), (openvino, "model.xml")):
        (repository / "backbone_primary" / "1").mkdir(parents=True)
        (repository / "backbone_primary" / "1" / engine).write_bytes(b"")
    assert repository_allocator(onnx) == server.DEFAULT_ALLOCATOR
    assert repository_allocator(onnx, "tcmalloc") == "tcmalloc"
    assert repository_allocator(openvino) == "glibc"
    assert repository_allocator(openvino, "glibc") == "glibc"
    with pytest.raises(ValueError, match="jemalloc cannot serve 'backbone_primary'.*OpenVINO"):
        repository_allocator(openvino, "jemalloc")
