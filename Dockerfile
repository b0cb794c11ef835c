# One image for the four services and the CLI: `tally serve <service>`, `tally migrate`, ...
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p tally services tally_gen \
    && touch tally/__init__.py services/__init__.py tally_gen/__init__.py \
    && pip install . \
    && pip uninstall -y tally

COPY tally ./tally
COPY tally_gen ./tally_gen
COPY services ./services
RUN pip install --no-deps . && useradd --system --home-dir /app --shell /usr/sbin/nologin tally

# Listen on every interface inside the container; JSON logs for collectors.
ENV TALLY_BIND_HOST=0.0.0.0 \
    TALLY_LOG_FORMAT=json \
    TALLY_DATA_DIR=/tmp/tally

USER tally
EXPOSE 50051 50052 50053 50054 9151 9152 9153 9154
ENTRYPOINT ["tally"]
CMD ["--help"]
