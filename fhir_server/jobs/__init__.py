"""Durable background jobs: state in the database, leases, resumable cursors."""
