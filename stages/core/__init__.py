"""The edge every stage shares: params schema, runtime, files, tracking, executors. Imports no stage and no library module."""
