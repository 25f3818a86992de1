# Three images from one file (docker-compose.yml builds the first two):
#   --target worker     the project installed exactly as the README installs it (`pip install .`
#                       of pyproject.toml: torch, optuna, ...). PyPI's Linux torch wheels bundle
#                       the CUDA runtime, so it uses NVIDIA GPUs when the container gets them
#                       (docker-compose.gpu.yml); build it with CPU-only torch, about 5 GB
#                       smaller, with --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#   --target dashboard  optuna-dashboard and the report code only: no torch.
#   --target pgbouncer  Debian's PgBouncer in front of PostgreSQL, configured from the
#                       environment (deploy/pgbouncer/entrypoint.sh): docker-compose.pgbouncer.yml
#                       and deploy/kubernetes/pgbouncer/ use it for hundreds of workers.
# --build-arg PIP_INDEX_URL=URL installs from another package index (a local wheelhouse).
FROM python:3.11-slim-bookworm AS base

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

# Run as an unprivileged user; the mount points it writes to belong to it.
RUN useradd --create-home --uid 1000 hpo \
    && mkdir -p /artifacts /cache /datasets \
    && chown hpo:hpo /artifacts /cache
ENV HPO_ARTIFACT_DIR=/artifacts \
    HPO_CACHE_DIR=/cache \
    HPO_DATA_DIR=/datasets


FROM base AS dashboard
ARG PIP_INDEX_URL=
# The project without its dependencies, then only the ones the dashboard imports, with the
# versions pyproject.toml pins (read from it, so they cannot drift).
RUN pip install ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} --no-deps . \
    && python -c "import re, tomllib; \
need = {'optuna', 'optuna-dashboard', 'sqlalchemy', 'plotly', 'psycopg', 'lazy_loader', 'numpy'}; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(d for d in deps if re.split(r'[\[<>=!~ ]', d)[0] in need))" > /tmp/requirements.txt \
    && pip install ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
USER hpo
CMD ["python", "-m", "hpo.dashboard", "--host", "0.0.0.0", "--port", "8080"]


FROM base AS worker
ARG PIP_INDEX_URL=
ARG TORCH_INDEX_URL=
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        python -c "import re, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(d for d in deps if re.split(r'[<>=!~ ]', d)[0] in ('torch', 'torchvision')))" \
            > /tmp/torch.txt \
        && pip install --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt && rm /tmp/torch.txt; \
    fi \
    && pip install ${PIP_INDEX_URL:+--index-url "$PIP_INDEX_URL"} .
# The sparse layer's native CPU passes need a C++ compiler at first use, which this slim image
# lacks (and each new container would compile again): CPU workers take the eager path, same
# results (models/sparse_conv_cpu.py); GPU workers never use those passes.
ENV SPARSE_CONV_NATIVE=0
USER hpo
CMD ["python", "-m", "hpo.run", "--help"]


# Debian's package (1.18 in bookworm), on the same base as the other two images (one base to
# pull or mirror; its Python serves compose's health check). No project code: the entrypoint
# writes the configuration from the environment.
FROM python:3.11-slim-bookworm AS pgbouncer
# The package's user `postgres`, made first with a fixed number (999, as in PostgreSQL's
# image) that Kubernetes' runAsUser can name; PgBouncer refuses to run as root.
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --no-create-home \
        --shell /usr/sbin/nologin postgres \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pgbouncer \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/pgbouncer/entrypoint.sh /usr/local/bin/pgbouncer-entrypoint
USER postgres
EXPOSE 6432
ENTRYPOINT ["sh", "/usr/local/bin/pgbouncer-entrypoint"]
