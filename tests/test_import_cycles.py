"""No import cycle inside varlite or the app: imports inside functions count, imports only for type checkers do not.

import-linter (run by `make test`) checks the layers; within one layer, or one package, modules may import each
other, and this test keeps those imports one-way. grimp is the graph library import-linter itself is built on.
"""
from __future__ import annotations

import grimp


def test_no_module_imports_one_that_imports_it_back():
    graph = grimp.build_graph("varlite", "app", exclude_type_checking_imports=True)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if graph.chain_exists(importer=imported, imported=importer):
                back = graph.find_shortest_chain(importer=imported, imported=importer)
                cycles.append(" -> ".join((importer,) + tuple(back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
