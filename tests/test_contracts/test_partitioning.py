"""A contract declares and validates its own partitioning; partition keys are whole keys."""

from __future__ import annotations

from datetime import date

import pytest

from ecm_assets import Column, DatasetContract, PartitioningError, PartitionKeyError


def contract(**partitioning: object) -> DatasetContract:
    return DatasetContract(
        name="trips",
        description="trips per day",
        columns=(Column("day", "DATE", nullable=False), Column("n", "BIGINT")),
        partition_column="day",
        business_key=("day",),
        **{"grain": "daily", "start": "2019-03-01", **partitioning},
    )


def test_partition_key_with_trailing_text_is_refused() -> None:
    """Regression: only the first 10 characters were parsed, so this key was accepted."""
    with pytest.raises(PartitionKeyError, match=r"'2019-09-03xyz' is not a partition"):
        contract().partition_value("2019-09-03xyz")


@pytest.mark.parametrize("key", ["20190903", "2019-9-3", "2019-09-03 ", "", "2019-02-30"])
def test_keys_that_are_not_iso_dates_are_refused(key: str) -> None:
    with pytest.raises(PartitionKeyError, match=r"valid: daily 2019-03-01\.\.2019-12-31"):
        contract(end="2019-12-31").partition_value(key)


def test_keys_outside_start_and_end_are_refused() -> None:
    c = contract(end="2019-12-31")
    assert c.partition_value("2019-03-01") == date(2019, 3, 1)
    assert c.partition_value("2019-12-31") == date(2019, 12, 31)
    for key in ("2019-02-28", "2020-01-01"):
        with pytest.raises(PartitionKeyError, match="outside its partitions"):
            c.partition_value(key)


def test_monthly_keys_are_month_starts() -> None:
    c = contract(grain="monthly", start="2019-03-01")
    assert c.partition_value("2019-04-01") == date(2019, 4, 1)
    with pytest.raises(PartitionKeyError, match="not a month start"):
        c.partition_value("2019-04-02")


@pytest.mark.parametrize(
    ("partitioning", "message"),
    [
        ({"start": "2019-3-1"}, r"start='2019-3-1' is not a YYYY-MM-DD date"),
        ({"end": "2019-13-01"}, r"end='2019-13-01' is not a YYYY-MM-DD date"),
        ({"end": "2019-01-01"}, r"end=2019-01-01 is before start=2019-03-01"),
        ({"timezone": "Mars/Olympus"}, r"timezone='Mars/Olympus' is not an IANA zone"),
        ({"grain": "weekly"}, r"grain='weekly'"),
        ({"grain": "monthly", "start": "2019-03-15"}, r"monthly start=2019-03-15 .*2019-03-01"),
        ({"start": None, "end": "2019-12-31"}, r"end=2019-12-31 needs a start"),
    ],
)
def test_bad_partitioning_is_named(partitioning: dict[str, object], message: str) -> None:
    with pytest.raises(PartitioningError, match=message):
        contract(**partitioning)


def test_a_contract_without_start_cannot_become_an_asset() -> None:
    c = contract(start=None)
    with pytest.raises(PartitioningError, match="declare where its partitions start"):
        _ = c.start_date
