"""The built-in processor gives the same rows on Arrow as on pandas."""

from __future__ import annotations

import pyarrow as pa
import pytest

from ecm_assets.sync.processors import PROCESSORS, Processor

CONFIG = {"strip": ["name"], "lowercase": ["email"], "drop": ["segment"]}


def _page() -> pa.Table:
    return pa.table(
        {
            "id": [1, 2, 3],
            "name": ["  Ada L ", None, "\tBo"],
            "email": ["Ada@X.COM", "b@y.org", None],
            "segment": ["retail", "smb", "public"],
            "gone": pa.nulls(3),
        }
    )


def test_customer_transformer_arrow_equals_pandas():
    proc = PROCESSORS["customer_transformer"]
    on_arrow = proc.run(_page(), CONFIG).to_pylist()
    on_pandas = Processor("p", proc.apply).run(_page(), CONFIG).to_pylist()
    assert on_arrow == on_pandas
    assert on_arrow[0] == {"id": 1, "name": "Ada L", "email": "ada@x.com", "gone": None}


def test_processor_that_drops_rows_is_refused():
    bad = Processor("bad", lambda frame, config: frame.head(1))
    with pytest.raises(ValueError, match="must not add or drop rows"):
        bad.run(_page(), {})


def test_text_option_on_a_number_column_names_it():
    with pytest.raises(ValueError, match="column id is int64, not text"):
        PROCESSORS["customer_transformer"].run(_page(), {"strip": ["id"]})
