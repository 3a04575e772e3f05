# The same server as `make serve`, on PostgreSQL or the embedded SQLite file.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

# DejaVu Sans: the payment guarantee PDF prints names in any European script (workflows/claims/pdf_fonts.py)
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY fhir_server ./fhir_server
COPY resources ./resources
COPY mappings ./mappings
COPY terminology ./terminology
# Editable: the code reads resources/, mappings/ and terminology/ beside the package.
COPY requirements.txt ./
RUN pip install --require-hashes --no-deps -r requirements.txt && pip install --no-deps --no-build-isolation -e . && useradd --create-home --uid 10001 fhir && mkdir -p /app/data && chown fhir /app/data

USER fhir
EXPOSE 8080 2575
# FHIR_SERVER_DATABASE_URL=postgresql+psycopg://user:pass@db/fhir selects PostgreSQL.
CMD ["fhir-server", "serve", "--host", "0.0.0.0", "--port", "8080"]
