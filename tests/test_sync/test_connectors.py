"""Driver rows become Arrow columns without losing what the source held."""

from __future__ import annotations

import pyarrow as pa

from ecm_assets.sync.connectors import rows_to_arrow


def test_rows_to_arrow_types_json_mixed_and_null_columns():
    table = rows_to_arrow(
        ["id", "doc", "mixed", "empty", "amount"],
        [
            (1, {"a": 1}, "x", None, 1.5),
            (2, {"b": [1, 2]}, 3, None, 2),
            (3, None, None, None, None),
        ],
    )
    assert table.schema.field("id").type == pa.int64()
    # JSON stays JSON text: no struct that adds each row's keys to the others.
    assert table.column("doc").to_pylist() == ['{"a": 1}', '{"b": [1, 2]}', None]
    # SQLite may hold any type in any column: kept as text, not refused.
    assert table.column("mixed").to_pylist() == ["x", "3", None]
    assert pa.types.is_null(table.schema.field("empty").type)
    assert table.column("amount").to_pylist() == [1.5, 2.0, None]


def test_rows_to_arrow_of_no_rows_keeps_the_columns():
    assert rows_to_arrow(["a", "b"], []).column_names == ["a", "b"]
