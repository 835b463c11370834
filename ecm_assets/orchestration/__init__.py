"""Operations glue: turns dataset contracts and pure transforms into Dagster assets."""
