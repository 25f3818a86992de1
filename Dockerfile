# Worker / dashboard image: the project installed exactly as the README installs it
# (`pip install .` of pyproject.toml: torch, optuna, optuna-dashboard, psycopg, ...).
# PyPI's Linux torch wheels bundle the CUDA runtime, so this slim image uses NVIDIA GPUs when
# the container gets them (NVIDIA Container Toolkit + the compose GPU reservation).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY data ./data
COPY hpo ./hpo
COPY studies ./studies
RUN pip install .

# Run as an unprivileged user; the mount points it writes to belong to it.
RUN useradd --create-home --uid 1000 hpo \
    && mkdir -p /artifacts /cache /datasets \
    && chown hpo:hpo /artifacts /cache
USER hpo
ENV HPO_ARTIFACT_DIR=/artifacts \
    HPO_CACHE_DIR=/cache \
    HPO_DATA_DIR=/datasets

CMD ["python", "-m", "hpo.run", "--help"]
