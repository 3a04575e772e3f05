#!/bin/sh
# Regenerate the initial Alembic revision from schema.py (only before the first release).
set -e
cd "$(dirname "$0")/.."
rm -f fhir_server/storage/migrations/versions/*.py /tmp/regen-migration.sqlite
.venv/bin/python -c "
from fhir_server.storage.migrate import autogenerate
from fhir_server.storage.db import make_engine
autogenerate(make_engine('sqlite:////tmp/regen-migration.sqlite'), 'initial schema')
"
f=$(ls fhir_server/storage/migrations/versions/*.py)
sed -i "s/^revision = .*/revision = '0001'/" "$f"
mv "$f" fhir_server/storage/migrations/versions/0001_initial_schema.py
