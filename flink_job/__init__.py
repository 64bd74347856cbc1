"""The PyFlink job: DataHub change events to JSON, Parquet or CSV files, exactly once (issue 5)."""
