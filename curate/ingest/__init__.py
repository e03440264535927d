"""Ingest: read any supported pool into the uid-keyed ``samples`` table (+ ``rejects``, ``duplicates``)."""
